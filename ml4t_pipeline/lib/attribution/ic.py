"""Information coefficient: the signal's rank correlation with the realised forward returns.

Computed from the whole signal table, not only the traded names: for each period (signal
timestamp) the Spearman rank correlation between the score and the symbol's realised forward
return (Grinold & Kahn, *Active Portfolio Management*, ch. 6).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from ml4t_pipeline.lib.stamps import has_adjacent_duplicate, in_key_order, keys_unique_in_order


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
    )
    # Time order is all the shifts per symbol and the as-of join per symbol need (prepared prices
    # come in (timestamp, symbol) order: no sort then). In that order a duplicated key sits next
    # to its twin (a cheap test; the struct hash below only runs to name the offending rows).
    if not in_key_order(bars):
        bars = bars.sort("timestamp", "symbol")
    has_dup = has_adjacent_duplicate(bars, ["timestamp", "symbol"])
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
    sig = signals.select(
        pl.col("symbol").cast(pl.String),
        pl.max_horizontal("timestamp", anchor_time).alias("_usable"),
        pl.col(signal).cast(pl.Float64).alias("score"),
    ).filter(pl.col("score").is_not_null() & pl.col("score").is_not_nan())
    if not sig.get_column("_usable").is_sorted():
        sig = sig.sort("_usable", maintain_order=True)  # stable: a symbol's ties keep their order
    # join_asof with ``by`` needs each symbol's rows in time order on both sides (both are in
    # time order); every output row keeps its signal row's place, so ``keep="last"`` below keeps
    # the later-usable of two signal rows anchored at one bar.
    joined = sig.join_asof(
        bars.select("symbol", "anchor", "forward_return"),
        left_on="_usable",
        right_on="anchor",
        by="symbol",
        strategy="forward",
        check_sortedness=False,
    )
    pairs = joined.filter(pl.col("forward_return").is_not_null()).select(
        pl.col("anchor").alias("timestamp"), "symbol", "score", "forward_return"
    )
    # Scores stamped at bar closes anchor one row per bar, already in (timestamp, symbol) order:
    # the de-duplication and the sort (a hash of every key: +70 MB on the S&P signals) run only
    # when some bar got two signal rows or the rows are out of order.
    if keys_unique_in_order(pairs):
        return pairs
    return pairs.unique(["timestamp", "symbol"], keep="last", maintain_order=True).sort(
        "timestamp", "symbol"
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


def _t_stat(values: np.ndarray) -> float:
    if values.size < 2:
        return math.nan
    std = float(values.std(ddof=1))
    if std < 1e-15:
        return math.nan
    return float(values.mean()) / (std / math.sqrt(values.size))
