"""Built-in risk rules and their registry (name → class) for configs."""

from __future__ import annotations

from engine.risk.rules.base import CompositeRule, FunctionRule, RiskRule
from engine.risk.rules.dynamic import (
    BreakEvenRule,
    DynamicTrailingStop,
    PartialProfitTaking,
    VolatilityScaledStopLoss,
    VolatilityScaledTakeProfit,
)
from engine.risk.rules.exits import PriceBasedStopLoss, PriceBasedTakeProfit, TimeBasedExit
from engine.risk.rules.portfolio import (
    MaxDailyLossRule,
    MaxDrawdownRule,
    MaxLeverageRule,
    MaxPositionSizeRule,
    MaxPositionsRule,
)
from engine.risk.rules.regime import RegimeDependentRule, SessionEndExit

RULE_REGISTRY: dict[str, type[RiskRule]] = {
    cls.__name__: cls
    for cls in (
        PriceBasedStopLoss,
        PriceBasedTakeProfit,
        TimeBasedExit,
        VolatilityScaledStopLoss,
        VolatilityScaledTakeProfit,
        DynamicTrailingStop,
        BreakEvenRule,
        PartialProfitTaking,
        RegimeDependentRule,
        SessionEndExit,
        MaxDailyLossRule,
        MaxDrawdownRule,
        MaxLeverageRule,
        MaxPositionSizeRule,
        MaxPositionsRule,
    )
}
"""Rule classes by the name configs use in ``risk_rules: [{type: <name>, ...}]``."""

__all__ = [
    "RULE_REGISTRY",
    "BreakEvenRule",
    "CompositeRule",
    "DynamicTrailingStop",
    "FunctionRule",
    "MaxDailyLossRule",
    "MaxDrawdownRule",
    "MaxLeverageRule",
    "MaxPositionSizeRule",
    "MaxPositionsRule",
    "PartialProfitTaking",
    "PriceBasedStopLoss",
    "PriceBasedTakeProfit",
    "RegimeDependentRule",
    "RiskRule",
    "SessionEndExit",
    "TimeBasedExit",
    "VolatilityScaledStopLoss",
    "VolatilityScaledTakeProfit",
]
