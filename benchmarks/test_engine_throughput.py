"""Engine throughput on the S&P 500 file (505 symbols × 1,259 days ≈ 619k bar-events).

Run: ``python -m pytest benchmarks/test_engine_throughput.py --no-cov --benchmark-only``.
Each benchmark records ``extra_info["bar_events"]`` (rows of the panel), ``timestamps`` and
the per-timestamp time of its best run (``per_timestamp_us``). W0 says what a strategy really
receives: the empty batch strategy reads no bar, so its figure is the loop's fixed cost per
timestamp, not a bar-event rate; the per-symbol strategy counts the events handed to it
(``events_received``, ``events_per_s``). W1 runs the compiled whole-run path
(``engine.compiled.topn``) and, for comparison, the same run through the Python loop, and once
more compiled with spread-aware slippage and per-share commission. The engine run
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
    PerShareCommission,
    PriceBasedStopLoss,
    RiskManager,
    SpreadAwareSlippage,
    Strategy,
    TopNStrategy,
)


class EmptyBatch(Strategy):
    def on_timestamp_batch(
        self, timestamp: datetime, batch: BarBatch, context: dict[str, float]
    ) -> None:
        pass


class EmptyPerSymbol(Strategy):
    """Counts the events it receives and does nothing else."""

    received = 0

    def on_start(self) -> None:
        self.received = 0

    def on_market_data(self, event: MarketEvent) -> None:
        self.received += 1


@pytest.fixture(scope="module")
def data(sp500_momentum_panel: pl.DataFrame) -> MarketData:
    return MarketData.from_frame(sp500_momentum_panel, signal_columns=["mom_20"])


def _measure(
    benchmark: Any, data: MarketData, run: Callable[[], BacktestResult], rounds: int
) -> BacktestResult:
    result: BacktestResult = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)
    benchmark.extra_info["bar_events"] = data.n_rows
    benchmark.extra_info["timestamps"] = data.n_timestamps
    benchmark.extra_info["compiled"] = result.compiled
    if benchmark.stats is not None:  # None under --benchmark-disable
        best = benchmark.stats.stats.min
        benchmark.extra_info["bar_events_per_s"] = data.n_rows / best
        benchmark.extra_info["per_timestamp_us"] = best / data.n_timestamps * 1e6
    return result


def test_w0_empty_batch_strategy(benchmark: Any, data: MarketData) -> None:
    _measure(benchmark, data, lambda: BacktestEngine(data, EmptyBatch()).run(), rounds=10)


def test_w0_empty_on_market_data_strategy(benchmark: Any, data: MarketData) -> None:
    strategy = EmptyPerSymbol()
    _measure(benchmark, data, lambda: BacktestEngine(data, strategy).run(), rounds=3)
    benchmark.extra_info["events_received"] = strategy.received
    if benchmark.stats is not None:
        benchmark.extra_info["events_per_s"] = strategy.received / benchmark.stats.stats.min
    assert strategy.received == data.n_rows


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python_loop"])
def test_w1_top25_momentum_with_stop(benchmark: Any, data: MarketData, compiled: bool) -> None:
    cfg = ExecutionConfig(commission=PercentageCommission(0.001))

    def run() -> BacktestResult:
        return BacktestEngine(
            data,
            TopNStrategy("mom_20", n=25),
            RiskManager([PriceBasedStopLoss(0.05)]),
            cfg,
            compiled=compiled,
        ).run()

    result = _measure(benchmark, data, run, rounds=7)
    benchmark.extra_info["trades"] = result.trades.height
    assert result.compiled is compiled


def test_w1_spread_aware_per_share_compiled(benchmark: Any, data: MarketData) -> None:
    """W1 with the costs of the seeds' Top-25 config (``SpreadAwareSlippage(0.5)``: the
    Corwin-Schultz estimate, no quotes in the file; ``PerShareCommission(0.005)``), compiled.
    Compare its time with ``test_w1_top25_momentum_with_stop[compiled]``; the first round
    also computes the spread series (cached on the data for the later rounds)."""
    cfg = ExecutionConfig(
        commission=PerShareCommission(0.005), slippage=SpreadAwareSlippage(spread_fraction=0.5)
    )

    def run() -> BacktestResult:
        return BacktestEngine(
            data, TopNStrategy("mom_20", n=25), RiskManager([PriceBasedStopLoss(0.05)]), cfg
        ).run()

    result = _measure(benchmark, data, run, rounds=7)
    benchmark.extra_info["trades"] = result.trades.height
    assert result.compiled
