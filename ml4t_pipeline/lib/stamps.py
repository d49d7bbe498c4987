"""Bar-close stamps: daily dates at their session's real close, intraday bar starts moved to
the close, all as UTC ``pl.Datetime("us", "UTC")``.

Conventions (``DESIGN.md``): every ``timestamp`` is a timezone-aware UTC datetime marking the
bar's **close**. Exchange session times are taken in the calendar's zone and converted to UTC,
which makes them daylight-saving correct (XNYS: the 16:00 close is 21:00 UTC in winter and
20:00 UTC in summer). A daily date is stamped at its session's real close on the experiment's
exchange calendar (``data.calendar``, default XNYS; :mod:`ml4t_pipeline.lib.calendars`): 16:00,
or the early close of a half day (13:00 on the day after Thanksgiving, e.g. 2017-11-24).

Also the small checks every time-keyed table shares (UTC columns, duplicated keys, sort order).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import polars as pl

from ml4t_pipeline.lib.calendars import (
    DEFAULT_CALENDAR,
    calendar_tz,
    regular_close,
    regular_open,
    session_closes,
)

EXCHANGE_TZ = "America/New_York"
"""Time zone of the US equity session times used below."""

UTC_DATETIME = pl.Datetime("us", "UTC")
"""The dtype of every ``timestamp`` / ``available_at`` column in the data contracts."""


def session_time_utc(dates: pl.Expr, hours: int, minutes: int) -> pl.Expr:
    # Date part only, then the New York wall-clock time, then UTC. 16:00/09:30/16:15 are never in
    # a DST gap or overlap (those happen at 02:00), so the localisation is unambiguous.
    wall = dates.cast(pl.Date).cast(pl.Datetime("us")) + pl.duration(hours=hours, minutes=minutes)
    return wall.dt.replace_time_zone(EXCHANGE_TZ).dt.convert_time_zone("UTC")


def daily_close_utc(dates: pl.Expr, calendar: str = DEFAULT_CALENDAR) -> pl.Expr:
    """Stamp trading dates with their session's real close on exchange ``calendar``, in UTC.

    Parameters
    ----------
    dates : pl.Expr
        A ``pl.Date`` or naive ``pl.Datetime`` expression holding the trading date (daily files
        store 00:00 of the date). Any time of day is discarded: only the calendar date is used;
        callers that accept raw files check for midnight first (``io.load_prices_file`` does).
    calendar : str, default "XNYS"
        An ``exchange_calendars`` name (``data.calendar``;
        :func:`ml4t_pipeline.lib.calendars.session_closes`).

    Returns
    -------
    pl.Expr
        ``pl.Datetime("us", "UTC")``: the session's close. XNYS: 16:00 New York, i.e. 21:00 UTC
        under EST and 20:00 UTC under EDT; on an early-close day its real close instead
        (2017-11-24: 13:00 New York = 18:00 UTC). Nulls stay null.

    Notes
    -----
    A date that is not a session of ``calendar`` (weekend, holiday), or lies outside the
    calendar's range (before 1990), is stamped at the calendar's regular close in its zone; the
    price rule ``on_session_date`` (``data.plausibility.calendar``) refuses such rows, naming
    them.

    Examples
    --------
    >>> import datetime as dt
    >>> import polars as pl
    >>> df = pl.DataFrame({"d": [dt.date(2024, 1, 2), dt.date(2024, 7, 1)]})
    >>> df.select(daily_close_utc(pl.col("d")).dt.hour())["d"].to_list()
    [21, 20]
    >>> half = pl.DataFrame({"d": [dt.date(2017, 11, 24)]})
    >>> half.select(daily_close_utc(pl.col("d")).dt.hour())["d"].to_list()
    [18]
    """
    sessions = session_closes(calendar)
    close = regular_close(calendar)
    day = dates.cast(pl.Date)
    wall = day.cast(pl.Datetime("us")) + pl.duration(hours=close.hour, minutes=close.minute)
    regular = wall.dt.replace_time_zone(calendar_tz(calendar)).dt.convert_time_zone("UTC")
    return day.replace_strict(
        sessions["date"], sessions["close"], default=regular, return_dtype=UTC_DATETIME
    )


def market_open_utc(dates: pl.Expr, calendar: str = DEFAULT_CALENDAR) -> pl.Expr:
    """Stamp dates (or any datetimes, by their date) with their session's open on exchange
    ``calendar``, in UTC (XNYS: 09:30 New York).

    Parameters
    ----------
    dates : pl.Expr
        ``pl.Date`` or naive ``pl.Datetime``; the calendar date is used.
    calendar : str, default "XNYS"
        An ``exchange_calendars`` name (``data.calendar``).

    Returns
    -------
    pl.Expr
        ``pl.Datetime("us", "UTC")``: XNYS 14:30 UTC under EST, 13:30 UTC under EDT. A date that
        is no session gets the calendar's regular open in its zone.
    """
    sessions = session_closes(calendar)
    opening = regular_open(calendar)
    day = dates.cast(pl.Date)
    wall = day.cast(pl.Datetime("us")) + pl.duration(hours=opening.hour, minutes=opening.minute)
    regular = wall.dt.replace_time_zone(calendar_tz(calendar)).dt.convert_time_zone("UTC")
    return day.replace_strict(
        sessions["date"], sessions["open"], default=regular, return_dtype=UTC_DATETIME
    )


def vix_close_utc(dates: pl.Expr) -> pl.Expr:
    """Stamp dates with the 16:15 America/New_York VIX close (Cboe), in UTC.

    The VIX settles 15 minutes after the 16:00 equity close, so a backward as-of join of VIX onto
    16:00 equity bars makes day D's VIX visible only from day D+1's bar. That is deliberate: day
    D's VIX close does not exist yet when day D's equity bar closes.

    Parameters
    ----------
    dates : pl.Expr
        ``pl.Date`` or naive ``pl.Datetime``; the calendar date is used.

    Returns
    -------
    pl.Expr
        ``pl.Datetime("us", "UTC")``.
    """
    return session_time_utc(dates, 16, 15)


def local_date(timestamps: pl.Expr, calendar: str) -> pl.Expr:
    return timestamps.dt.convert_time_zone(calendar_tz(calendar)).dt.date()


def require_utc(df: pl.DataFrame, column: str, what: str) -> None:
    if column not in df.columns:
        raise ValueError(f"{what}: column {column!r} is missing (columns: {df.columns})")
    dtype = df.schema[column]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone != "UTC":
        raise ValueError(
            f"{what}: column {column!r} must be pl.Datetime(time_zone='UTC'), got {dtype}"
        )


def duplicated_rows(df: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Rows whose key columns appear more than once, every copy, in input order (or empty)."""
    time_cols = [k for k in keys if k != "symbol"]
    if (
        len(keys) == 2
        and len(time_cols) == 1
        and time_cols[0] in df.columns
        and df.schema[time_cols[0]].is_temporal()
        and keys_unique_in_order(df, time_cols[0])
    ):
        # In key order every twin is a neighbour: none (one cheap pass). The hashed test below
        # holds every key in a table (+140 MB RSS on the S&P signals' 480k rows).
        return df.clear()
    if df.select(pl.struct(keys).n_unique()).item() == df.height:
        return df.clear()
    return df.filter(pl.struct(keys).is_duplicated())


