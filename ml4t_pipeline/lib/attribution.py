"""Trade attribution: where the P&L came from — exit rule, signal decile, regime and costs.

Every table is built from the closed trades of a run (the engine's ``trades`` frame: one row
per round trip with ``pnl_gross``, ``commission``, ``slippage``, ``pnl_net``, ``exit_reason``,
``entry_<column>`` values, ``bars_held``, ``mfe``/``mae``). Each attribution table has one row
per part and a last row whose key is :data:`TOTAL` computed over all trades directly; the parts'
``pnl_net_total`` sum to it (:func:`reconcile` checks this and :func:`reconciliation_line` says
it in words). No trade is dropped: a trade without a value to group by (a null score or a null
regime value) goes to the part :data:`MISSING`.

The information coefficient (IC) is computed from the whole signal table, not only the traded
names: for each period (signal timestamp) the Spearman rank correlation between the score and
the symbol's realised forward return (Grinold & Kahn, *Active Portfolio Management*, ch. 6).

Dagster-free; the assets in ``ml4t_pipeline.defs.assets_attribution`` call these functions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ml4t_pipeline.lib.output import to_json_safe

__all__ = [
    "ATTRIBUTION_FILES",
    "MECHANICS_FILES",
    "MISSING",
    "TOTAL",
    "Reconciliation",
    "add_mechanics",
    "attribute_run",
    "by_exit_reason",
    "by_regime",
    "by_signal_decile",
    "carry_attribution",
    "cost_attribution",
    "default_regime_column",
    "forward_returns",
    "from_tables",
    "ic_summary",
    "information_coefficient",
    "reconcile",
    "reconciliation_line",
    "write_attribution",
]

TOTAL = "TOTAL"
"""Key of the last row of every attribution table: the figures over all closed trades."""
MISSING = "missing"
"""Key of the part holding trades without a value to group by."""

#: Output file name (in an ``ml4t run`` folder) of each table :func:`attribute_run` returns.
ATTRIBUTION_FILES = {
    "by_exit_reason": "attribution_by_exit_reason.parquet",
    "by_signal_decile": "attribution_by_signal.parquet",
    "information_coefficient": "information_coefficient.parquet",
    "by_regime": "attribution_by_regime.parquet",
    "cost_attribution": "cost_attribution.parquet",
}
#: Output file names of the market mechanics' tables (:func:`add_mechanics`), written only
#: for runs that have them.
MECHANICS_FILES = {
    "carry_attribution": "carry_attribution.parquet",
    "corporate_actions": "corporate_actions.parquet",
}
#: Context columns preferred as the regime variable, in this order.
REGIME_PREFERENCE = ("regime", "vix", "market_vol_20")
_RECONCILE_TOLERANCE = 1e-6  # currency units, relative to max(1, |total|)


@dataclass(frozen=True)
class Reconciliation:
    """The parts of an attribution table against the total net P&L of the closed trades.

    Attributes
    ----------
    table : str
        Which table.
    parts : float
        Σ ``pnl_net_total`` over the table's part rows (currency).
    total : float
        Σ ``pnl_net`` over all closed trades (currency).
    n_parts_trades, n_trades : int
        Σ ``n_trades`` over the parts, and the number of closed trades.
    """

    table: str
    parts: float
    total: float
    n_parts_trades: int
    n_trades: int

    @property
    def difference(self) -> float:
        """``parts - total`` (currency)."""
        return self.parts - self.total

    @property
    def ok(self) -> bool:
        """True when the parts hold every trade and their P&L equals the total (to 1e-6)."""
        scale = max(1.0, abs(self.total))
        return (
            self.n_parts_trades == self.n_trades
            and abs(self.difference) <= _RECONCILE_TOLERANCE * scale
        )


# --- tables --------------------------------------------------------------------------------------


def by_exit_reason(trades: pl.DataFrame) -> pl.DataFrame:
    """P&L and trade quality per exit reason (``strategy`` or the risk rule's name).

    Parameters
    ----------
    trades : pl.DataFrame
        Closed trades with ``exit_reason`` (String), ``pnl_net`` (currency), ``bars_held``
        (Int) and, when present, ``return_pct``, ``mfe``, ``mae`` (currency), ``mfe_pct``,
        ``mae_pct`` (fractions of the entry notional).

    Returns
    -------
    pl.DataFrame
        One row per exit reason (most trades first, then by name), then the :data:`TOTAL` row:
        ``exit_reason``, ``n_trades`` (Int64), ``win_rate`` (share with pnl_net > 0),
        ``pnl_net_mean``, ``pnl_net_total`` (currency), ``share_of_pnl`` (part / total net
        P&L; NaN when the total is 0), ``bars_held_mean`` and the means of ``return_pct``,
        ``mfe``, ``mae``, ``mfe_pct``, ``mae_pct`` present in ``trades``.

    Raises
    ------
    ValueError
        Missing columns or null / non-finite ``pnl_net``.
    """
    _check_trades(trades, ("exit_reason", "pnl_net", "bars_held"))
    optional = [
        c for c in ("return_pct", "mfe", "mae", "mfe_pct", "mae_pct") if c in trades.columns
    ]
    frame = trades.with_columns(pl.col("exit_reason").cast(pl.String).fill_null(MISSING))
    aggs = [
        pl.len().cast(pl.Int64).alias("n_trades"),
        (pl.col("pnl_net") > 0).mean().alias("win_rate"),
        pl.col("pnl_net").mean().alias("pnl_net_mean"),
        pl.col("pnl_net").sum().alias("pnl_net_total"),
        pl.col("bars_held").cast(pl.Float64).mean().alias("bars_held_mean"),
        *[pl.col(c).mean().alias(f"{c}_mean") for c in optional],
    ]
    return _with_total(frame, "exit_reason", aggs, sort_by_count=True)


def by_signal_decile(
    trades: pl.DataFrame, signal: str = "entry_score", n_buckets: int = 10
) -> pl.DataFrame:
    """P&L and hit rate by bucket (decile by default) of the entry signal over the trades.

    Buckets are formed over the closed trades' signal values (pooled over time): the trades
    are ranked by ``signal`` (ties by ``trade_id`` order, so the split is deterministic) and the
    k-th of ``n`` ranked trades (0-based) goes to bucket ``floor(k × n_buckets / n) + 1``, so
    bucket sizes differ by at most one. ``D01`` holds the lowest scores, ``D10`` the highest.
    A trade with a null or NaN signal goes to :data:`MISSING`.

    Parameters
    ----------
    trades : pl.DataFrame
        Closed trades with ``pnl_net`` and the ``signal`` column (Float64), optionally
        ``return_pct``.
    signal : str, default "entry_score"
        The trades' column with the signal value at the entry decision.
    n_buckets : int, default 10
        Number of buckets (>= 2).

    Returns
    -------
    pl.DataFrame
        ``decile`` (String ``D01``..), ``signal_min``, ``signal_max``, ``n_trades``,
        ``hit_rate`` (share with pnl_net > 0), ``pnl_net_mean``, ``pnl_net_total``,
        ``return_pct_mean`` (when present), then the :data:`TOTAL` row.

    Raises
    ------
    ValueError
        ``n_buckets < 2``, missing columns, or bad ``pnl_net``.
    """
    if n_buckets < 2:
        raise ValueError(f"n_buckets must be >= 2, got {n_buckets}")
    _check_trades(trades, (signal, "pnl_net"))
    width = len(str(n_buckets))
    value = pl.col(signal).cast(pl.Float64)
    valid = value.is_not_null() & value.is_not_nan()
    frame = trades.with_row_index("_row").with_columns(
        pl.when(valid).then(value).otherwise(None).alias("_signal")
    )
    n_valid = int(frame["_signal"].is_not_null().sum())
    rank = pl.col("_signal").rank("ordinal") - 1  # 0-based, ties in row order
    frame = frame.with_columns(
        pl.when(pl.col("_signal").is_not_null())
        .then(
            pl.format(
                "D{}",
                ((rank * n_buckets) // max(n_valid, 1) + 1).cast(pl.String).str.zfill(width),
            )
        )
        .otherwise(pl.lit(MISSING))
        .alias("decile")
    )
    aggs = [
        pl.col("_signal").min().alias("signal_min"),
        pl.col("_signal").max().alias("signal_max"),
        pl.len().cast(pl.Int64).alias("n_trades"),
        (pl.col("pnl_net") > 0).mean().alias("hit_rate"),
        pl.col("pnl_net").mean().alias("pnl_net_mean"),
        pl.col("pnl_net").sum().alias("pnl_net_total"),
    ]
    if "return_pct" in trades.columns:
        aggs.append(pl.col("return_pct").mean().alias("return_pct_mean"))
    return _with_total(frame, "decile", aggs)


def default_regime_column(trades: pl.DataFrame) -> str | None:
    """The context column used for regimes: ``regime``, ``vix``, ``market_vol_20`` (first with an
    ``entry_<name>`` column in ``trades``), else None."""
    for name in REGIME_PREFERENCE:
        if f"entry_{name}" in trades.columns:
            return name
    return None


def by_regime(
    trades: pl.DataFrame,
    column: str,
    *,
    portfolio_states: pl.DataFrame | None = None,
    n_buckets: int = 3,
    periods_per_year: float = 252.0,
) -> pl.DataFrame:
    """P&L by bucket of a market-context variable at the entry decision (e.g. VIX terciles).

    A numeric ``column`` is cut into ``n_buckets`` quantile buckets (terciles by default). The
    cut points are the ``i / n_buckets`` quantiles (linear interpolation) of the variable over
    the run's bars (``portfolio_states[column]``, one value per bar, so the buckets describe the
    market rather than the strategy's choices) or, without portfolio states, over the trades'
    entry values. They use the whole sample, which is fine for an after-the-fact analysis but
    not for a trading rule. A value equal to a cut point goes to the lower bucket. A String or
    Categorical column (a named regime) is grouped by value. Trades without a value go to
    :data:`MISSING`.

    With ``portfolio_states`` the table also says how the *portfolio* did in each regime:
    ``n_bars``, ``share_of_bars`` and ``mean_bar_return`` / ``annualised_return``
    (mean bar return × ``periods_per_year``) over the bars whose own context value falls in
    the bucket.

    Parameters
    ----------
    trades : pl.DataFrame
        Closed trades with ``entry_<column>``, ``pnl_net``, optionally ``return_pct``.
    column : str
        Context column name without the ``entry_`` prefix, e.g. ``"vix"``.
    portfolio_states : pl.DataFrame, optional
        Bars with ``column`` and ``return`` (fraction).
    n_buckets : int, default 3
    periods_per_year : float, default 252

    Returns
    -------
    pl.DataFrame
        ``regime`` (String, e.g. ``Q1 (<= 13.5)``, ``Q2 (13.5, 16.1]``, ``Q3 (> 16.1)``),
        ``lower``, ``upper`` (the cut points; null when open-ended or categorical),
        ``n_trades``, ``win_rate``, ``pnl_net_mean``, ``pnl_net_total``, ``return_pct_mean``
        (when present) and the portfolio columns above, then the :data:`TOTAL` row.

    Raises
    ------
    ValueError
        Missing columns, ``n_buckets < 2``, or no non-null value to cut.
    """
    entry_col = f"entry_{column}"
    _check_trades(trades, (entry_col, "pnl_net"))
    if n_buckets < 2:
        raise ValueError(f"n_buckets must be >= 2, got {n_buckets}")
    categorical = not trades.schema[entry_col].is_numeric()
    states = None
    if portfolio_states is not None:
        missing = [c for c in (column, "return") if c not in portfolio_states.columns]
        if missing:
            raise ValueError(
                f"portfolio_states is missing column(s) {missing} for the regime table; "
                f"it has {portfolio_states.columns}"
            )
        states = portfolio_states.select(pl.col(column).alias("_value"), "return")
    if categorical:
        label = pl.col("_value").cast(pl.String).fill_null(MISSING)
        cuts: list[float] = []
    else:
        source = states["_value"] if states is not None else trades[entry_col]
        values = source.cast(pl.Float64).drop_nulls().drop_nans()
        if values.len() == 0:
            raise ValueError(f"no non-null values of {column!r} to cut into regimes")
        array = values.to_numpy()
        cuts = [float(np.quantile(array, i / n_buckets)) for i in range(1, n_buckets)]
        label = _bucket_label(pl.col("_value").cast(pl.Float64), cuts)

    frame = trades.with_columns(pl.col(entry_col).alias("_value")).with_columns(
        label.alias("regime")
    )
    aggs = [
        pl.len().cast(pl.Int64).alias("n_trades"),
        (pl.col("pnl_net") > 0).mean().alias("win_rate"),
        pl.col("pnl_net").mean().alias("pnl_net_mean"),
        pl.col("pnl_net").sum().alias("pnl_net_total"),
    ]
    if "return_pct" in trades.columns:
        aggs.append(pl.col("return_pct").mean().alias("return_pct_mean"))
    table = _with_total(frame, "regime", aggs, order=_bucket_order(cuts, categorical))
    if not categorical:
        bounds = pl.DataFrame(
            {
                "regime": [_bucket_name(i, cuts) for i in range(len(cuts) + 1)],
                "lower": [None, *cuts],
                "upper": [*cuts, None],
            },
            schema={"regime": pl.String, "lower": pl.Float64, "upper": pl.Float64},
        )
        table = table.join(bounds, on="regime", how="left", maintain_order="left")
    else:
        table = table.with_columns(
            pl.lit(None, pl.Float64).alias("lower"), pl.lit(None, pl.Float64).alias("upper")
        )
    if states is not None:
        n_bars = states.height
        bars = (
            states.with_columns(label.alias("regime"))
            .group_by("regime")
            .agg(
                pl.len().cast(pl.Int64).alias("n_bars"),
                pl.col("return").mean().alias("mean_bar_return"),
            )
        )
        all_bars = pl.DataFrame(
            {
                "regime": [TOTAL],
                "n_bars": [n_bars],
                "mean_bar_return": [states["return"].mean()],
            },
            schema=bars.schema,
        )
        table = table.join(
            pl.concat([bars, all_bars]), on="regime", how="left", maintain_order="left"
        ).with_columns(
            (pl.col("n_bars") / max(n_bars, 1)).alias("share_of_bars"),
            (pl.col("mean_bar_return") * periods_per_year).alias("annualised_return"),
        )
    keys = ["regime", "lower", "upper"]
    return table.select(*keys, *[c for c in table.columns if c not in keys])


def cost_attribution(trades: pl.DataFrame) -> pl.DataFrame:
    """Gross P&L, slippage, commission and net P&L of the closed trades, per exit month.

    The engine's ``pnl_gross`` is at fill prices (after slippage) and ``pnl_net = pnl_gross -
    commission``. This table starts one step earlier: ``pnl_before_costs = pnl_gross +
    slippage`` (the P&L at the prices before slippage), so each row reads
    ``pnl_before_costs - slippage - commission = pnl_net``. A trade is booked in the calendar
    month (UTC) of its exit fill, when its P&L is realised.

    Parameters
    ----------
    trades : pl.DataFrame
        Closed trades with ``exit_timestamp``, ``pnl_gross``, ``commission``, ``slippage``,
        ``pnl_net`` (currency).

    Returns
    -------
    pl.DataFrame
        ``month`` (String ``YYYY-MM``), ``n_trades``, ``pnl_before_costs``, ``slippage``,
        ``pnl_gross``, ``commission``, ``pnl_net_total``, ``cost_share`` ((slippage +
        commission) / pnl_before_costs; NaN when that is 0), in month order, then the
        :data:`TOTAL` row.

    Raises
    ------
    ValueError
        Missing columns, bad ``pnl_net``, or rows where ``pnl_gross - commission`` differs
        from ``pnl_net`` (the table would not add up).
    """
    _check_trades(trades, ("exit_timestamp", "pnl_gross", "commission", "slippage", "pnl_net"))
    gap = trades.filter(
        (pl.col("pnl_gross") - pl.col("commission") - pl.col("pnl_net")).abs()
        > 1e-6 * pl.max_horizontal(pl.lit(1.0), pl.col("pnl_net").abs())
    )
    if gap.height:
        raise ValueError(
            f"{gap.height} trade(s) have pnl_net != pnl_gross - commission, e.g. "
            f"{gap.select('pnl_gross', 'commission', 'pnl_net').head(5).rows()}"
        )
    ts = pl.col("exit_timestamp")
    if getattr(trades.schema["exit_timestamp"], "time_zone", None):
        ts = ts.dt.convert_time_zone("UTC")
    frame = trades.with_columns(ts.dt.strftime("%Y-%m").alias("month"))
    aggs = [
        pl.len().cast(pl.Int64).alias("n_trades"),
        (pl.col("pnl_gross") + pl.col("slippage")).sum().alias("pnl_before_costs"),
        pl.col("slippage").sum().alias("slippage"),
        pl.col("pnl_gross").sum().alias("pnl_gross"),
        pl.col("commission").sum().alias("commission"),
        pl.col("pnl_net").sum().alias("pnl_net_total"),
    ]
    table = _with_total(frame, "month", aggs, order="key")
    share = (pl.col("slippage") + pl.col("commission")) / pl.col("pnl_before_costs")
    return table.with_columns(
        pl.when(pl.col("pnl_before_costs") != 0)
        .then(share)
        .otherwise(float("nan"))
        .alias("cost_share")
    )


CARRY_COLUMNS = ("dividends", "interest", "borrow_fee")
"""Per-bar cash lines of ``portfolio_states`` under market mechanics (engine/mechanics.py)."""


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


# --- information coefficient --------------------------------------------------------------------


def forward_returns(
    signals: pl.DataFrame,
    prices: pl.DataFrame,
    *,
    signal: str = "score",
    horizon: int = 1,
) -> pl.DataFrame:
    """Pair every signal value with the symbol's realised forward return.

    The signal row is anchored at the first bar of its symbol whose close is at or after the
    time the value became usable (``available_at`` when the column exists, else the signal's
    ``timestamp``). The forward return is ``close[a + h] / close[a] - 1``, with ``a`` the anchor
    bar and ``a + h`` the symbol's ``horizon``-th bar after it: the return a position opened at
    the anchor close and held ``h`` bars would earn, before costs.

    Parameters
    ----------
    signals : pl.DataFrame
        ``timestamp``, ``symbol``, ``signal`` (Float64), optional ``available_at``.
    prices : pl.DataFrame
        ``timestamp``, ``symbol``, ``close``; unique (timestamp, symbol).
    signal : str, default "score"
    horizon : int, default 1
        Bars ahead (>= 1).

    Returns
    -------
    pl.DataFrame
        ``timestamp`` (the anchor bar), ``symbol``, ``score`` (the signal value),
        ``forward_return`` (fraction), sorted by time and symbol. Left out, because they
        cannot enter the analysis: signal rows with a null/NaN value, rows with no bar at or
        after their usable time, and rows whose anchor bar has fewer than ``horizon`` later bars
        (no realised return yet). When two signal rows of a symbol anchor at the same bar,
        the later-usable one is kept (it is the value a trader would hold at that close).

    Raises
    ------
    ValueError
        ``horizon < 1``, missing columns, or duplicated (timestamp, symbol) prices.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1 bar, got {horizon}")
    for name, frame, cols in (
        ("signals", signals, ("timestamp", "symbol", signal)),
        ("prices", prices, ("timestamp", "symbol", "close")),
    ):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} is missing column(s) {missing}; it has {frame.columns}")
    bars = prices.select(
        "timestamp", pl.col("symbol").cast(pl.String), pl.col("close").cast(pl.Float64)
    ).sort("symbol", "timestamp")
    # sorted by (symbol, timestamp): a duplicated key sits next to its twin (a cheap test; the
    # struct hash below only runs to name the offending rows)
    adjacent = (pl.col("timestamp") == pl.col("timestamp").shift(1)) & (
        pl.col("symbol") == pl.col("symbol").shift(1)
    )
    has_dup = bool(bars.select(adjacent.any()).item())
    dup = bars.filter(pl.struct("timestamp", "symbol").is_duplicated()) if has_dup else bars.clear()
    if dup.height:
        raise ValueError(
            f"prices have {dup.height} duplicated (timestamp, symbol) rows, e.g. "
            f"{dup.head(3).rows()}"
        )
    bars = bars.with_columns(
        (pl.col("close").shift(-horizon).over("symbol") / pl.col("close") - 1.0).alias(
            "forward_return"
        ),
        pl.col("timestamp").alias("anchor"),
    )
    anchor_time = "available_at" if "available_at" in signals.columns else "timestamp"
    sig = (
        signals.select(
            pl.col("symbol").cast(pl.String),
            pl.max_horizontal("timestamp", anchor_time).alias("_usable"),
            pl.col(signal).cast(pl.Float64).alias("score"),
        )
        .filter(pl.col("score").is_not_null() & pl.col("score").is_not_nan())
        .sort("symbol", "_usable")
    )
    joined = sig.join_asof(
        bars.select("symbol", "anchor", "forward_return").sort("symbol", "anchor"),
        left_on="_usable",
        right_on="anchor",
        by="symbol",
        strategy="forward",
        check_sortedness=False,
    )
    return (
        joined.filter(pl.col("forward_return").is_not_null())
        .select(pl.col("anchor").alias("timestamp"), "symbol", "score", "forward_return")
        .unique(["timestamp", "symbol"], keep="last", maintain_order=True)
        .sort("timestamp", "symbol")
    )


