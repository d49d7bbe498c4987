"""Helpers for engine tests: tiny hand-written panels, a scripted strategy, the W1 momentum
signal, ATR and the VIX context (plain functions; the fixtures live in ``conftest.py``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import polars as pl

from engine import BacktestEngine, BacktestResult, ExecutionConfig, MarketData, RiskManager
from engine.data import BarBatch
from engine.events import Fill
from engine.strategy import Strategy
from ml4t_pipeline.lib.io import load_vix

T0 = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)
Bar = tuple[float, float, float, float]


def ts(k: int) -> datetime:
    """Close time of bar ``k`` (daily bars at 21:00 UTC)."""
    return T0 + timedelta(days=k)


def make_context(values: Mapping[str, Sequence[float]]) -> pl.DataFrame:
    """Context frame with one row per bar ``k``: ``{column: [value per bar]}``."""
    n = len(next(iter(values.values())))
    frame = pl.DataFrame({"timestamp": [ts(k) for k in range(n)], **values})
    return frame.with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))


def make_panel(
    bars: Mapping[str, Sequence[Bar | None]],
    *,
    volume: float = 1e6,
    signals: Mapping[str, Mapping[str, Sequence[float | None]]] | None = None,
) -> pl.DataFrame:
    """Long panel from ``{symbol: [(o, h, l, c) or None (no bar), ...]}``.

    ``signals = {column: {symbol: [value per bar]}}``.
    """
    rows: list[dict[str, object]] = []
    for sym, seq in bars.items():
        for k, bar in enumerate(seq):
            if bar is None:
                continue
            o, h, lo, c = bar
            row: dict[str, object] = {
                "timestamp": ts(k),
                "symbol": sym,
                "open": float(o),
                "high": float(h),
                "low": float(lo),
                "close": float(c),
                "volume": float(volume),
            }
            for col, per_sym in (signals or {}).items():
                value = per_sym.get(sym, [None] * len(seq))[k]
                row[col] = None if value is None else float(value)
            rows.append(row)
    frame = pl.DataFrame(rows)
    return frame.with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))


class Script(Strategy):
    """Runs ``plan[k](self)`` at bar ``k``; records every fill it sees."""

    def __init__(self, plan: Mapping[int, Callable[[Strategy], object]] | None = None) -> None:
        self.plan = dict(plan or {})
        self.k = -1
        self.seen_fills: list[Fill] = []
        self.equity_seen: list[float] = []

    def on_start(self) -> None:
        self.k = -1
        self.seen_fills = []

    def on_timestamp_batch(
        self, timestamp: datetime, batch: BarBatch, context: dict[str, float]
    ) -> None:
        self.k += 1
        self.equity_seen.append(self.equity)
        action = self.plan.get(self.k)
        if action is not None:
            action(self)

    def on_fill(self, fill: Fill) -> None:
        self.seen_fills.append(fill)


def run(
    panel: pl.DataFrame,
    plan: Mapping[int, Callable[[Strategy], object]] | None = None,
    *,
    rules: Sequence[object] | None = None,
    signal_columns: Sequence[str] = (),
    indicator_columns: Sequence[str] = (),
    context: pl.DataFrame | None = None,
    **config: object,
) -> BacktestResult:
    data = MarketData.from_frame(
        panel,
        signal_columns=signal_columns,
        indicator_columns=indicator_columns,
        context=context,
    )
    cfg = ExecutionConfig(**config)  # type: ignore[arg-type]
    risk = RiskManager(list(rules)) if rules is not None else None  # type: ignore[arg-type]
    return BacktestEngine(data, Script(plan), risk, cfg).run()


def momentum_scores(panel: pl.DataFrame, before: datetime) -> pl.DataFrame:
    """``panel`` with ``score`` = the 20-bar return per symbol (``close / close 20 bars earlier
    - 1``, known at the bar's close; null for a symbol's first 20 bars), rows before ``before``.

    The signal of the W1 workload (top 25 by 20-day return) on the real S&P 500 panel.
    """
    return panel.with_columns(
        (pl.col("close") / pl.col("close").shift(20).over("symbol") - 1).alias("score")
    ).filter(pl.col("timestamp") < before)


def atr(window: int) -> pl.Expr:
    """ATR per symbol, column ``atr_<window>``: the ``window``-bar simple mean of the true range
    (``max(high - low, |high - prev close|, |low - prev close|)``), known at the bar's close.
    Needs a frame sorted by ``symbol``, ``timestamp``."""
    prev_close = pl.col("close").shift(1).over("symbol")
    true_range = pl.max_horizontal(
        pl.col("high") - pl.col("low"),
        (pl.col("high") - prev_close).abs(),
        (pl.col("low") - prev_close).abs(),
    )
    return true_range.rolling_mean(window).over("symbol").alias(f"atr_{window}")


def atr_14() -> pl.Expr:
    """:func:`atr` over 14 bars (column ``atr_14``)."""
    return atr(14)


def vix_context(panel: pl.DataFrame, data_root: object) -> pl.DataFrame:
    """CBOE VIX closes as the engine's context for ``panel``'s bars (``timestamp``, ``vix``).

    VIX closes at 16:15 New York, after the 16:00 equity close, so it is stamped 16:15 and
    joined backward: an equity bar sees the previous session's VIX (no look-ahead).
    """
    from pathlib import Path

    assert isinstance(data_root, Path)
    vix = load_vix(data_root / "vix_daily_cboe.parquet")
    bars = panel.select("timestamp").unique().sort("timestamp")
    return bars.join_asof(vix, on="timestamp", strategy="backward")
