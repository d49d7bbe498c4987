"""Market mechanics' lines beside the trades' P&L: dividends, interest and borrow fees per month."""

from __future__ import annotations

from typing import Any

import polars as pl

from ml4t_pipeline.lib.attribution.tables import TOTAL

CARRY_COLUMNS = ("dividends", "interest", "borrow_fee")
"""Per-bar cash lines of ``portfolio_states`` under market mechanics (engine/mechanics/)."""


def carry_attribution(portfolio_states: pl.DataFrame) -> pl.DataFrame | None:
    """Dividends, interest and borrow fees per calendar month (UTC), beside the trades' P&L.

    These cash lines are not in any trade's ``pnl_net`` (a dividend is paid to a position,
    not realised by a fill), so they are their own lines: ``dividends`` (credited to longs,
    debited from shorts, booked on the ex-date), ``interest`` (on cash: + earned, − paid on
    negative cash) and ``borrow_fee`` (≤ 0), all currency, and ``carry_total`` = their sum.
    Final equity − initial cash = Σ trades' pnl_net + open positions' unrealized P&L +
    ``carry_total`` of the :data:`TOTAL` row (+ cash in lieu of split fractions).

    Returns
    -------
    pl.DataFrame or None
        ``month``, the three lines and ``carry_total``, in month order, then :data:`TOTAL`;
        ``None`` when the states have no such columns (a run without market mechanics).
    """
    if not all(c in portfolio_states.columns for c in CARRY_COLUMNS):
        return None
    ts = pl.col("timestamp")
    if getattr(portfolio_states.schema["timestamp"], "time_zone", None):
        ts = ts.dt.convert_time_zone("UTC")
    frame = portfolio_states.select(ts.dt.strftime("%Y-%m").alias("month"), *CARRY_COLUMNS)
    sums = [pl.col(c).sum() for c in CARRY_COLUMNS]
    parts = frame.group_by("month").agg(sums).sort("month")
    total = frame.select(pl.lit(TOTAL).alias("month"), *sums)
    table = pl.concat([parts, total], how="vertical")
    return table.with_columns(pl.sum_horizontal(*CARRY_COLUMNS).alias("carry_total"))


def add_mechanics(
    tables: dict[str, Any],
    portfolio_states: pl.DataFrame,
    corporate_actions: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """``tables`` (:func:`attribute_run` / :func:`from_tables`) with the market mechanics'
    tables when the run had them: ``carry_attribution`` (:func:`carry_attribution`) and
    ``corporate_actions`` (the engine's event rows); unchanged otherwise."""
    carry = carry_attribution(portfolio_states)
    if carry is not None:
        tables["carry_attribution"] = carry
    if corporate_actions is not None:
        tables["corporate_actions"] = corporate_actions
    return tables