def has_adjacent_duplicate(df: pl.DataFrame, keys: list[str]) -> bool:
    """True when two neighbouring rows share every ``keys`` value (null equal to null).

    On a frame sorted by ``keys`` (in any key order) every duplicated key sits next to its twin,
    so this is the whole duplicate test at the cost of one pass, against a hash of every key
    for ``is_duplicated``; on an unsorted frame it can miss duplicates."""
    same = pl.all_horizontal([pl.col(k).eq_missing(pl.col(k).shift(1)) for k in keys])
    return df.height > 1 and bool(df.select(same.slice(1).any()).item())


def keys_unique_in_order(df: pl.DataFrame, time_col: str = "timestamp") -> bool:
    """True when the rows are in (``time_col``, symbol) order (:func:`in_key_order`) and no
    (``time_col``, symbol) key appears twice: two cheap passes, no hash of the keys. False
    says only that one of the two does not hold."""
    return in_key_order(df, time_col) and not has_adjacent_duplicate(df, [time_col, "symbol"])


def in_key_order(df: pl.DataFrame, time_col: str = "timestamp") -> bool:
    """True when ``time_col`` and ``symbol`` hold no null and the rows are in (``time_col``,
    symbol) order (symbol compared as text): each symbol's rows are then in time order, and a
    duplicated key sits next to its twin (:func:`has_adjacent_duplicate` finds it)."""
    no_null = ~pl.any_horizontal(pl.col(time_col, "symbol").is_null()).any()
    return bool(df.select(no_null).item()) and is_sorted_by_time_symbol(df, time_col)


