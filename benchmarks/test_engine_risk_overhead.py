"""RiskManager overhead on W1 (issue 5): no manager vs 0, 3 and 10 rules, in one run.

Run: ``python -m pytest benchmarks/test_engine_risk_overhead.py --no-cov --benchmark-only``.
The three basic rules are PriceBasedStopLoss(5 %), DynamicTrailingStop(10 %) and
TimeBasedExit(60); ``3+limits`` adds three portfolio limits that never bind (order
validation only); the ten add seven more rules, two of them position rules that only the
general per-position path runs. ``3-inert`` runs the same three rules with
levels that never trigger, so its trades equal the ``none`` run and the difference is the pure
cost of the risk layer; the triggering ``3`` run also trades more (its rules exit positions
that the strategy then buys back), so its difference is the risk layer plus those extra fills.

Two kinds of wall-time figures:

- ``test_w1_risk_manager_overhead[...]``: one pytest-benchmark row per configuration
  (5 rounds each, one configuration after the other);
- ``test_w1_risk_overhead_interleaved``: every configuration once per round, in turn, for
  30 rounds, with a garbage collection before each run; it prints, per configuration, the ratio
  of its fastest run to the fastest ``none`` run, the median of its per-round ratios to ``none``
  and the time per fill, and stores them in ``extra_info``. Interleaving keeps slow phases of a
  shared machine from falling on one configuration only.

Every configuration, ``10`` included (``BreakEvenRule``, ``PartialProfitTaking`` and
``MaxLeverageRule`` have compiled forms), runs the compiled whole-run path
(``engine.compiled.topn``).
The ``-loop`` cases force the Python loop (``compiled=False``) for comparison, so the ratios to
``none`` are compiled-to-compiled except for the ``-loop`` rows.

On a shared machine, wall time varies by 2-3 % between identical runs; the deterministic figure
is the instruction count of ``benchmarks/risk_overhead_instructions.py`` (valgrind).
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

import polars as pl
import pytest

from engine import (
    BacktestEngine,
    BacktestResult,
    BreakEvenRule,
    DynamicTrailingStop,
    ExecutionConfig,
    MarketData,
    MaxDailyLossRule,
    MaxDrawdownRule,
    MaxLeverageRule,
    MaxPositionSizeRule,
    MaxPositionsRule,
    PartialProfitTaking,
    PercentageCommission,
    PriceBasedStopLoss,
    PriceBasedTakeProfit,
    RiskManager,
    RiskRule,
    TimeBasedExit,
    TopNStrategy,
)


def _rules(kind: str) -> list[RiskRule] | None:
    basic: list[RiskRule] = [
        PriceBasedStopLoss(0.05),
        DynamicTrailingStop(0.10),
        TimeBasedExit(60),
    ]
    if kind == "none":
        return None
    if kind == "0":
        return []
    if kind == "3":
        return basic
    if kind == "3+limits":
        # with three portfolio limits that never bind: they run at hook B (order validation)
        # beside the compiled position rules
        return [*basic, MaxPositionsRule(100), MaxPositionSizeRule(0.5), MaxDrawdownRule(0.9)]
    if kind == "3-inert":
        # same three rules with levels that never trigger: trading identical to "none", so the
        # difference is the pure cost of the risk layer
        return [PriceBasedStopLoss(0.99), DynamicTrailingStop(0.99), TimeBasedExit(10**6)]
    return [
        *basic,
        PriceBasedTakeProfit(0.5),
        BreakEvenRule(0.3),
        PartialProfitTaking([(0.5, 0.5)]),
        MaxDailyLossRule(0.5),
        MaxDrawdownRule(0.9),
        MaxLeverageRule(5.0),
        MaxPositionsRule(100),
        MaxPositionSizeRule(0.5),
    ][:10]


def run_w1(data: MarketData, kind: str) -> BacktestResult:
    """One W1 backtest (TopN-25 on ``mom_20``, 0.1 % commission) with configuration ``kind``
    (suffix ``-loop``: forced through the Python loop instead of the compiled path)."""
    loop = kind.endswith("-loop")
    chosen = _rules(kind.removesuffix("-loop"))
    manager = None if chosen is None else RiskManager(chosen)
    cfg = ExecutionConfig(commission=PercentageCommission(0.001))
    strategy = TopNStrategy("mom_20", n=25)
    return BacktestEngine(data, strategy, manager, cfg, compiled=not loop).run()


_CASES = ("none", "0", "3-inert", "3", "3+limits", "10", "none-loop", "3+limits-loop")


@pytest.fixture(scope="module")
def data(sp500_momentum_panel: pl.DataFrame) -> MarketData:
    return MarketData.from_frame(sp500_momentum_panel, signal_columns=["mom_20"])


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("rules", _CASES)
def test_w1_risk_manager_overhead(benchmark: Any, data: MarketData, rules: str) -> None:
    result: BacktestResult = benchmark.pedantic(
        run_w1, args=(data, rules), rounds=5, iterations=1, warmup_rounds=1
    )
    benchmark.extra_info["bar_events"] = data.n_rows
    benchmark.extra_info["risk_context_builds"] = result.risk_context_builds
    if benchmark.stats is not None:  # None under --benchmark-disable (a single plain run)
        benchmark.extra_info["bar_events_per_s"] = data.n_rows / benchmark.stats.stats.min


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_w1_risk_overhead_interleaved(
    benchmark: Any, data: MarketData, capsys: pytest.CaptureFixture[str]
) -> None:
    def measure() -> dict[str, tuple[float, float, int]]:
        fills = {kind: run_w1(data, kind).fills.height for kind in _CASES}  # warm-up (numba cache)
        times: dict[str, list[float]] = {kind: [] for kind in _CASES}
        for _ in range(30):
            for kind in _CASES:
                gc.collect()
                started = time.perf_counter()
                run_w1(data, kind)
                times[kind].append(time.perf_counter() - started)
        # paired: each run against the `none` run of the same round (same machine state)
        paired = {
            kind: statistics.median(t / b for t, b in zip(times[kind], times["none"], strict=True))
            for kind in _CASES
        }
        return {kind: (min(times[kind]), paired[kind], fills[kind]) for kind in _CASES}

    figures = benchmark.pedantic(measure, rounds=1, iterations=1)
    base, _, base_fills = figures["none"]
    lines = [
        f"{'case':8s} {'min ms':>8s} {'min ratio':>9s} {'paired median':>13s} {'fills':>6s} "
        f"{'per-fill ratio':>14s}"
    ]
    for kind, (seconds, paired, fills) in figures.items():
        ratio = seconds / base
        per_fill = (seconds / fills) / (base / base_fills)
        benchmark.extra_info[f"{kind}_min_ratio"] = round(ratio, 4)
        benchmark.extra_info[f"{kind}_paired_median_ratio"] = round(paired, 4)
        benchmark.extra_info[f"{kind}_fills"] = fills
        lines.append(
            f"{kind:8s} {seconds * 1e3:8.1f} {ratio:9.3f} {paired:13.3f} {fills:6d} "
            f"{per_fill:14.3f}"
        )
    with capsys.disabled():
        print("\nW1 risk overhead, interleaved (30 rounds):\n" + "\n".join(lines))
    # the inert rules must not change the trading, only add the risk layer's cost
    assert figures["3-inert"][2] == figures["none"][2]
