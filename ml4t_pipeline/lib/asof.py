"""As-of joins that put values onto bars only once they are available, and how old a used
signal is (in bars of its symbol).

:func:`asof_join_backward` reports how every bar got (or did not get) its value (``fresh``,
``filled``, ``stale``, ``missing``); :func:`signal_age_bars` and :func:`stale_signal_uses` check
that a forward-filled signal is not used past a limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import polars as pl

from ml4t_pipeline.lib.stamps import duplicated_rows, first_rows, parse_duration, require_utc

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
            f"{first_rows(null_left)}"
        )
    keys = [right_on, *group]
    null_keys = right.filter(pl.any_horizontal(pl.col(keys).is_null()))
    if null_keys.height:
        raise ValueError(
            f"asof_join_backward: {null_keys.height} right rows have a null key {keys}: "
            f"{first_rows(null_keys)}"
        )
    dup = duplicated_rows(right, keys)
    if dup.height:
        raise ValueError(
            f"asof_join_backward: {dup.height} right rows share a key {keys}; the as-of match "
            f"would be ambiguous: {first_rows(dup.sort(keys))}"
        )

    # join_asof with ``by`` needs both sides sorted by the time key only (not by group), which
    # prepared tables already are; the within-group order is then time order too.
    # Only the keys go through the join; the joined columns are put beside ``left`` at the end,
    # so its other columns are not copied (a join would gather every column of a wide panel:
    # +100 MB on the S&P panel).
    order, key = "__asof_left_order", "__asof_key"
    lhs = left.select(left_on, *group).with_row_index(order)
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
        # Rows sharing a right key are contiguous within a group (sorted by left key), so a
        # row's use number is its distance from the first row of its run of equal keys: a few
        # passes per group instead of hashing every (group, key) pair (0.4 s on the S&P panel).
        position = pl.int_range(pl.len())
        earlier = pl.col(right_on).shift(1)
        if by:
            position, earlier = position.over(by), earlier.over(by)
        starts_run = (position == 0) | pl.col(right_on).ne_missing(earlier)
        run_start = pl.when(starts_run).then(position).forward_fill()
        uses = position - (run_start.over(by) if by else run_start)
        is_stale = is_stale | (uses > max_fill_bars)
    prev_key = pl.col(right_on).shift(1)
    if by:
        prev_key = prev_key.over(by)
    # One lazy query for the status and the stale values: the per-group windows it shares
    # (the previous key, the position in the group) are planned together.
    query = joined.lazy().with_columns(
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
        query = query.with_columns(
            [pl.when(stale).then(None).otherwise(pl.col(c)).alias(c) for c in value_cols]
        )
    joined = query.collect()
    if not left_sorted:
        joined = joined.sort(order)
    joined = pl.concat([left, joined.drop(order, left_on, *group)], how="horizontal")
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
        require_utc(panel, column, "signal_age_bars")
    if "symbol" not in panel.columns:
        raise ValueError(f"signal_age_bars: column 'symbol' is missing ({panel.columns})")
    dup = duplicated_rows(panel.select("timestamp", "symbol"), ["timestamp", "symbol"])
    if dup.height:
        raise ValueError(
            f"signal_age_bars: {dup.height} rows share a (timestamp, symbol) key: "
            f"{first_rows(dup.sort('timestamp', 'symbol'))}"
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