def information_coefficient(pairs: pl.DataFrame, min_names: int = 5) -> pl.DataFrame:
    """Spearman rank IC per period: the correlation of the score ranks with the forward-return
    ranks across symbols (average ranks for ties).

    Parameters
    ----------
    pairs : pl.DataFrame
        ``timestamp``, ``score``, ``forward_return`` (from :func:`forward_returns`).
    min_names : int, default 5
        Periods with fewer symbols get a null IC (a rank correlation over 2-4 names is noise).

    Returns
    -------
    pl.DataFrame
        ``timestamp``, ``ic`` (Float64 in [-1, 1]; null with too few names or when a side is
        constant), ``n_names`` (Int64), sorted by time.
    """
    missing = [c for c in ("timestamp", "score", "forward_return") if c not in pairs.columns]
    if missing:
        raise ValueError(f"pairs is missing column(s) {missing}; it has {pairs.columns}")
    if min_names < 3:
        raise ValueError(f"min_names must be >= 3, got {min_names}")
    ranked = pairs.with_columns(
        pl.col("score").rank("average").over("timestamp").alias("_rs"),
        pl.col("forward_return").rank("average").over("timestamp").alias("_rf"),
    )
    out = ranked.group_by("timestamp").agg(
        pl.corr("_rs", "_rf").alias("ic"), pl.len().cast(pl.Int64).alias("n_names")
    )
    return out.with_columns(
        pl.when((pl.col("n_names") >= min_names) & pl.col("ic").is_not_nan())
        .then(pl.col("ic"))
        .otherwise(None)
        .alias("ic")
    ).sort("timestamp")


