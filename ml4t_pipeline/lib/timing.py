"""When a value becomes usable: bar-close stamping, signal availability and look-ahead checks.

Conventions (``DESIGN.md``): every ``timestamp`` is a timezone-aware UTC ``pl.Datetime("us",
"UTC")`` marking the bar's **close**. A value may be used at a bar only if it was available by that
bar's close, so a value stamped ``available_at`` becomes visible at the first bar whose close is at
or after ``available_at`` (a backward as-of join on availability).

A signal file's own stamps are read under one of three conventions (``data.signal_timestamps``:
``bar_close``, ``session_date``, ``instant``; :func:`signal_stamps_utc`), and each stamp is then
mapped to the price bar it belongs to (:func:`signal_stamp_offsets`): a stamp that is not a bar
close, such as midnight ``Asia/Tokyo`` (hours before the previous New York close), is refused
unless the stamps are declared instants (:func:`check_signal_stamps`).

US equity session times are taken in ``America/New_York`` and converted to UTC, which makes them
daylight-saving correct (the 16:00 close is 21:00 UTC in winter and 20:00 UTC in summer). A daily
date is stamped at the New York Stock Exchange's real close of that session
(:func:`daily_close_utc`) on the experiment's exchange calendar (``data.calendar``, default
XNYS; :mod:`ml4t_pipeline.lib.calendars`): 16:00, or the early close of a half day (13:00 on
the day after Thanksgiving, e.g. 2017-11-24); the same calendar gives the sessions the
``on_session_date`` price rule checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

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

SignalTiming = Literal["market_close", "available_at", "market_open", "next_day"]
SIGNAL_TIMING_MODES: tuple[str, ...] = ("market_close", "available_at", "market_open", "next_day")
"""The values accepted by ``signal_available_at(mode=...)`` (``data.signal_available_at``)."""


def _session_time_utc(dates: pl.Expr, hours: int, minutes: int) -> pl.Expr:
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
    return _session_time_utc(dates, 16, 15)


def _local_date(timestamps: pl.Expr, calendar: str) -> pl.Expr:
    return timestamps.dt.convert_time_zone(calendar_tz(calendar)).dt.date()


def _require_utc(df: pl.DataFrame, column: str, what: str) -> None:
    if column not in df.columns:
        raise ValueError(f"{what}: column {column!r} is missing (columns: {df.columns})")
    dtype = df.schema[column]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone != "UTC":
        raise ValueError(
            f"{what}: column {column!r} must be pl.Datetime(time_zone='UTC'), got {dtype}"
        )


def duplicated_rows(df: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Rows whose key columns appear more than once, every copy, in input order (or empty)."""
    if df.select(pl.struct(keys).n_unique()).item() == df.height:
        return df.clear()
    return df.filter(pl.struct(keys).is_duplicated())


def is_sorted_by_time_symbol(df: pl.DataFrame) -> bool:
    """True when rows are in (timestamp, symbol) order (symbol compared as text)."""
    ts, sym = pl.col("timestamp"), pl.col("symbol").cast(pl.String)
    in_order = (ts.shift(1) < ts) | ((ts.shift(1) == ts) & (sym.shift(1) <= sym))
    return bool(df.select(in_order.fill_null(True).all()).item())


def _first_rows(df: pl.DataFrame, n: int = 5) -> str:
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
                f"not daily dates; {intraday_rule}. First rows: {_first_rows(off)}"
            )
    return df.with_columns(daily_close_utc(pl.col("timestamp"), calendar).alias("timestamp"))


SignalStamps = Literal["bar_close", "session_date", "instant"]
SIGNAL_STAMP_MODES: tuple[str, ...] = ("bar_close", "session_date", "instant")
"""How a signal file's ``timestamp`` is read (``data.signal_timestamps``); see
:func:`signal_stamps_utc`."""

STAMP_PLACEMENTS: tuple[str, ...] = (
    "at_bar_close",
    "between_bars",
    "before_first_bar",
    "after_last_bar",
)
"""Where a signal stamp falls among the price bars (:func:`signal_stamp_offsets`)."""


def _stamp_text(dtype: pl.DataType) -> pl.Expr:
    # The stamp as written, as text with its own UTC offset (``2013-05-01 00:00:00+09:00``).
    column = pl.col("timestamp")
    if isinstance(dtype, pl.Datetime):
        zone = "%:z" if dtype.time_zone is not None else ""
        return column.dt.strftime(f"%Y-%m-%d %H:%M:%S{zone}")
    return column.cast(pl.String)


