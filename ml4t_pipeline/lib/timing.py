"""When a value becomes usable: signal availability and look-ahead checks.

A value may be used at a bar only if it was available by that bar's close, so a value stamped
``available_at`` becomes visible at the first bar whose close is at or after ``available_at``
(a backward as-of join on availability, :mod:`ml4t_pipeline.lib.asof`).
:func:`signal_available_at` gives every signal row that time, by rule
(``data.signal_available_at``) and from its own column; :func:`check_no_lookahead` and
:func:`signal_uses_before_available` find uses before it.

The time keeping this rests on lives beside it, one concept per module:

- :mod:`ml4t_pipeline.lib.stamps`: bar-close stamps (daily dates at their session's real close,
  intraday bar starts moved to the close);
- :mod:`ml4t_pipeline.lib.signal_stamps`: how a signal file's stamps are read and whether each
  is a bar close;
- :mod:`ml4t_pipeline.lib.asof`: as-of joins with staleness limits, signal age;
- :mod:`ml4t_pipeline.lib.calendars`: exchange sessions and closes.

Their public names are importable from here too, as before the split.
"""

from __future__ import annotations

from typing import Literal

import polars as pl

from ml4t_pipeline.lib.asof import (
    ASOF_STATUSES,
    SIGNAL_AGE_COLUMN,
    AsofJoin,
    asof_join_backward,
    signal_age_bars,
    stale_signal_uses,
    status_counts,
)
from ml4t_pipeline.lib.calendars import DEFAULT_CALENDAR
from ml4t_pipeline.lib.signal_stamps import (
    SIGNAL_STAMP_MODES,
    STAMP_ADVICE,
    STAMP_PLACEMENTS,
    SignalStamps,
    check_signal_stamps,
    misaligned_signal_stamps,
    misaligned_stamps_message,
    signal_stamp_offsets,
    signal_stamp_summary,
    signal_stamps_utc,
)
from ml4t_pipeline.lib.stamps import (
    EXCHANGE_TZ,
    UTC_DATETIME,
    bar_start_to_close,
    daily_close_utc,
    duplicated_rows,
    first_rows,
    is_sorted_by_time_symbol,
    local_date,
    market_open_utc,
    naive_dates_to_close_utc,
    parse_duration,
    require_utc,
    vix_close_utc,
)

# benchmarks/test_data_pipeline.py times the plain 16:00 stamp against the calendar's.
from ml4t_pipeline.lib.stamps import session_time_utc as _session_time_utc  # noqa: E402, F401

__all__ = [
    "ASOF_STATUSES",
    "EXCHANGE_TZ",
    "SIGNAL_AGE_COLUMN",
    "SIGNAL_STAMP_MODES",
    "SIGNAL_TIMING_MODES",
    "STAMP_ADVICE",
    "STAMP_PLACEMENTS",
    "UTC_DATETIME",
    "AsofJoin",
    "SignalStamps",
    "SignalTiming",
    "asof_join_backward",
    "bar_start_to_close",
    "check_no_lookahead",
    "check_signal_stamps",
    "daily_close_utc",
    "duplicated_rows",
    "is_sorted_by_time_symbol",
    "market_open_utc",
    "misaligned_signal_stamps",
    "misaligned_stamps_message",
    "naive_dates_to_close_utc",
    "parse_duration",
    "signal_age_bars",
    "signal_available_at",
    "signal_stamp_offsets",
    "signal_stamp_summary",
    "signal_stamps_utc",
    "signal_uses_before_available",
    "stale_signal_uses",
    "status_counts",
    "vix_close_utc",
]

SignalTiming = Literal["market_close", "available_at", "market_open", "next_day"]
SIGNAL_TIMING_MODES: tuple[str, ...] = ("market_close", "available_at", "market_open", "next_day")
"""The values accepted by ``signal_available_at(mode=...)`` (``data.signal_available_at``)."""


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
            f"known is not stated, so they cannot be used): {first_rows(nulls)}"
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
        rule = market_open_utc(local_date(pl.col("timestamp"), calendar), calendar)
    else:  # next_day
        local = local_date(pl.col("timestamp"), calendar)
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
    require_utc(used, "timestamp", "check_no_lookahead")
    require_utc(used, "available_at", "check_no_lookahead")
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
        require_utc(panel, column, what)
    for column in ("timestamp", "available_at"):
        require_utc(signals, column, what)
    for frame, name in ((panel, "panel"), (signals, "signals")):
        if "symbol" not in frame.columns:
            raise ValueError(f"{what}: {name} has no 'symbol' column ({frame.columns})")
    dup = duplicated_rows(signals.select("timestamp", "symbol"), ["timestamp", "symbol"])
    if dup.height:
        raise ValueError(
            f"{what}: {dup.height} signal rows share a (timestamp, symbol) key: {first_rows(dup)}"
        )
    # Lazy: the symbols are cast after the filter and the join and filter run as one query
    # (eagerly, 0.6 s and +265 MB RSS on the S&P panel; lazily 0.1 s and +66 MB).
    lookup = signals.lazy().select(
        pl.col("timestamp").alias(signal_time_col),
        pl.col("symbol").cast(pl.String),
        pl.col("available_at").alias("__available_at"),
    )
    uses = (
        panel.lazy()
        .select("timestamp", "symbol", signal_time_col)
        .with_row_index("row_index")
        .filter(pl.col(signal_time_col).is_not_null())
        .with_columns(pl.col("symbol").cast(pl.String))
    )
    # The join keeps no row order (keeping the panel's order doubled the check's cost on the
    # S&P panel: 150 vs 70 ms CPU); the few offending rows are put back in panel order by
    # their unique row_index afterwards.
    checked = uses.join(lookup, on=[signal_time_col, "symbol"], how="left", maintain_order="none")
    return (
        checked.filter(
            pl.col("__available_at").is_null() | (pl.col("__available_at") > pl.col("timestamp"))
        )
        .sort("row_index")
        .rename({"__available_at": "available_at"})
        .collect()
    )
