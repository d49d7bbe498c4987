"""Paired runs of the compiled TopN driver and the Python loop (shared by the fastpath tests)."""

from __future__ import annotations

from typing import Any

from engine import (
    BacktestEngine,
    BacktestResult,
    ExecutionConfig,
    MarketData,
    RiskManager,
    RiskRule,
    TopNStrategy,
)

FRAMES = ("fills", "trades", "portfolio_states", "open_positions", "orders", "rejections")


def _both(
    data: MarketData,
    strategy: dict[str, Any],
    rules: list[RiskRule] | None,
    config: ExecutionConfig,
) -> tuple[BacktestResult, BacktestResult]:
    """The same run through the compiled path and through the Python loop."""
    out = []
    for compiled in (True, False):
        manager = None if rules is None else RiskManager(list(rules))
        out.append(
            BacktestEngine(data, TopNStrategy(**strategy), manager, config, compiled=compiled).run()
        )
    return out[0], out[1]


def _assert_identical(fast: BacktestResult, slow: BacktestResult) -> None:
    assert fast.compiled and not slow.compiled
    for name in FRAMES:
        a, b = getattr(fast, name), getattr(slow, name)
        assert a.schema == b.schema, name
        assert a.equals(b), name