def signal_stamps_utc(
    signals: pl.DataFrame,
    stamps: str = "bar_close",
    *,
    what: str = "signals",
    calendar: str = DEFAULT_CALENDAR,
) -> pl.DataFrame:
    """``signals`` with ``timestamp`` read under a stamp convention, as a UTC ``Datetime``.

    Parameters
    ----------
    signals : pl.DataFrame
        A signal table with a ``timestamp`` column (``pl.Date``, naive or timezone-aware
        ``pl.Datetime``); other columns are kept.
    stamps : {"bar_close", "session_date", "instant"}
        How a stamp is read (the config's ``data.signal_timestamps``):

        - ``"bar_close"`` (default): a timezone-aware stamp is the close of the bar the score
          was computed at, converted to UTC (the same instant); a naive 00:00 date (or
          ``pl.Date``) is a session date and stands for that session's 16:00 New York close,
          the daily convention of the price files. The pipeline then requires every stamp
          inside the price history to be a bar close (:func:`signal_stamp_offsets`).
        - ``"session_date"``: every stamp is a calendar date, the session whose close the score
          is known at: a naive 00:00 date as above, and a timezone-aware stamp by its date *in
          its own zone* (``2013-05-01 00:00+09:00`` is the session of 1 May), which must then be
          at 00:00 in that zone. Each becomes that date's 16:00 New York close.
        - ``"instant"``: a timezone-aware stamp is the instant the score became known,
          converted to UTC, at any time of day; it is used from the first bar closing at or
          after it. Naive stamps are refused (an instant needs a zone).
    what : str
        How the table is named in error messages.
    calendar : str, default "XNYS"
        The exchange calendar whose session closes stamp dates (``data.calendar``).

    Returns
    -------
    pl.DataFrame
        ``signals`` with ``timestamp`` as ``Datetime[us, UTC]``; same rows and order.

    Raises
    ------
    ValueError
        Unknown ``stamps``; ``timestamp`` missing, null or of a non-date dtype; a naive value
        not at 00:00 (``bar_close``, ``session_date``); a timezone-aware value not at local
        midnight (``session_date``); a naive column (``instant``). The message names the
        first offending rows (``row_index``: 0-based row of ``signals``).
    """
    if stamps not in SIGNAL_STAMP_MODES:
        raise ValueError(
            f"{what}: unknown signal stamp convention {stamps!r}; expected one of "
            f"{SIGNAL_STAMP_MODES} (data.signal_timestamps)"
        )
    if "timestamp" not in signals.columns:
        raise ValueError(f"{what}: column 'timestamp' is missing (columns: {signals.columns})")
    dtype = signals.schema["timestamp"]
    null_ts = signals.with_row_index("row_index").filter(pl.col("timestamp").is_null())
    if null_ts.height:
        raise ValueError(
            f"{what}: {null_ts.height} signal rows have a null timestamp: {_first_rows(null_ts)}"
        )
    aware = isinstance(dtype, pl.Datetime) and dtype.time_zone is not None
    naive = dtype == pl.Date or (isinstance(dtype, pl.Datetime) and dtype.time_zone is None)
    if not (aware or naive):
        raise ValueError(f"{what}: column 'timestamp' must be a Date or Datetime, got {dtype}")
    if naive and stamps == "instant":
        raise ValueError(
            f"{what}: data.signal_timestamps is 'instant' but column 'timestamp' is {dtype}, "
            "which has no time zone, so its values are not instants. Store timezone-aware "
            "times, or read plain dates as session dates (signal_timestamps: session_date)."
        )
    if naive:
        return naive_dates_to_close_utc(
            signals,
            what,
            "intraday signal times must be timezone-aware (with signal_timestamps: bar_close "
            "or instant)",
            calendar=calendar,
        )
    if stamps == "session_date":
        off = signals.with_row_index("row_index").filter(
            pl.col("timestamp").dt.time() != pl.time(0)
        )
        if off.height:
            raise ValueError(
                f"{what}: data.signal_timestamps is 'session_date', but {off.height} stamps are "
                f"not at 00:00 in their own zone ({dtype}), so they are not dates. First rows: "
                f"{_first_rows(off)}"
            )
        return signals.with_columns(
            daily_close_utc(pl.col("timestamp").dt.date(), calendar).alias("timestamp")
        )
    # Converting an aware timestamp to UTC keeps the instant (lossless).
    return signals.with_columns(pl.col("timestamp").dt.convert_time_zone("UTC").cast(UTC_DATETIME))


