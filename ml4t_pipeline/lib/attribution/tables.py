"""Attribution tables over the closed trades: by exit reason, signal decile, regime and cost.

Each table has one row per part and a last row whose key is :data:`TOTAL`, computed over all
trades directly; the parts' ``pnl_net_total`` sum to it. A trade without a value to group by
goes to the part :data:`MISSING`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

TOTAL = "TOTAL"
"""Key of the last row of every attribution table: the figures over all closed trades."""
MISSING = "missing"
"""Key of the part holding trades without a value to group by."""
#: Context columns preferred as the regime variable, in this order.
REGIME_PREFERENCE = ("regime", "vix", "market_vol_20")


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


# --- helpers -------------------------------------------------------------------------------------


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