def ic_summary(ic: pl.DataFrame, horizon: int = 1) -> dict[str, float | int]:
    """Mean IC and its t-statistic over the periods.

    ``t = mean(IC) / (std(IC, ddof=1) / √n)`` over the ``n`` periods with an IC. With a
    horizon of ``h > 1`` bars the forward returns of neighbouring periods overlap, the ICs are
    autocorrelated and that t overstates the evidence; ``t_stat_non_overlapping`` repeats the
    test on every ``h``-th period only (a conservative check).

    Returns
    -------
    dict
        ``ic_mean``, ``ic_std``, ``ic_t_stat``, ``n_periods``, ``ic_positive_share`` (share of
        periods with IC > 0), ``ic_t_stat_non_overlapping``, ``n_periods_non_overlapping``,
        ``horizon``. NaN where undefined (fewer than 2 periods, zero spread).
    """
    values = ic.filter(pl.col("ic").is_not_null())["ic"].to_numpy()
    sparse = values[:: max(horizon, 1)]
    return {
        "ic_mean": float(values.mean()) if values.size else math.nan,
        "ic_std": float(values.std(ddof=1)) if values.size > 1 else math.nan,
        "ic_t_stat": _t_stat(values),
        "n_periods": int(values.size),
        "ic_positive_share": float((values > 0).mean()) if values.size else math.nan,
        "ic_t_stat_non_overlapping": _t_stat(sparse),
        "n_periods_non_overlapping": int(sparse.size),
        "horizon": int(horizon),
    }