def signal_stamp_offsets(
    signals: pl.DataFrame,
    bar_closes: pl.Series | pl.DataFrame,
    *,
    stamps: str = "bar_close",
    calendar: str = DEFAULT_CALENDAR,
) -> pl.DataFrame:
    """For every signal row: the bar it maps to and how far its stamp is from that bar's close.

    A stamp maps to the first price bar closing at or after it (the bar at whose close a score
    stamped there is first usable under ``market_close``). A stamp that is not itself a bar close
    usually means the file's time convention differs from the prices': midnight in a zone east
    of UTC (``Asia/Tokyo``) lands hours *before the previous session's close*, so each score
    would be traded one session early.

    Parameters
    ----------
    signals : pl.DataFrame
        The signal table as read (``timestamp`` in any dtype :func:`signal_stamps_utc` accepts,
        ``symbol``).
    bar_closes : pl.Series or pl.DataFrame
        The price bars' close times, ``Datetime[us, UTC]`` (a prices frame: its ``timestamp``
        column). Bars of every symbol count: a score may be stamped at a close where its own
        symbol has no bar.
    stamps : {"bar_close", "session_date", "instant"}
        How the stamps are read (:func:`signal_stamps_utc`).
    calendar : str, default "XNYS"
        The exchange calendar whose session closes stamp dates (``data.calendar``).

    Returns
    -------
    pl.DataFrame
        One row per signal row, in input order: ``row_index`` (UInt32, 0-based row of
        ``signals``), ``symbol``, ``stamp`` (String: the stamp as written, with its zone),
        ``timestamp`` (``Datetime[us, UTC]``, as read), ``bar_close`` (the close of the bar it
        maps to; null after the last bar), ``offset`` (Duration[us]: ``bar_close - timestamp``,
        >= 0; null after the last bar) and ``placement`` (String, one of
        :data:`STAMP_PLACEMENTS`: ``at_bar_close`` (offset 0), ``between_bars`` (inside the
        price history but not a close), ``before_first_bar``, ``after_last_bar``).

    Raises
    ------
    ValueError
        As :func:`signal_stamps_utc`; ``timestamp`` or ``symbol`` missing; ``bar_closes`` not a
        UTC datetime.
    """
    absent = [c for c in ("timestamp", "symbol") if c not in signals.columns]
    if absent:
        raise ValueError(f"signal_stamp_offsets: columns {absent} missing ({signals.columns})")
    closes = (
        bar_closes.get_column("timestamp") if isinstance(bar_closes, pl.DataFrame) else bar_closes
    )
    closes_frame = closes.alias("bar_close").to_frame()
    _require_utc(closes_frame, "bar_close", "signal_stamp_offsets: bar_closes")
    closes_frame = closes_frame.drop_nulls().unique().sort("bar_close")
    written = signals.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("row_index"),
        pl.col("symbol").cast(pl.String),
        _stamp_text(signals.schema["timestamp"]).alias("stamp"),
    )
    read = signal_stamps_utc(
        signals.select("timestamp"), stamps, what="signal_stamp_offsets", calendar=calendar
    )
    rows = written.with_columns(read.get_column("timestamp"))
    mapped = (
        rows.sort("timestamp")
        .join_asof(
            closes_frame,
            left_on="timestamp",
            right_on="bar_close",
            strategy="forward",
            check_sortedness=False,
        )
        .sort("row_index")
    )
    first = closes_frame.get_column("bar_close").min() if closes_frame.height else None
    offset = pl.col("bar_close") - pl.col("timestamp")
    before = pl.lit(False) if first is None else pl.col("timestamp") < pl.lit(first, UTC_DATETIME)
    placement = (
        pl.when(pl.col("bar_close").is_null())
        .then(pl.lit("after_last_bar"))
        .when(before)
        .then(pl.lit("before_first_bar"))
        .when(offset == timedelta(0))
        .then(pl.lit("at_bar_close"))
        .otherwise(pl.lit("between_bars"))
    )
    return mapped.with_columns(offset.alias("offset"), placement.alias("placement"))


_OFFSET_BUCKETS: tuple[tuple[str, timedelta], ...] = (
    ("0 (at a bar close)", timedelta(0)),
    ("(0, 1 min]", timedelta(minutes=1)),
    ("(1 min, 1 h]", timedelta(hours=1)),
    ("(1 h, 1 day]", timedelta(days=1)),
)


def signal_stamp_summary(offsets: pl.DataFrame) -> dict[str, object]:
    """Distribution of the stamp-to-bar-close offsets of :func:`signal_stamp_offsets`.

    Returns
    -------
    dict
        ``rows`` (int); ``by_placement`` (rows per placement, every placement present);
        ``offset_buckets`` (rows inside the price history, i.e. ``at_bar_close`` and
        ``between_bars``, per offset bucket: ``0``, ``(0, 1 min]``, ``(1 min, 1 h]``,
        ``(1 h, 1 day]``, ``> 1 day``); ``offset_min``, ``offset_median``, ``offset_max`` of those
        rows as text (``str(datetime.timedelta)``, e.g. ``5:00:00``), None when there are none.
    """
    by_placement = dict.fromkeys(STAMP_PLACEMENTS, 0)
    for placement, n in offsets.group_by("placement").len().iter_rows():
        by_placement[str(placement)] = int(n)
    inside = offsets.filter(pl.col("placement").is_in(["at_bar_close", "between_bars"]))
    values = inside.get_column("offset")
    buckets: dict[str, int] = {}
    lower: timedelta | None = None
    for name, upper in _OFFSET_BUCKETS:
        low = values > lower if lower is not None else pl.Series([True] * values.len())
        buckets[name] = int((low & (values <= upper)).sum()) if values.len() else 0
        lower = upper
    buckets["> 1 day"] = int((values > lower).sum()) if values.len() else 0

    def text(value: object) -> str | None:
        return None if value is None else str(value)

    return {
        "rows": offsets.height,
        "by_placement": by_placement,
        "offset_buckets": buckets,
        "offset_min": text(values.min()) if values.len() else None,
        "offset_median": text(values.median()) if values.len() else None,
        "offset_max": text(values.max()) if values.len() else None,
    }


