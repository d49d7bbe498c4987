"""The array fast path of the basic rules gives exactly the general path's results."""

from __future__ import annotations

import polars as pl
import pytest

from engine import (
    BacktestEngine,
    ExecutionConfig,
    MarketData,
    PercentageCommission,
    PriceBasedStopLoss,
    PriceBasedTakeProfit,
    RiskManager,
    TimeBasedExit,
    TopNStrategy,
)
from engine.risk.rules.dynamic import DynamicTrailingStop

# Two stop-setting rules on purpose: the registration warning is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:rules .* all set a stop-loss level:UserWarning")


# Subclasses are not eligible for the fast path: they run through the general, per-position
# RiskContext path with the very same formulas.
class _Stop(PriceBasedStopLoss):
    pass


class _Trail(DynamicTrailingStop):
    pass


class _Time(TimeBasedExit):
    pass


class _Target(PriceBasedTakeProfit):
    pass


def _run(panel: pl.DataFrame, rules: list, fill: str) -> dict[str, pl.DataFrame]:
    data = MarketData.from_frame(panel, signal_columns=["score"])
    result = BacktestEngine(
        data,
        TopNStrategy("score", n=25, weight=0.04),
        risk_manager=RiskManager(rules),
        config=ExecutionConfig(fill=fill, commission=PercentageCommission(0.001)),  # type: ignore[arg-type]
    ).run()
    return {"trades": result.trades, "fills": result.fills, "states": result.portfolio_states}


@pytest.mark.parametrize("fill", ["next_open", "close"])
def test_basic_rules_fast_path_equals_general_path(sp500_panel: pl.DataFrame, fill: str) -> None:
    panel = sp500_panel.with_columns(
        (pl.col("close") / pl.col("close").shift(20).over("symbol") - 1).alias("score")
    ).filter(pl.col("timestamp") < pl.datetime(2015, 1, 1, time_zone="UTC"))
    fast = [
        PriceBasedStopLoss(0.05),
        DynamicTrailingStop(initial_trail_pct=0.08, tighten_per_bar=0.001),
        TimeBasedExit(max_bars=30),
        PriceBasedTakeProfit(0.10),
    ]
    general = [
        _Stop(0.05),
        _Trail(initial_trail_pct=0.08, tighten_per_bar=0.001),
        _Time(max_bars=30),
        _Target(0.10),
    ]
    assert RiskManager(fast).basic_kernel() is not None
    assert RiskManager(general).basic_kernel() is None
    a, b = _run(panel, fast, fill), _run(panel, general, fill)
    assert a["trades"].height > 100
    rule_exits = set(a["trades"]["exit_reason"].unique()) - {"strategy"}
    assert len(rule_exits) >= 2, rule_exits  # the rules really fire
    # exit reasons carry the rule's class name: map the subclasses back before comparing
    names = {"_Stop": "PriceBasedStopLoss", "_Trail": "DynamicTrailingStop",
             "_Time": "TimeBasedExit", "_Target": "PriceBasedTakeProfit"}  # fmt: skip
    b["trades"] = b["trades"].with_columns(pl.col("exit_reason").replace(names))
    b["fills"] = b["fills"].with_columns(pl.col("reason").replace(names))
    for name in a:
        assert a[name].equals(b[name]), name
