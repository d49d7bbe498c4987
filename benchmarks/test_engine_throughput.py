"""Engine throughput on the S&P 500 file (505 symbols × 1,259 days ≈ 619k bar-events).

Run: ``python -m pytest benchmarks/test_engine_throughput.py --no-cov --benchmark-only``.
Each benchmark records ``extra_info["bar_events"]`` (rows of the panel), ``timestamps`` and
the per-timestamp time of its best run (``per_timestamp_us``). W0 says what a strategy really
receives: the empty batch strategy reads no bar, so its figure is the loop's fixed cost per
timestamp, not a bar-event rate; the per-symbol strategy counts the events handed to it
(``events_received``, ``events_per_s``). W1 runs the compiled whole-run path
(``engine.compiled.topn``) and, for comparison, the same run through the Python loop, and once
more compiled with spread-aware slippage and per-share commission, and with the seeds' Top-25
rule set (timed against plain W1 in the same process). The engine run includes building the
output frames; building ``MarketData`` is done once, outside the timing.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import polars as pl
import pytest

from benchmarks.conftest import data_root
from engine import (
    BacktestEngine,
    BacktestResult,
    BarBatch,
    DynamicTrailingStop,
    ExecutionConfig,
    MarketData,
    MarketEvent,
    MaxDrawdownRule,
    PercentageCommission,
    PerShareCommission,
    PriceBasedStopLoss,
    RegimeDependentRule,
    RiskManager,
    RiskRule,
    SpreadAwareSlippage,
    Strategy,
    TimeBasedExit,
    TopNStrategy,
    VolatilityScaledStopLoss,
)
from ml4t_pipeline.lib.io import load_vix


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


@pytest.fixture(scope="module")
def seeds_data(sp500_momentum_panel: pl.DataFrame) -> MarketData:
    """The W1 panel plus ``atr_14`` (14-bar mean true range, known at the bar's close) and the
    VIX close as context (stamped 16:15 New York, after the equity close, joined backward: a
    bar sees the previous session's VIX)."""
    path = data_root() / "vix_daily_cboe.parquet"
    if not path.exists():
        pytest.skip(f"VIX file not found at {path}")
    prev_close = pl.col("close").shift(1).over("symbol")
    true_range = pl.max_horizontal(
        pl.col("high") - pl.col("low"),
        (pl.col("high") - prev_close).abs(),
        (pl.col("low") - prev_close).abs(),
    )
    panel = sp500_momentum_panel.with_columns(
        true_range.rolling_mean(14).over("symbol").alias("atr_14")
    )
    vix = load_vix(path)
    bars = panel.select("timestamp").unique().sort("timestamp")
    context = bars.join_asof(vix, on="timestamp", strategy="backward")
    return MarketData.from_frame(
        panel, signal_columns=["mom_20"], indicator_columns=["atr_14"], context=context
    )


def _seeds_top25_rules() -> list[RiskRule]:
    """The seeds' Top-25 rule set, in the seeds' names and parameters (000 §9.1: ATR stop,
    trailing stop, time exit; §9.2 use case 2: the VIX regime stops; use case 3: the 10 %
    drawdown limit)."""
    return [
        VolatilityScaledStopLoss(atr_multiplier=2.0),
        DynamicTrailingStop(initial_trail_pct=0.05, tighten_rate=0.001),
        TimeBasedExit(max_bars=60),
        RegimeDependentRule(
            regime_source="vix",
            high_vol_threshold=25,
            rules={
                "high_vol": VolatilityScaledStopLoss(atr_multiplier=1.5),
                "low_vol": VolatilityScaledStopLoss(atr_multiplier=2.5),
            },
        ),
        MaxDrawdownRule(max_dd_pct=0.10),
    ]


def test_w1_seeds_top25_rules_spread_aware_compiled(benchmark: Any, seeds_data: MarketData) -> None:
    """W1 with the seeds' Top-25 rule set and the seeds' Top-25 costs (``SpreadAwareSlippage
    (0.5)`` from the Corwin-Schultz estimate, ``PerShareCommission(0.005)``), compiled, timed
    against plain W1 (``test_w1_top25_momentum_with_stop[compiled]``'s run) on the same data in
    the same process: 15 interleaved rounds after a warm-up round; ``extra_info["ratio_min"]``
    / ``["ratio_median"]`` (target: at most 2). The seeds' 10 % drawdown limit halts new
    entries in the first year, so the run also goes once more without that limit
    (``no_halt_*``: the rules and costs trading all five years)."""
    import warnings

    seeds_cfg = ExecutionConfig(
        commission=PerShareCommission(0.005), slippage=SpreadAwareSlippage(spread_fraction=0.5)
    )
    plain_cfg = ExecutionConfig(commission=PercentageCommission(0.001))

    def with_rules(rules: list[RiskRule]) -> Callable[[], BacktestResult]:
        def run() -> BacktestResult:
            with warnings.catch_warnings():  # three rules set a stop: the registration warning
                warnings.simplefilter("ignore", UserWarning)
                manager = RiskManager(rules)
            strategy = TopNStrategy("mom_20", n=25)
            return BacktestEngine(seeds_data, strategy, manager, seeds_cfg).run()

        return run

    def plain() -> BacktestResult:
        return BacktestEngine(
            seeds_data,
            TopNStrategy("mom_20", n=25),
            RiskManager([PriceBasedStopLoss(0.05)]),
            plain_cfg,
        ).run()

    seeds = with_rules(_seeds_top25_rules())
    runs = {"plain": plain, "seeds": seeds, "no_halt": with_rules(_seeds_top25_rules()[:4])}
    results = {name: run() for name, run in runs.items()}  # compile; cache the spread series
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(15):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    result = _measure(benchmark, seeds_data, seeds, rounds=5)
    assert all(r.compiled for r in results.values())
    info: dict[str, Any] = {}
    for name in runs:
        info[f"{name}_min_ms"] = round(min(times[name]) * 1e3, 2)
        info[f"{name}_median_ms"] = round(statistics.median(times[name]) * 1e3, 2)
        info[f"{name}_fills"] = results[name].fills.height
        if name != "plain":
            ratio_min = min(times[name]) / min(times["plain"])
            ratio_median = statistics.median(times[name]) / statistics.median(times["plain"])
            prefix = "" if name == "seeds" else f"{name}_"
            info[f"{prefix}ratio_min"] = round(ratio_min, 3)
            info[f"{prefix}ratio_median"] = round(ratio_median, 3)
            reasons = results[name].trades["exit_reason"].value_counts().iter_rows()
            info[f"{name}_exit_reasons"] = dict(reasons)
    info["seeds_rejections"] = result.rejections.height
    info["load_average"] = os.getloadavg()
    benchmark.extra_info.update(info)
    print(benchmark.extra_info)