def misaligned_signal_stamps(offsets: pl.DataFrame) -> pl.DataFrame:
    """Rows of :func:`signal_stamp_offsets` inside the price history that are not a bar close."""
    return offsets.filter(pl.col("placement") == "between_bars")


def check_signal_stamps(
    signals: pl.DataFrame,
    bar_closes: pl.Series | pl.DataFrame,
    *,
    stamps: str = "bar_close",
    what: str = "signals",
    calendar: str = DEFAULT_CALENDAR,
) -> pl.DataFrame:
    """Refuse signal stamps that are not bar closes, unless they are declared instants.

    Under ``stamps="bar_close"`` and ``"session_date"`` every stamp inside the price history
    must, once read, be the close of a price bar; under ``"instant"`` any offset is accepted
    (the score is used from the next bar close). Stamps before the first or after the last bar
    are not judged (the bar calendar is unknown there).

    Parameters
    ----------
    signals, bar_closes, stamps, calendar
        As :func:`signal_stamp_offsets` (``calendar``: the exchange calendar stamping dates).
    what : str
        How the table is named in the error message.

    Returns
    -------
    pl.DataFrame
        The offsets (:func:`signal_stamp_offsets`) when the stamps are accepted.

    Raises
    ------
    ValueError
        When stamps are not bar closes: the message gives their count, the first rows
        (``row_index`` = 0-based row of ``signals``, the stamp as written, the bar close it maps
        to and the offset) and the settings that would state how to read them.
    """
    offsets = signal_stamp_offsets(signals, bar_closes, stamps=stamps, calendar=calendar)
    bad = misaligned_signal_stamps(offsets)
    if stamps != "instant" and bad.height:
        raise ValueError(misaligned_stamps_message(bad, offsets.height, stamps, what))
    return offsets


STAMP_ADVICE = (
    "A stamp that is not a bar close means the file's time convention differs from the "
    "prices': midnight in a zone east of UTC (Asia/Tokyo) lands hours before the previous "
    "session's close, so each score would be traded one session early. State how the stamps "
    "are meant with data.signal_timestamps: session_date (each stamp's date, in its own zone, "
    "is the session at whose close the score is known) or instant (each stamp is the instant "
    "the score became known; it is used from the next bar close)."
)
"""What a misaligned stamp means and how to declare the convention (messages and metadata)."""


def misaligned_stamps_message(bad: pl.DataFrame, n_rows: int, stamps: str, what: str) -> str:
    """The error text for signal stamps that are not bar closes (:func:`check_signal_stamps`)."""
    shown = [
        {**row, "bar_close": _utc_text(row["bar_close"]), "offset": str(row["offset"])}
        for row in bad.head(5)
        .select("row_index", "symbol", "stamp", "bar_close", "offset")
        .rows(named=True)
    ]
    return (
        f"{what}: {bad.height} of {n_rows} signal stamps are not bar closes (read as "
        f"signal_timestamps: {stamps}); 'offset' is how long before the close of the bar it "
        f"maps to each one lies. {STAMP_ADVICE} First rows (row_index = 0-based data row of "
        f"the signal file): {shown}"
    )


def _utc_text(value: object) -> str:
    # ``2013-02-14 21:00:00+00:00`` rather than the repr of a datetime.
    return value.isoformat(sep=" ") if hasattr(value, "isoformat") else str(value)


def _file_available_at_utc(signals: pl.DataFrame, what: str) -> pl.DataFrame:
    """``signals`` with its own ``available_at`` in UTC; naive or null values are refused."""
    dtype = signals.schema["available_at"]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
        raise ValueError(
            f"{what}: the file's column 'available_at' is {dtype}; an availability time is an "
            "instant and must be timezone-aware (e.g. Datetime('us', 'UTC'))"
        )
    nulls = signals.with_row_index("row_index").filter(pl.col("available_at").is_null())
    if nulls.height:
        raise ValueError(
            f"{what}: {nulls.height} signal rows have a null available_at (when they became "
            f"known is not stated, so they cannot be used): {_first_rows(nulls)}"
        )
    return signals.with_columns(
        pl.col("available_at").dt.convert_time_zone("UTC").cast(UTC_DATETIME)
    )