# --- reconciliation ------------------------------------------------------------------------------


def reconcile(table: pl.DataFrame, trades: pl.DataFrame, name: str = "") -> Reconciliation:
    """Compare an attribution table's parts with the total net P&L of ``trades``.

    Parameters
    ----------
    table : pl.DataFrame
        A table from this module (first column the key, a :data:`TOTAL` row, ``n_trades`` and
        ``pnl_net_total`` columns).
    trades : pl.DataFrame
        The closed trades it was built from (``pnl_net``).
    """
    key = table.columns[0]
    parts = table.filter(pl.col(key) != TOTAL)
    total = float(trades["pnl_net"].sum()) if trades.height else 0.0
    return Reconciliation(
        table=name or key,
        parts=float(parts["pnl_net_total"].sum()) if parts.height else 0.0,
        total=total,
        n_parts_trades=int(parts["n_trades"].sum()) if parts.height else 0,
        n_trades=trades.height,
    )


def reconciliation_line(result: Reconciliation) -> str:
    """One line of text: ``parts 1,234.56 = total net P&L of 40 closed trades 1,234.56 (ok)``."""
    verdict = "ok" if result.ok else "MISMATCH"
    return (
        f"reconciliation ({result.table}): parts sum to {result.parts:,.2f} over "
        f"{result.n_parts_trades:,} trades; total net P&L of the {result.n_trades:,} closed "
        f"trades is {result.total:,.2f}; difference {result.difference:,.6f} ({verdict})"
    )


