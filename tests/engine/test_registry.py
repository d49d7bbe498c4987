"""Config dicts → objects through the registries."""

from __future__ import annotations

import pytest

from engine import (
    COMMISSION_REGISTRY,
    RULE_REGISTRY,
    SLIPPAGE_REGISTRY,
    STRATEGY_REGISTRY,
    ExecutionConfig,
    FixedPercentageSlippage,
    NoSlippage,
    PercentageCommission,
    PriceBasedStopLoss,
    TopNStrategy,
    build_commission,
    build_rule,
    build_slippage,
    build_strategy,
)


def test_build_each_kind_from_config_dicts() -> None:
    rule = build_rule({"type": "PriceBasedStopLoss", "stop_pct": 0.05, "priority": 100})
    assert isinstance(rule, PriceBasedStopLoss) and rule.stop_pct == 0.05 and rule.priority == 100
    commission = build_commission({"type": "Percentage", "rate": 0.001})
    assert isinstance(commission, PercentageCommission) and commission.rate == 0.001
    assert isinstance(build_slippage({"type": "None"}), NoSlippage)
    assert isinstance(
        build_slippage({"type": "FixedPercentage", "pct": 0.001}), FixedPercentageSlippage
    )
    strategy = build_strategy({"type": "TopN", "signal": "score", "n": 25})
    assert isinstance(strategy, TopNStrategy) and strategy.n == 25
    assert {"TimeBasedExit", "PriceBasedStopLoss"} <= set(RULE_REGISTRY)
    assert "Percentage" in COMMISSION_REGISTRY and "NoSlippage" in SLIPPAGE_REGISTRY
    assert "TopN" in STRATEGY_REGISTRY


@pytest.mark.parametrize(
    ("builder", "spec", "message"),
    [
        (build_rule, {"type": "Nope"}, "unknown risk rule type 'Nope'"),
        (build_rule, {"stop_pct": 0.05}, "no 'type' key"),
        (build_rule, {"type": "PriceBasedStopLoss", "stop": 0.05}, "bad parameters"),
        (build_rule, {"type": "PriceBasedStopLoss", "stop_pct": 5}, "stop_pct"),
        (build_commission, {"type": "Percentage", "rate": -1}, "rate"),
        (build_slippage, {"type": "Magic"}, "unknown slippage type"),
        (build_strategy, {"type": "TopN", "signal": "s"}, "bad parameters for strategy"),
    ],
)
def test_build_bad_spec_raises_value_error(
    builder: object, spec: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        builder(spec)  # type: ignore[operator]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fill": "open"},
        {"initial_cash": 0.0},
        {"initial_cash": float("nan")},
        {"commission": 0.001},
        {"max_volume_participation": 1.5},
        {"allow_short": "yes"},
    ],
)
def test_execution_config_invalid_raises(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ExecutionConfig(**kwargs)  # type: ignore[arg-type]


def test_execution_config_is_frozen() -> None:
    cfg = ExecutionConfig()
    with pytest.raises(AttributeError):
        cfg.fill = "close"  # type: ignore[misc]