def signal_available_at(
    signals: pl.DataFrame, mode: str, *, stamps: str = "bar_close", calendar: str = DEFAULT_CALENDAR
) -> pl.DataFrame:
    """Give every signal row the UTC time it became available, by rule and from its own column.

    A file's own ``available_at`` is never overwritten: under a rule mode the **later** of the
    file's value and the rule's value is kept, so a row saying "available three days later" is
    not used at its own bar.

    Parameters
    ----------
    signals : pl.DataFrame
        Long signal table with at least ``timestamp`` (the bar close the signal belongs to) and
        ``symbol``; for ``mode="available_at"`` also ``available_at``. ``timestamp`` is read
        under ``stamps`` (:func:`signal_stamps_utc`): by default ``Datetime[UTC]`` or any other
        timezone-aware datetime (converted to UTC: the same instant), or a naive 00:00 date /
        ``pl.Date`` (the daily convention of the price files: stamped at that date's 16:00 New
        York close). An ``available_at`` column must be timezone-aware (converted to UTC) and
        non-null.
    mode : {"market_close", "available_at", "market_open", "next_day"}
        The rule; ``rule(t)`` below. With an ``available_at`` column present the result is
        ``max(available_at, rule(t))`` for the three rule modes.

        - ``"market_close"``: ``rule(t) = t`` (computed from data up to and including that
          bar's close).
        - ``"available_at"``: the explicit ``available_at`` column decides alone. Any value is
          allowed (even earlier than ``timestamp``: a pre-computed forecast).
        - ``"market_open"``: 09:30 New York on the New York date of ``timestamp`` (a pre-market
          signal for that session). On daily bars it is visible at that date's bar; on
          intraday bars from the first bar closing at or after 09:30.
        - ``"next_day"``: 09:30 New York on the next weekday after the New York date of
          ``timestamp``. If that weekday is a holiday no bar closes before the real next
          session, so visibility is the same as with an exchange calendar. On daily bars this
          is a one-bar delay.
    stamps : {"bar_close", "session_date", "instant"}
        How ``timestamp`` is read (``data.signal_timestamps``; :func:`signal_stamps_utc`).
        Whether each stamp is then a bar close is checked against the prices by
        :func:`check_signal_stamps`, not here.
    calendar : str, default "XNYS"
        The exchange calendar (``data.calendar``): it stamps dates at their session's close and
        gives the open of ``market_open`` / ``next_day`` (a session's open in the calendar's
        zone, by the stamp's date there).

    Returns
    -------
    pl.DataFrame
        ``signals`` with ``timestamp`` and ``available_at`` as ``Datetime[us, UTC]``, same rows
        and order.

    Raises
    ------
    ValueError
        Unknown ``mode`` or ``stamps``; ``timestamp`` missing, null, of a non-date dtype, or not
        readable under ``stamps`` (:func:`signal_stamps_utc`); ``available_at`` missing (mode
        ``available_at``), naive, or null in any row (the message names the first offending
        rows).
    """
    if mode not in SIGNAL_TIMING_MODES:
        raise ValueError(
            f"unknown signal_available_at mode {mode!r}; expected one of {SIGNAL_TIMING_MODES}"
        )
    what = f"signal_available_at(mode={mode!r})"
    signals = signal_stamps_utc(signals, stamps, what=what, calendar=calendar)
    has_own = "available_at" in signals.columns
    if mode == "available_at" and not has_own:
        raise ValueError(
            f"{what}: column 'available_at' is missing (columns: {signals.columns}); choose a "
            "rule mode (market_close, market_open, next_day) or add the column"
        )
    if has_own:
        signals = _file_available_at_utc(signals, what)
    if mode == "available_at":
        return signals
    if mode == "market_close":
        rule = pl.col("timestamp")
    elif mode == "market_open":
        rule = market_open_utc(_local_date(pl.col("timestamp"), calendar), calendar)
    else:  # next_day
        local = _local_date(pl.col("timestamp"), calendar)
        rule = market_open_utc(local.dt.add_business_days(1, roll="forward"), calendar)
    available = pl.max_horizontal(pl.col("available_at"), rule) if has_own else rule
    return signals.with_columns(available.cast(UTC_DATETIME).alias("available_at"))


def check_no_lookahead(used: pl.DataFrame) -> pl.DataFrame:
    """Return the rows where a value was used before it was available.

    Parameters
    ----------
    used : pl.DataFrame
        Rows with ``timestamp`` (the bar at whose close a value was used) and ``available_at``
        (when that value became available), both ``Datetime[us, UTC]``; other columns are kept.
        Rows with a null ``available_at`` (no value used) are not violations.

    Returns
    -------
    pl.DataFrame
        The violating rows (``available_at > timestamp``) with every input column plus
        ``row_index`` (position in ``used``, UInt32) first; empty when there is no look-ahead.

    Raises
    ------
    ValueError
        If either column is missing or not a UTC datetime.
    """
    _require_utc(used, "timestamp", "check_no_lookahead")
    _require_utc(used, "available_at", "check_no_lookahead")
    return used.with_row_index("row_index").filter(pl.col("available_at") > pl.col("timestamp"))