# --- a whole run ---------------------------------------------------------------------------------


def attribute_run(
    trades: pl.DataFrame,
    portfolio_states: pl.DataFrame,
    *,
    signals: pl.DataFrame | None = None,
    prices: pl.DataFrame | None = None,
    signal: str = "score",
    horizon: int = 1,
    regime_column: str | None = None,
    periods_per_year: float = 252.0,
) -> dict[str, Any]:
    """Every attribution table of one run (what ``ml4t run`` writes and the report shows).

    Returns
    -------
    dict
        ``by_exit_reason``, ``by_signal_decile`` (when ``entry_<signal>`` exists),
        ``information_coefficient`` (per period, when signals and prices are given),
        ``ic_summary`` (dict), ``by_regime`` (when a regime column exists; see
        :func:`default_regime_column`), ``cost_attribution``, ``carry_attribution`` (dividends
        and financing, :func:`carry_attribution`, under market mechanics) and
        ``reconciliation`` (table name → :class:`Reconciliation`). Keys whose inputs are
        missing are absent.
    """
    out: dict[str, Any] = {"by_exit_reason": by_exit_reason(trades)}
    entry_signal = f"entry_{signal}"
    if entry_signal in trades.columns:
        out["by_signal_decile"] = by_signal_decile(trades, entry_signal)
    if signals is not None and prices is not None and signal in signals.columns:
        ic = information_coefficient(
            forward_returns(signals, prices, signal=signal, horizon=horizon)
        )
        out["information_coefficient"] = ic
        out["ic_summary"] = ic_summary(ic, horizon)
    column = regime_column or default_regime_column(trades)
    if column is not None:
        states = portfolio_states if column in portfolio_states.columns else None
        out["by_regime"] = by_regime(
            trades, column, portfolio_states=states, periods_per_year=periods_per_year
        )
        out["regime_column"] = column
    out["cost_attribution"] = cost_attribution(trades)
    carry = carry_attribution(portfolio_states)
    if carry is not None:
        out["carry_attribution"] = carry
    out["reconciliation"] = {
        name: reconcile(out[name], trades, name)
        for name in ("by_exit_reason", "by_signal_decile", "by_regime", "cost_attribution")
        if name in out
    }
    return out