def is_sorted_by_time_symbol(df: pl.DataFrame, time_col: str = "timestamp") -> bool:
    """True when rows are in (``time_col``, symbol) order (symbol compared as text)."""
    ts, sym = pl.col(time_col), symbol_text_rank(df)
    in_order = (ts.shift(1) < ts) | ((ts.shift(1) == ts) & (sym.shift(1) <= sym))
    return bool(df.select(in_order.fill_null(True).all()).item())


def symbol_text_rank(df: pl.DataFrame) -> pl.Expr:
    """An expression ordering ``df``'s ``symbol`` values as their text does (null stays null).

    A String column is used as is. A Categorical or Enum column is mapped to each category's
    rank among the symbols in text order (:func:`by_symbol_code`): integer comparisons on the
    rows instead of a text copy of every row (an order test on the S&P prices: 20 -> 11 ms
    CPU), with the same answers as comparing ``symbol.cast(pl.String)``.
    """
    if not isinstance(df.schema["symbol"], pl.Categorical | pl.Enum):
        return pl.col("symbol").cast(pl.String)
    return by_symbol_code(df, lambda text: text.rank("dense").cast(pl.UInt32))


def by_symbol_code(df: pl.DataFrame, per_symbol: Callable[[pl.Series], pl.Series]) -> pl.Expr:
    """``per_symbol`` computed once per distinct symbol, as an expression giving each row its
    symbol's value (null for a null symbol).

    Parameters
    ----------
    df : pl.DataFrame
        A frame whose ``symbol`` column is Categorical or Enum.
    per_symbol : callable
        Takes the distinct symbols as a String Series and returns one value per symbol, in
        that order.

    Returns
    -------
    pl.Expr
        The values gathered by each row's category code: what ``per_symbol`` applied to
        ``symbol.cast(pl.String)`` row by row would give, for a few dozen text operations
        instead of one per row.
    """
    column = df.get_column("symbol")
    # An Enum's codes are positions in its fixed category list; a Categorical's are read off
    # the frame's own distinct values.
    if isinstance(column.dtype, pl.Enum):
        distinct = pl.Series(column.dtype.categories).cast(column.dtype)
    else:
        distinct = column.unique().drop_nulls()
    values = per_symbol(distinct.cast(pl.String))
    codes = distinct.to_physical().cast(pl.Int64)
    size = int(codes.max()) + 1 if codes.len() else 0  # type: ignore[arg-type]
    table = pl.Series("value", [None] * size, dtype=values.dtype).scatter(codes, values)
    return pl.lit(table).gather(pl.col("symbol").to_physical())


def first_rows(df: pl.DataFrame, n: int = 5) -> str:
    # Times as ISO text (``2013-07-03 20:00:00+00:00``), not ``datetime.datetime(...)`` reprs.
    shown = df.head(n).with_columns(pl.col(pl.Date, pl.Datetime).cast(pl.String))
    return str(shown.to_dicts())