def signal_uses_before_available(
    panel: pl.DataFrame, signals: pl.DataFrame, *, signal_time_col: str = "signal_timestamp"
) -> pl.DataFrame:
    """Panel rows that use a signal before the signals table says it was available.

    Independent of how the panel was joined: each used signal is looked up again in
    ``signals`` by (symbol, its own timestamp), and its ``available_at`` there is compared with
    the bar's close. A panel built by a join on the wrong key, or a signal whose availability
    was changed after the join, is caught here (a check that only compares the panel's own
    ``signal_available_at`` with ``timestamp`` cannot fail for an as-of join on that column).

    Parameters
    ----------
    panel : pl.DataFrame
        ``timestamp`` (bar close, ``Datetime[us, UTC]``), ``symbol`` and ``signal_time_col``
        (the used signal's own timestamp; null where none is used).
    signals : pl.DataFrame
        The signals table: ``timestamp``, ``symbol``, ``available_at`` (UTC), unique
        (timestamp, symbol).
    signal_time_col : str
        Panel column holding the used signal's timestamp.

    Returns
    -------
    pl.DataFrame
        ``row_index`` (position in ``panel``), ``timestamp``, ``symbol``, ``signal_time_col``
        and ``available_at`` (from ``signals``; null when the used signal is not in the table,
        which is a violation too), in panel order; empty when every use is after availability.

    Raises
    ------
    ValueError
        Missing or non-UTC columns, or duplicated (timestamp, symbol) in ``signals``.
    """
    what = "signal_uses_before_available"
    for column in ("timestamp", signal_time_col):
        _require_utc(panel, column, what)
    for column in ("timestamp", "available_at"):
        _require_utc(signals, column, what)
    for frame, name in ((panel, "panel"), (signals, "signals")):
        if "symbol" not in frame.columns:
            raise ValueError(f"{what}: {name} has no 'symbol' column ({frame.columns})")
    dup = duplicated_rows(signals.select("timestamp", "symbol"), ["timestamp", "symbol"])
    if dup.height:
        raise ValueError(
            f"{what}: {dup.height} signal rows share a (timestamp, symbol) key: {_first_rows(dup)}"
        )
    lookup = signals.select(
        pl.col("timestamp").alias(signal_time_col),
        pl.col("symbol").cast(pl.String),
        pl.col("available_at").alias("__available_at"),
    )
    uses = (
        panel.select("timestamp", pl.col("symbol").cast(pl.String), signal_time_col)
        .with_row_index("row_index")
        .filter(pl.col(signal_time_col).is_not_null())
    )
    checked = uses.join(lookup, on=[signal_time_col, "symbol"], how="left", maintain_order="left")
    return checked.filter(
        pl.col("__available_at").is_null() | (pl.col("__available_at") > pl.col("timestamp"))
    ).rename({"__available_at": "available_at"})


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


# --------------------------------------------------------------------------------------------
# As-of joins with a staleness limit, reporting how every left row got (or did not get) a value.


@dataclass(frozen=True)
class AsofJoin:
    """Result of :func:`asof_join_backward`.

    Attributes
    ----------
    frame : pl.DataFrame
        The left rows (same count and order as given) with the right columns joined: the right
        key column under its own name (null when no right row was found) and the value columns,
        plus the status column (String, see ``counts``).
    counts : dict[str, int]
        Rows per status: ``fresh`` (first left row of its group to see that right row),
        ``filled`` (a right row already seen by an earlier left row of the same group, i.e.
        forward-filled, within the staleness limit), ``stale`` (the latest right row is older than
        ``max_staleness``; its values are set to null, its key is kept so the age is visible),
        ``missing`` (no right row at or before the left key).
    """

    frame: pl.DataFrame
    counts: dict[str, int]


ASOF_STATUSES: tuple[str, ...] = ("fresh", "filled", "stale", "missing")


