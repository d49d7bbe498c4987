"""Point-in-time universe: index membership spells joined as of each bar (``data.universe``).

A membership table has one row per spell: ``symbol``, ``start_date`` (first day in the index),
``end_date`` (last day in the index; null = still a member). A symbol may have several spells.
A bar of ``symbol`` is *in the universe* when its New York session date ``d`` lies in one of the
symbol's spells, ``start_date <= d <= end_date``. A spell is taken as known from its start date
(index changes are announced days before they take effect), so no bar sees a membership it
could not have known at its close.

The built-in strategies rank members only: :func:`mask_outside_universe` sets the ranked signal
to null on bars outside the universe, so the engine (compiled TopN and Python loop alike) never
ranks, and hence never buys, a non-member; a holding that leaves the index is no longer ranked
and is sold at the next rebalance (``on_exit_universe: hold``), or at the next bar's open with
``close_next_open`` (:class:`ExitOutsideUniverse`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

import engine

__all__ = [
    "IN_UNIVERSE",
    "MEMBERSHIP_COLUMNS",
    "ExitOutsideUniverse",
    "entries_outside_universe",
    "in_universe_flags",
    "load_membership",
    "mask_outside_universe",
    "survivorship_gap",
    "unmatched_symbols",
]

IN_UNIVERSE = "in_universe"
"""Panel column: 1.0 when the bar's symbol is an index member on the bar's session, else 0.0
(Float64 so the engine carries it as an indicator column)."""

MEMBERSHIP_COLUMNS = ("symbol", "start_date", "end_date")
_NY = "America/New_York"
_FAR = date(9999, 12, 31)


def load_membership(path: str | Path, renames: Mapping[str, str] | None = None) -> pl.DataFrame:
    """Read and check a membership table.

    Parameters
    ----------
    path : str or Path
        Parquet or CSV with ``symbol`` (String), ``start_date``, ``end_date`` (Date or ISO text;
        ``end_date`` null = still a member).
    renames : mapping, optional
        ``{price-file symbol: membership symbol}`` for tickers renamed since (the S&P file's
        ``PCLN`` is the table's ``BKNG``): the membership rows of the new name are given the
        price file's name.

    Returns
    -------
    pl.DataFrame
        ``symbol`` (String), ``start_date``, ``end_date`` (Date; null end kept), sorted by
        (symbol, start_date).

    Raises
    ------
    ValueError
        Missing columns, null symbol or start date, ``end_date < start_date`` or overlapping
        spells of one symbol (rows named), or a rename whose target is not in the table.
    """
    path = Path(path)
    raw = (
        pl.read_csv(path, try_parse_dates=True) if path.suffix == ".csv" else pl.read_parquet(path)
    )
    missing = [c for c in MEMBERSHIP_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"data.universe.membership {path}: missing columns {missing}")
    table = raw.select(
        pl.col("symbol").cast(pl.String),
        pl.col("start_date").cast(pl.Date),
        pl.col("end_date").cast(pl.Date),
    ).with_row_index("row")
    bad = table.filter(
        pl.col("symbol").is_null()
        | pl.col("start_date").is_null()
        | (pl.col("end_date") < pl.col("start_date"))
    )
    if bad.height:
        raise ValueError(
            f"data.universe.membership {path}: {bad.height} rows have a null symbol or start_date "
            f"or end before start: {bad.head(5).to_dicts()}"
        )
    table = table.sort("symbol", "start_date")
    previous_end = pl.col("end_date").fill_null(_FAR).shift(1).over("symbol")
    overlap = table.filter(pl.col("start_date") <= previous_end)
    if overlap.height:
        raise ValueError(
            f"data.universe.membership {path}: {overlap.height} spells start before the previous "
            f"spell of their symbol ended: {overlap.head(5).to_dicts()}"
        )
    if renames:
        known = set(table["symbol"].to_list())
        absent = {k: v for k, v in renames.items() if v not in known}
        if absent:
            raise ValueError(
                f"data.universe.renames: targets not in the membership table {path}: {absent}"
            )
        back = {new: old for old, new in renames.items()}
        table = table.with_columns(pl.col("symbol").replace(back))
    return table.drop("row")


def _session_date(timestamp: pl.Expr) -> pl.Expr:
    return timestamp.dt.convert_time_zone(_NY).dt.date()


def in_universe_flags(bars: pl.DataFrame, membership: pl.DataFrame) -> pl.Series:
    """Whether each bar's symbol is a member on the bar's New York session date.

    As-of join: for each bar, the symbol's latest spell with ``start_date <= date``
    (``join_asof`` backward by symbol); the bar is in when that spell has not ended
    (``end_date`` null or ``>= date``). Spells do not overlap (:func:`load_membership`), so the
    latest-starting spell is the only candidate.

    Parameters
    ----------
    bars : pl.DataFrame
        ``timestamp`` (Datetime UTC, bar close) and ``symbol``.
    membership : pl.DataFrame
        From :func:`load_membership`.

    Returns
    -------
    pl.Series
        Boolean ``in_universe``, one per bar, in ``bars``' order (symbols absent from the
        table are False).
    """
    # The session date of each distinct stamp (a daily panel has ~250 a year), joined back.
    stamps = bars.select(pl.col("timestamp").unique())
    dates = stamps.with_columns(_session_date(pl.col("timestamp")).alias("_date"))
    keyed = bars.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"),
        pl.col("symbol").cast(pl.String),
        "timestamp",
    ).join(dates, on="timestamp", how="left", maintain_order="left")
    in_order = keyed["_date"].is_sorted()  # the prices contract is in time order
    if not in_order:
        keyed = keyed.sort("_date")
    spells = membership.select(
        "symbol", pl.col("start_date").alias("_date"), "start_date", "end_date"
    ).sort("_date")
    joined = keyed.join_asof(
        spells, on="_date", by="symbol", strategy="backward", check_sortedness=False
    )  # both sides are sorted by _date
    if not in_order:
        joined = joined.sort("_row")
    inside = pl.col("start_date").is_not_null() & (
        pl.col("end_date").is_null() | (pl.col("end_date") >= pl.col("_date"))
    )
    return joined.select(inside.alias(IN_UNIVERSE)).to_series()


def mask_outside_universe(
    panel: pl.DataFrame, membership: pl.DataFrame, columns: Sequence[str]
) -> pl.DataFrame:
    """Add ``in_universe`` (Float64 1/0) and null ``columns`` on bars outside the universe.

    ``columns`` are the values a strategy ranks (the signal columns and the strategy's
    ``signal``): a null is not ranked by the built-in strategies, so a non-member is never
    bought. Prices, other indicators and the bars themselves are unchanged.
    """
    flags = in_universe_flags(panel, membership)
    present = [c for c in dict.fromkeys(columns) if c in panel.columns]
    return panel.with_columns(
        *[pl.when(flags).then(pl.col(c)).otherwise(None).alias(c) for c in present],
        flags.cast(pl.Float64).alias(IN_UNIVERSE),
    )


def entries_outside_universe(trades: pl.DataFrame, membership: pl.DataFrame) -> pl.DataFrame:
    """Trades whose entry was decided on a bar where the symbol was not an index member.

    Uses each trade's ``decision_timestamp`` (the close of the bar whose signal placed the
    entry order) and its New York session date.

    Returns
    -------
    pl.DataFrame
        ``trade_id``, ``symbol``, ``decision_timestamp``, ``entry_timestamp`` of the offending
        trades (empty when every entry was inside).
    """
    cols = ["trade_id", "symbol", "decision_timestamp", "entry_timestamp"]
    if trades.height == 0:
        return trades.select([c for c in cols if c in trades.columns])
    flags = in_universe_flags(
        trades.select(pl.col("decision_timestamp").alias("timestamp"), "symbol"), membership
    )
    return trades.filter(~flags).select(cols)


def unmatched_symbols(prices: pl.DataFrame, membership: pl.DataFrame) -> list[str]:
    """Price-file symbols with no spell in the membership table (after renames), sorted: they
    are never in the universe; listed, never dropped silently."""
    known = membership["symbol"].unique()
    have = prices.select(pl.col("symbol").cast(pl.String).unique()).to_series()
    return sorted(have.filter(~have.is_in(known.implode())).to_list())


def survivorship_gap(
    prices: pl.DataFrame, membership: pl.DataFrame, sessions: Sequence[date] | None = None
) -> dict[str, Any]:
    """What the price file cannot see of the index: members without prices, per year.

    Member-days are (session, symbol) pairs with the symbol in the index on that session, over
    the sessions of the price file (its distinct New York dates, or ``sessions``). A member-day
    is *unseen* when the price file has no bar of that symbol on that session.

    Returns
    -------
    dict
        ``by_year``: pl.DataFrame with ``year``, ``members`` (symbols in the index on some
        session of that year), ``members_without_prices`` (of those, no bar that year),
        ``member_days``, ``unseen_member_days`` and ``unseen_share`` (fraction);
        ``unseen_share``: the share over all years; ``members_without_prices``: their
        symbols (sorted); ``unmatched_symbols``: :func:`unmatched_symbols`.
    """
    have = prices.select(
        pl.col("symbol").cast(pl.String), _session_date(pl.col("timestamp")).alias("date")
    ).unique()
    days = (
        pl.Series("date", list(sessions), dtype=pl.Date)
        if sessions is not None
        else have["date"].unique().sort()
    )
    first, last = days.min(), days.max()
    spells = membership.filter(
        (pl.col("start_date") <= last)
        & (pl.col("end_date").is_null() | (pl.col("end_date") >= first))
    )
    member_days = (
        pl.DataFrame({"date": days})
        .join(spells, how="cross")
        .filter(
            (pl.col("date") >= pl.col("start_date"))
            & (pl.col("end_date").is_null() | (pl.col("date") <= pl.col("end_date")))
        )
        .select("symbol", "date")
        .join(have.with_columns(pl.lit(True).alias("seen")), on=["symbol", "date"], how="left")
        .with_columns(pl.col("seen").fill_null(False), pl.col("date").dt.year().alias("year"))
    )
    per_symbol_year = member_days.group_by("year", "symbol").agg(pl.col("seen").any())
    by_year = (
        member_days.group_by("year")
        .agg(pl.len().alias("member_days"), (~pl.col("seen")).sum().alias("unseen_member_days"))
        .join(
            per_symbol_year.group_by("year").agg(
                pl.len().alias("members"),
                (~pl.col("seen")).sum().alias("members_without_prices"),
            ),
            on="year",
        )
        .with_columns((pl.col("unseen_member_days") / pl.col("member_days")).alias("unseen_share"))
        .select(
            "year",
            "members",
            "members_without_prices",
            "member_days",
            "unseen_member_days",
            "unseen_share",
        )
        .sort("year")
    )
    never = per_symbol_year.group_by("symbol").agg(pl.col("seen").any()).filter(~pl.col("seen"))
    total = member_days.height
    return {
        "by_year": by_year,
        "unseen_share": float((~member_days["seen"]).sum() / total) if total else 0.0,
        "members_without_prices": sorted(never["symbol"].to_list()),
        "unmatched_symbols": unmatched_symbols(prices, membership),
    }


class ExitOutsideUniverse(engine.RiskRule):
    """Exit a position on the first bar its symbol is outside the universe (``in_universe``
    indicator 0): a market order decided at that bar's close, filled at the next open
    (``on_exit_universe: close_next_open``).

    A pipeline-side rule (not in the engine): the compiled fast path has no form for it, so an
    experiment using it runs in the engine's Python loop.
    """

    def __init__(self, priority: int = 95) -> None:
        super().__init__(priority)

    def evaluate(self, context: Any) -> engine.RiskDecision:
        flag = context.features.get(IN_UNIVERSE)
        if flag is not None and flag == 0.0:
            return engine.RiskDecision.exit("left the universe")
        return engine.RiskDecision.hold()
