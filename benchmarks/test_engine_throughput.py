"""Engine throughput on the S&P 500 file (505 symbols × 1,259 days ≈ 619k bar-events).

Run: ``python -m pytest benchmarks/test_engine_throughput.py --no-cov --benchmark-only``.
Each benchmark records ``extra_info["bar_events"]`` and the best rate in bar-events per second.
Targets (issue 4): W0 batch ≥ 5 M/s, W0 on_market_data ≥ 300 k/s, W1 ≥ 2 M/s. The engine run
includes building the output frames; building ``MarketData`` is done once, outside the timing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import polars as pl
import pytest

from engine import (
    BacktestEngine,
    BacktestResult,
    BarBatch,
    ExecutionConfig,
    MarketData,
    MarketEvent,
    PercentageCommission,
    PriceBasedStopLoss,
    RiskManager,
    Strategy,
    TopNStrategy,
)


class EmptyBatch(Strategy):
    def on_timestamp_batch(
        self, timestamp: datetime, batch: BarBatch, context: dict[str, float]
    ) -> None:
        pass


class EmptyPerSymbol(Strategy):
    def on_market_data(self, event: MarketEvent) -> None:
        pass


@pytest.fixture(scope="module")
def data(sp500_momentum_panel: pl.DataFrame) -> MarketData:
    return MarketData.from_frame(sp500_momentum_panel, signal_columns=["mom_20"])


def _measure(
    benchmark: Any, data: MarketData, run: Callable[[], BacktestResult], rounds: int
) -> BacktestResult:
    result: BacktestResult = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)
    benchmark.extra_info["bar_events"] = data.n_rows
    best = benchmark.stats.stats.min
    benchmark.extra_info["bar_events_per_s"] = data.n_rows / best
    return result


def test_w0_empty_batch_strategy(benchmark: Any, data: MarketData) -> None:
    _measure(benchmark, data, lambda: BacktestEngine(data, EmptyBatch()).run(), rounds=10)


def test_w0_empty_on_market_data_strategy(benchmark: Any, data: MarketData) -> None:
    _measure(benchmark, data, lambda: BacktestEngine(data, EmptyPerSymbol()).run(), rounds=3)


def test_w1_top25_momentum_with_stop(benchmark: Any, data: MarketData) -> None:
    cfg = ExecutionConfig(commission=PercentageCommission(0.001))

    def run() -> BacktestResult:
        return BacktestEngine(
            data, TopNStrategy("mom_20", n=25), RiskManager([PriceBasedStopLoss(0.05)]), cfg
        ).run()

    result = _measure(benchmark, data, run, rounds=7)
    benchmark.extra_info["trades"] = result.trades.height