def asof_join_backward(
    left: pl.DataFrame,
    right: pl.DataFrame,
    *,
    left_on: str,
    right_on: str,
    by: str | None = None,
    max_staleness: timedelta | str | None = None,
    max_fill_bars: int | None = None,
    status_col: str = "asof_status",
) -> AsofJoin:
    """Backward as-of join: each left row sees the latest right row with key ≤ its key.

    Used to put values onto bars only once they are available: ``left_on`` is the bar timestamp
    (close) and ``right_on`` the right table's availability time, so a right row stamped after a
    bar's close is not visible at that bar (a row stamped exactly at the close is). Works across
    frequencies (daily signals on minute bars, daily VIX on hourly bars).

    Parameters
    ----------
    left : pl.DataFrame
        Bars; must have ``left_on`` (no nulls) and ``by`` if given. Any order; the output keeps
        it.
    right : pl.DataFrame
        Values to attach; must have ``right_on`` and ``by``. Every right column except ``by``
        is joined (the key keeps its name, so name it for the output, e.g.
        ``"signal_available_at"``) and must not clash with a left column.
    left_on, right_on : str
        Datetime key columns with the same dtype.
    by : str, optional
        Group column (e.g. ``"symbol"``) matched exactly before the as-of search.
    max_staleness : timedelta or str, optional
        Forward-fill limit: a right row older than this (``left key − right key >
        max_staleness``) is not used: its value columns are null and the status is ``stale``.
        ``None``: no limit.
    max_fill_bars : int, optional
        Forward-fill limit in left rows (bars) of the same group: the first bar to see a right
        row is bar 0 of its use, and a bar more than ``max_fill_bars`` uses later is ``stale``
        (values null). ``0`` allows only fresh values. ``None``: no limit. Both limits may be
        given; either one makes a value stale.
    status_col : str
        Name of the added String status column.

    Returns
    -------
    AsofJoin
        The joined frame (row count equals ``left.height``) and the count per status.

    Raises
    ------
    ValueError
        Missing key columns, clashing column names, null left keys, null or duplicate right keys
        (per ``by``): an ambiguous or unplaceable row is an error, not silently dropped.
    """
    group = [by] if by else []
    for frame, key, name in ((left, left_on, "left"), (right, right_on, "right")):
        missing = [c for c in [key, *group] if c not in frame.columns]
        if missing:
            raise ValueError(f"asof_join_backward: {name} frame lacks columns {missing}")
    joined_cols = [c for c in right.columns if c not in group]
    value_cols = [c for c in joined_cols if c != right_on]
    clash = [c for c in [*joined_cols, status_col] if c in left.columns]
    if clash:
        raise ValueError(f"asof_join_backward: right columns clash with left columns: {clash}")
    null_left = left.with_row_index("row_index").filter(pl.col(left_on).is_null())
    if null_left.height:
        raise ValueError(
            f"asof_join_backward: {null_left.height} left rows have a null {left_on!r}: "
            f"{_first_rows(null_left)}"
        )
    keys = [right_on, *group]
    null_keys = right.filter(pl.any_horizontal(pl.col(keys).is_null()))
    if null_keys.height:
        raise ValueError(
            f"asof_join_backward: {null_keys.height} right rows have a null key {keys}: "
            f"{_first_rows(null_keys)}"
        )
    dup = duplicated_rows(right, keys)
    if dup.height:
        raise ValueError(
            f"asof_join_backward: {dup.height} right rows share a key {keys}; the as-of match "
            f"would be ambiguous: {_first_rows(dup.sort(keys))}"
        )

    # join_asof with ``by`` needs both sides sorted by the time key only (not by group), which
    # prepared tables already are; the within-group order is then time order too.
    order, key = "__asof_left_order", "__asof_key"
    lhs = left.with_row_index(order)
    left_sorted = bool(lhs.select(pl.col(left_on).is_sorted()).item())
    if not left_sorted:
        lhs = lhs.sort(left_on, maintain_order=True)
    rhs = right.with_columns(pl.col(right_on).alias(key)).sort(key, maintain_order=True)
    joined = lhs.join_asof(
        rhs, left_on=left_on, right_on=key, by=by, strategy="backward", check_sortedness=False
    )
    if key in joined.columns:
        joined = joined.drop(key)

    is_missing = pl.col(right_on).is_null()
    if max_fill_bars is not None and max_fill_bars < 0:
        raise ValueError(f"max_fill_bars must be >= 0 or None, got {max_fill_bars}")
    is_stale = pl.lit(False)
    if max_staleness is not None:
        is_stale = is_stale | ((pl.col(left_on) - pl.col(right_on)) > parse_duration(max_staleness))
    if max_fill_bars is not None:
        # Rows sharing a right key are contiguous within a group (sorted by left key).
        uses = pl.int_range(pl.len()).over([*group, right_on])
        is_stale = is_stale | (uses > max_fill_bars)
    prev_key = pl.col(right_on).shift(1)
    if by:
        prev_key = prev_key.over(by)
    joined = joined.with_columns(
        pl.when(is_missing)
        .then(pl.lit("missing"))
        .when(is_stale)
        .then(pl.lit("stale"))
        .when(prev_key == pl.col(right_on))
        .then(pl.lit("filled"))
        .otherwise(pl.lit("fresh"))
        .alias(status_col)
    )
    if value_cols and (max_staleness is not None or max_fill_bars is not None):
        stale = pl.col(status_col) == "stale"
        joined = joined.with_columns(
            [pl.when(stale).then(None).otherwise(pl.col(c)).alias(c) for c in value_cols]
        )
    if not left_sorted:
        joined = joined.sort(order)
    joined = joined.drop(order)
    return AsofJoin(frame=joined, counts=status_counts(joined, status_col))


def status_counts(frame: pl.DataFrame, status_col: str) -> dict[str, int]:
    """Count rows per as-of status (every status in ``ASOF_STATUSES`` present, zeros included)."""
    counts = dict.fromkeys(ASOF_STATUSES, 0)
    for status, n in frame.group_by(status_col).len().iter_rows():
        counts[str(status)] = int(n)
    return counts


# --------------------------------------------------------------------------------------------
# Staleness: how many bars old a signal is where it is used.

SIGNAL_AGE_COLUMN = "signal_age_bars"
_USED_STATUSES = ("fresh", "filled")