def from_tables(
    trades: pl.DataFrame,
    *,
    by_exit_reason: pl.DataFrame,
    cost_attribution: pl.DataFrame,
    by_signal: Mapping[str, pl.DataFrame] | None = None,
    by_regime: pl.DataFrame | None = None,
    regime_column: str | None = None,
) -> dict[str, Any]:
    """The dict :func:`attribute_run` returns, from tables already computed (the attribution
    assets' values): nothing is recomputed but the reconciliations.

    Parameters
    ----------
    trades : pl.DataFrame
        The closed trades the tables were computed from (for the reconciliations).
    by_exit_reason, cost_attribution : pl.DataFrame
        :func:`by_exit_reason` and :func:`cost_attribution` of ``trades``.
    by_signal : Mapping[str, pl.DataFrame], optional
        ``deciles`` (:func:`by_signal_decile`), ``information_coefficient`` and ``ic_summary``
        (one row of :func:`ic_summary`); any may be absent.
    by_regime : pl.DataFrame, optional
        :func:`by_regime` of ``trades`` by ``regime_column``.
    regime_column : str, optional
        The regime table's column (default: :func:`default_regime_column` of ``trades``).

    Returns
    -------
    dict
        Keys as :func:`attribute_run`.
    """
    out: dict[str, Any] = {"by_exit_reason": by_exit_reason}
    signal_tables = dict(by_signal or {})
    if "deciles" in signal_tables:
        out["by_signal_decile"] = signal_tables["deciles"]
    if "information_coefficient" in signal_tables:
        out["information_coefficient"] = signal_tables["information_coefficient"]
    if "ic_summary" in signal_tables and signal_tables["ic_summary"].height:
        out["ic_summary"] = signal_tables["ic_summary"].row(0, named=True)
    if by_regime is not None:
        out["by_regime"] = by_regime
        out["regime_column"] = regime_column or default_regime_column(trades)
    out["cost_attribution"] = cost_attribution
    out["reconciliation"] = {
        name: reconcile(out[name], trades, name)
        for name in ("by_exit_reason", "by_signal_decile", "by_regime", "cost_attribution")
        if name in out
    }
    return out