def naive_dates_to_close_utc(
    df: pl.DataFrame, what: str, intraday_rule: str, *, calendar: str = DEFAULT_CALENDAR
) -> pl.DataFrame:
    """``df`` with its naive daily ``timestamp`` moved to that session's close on ``calendar``
    (XNYS: 16:00 New York, 13:00 on half days), in UTC.

    The daily convention of the price files: a ``pl.Date`` or naive ``pl.Datetime`` value at
    00:00 is that date's close (:func:`daily_close_utc`).

    Raises
    ------
    ValueError
        If a naive ``pl.Datetime`` value is not at 00:00 (then it is no daily date): the message
        starts with ``what`` (the source), gives their count, ``intraday_rule`` (how intraday
        times must be given instead) and the first offending rows with their ``row_index``.
    """
    dtype = df.schema["timestamp"]
    if isinstance(dtype, pl.Datetime):
        off = df.with_row_index("row_index").filter(pl.col("timestamp").dt.time() != pl.time(0))
        if off.height:
            raise ValueError(
                f"{what}: {off.height} naive timestamps are not at 00:00 ({dtype}), so they are "
                f"not daily dates; {intraday_rule}. First rows: {first_rows(off)}"
            )
    # Each distinct date is stamped once (a few thousand for years of daily bars), then looked
    # up per row: the same stamps as daily_close_utc on every row, for less work.
    days = df.select(pl.col("timestamp").cast(pl.Date).unique().drop_nulls().alias("day"))
    closes = days.select(daily_close_utc(pl.col("day"), calendar))["day"]
    return df.with_columns(
        pl.col("timestamp")
        .cast(pl.Date)
        .replace_strict(days["day"], closes, default=None, return_dtype=UTC_DATETIME)
        .alias("timestamp")
    )


def bar_start_to_close(df: pl.DataFrame, bar_length: timedelta | str) -> pl.DataFrame:
    """Move intraday ``timestamp`` from the bar's start to its close (start + bar length).

    Intraday vendor files (Lean, Polygon) stamp a bar with its *start*: the "09:31" 1-minute bar
    covers 09:31:00–09:32:00 and its close is known only at 09:32. The data contract stamps the
    close, so this adds ``bar_length`` to every timestamp. Lean hourly bars stamped 09:00 hold
    only 09:30–10:00 trading and become 10:00; the 15:00 bar becomes 16:00.

    Parameters
    ----------
    df : pl.DataFrame
        Table with a timezone-aware ``timestamp`` column (any zone; the result is UTC).
    bar_length : datetime.timedelta or str
        Positive bar length, e.g. ``timedelta(minutes=1)``, ``"1m"``, ``"1h"``, ``"30m"``
        (polars duration strings: ``s``, ``m``, ``h``, ``d``).

    Returns
    -------
    pl.DataFrame
        ``df`` with ``timestamp`` = start + ``bar_length`` as ``Datetime[us, UTC]``, same rows and
        order.

    Raises
    ------
    ValueError
        If ``timestamp`` is missing or naive, or ``bar_length`` is not positive or unparsable.
    """
    length = parse_duration(bar_length)
    if length <= timedelta(0):
        raise ValueError(f"bar_length must be positive, got {bar_length!r}")
    if "timestamp" not in df.columns:
        raise ValueError(f"bar_start_to_close: column 'timestamp' is missing ({df.columns})")
    dtype = df.schema["timestamp"]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
        raise ValueError(
            "bar_start_to_close: 'timestamp' must be a timezone-aware datetime marking the bar "
            f"start, got {dtype}"
        )
    return df.with_columns(
        (pl.col("timestamp").dt.convert_time_zone("UTC").cast(UTC_DATETIME) + length).alias(
            "timestamp"
        )
    )


_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(value: timedelta | str) -> timedelta:
    """Parse ``"90s"``, ``"1m"``, ``"4h"``, ``"2d"`` (or pass a ``timedelta`` through).

    Raises
    ------
    ValueError
        For a string that is not ``<integer><unit>`` with unit in ``s, m, h, d``.
    """
    if isinstance(value, timedelta):
        return value
    text = str(value).strip().lower()
    unit = text[-1:]
    number = text[:-1]
    if unit not in _DURATION_UNITS or not number.isdigit():
        raise ValueError(
            f"cannot parse duration {value!r}; use <integer><unit> with unit one of s, m, h, d "
            "(e.g. '1m', '1h', '3d') or a datetime.timedelta"
        )
    return timedelta(**{_DURATION_UNITS[unit]: int(number)})
