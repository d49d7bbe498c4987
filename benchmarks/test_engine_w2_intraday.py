"""W2 (issue 4): a synthetic 250-symbol × 1-year 1-minute panel (~24.6 M bar-events).

Run: ``python -m pytest benchmarks/test_engine_w2_intraday.py --no-cov --benchmark-only``.
The strategy buys each symbol at three random minutes a day and closes it 30 minutes later
(~190 k round trips). Records bar_events, the rate, trades and the process's peak RSS (which
includes building the synthetic panel and MarketData; the issue's target is < 30 s and < 1 GB).
"""

from __future__ import annotations

import resource
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl
import pytest

from engine import BacktestEngine, BacktestResult, BarBatch, MarketData, Strategy

N_SYMBOLS = 250
N_DAYS = 252
MINUTES = 390


def _synthetic_minutes(seed: int = 11) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    days = np.busday_offset("2023-01-03", np.arange(N_DAYS), roll="forward")
    start_us = days.astype("datetime64[us]").astype(np.int64) + 14 * 3_600_000_000 + 31 * 60_000_000
    minute_us = np.arange(MINUTES, dtype=np.int64) * 60_000_000
    stamps = (start_us[:, None] + minute_us[None, :]).ravel()  # bar closes, UTC
    n_t = stamps.size
    returns = rng.normal(0.0, 0.0008, (n_t, N_SYMBOLS))
    close = 50.0 * np.exp(np.cumsum(returns, axis=0))
    open_ = np.vstack([close[:1], close[:-1]])
    spread = np.abs(rng.normal(0.0, 0.0005, (n_t, N_SYMBOLS)))
    high = np.maximum(open_, close) * (1.0 + spread)
    low = np.minimum(open_, close) * (1.0 - spread)
    signal = np.full((n_t, N_SYMBOLS), np.nan)
    for day in range(N_DAYS):
        entries = rng.integers(0, MINUTES - 40, (3, N_SYMBOLS)) + day * MINUTES
        cols = np.arange(N_SYMBOLS)
        for k in range(3):
            signal[entries[k], cols] = 1.0
            signal[entries[k] + 30, cols] = -1.0
    names = [f"S{k:03d}" for k in range(N_SYMBOLS)]
    return pl.DataFrame(
        {
            "timestamp": pl.Series(np.repeat(stamps, N_SYMBOLS)).cast(pl.Datetime("us", "UTC")),
            "symbol": pl.Series(np.tile(names, n_t)).cast(pl.Categorical),
            "open": open_.ravel(),
            "high": high.ravel(),
            "low": low.ravel(),
            "close": close.ravel(),
            "volume": np.full(n_t * N_SYMBOLS, 10_000.0),
            "signal": signal.ravel(),
        }
    )


class FewTradesPerDay(Strategy):
    """Buy 10 shares where ``signal == 1``, close where ``signal == -1``."""

    def on_timestamp_batch(
        self, timestamp: datetime, batch: BarBatch, context: dict[str, float]
    ) -> None:
        sig = batch["signal"]
        if np.isnan(sig).all():
            return
        broker = self.broker
        symbols = broker.data.symbols
        for sid in batch.ids[sig == -1.0].tolist():
            broker.close_position(str(symbols[sid]))
        for sid in batch.ids[sig == 1.0].tolist():
            if broker.qty[sid] == 0 and broker.pending[sid] == 0:
                broker.submit(str(symbols[sid]), 10.0)


@pytest.fixture(scope="module")
def w2_data() -> MarketData:
    panel = _synthetic_minutes()
    data = MarketData.from_frame(panel, signal_columns=["signal"])
    del panel
    return data


@pytest.mark.slow
def test_w2_minute_panel_few_trades_per_day(benchmark: Any, w2_data: MarketData) -> None:
    def run() -> BacktestResult:
        return BacktestEngine(w2_data, FewTradesPerDay()).run()

    result: BacktestResult = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["bar_events"] = w2_data.n_rows
    benchmark.extra_info["bar_events_per_s"] = w2_data.n_rows / benchmark.stats.stats.min
    benchmark.extra_info["trades"] = result.trades.height
    benchmark.extra_info["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    benchmark.extra_info["started"] = datetime.now(UTC).isoformat()
    assert result.trades.height > 100_000