def write_attribution(tables: Mapping[str, Any], output_dir: str | Path) -> list[Path]:
    """Write the tables of :func:`attribute_run` as Parquet (zstd) into ``output_dir``.

    File names are :data:`ATTRIBUTION_FILES` (and :data:`MECHANICS_FILES` when present);
    ``ic_summary`` and the reconciliations go to
    ``attribution_summary.json``. Each file is written to a temporary name and renamed.

    Returns
    -------
    list[Path]
        The files written.
    """
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key, filename in {**ATTRIBUTION_FILES, **MECHANICS_FILES}.items():
        if key in tables:
            target = folder / filename
            tmp = target.with_name(f".{filename}.tmp")
            tables[key].write_parquet(tmp, compression="zstd")
            tmp.replace(target)
            written.append(target)
    summary = {
        "ic_summary": tables.get("ic_summary"),
        "regime_column": tables.get("regime_column"),
        "reconciliation": {
            name: {
                "parts": r.parts,
                "total": r.total,
                "difference": r.difference,
                "ok": r.ok,
                "line": reconciliation_line(r),
            }
            for name, r in tables.get("reconciliation", {}).items()
        },
    }
    target = folder / "attribution_summary.json"
    tmp = target.with_name(".attribution_summary.json.tmp")
    strict = to_json_safe(summary)  # NaN/inf -> null: strict JSON (RFC 8259)
    tmp.write_text(
        json.dumps(strict, indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    )
    tmp.replace(target)
    written.append(target)
    return written


# --- helpers -------------------------------------------------------------------------------------


def _json_default(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _t_stat(values: np.ndarray) -> float:
    if values.size < 2:
        return math.nan
    std = float(values.std(ddof=1))
    if std < 1e-15:
        return math.nan
    return float(values.mean()) / (std / math.sqrt(values.size))


def _check_trades(trades: pl.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in trades.columns]
    if missing:
        raise ValueError(f"trades is missing column(s) {missing}; it has {trades.columns}")
    bad = trades.with_row_index("row").filter(
        pl.col("pnl_net").is_null() | ~pl.col("pnl_net").cast(pl.Float64).is_finite()
    )
    if bad.height:
        cols = [c for c in ("row", "trade_id", "symbol", "pnl_net") if c in bad.columns]
        raise ValueError(
            f"trades have {bad.height} row(s) with null or non-finite pnl_net: "
            f"{bad.select(cols).head(5).rows()}"
        )


def _with_total(
    frame: pl.DataFrame,
    key: str,
    aggs: list[pl.Expr],
    *,
    sort_by_count: bool = False,
    order: str | list[str] = "key",
) -> pl.DataFrame:
    parts = frame.group_by(key).agg(aggs)
    if sort_by_count:
        parts = parts.sort(["n_trades", key], descending=[True, False])
    elif isinstance(order, list):
        rank = {name: i for i, name in enumerate(order)}
        parts = (
            parts.with_columns(
                pl.col(key)
                .replace_strict(rank, default=len(rank), return_dtype=pl.Int64)
                .alias("_o")
            )
            .sort("_o", key)
            .drop("_o")
        )
    else:
        parts = parts.sort(pl.col(key) == MISSING, key)
    total = frame.select(pl.lit(TOTAL).alias(key), *aggs)
    table = pl.concat([parts, total.cast(parts.schema)], how="vertical")
    pnl_total = float(frame["pnl_net"].sum()) if frame.height else 0.0
    share = pl.col("pnl_net_total") / pnl_total if pnl_total else pl.lit(float("nan"))
    return table.with_columns(share.alias("share_of_pnl"))


def _bucket_name(i: int, cuts: list[float]) -> str:
    if i == 0:
        return f"Q1 (<= {cuts[0]:.4g})"
    if i == len(cuts):
        return f"Q{i + 1} (> {cuts[-1]:.4g})"
    return f"Q{i + 1} ({cuts[i - 1]:.4g}, {cuts[i]:.4g}]"


def _bucket_label(value: pl.Expr, cuts: list[float]) -> pl.Expr:
    expr: Any = pl.when(value.is_null() | value.is_nan()).then(pl.lit(MISSING))
    for i, cut in enumerate(cuts):
        expr = expr.when(value <= cut).then(pl.lit(_bucket_name(i, cuts)))
    last: pl.Expr = expr.otherwise(pl.lit(_bucket_name(len(cuts), cuts)))
    return last


def _bucket_order(cuts: list[float], categorical: bool) -> str | list[str]:
    if categorical:
        return "key"
    return [_bucket_name(i, cuts) for i in range(len(cuts) + 1)] + [MISSING]
