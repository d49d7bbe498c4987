"""RiskManager overhead on W1 (issue 5): no manager vs 0, 3 and 10 rules, in one run.

Run: ``python -m pytest benchmarks/test_engine_risk_overhead.py --no-cov --benchmark-only``.
The three basic rules are PriceBasedStopLoss(5 %), DynamicTrailingStop(10 %) and
TimeBasedExit(60); the ten add seven more rules. ``3-inert`` runs the same three rules with
levels that never trigger, so its trades equal the ``none`` run and the difference is the pure
cost of the risk layer (the other cases also trade differently). Compare the ``min`` column with the
``none`` case (target: under 3 % for the three basic rules). ``extra_info`` holds bar_events
and the number of RiskContext builds.
"""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def data(sp500_momentum_panel: pl.DataFrame) -> MarketData:
    return MarketData.from_frame(sp500_momentum_panel, signal_columns=["mom_20"])


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("rules", ["none", "0", "3-inert", "3", "10"])
def test_w1_risk_manager_overhead(benchmark: Any, data: MarketData, rules: str) -> None:
    cfg = ExecutionConfig(commission=PercentageCommission(0.001))

    def run() -> BacktestResult:
        chosen = _rules(rules)
        manager = None if chosen is None else RiskManager(chosen)
        return BacktestEngine(data, TopNStrategy("mom_20", n=25), manager, cfg).run()

    result: BacktestResult = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["bar_events"] = data.n_rows
    benchmark.extra_info["risk_context_builds"] = result.risk_context_builds
    benchmark.extra_info["bar_events_per_s"] = data.n_rows / benchmark.stats.stats.min