def signal_age_bars(panel: pl.DataFrame, *, signal_time_col: str = "signal_timestamp") -> pl.Series:
    """Age, in bars of its own symbol, of the signal each panel row sees.

    The age of the signal used at bar ``t`` of symbol ``s`` is the number of ``s``'s bars that
    closed after the signal's own ``timestamp`` up to and including ``t``. A daily
    ``market_close`` signal is 0 bars old at its own bar and 1 bar old at the next; a
    ``next_day`` signal is first used when 1 bar old. A signal stamped between two bars counts
    from the next bar, and one stamped before the symbol's first bar counts every bar.

    Parameters
    ----------
    panel : pl.DataFrame
        One row per (timestamp, symbol) (the market panel): ``timestamp`` (``Datetime[us,
        UTC]``, bar close), ``symbol`` and ``signal_time_col`` (the timestamp of the signal row
        used, null where none). Any row order.

    signal_time_col : str
        Column holding the used signal's own timestamp (``panel.build_market_panel`` names it
        ``signal_timestamp``).

    Returns
    -------
    pl.Series
        ``signal_age_bars`` (Int64), one value per panel row in input order; null where no
        signal is used.

    Raises
    ------
    ValueError
        Missing columns, a column that is not a UTC datetime, or a duplicated (timestamp,
        symbol) key (the bar count would be ambiguous).
    """
    for column in ("timestamp", signal_time_col):
        _require_utc(panel, column, "signal_age_bars")
    if "symbol" not in panel.columns:
        raise ValueError(f"signal_age_bars: column 'symbol' is missing ({panel.columns})")
    dup = duplicated_rows(panel.select("timestamp", "symbol"), ["timestamp", "symbol"])
    if dup.height:
        raise ValueError(
            f"signal_age_bars: {dup.height} rows share a (timestamp, symbol) key: "
            f"{_first_rows(dup.sort('timestamp', 'symbol'))}"
        )
    order, bar_no = "__age_row", "__age_bar_no"
    bars = panel.select("timestamp", "symbol", signal_time_col).with_row_index(order)
    # Bar number of every row within its symbol (0-based, in time order).
    bars = bars.with_columns(
        pl.col("timestamp").rank("ordinal").over("symbol").cast(pl.Int64).sub(1).alias(bar_no)
    )
    # Bar number of the last bar of the symbol closing at or before each distinct signal time;
    # done once per (symbol, signal time), not once per row.
    used = bars.select("symbol", signal_time_col).drop_nulls().unique().sort(signal_time_col)
    grid = bars.select("symbol", "timestamp", bar_no).sort("timestamp")
    signal_bar = "__age_signal_bar"
    placed = used.join_asof(
        grid.rename({bar_no: signal_bar}),
        left_on=signal_time_col,
        right_on="timestamp",
        by="symbol",
        strategy="backward",
        check_sortedness=False,
    ).select("symbol", signal_time_col, pl.col(signal_bar).fill_null(-1))
    age = (
        bars.join(placed, on=["symbol", signal_time_col], how="left", maintain_order="left")
        .sort(order)
        .select((pl.col(bar_no) - pl.col(signal_bar)).alias(SIGNAL_AGE_COLUMN))
    )
    return age.to_series()


def stale_signal_uses(
    panel: pl.DataFrame,
    max_age_bars: int,
    *,
    signal_time_col: str = "signal_timestamp",
    value_columns: list[str] | None = None,
    status_col: str = "signal_status",
) -> pl.DataFrame:
    """Rows where a signal more than ``max_age_bars`` bars old is used as if it were fresh.

    A forward-filled signal is fine for a few bars; past a limit the strategy is trading on old
    information without knowing it. This check reports every such use rather than trusting
    the join's fill limit. The age is :func:`signal_age_bars` (bars of the same symbol since the
    signal's own timestamp).

    A row *uses* its signal when:

    - ``status_col`` is present: its status is ``fresh`` or ``filled`` (``stale`` rows had their
      values nulled by the join and are not uses);
    - else, ``value_columns`` given: any of them is non-null;
    - else: ``signal_time_col`` is non-null.

    Parameters
    ----------
    panel : pl.DataFrame
        The market panel (see :func:`signal_age_bars` for the columns).
    max_age_bars : int
        Largest allowed age (>= 0). ``0``: a signal may only be used at the bar it belongs to.
    signal_time_col : str
        The used signal's own timestamp column.
    value_columns : list of str, optional
        Signal value columns deciding whether a row uses a signal (see above).
    status_col : str
        As-of status column, used when present.

    Returns
    -------
    pl.DataFrame
        The offending rows: ``row_index`` (UInt32, position in ``panel``), every panel column,
        and ``signal_age_bars`` (Int64); empty when no stale signal is used. In input order.

    Raises
    ------
    ValueError
        ``max_age_bars`` negative or not an int; missing or mistyped columns; duplicated keys.
    """
    if isinstance(max_age_bars, bool) or not isinstance(max_age_bars, int) or max_age_bars < 0:
        raise ValueError(f"max_age_bars must be an int >= 0, got {max_age_bars!r}")
    age = signal_age_bars(panel, signal_time_col=signal_time_col)
    if status_col in panel.columns:
        uses = pl.col(status_col).is_in(list(_USED_STATUSES))
    elif value_columns:
        absent = [c for c in value_columns if c not in panel.columns]
        if absent:
            raise ValueError(f"stale_signal_uses: value columns {absent} missing")
        uses = pl.any_horizontal(pl.col(c).is_not_null() for c in value_columns)
    else:
        uses = pl.col(signal_time_col).is_not_null()
    return (
        panel.with_row_index("row_index")
        .with_columns(age)
        .filter(uses.fill_null(False) & (pl.col(SIGNAL_AGE_COLUMN) > max_age_bars))
    )
