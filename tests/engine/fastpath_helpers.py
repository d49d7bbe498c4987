"""The paired-run harness of the compiled-driver tests: one run through the compiled TopN
driver and the same run through the Python loop, and the check that their records are equal.

Used by ``tests/engine/test_fastpath.py`` and ``tests/engine/test_fastpath_rules.py``.
"""

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
"""The result frames both drivers must give equal."""


def run_both(
    data: MarketData,
    strategy: dict[str, Any],
    rules: list[RiskRule] | None,
    config: ExecutionConfig,
) -> tuple[BacktestResult, BacktestResult]:
    """The same run through the compiled path and through the Python loop.

    ``strategy`` holds the ``TopNStrategy`` arguments; each run gets fresh strategy and risk
    manager objects (``rules`` is copied into a new ``RiskManager``; ``None``: no manager).
    """
    out = []
    for compiled in (True, False):
        manager = None if rules is None else RiskManager(list(rules))
        out.append(
            BacktestEngine(data, TopNStrategy(**strategy), manager, config, compiled=compiled).run()
        )
    return out[0], out[1]


def assert_identical(fast: BacktestResult, slow: BacktestResult) -> None:
    """``fast`` ran compiled, ``slow`` the Python loop, and every frame of :data:`FRAMES`
    has the same schema and values in both."""
    assert fast.compiled and not slow.compiled
    for name in FRAMES:
        a, b = getattr(fast, name), getattr(slow, name)
        assert a.schema == b.schema, name
        assert a.equals(b), name
