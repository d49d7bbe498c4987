"""How a signal file's own ``timestamp`` is read, and whether each stamp is a bar close.

A signal file's stamps are read under one of three conventions (``data.signal_timestamps``:
``bar_close``, ``session_date``, ``instant``; :func:`signal_stamps_utc`), and each stamp is then
mapped to the price bar it belongs to (:func:`signal_stamp_offsets`): a stamp that is not a bar
close, such as midnight ``Asia/Tokyo`` (hours before the previous New York close), is refused
unless the stamps are declared instants (:func:`check_signal_stamps`). When a stamped score
becomes *usable* is :mod:`ml4t_pipeline.lib.timing`'s business.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import polars as pl

from ml4t_pipeline.lib.calendars import DEFAULT_CALENDAR
from ml4t_pipeline.lib.stamps import (
    UTC_DATETIME,
    daily_close_utc,
    first_rows,
    naive_dates_to_close_utc,
    require_utc,
)

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
            f"{what}: {null_ts.height} signal rows have a null timestamp: {first_rows(null_ts)}"
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
                f"{first_rows(off)}"
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
    require_utc(closes_frame, "bar_close", "signal_stamp_offsets: bar_closes")
    closes_frame = closes_frame.drop_nulls().unique().sort("bar_close")
    # Each run of equal stamps (a model's scores: ~500 rows per bar) is formatted once and
    # gathered back to its rows: formatting every row was most of this function's time.
    runs = signals.select(pl.col("timestamp"), pl.col("timestamp").rle_id().alias("run"))
    texts = runs.filter(pl.col("run").is_first_distinct()).select(
        _stamp_text(signals.schema["timestamp"])
    )
    written = signals.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("row_index"),
        pl.col("symbol").cast(pl.String),
    ).with_columns(texts.to_series().gather(runs.get_column("run")).alias("stamp"))
    read = signal_stamps_utc(
        signals.select("timestamp"), stamps, what="signal_stamp_offsets", calendar=calendar
    )
    rows = written.with_columns(read.get_column("timestamp"))
    in_time_order = rows.get_column("timestamp").is_sorted()  # then no sort there and back
    mapped = (rows if in_time_order else rows.sort("timestamp")).join_asof(
        closes_frame,
        left_on="timestamp",
        right_on="bar_close",
        strategy="forward",
        check_sortedness=False,
    )
    if not in_time_order:
        mapped = mapped.sort("row_index")
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
