"""The paired-run harness of the compiled-driver tests: one run through the compiled TopN
driver and the same run through the Python loop, the check that their records are equal, and
the generated OHLCV panels the hypothesis tests feed both.

Used by ``tests/engine/test_fastpath.py``, ``tests/engine/test_fastpath_rules.py``,
``tests/engine/test_fastpath_settings.py`` and ``tests/engine/test_variants.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from engine import (
    BacktestEngine,
    BacktestResult,
    ExecutionConfig,
    MarketData,
    RiskManager,
    RiskRule,
    TopNStrategy,
)
from tests.engine.helpers import ts

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


ExtraColumns = Callable[[np.random.Generator, int, float, float, float], tuple[float | None, ...]]
"""Draws a bar's extra columns from ``(rng, bar index k, high, low, close)``."""


def random_bars(
    rng: np.random.Generator,
    n_symbols: int,
    n_bars: int,
    *,
    move: tuple[float, float],
    volumes: Sequence[float],
    extra: ExtraColumns | None = None,
) -> list[tuple[Any, ...]]:
    """Rows ``(timestamp, symbol, open, high, low, close, volume, score, *extra)`` of a random
    daily panel: symbols ``S0..`` with bars ``0..n_bars-1``.

    Each symbol starts at a price drawn from U(5, 200); after bar 0 each bar is missing with
    probability 0.1. Open and close are the previous close times U(*move), high
    and low lie up to 4 % beyond them. The score is missing with probability 0.15, else one of
    -1, 0, 1 or the close (so ties and sign changes occur). The volume is drawn from
    ``volumes`` (a single value: every bar has it, no draw). ``extra`` appends the bar's further
    columns.
    """
    rows: list[tuple[Any, ...]] = []
    for s in range(n_symbols):
        price = float(rng.uniform(5, 200))
        for k in range(n_bars):
            if k > 0 and rng.random() < 0.1:
                continue  # missing bar
            o = price * rng.uniform(*move)
            c = price * rng.uniform(*move)
            h = max(o, c) * rng.uniform(1.0, 1.04)
            lo = min(o, c) * rng.uniform(0.96, 1.0)
            score = None if rng.random() < 0.15 else float(rng.choice([-1.0, 0.0, 1.0, c]))
            volume = float(volumes[0]) if len(volumes) == 1 else float(rng.choice(volumes))
            more = () if extra is None else extra(rng, k, h, lo, c)
            rows.append((ts(k), f"S{s}", o, h, lo, c, volume, score, *more))
            price = c
    return rows


def use_python_kernels(monkeypatch: Any, *modules: Any) -> None:
    """Replace every compiled kernel (a function with ``py_func``) of ``modules`` by its plain
    Python source for the rest of the test, so a run executes (and coverage sees) the
    kernels' own lines."""
    for module in modules:
        for name in dir(module):
            func = getattr(module, name)
            if hasattr(func, "py_func"):
                monkeypatch.setattr(module, name, func.py_func)
