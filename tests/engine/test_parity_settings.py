"""The engine settings that reproduce the reference frameworks' semantics (issue 31), each on a
hand-built case: ``DynamicTrailingStop(trail_on="close")`` (Backtrader's ``StopTrail``),
``DynamicTrailingStop(include_entry_bar=False)`` (VectorBT's ``sl_trail``),
``ExecutionConfig(target_rounding="order")`` (both frameworks' ``order_target_*`` rounding) and
``ExecutionConfig(stop_activation="second_bar")`` (Backtrader's cheat-on-close stop timing).

Bar k is (open, high, low, close); the expected levels are worked out in the comments. The
real-data check against the frameworks is tests/pipeline/lib/crossval/test_parity.py.
"""

from __future__ import annotations

import warnings
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest

from engine import (
    BacktestEngine,
    DynamicTrailingStop,
    ExecutionConfig,
    MarketData,
    PriceBasedStopLoss,
    RiskManager,
    TopNStrategy,
)
from engine.compiled.plan import compiled_reason
from tests.engine.helpers import T0, make_panel, run

FLAT = (100, 100, 100, 100)


def _exit(result: Any) -> tuple[int, float]:
    """(bar, price) of the first trade's exit."""
    trade = result.trades.row(0, named=True)
    return (trade["exit_timestamp"] - T0).days, round(trade["exit_price"], 10)


# ------------------------------------------------------------------ trail_on="close"
# Buy 10 decided at close 0, filled at bar 1's open (100); 10 % trail.
# Default: level after bar 1 = max(100, high 110) × 0.9 = 99; bar 2's open 99 is at it → 99.
# trail_on="close": the fill price is no reference; after bar 1 the level is close 98 × 0.9
# = 88.2; bar 2 (low 89) holds, close 95 → 85.5 < 88.2 keeps 88.2; bar 3's low 88 → 88.2.
CLOSE_BARS = [FLAT, (100, 110, 97, 98), (99, 100, 89, 95), (90, 91, 88, 89), FLAT]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [({}, (2, 99.0)), ({"trail_on": "close"}, (3, 88.2))],
)
def test_trailing_stop_trail_on_close_starts_from_the_fill_bar_close(
    settings: dict[str, Any], expected: tuple[int, float]
) -> None:
    rule = DynamicTrailingStop(initial_trail_pct=0.10, **settings)
    result = run(make_panel({"AAA": CLOSE_BARS}), {0: lambda s: s.buy("AAA", 10)}, rules=[rule])
    assert _exit(result) == expected


def test_trailing_stop_trail_on_close_short_trails_the_lowest_close() -> None:
    # short 10 @100 at bar 1's open; closes 102 (level 112.2), 96 (105.6); bar 3's high 106
    # reaches 105.6 (the default trails the lowest low: 95 × 1.1 = 104.5 from bar 1 on)
    bars = [FLAT, (100, 108, 95, 102), (101, 104, 96, 96), (100, 106, 99, 104), FLAT]
    rule = DynamicTrailingStop(initial_trail_pct=0.10, trail_on="close")
    result = run(
        make_panel({"AAA": bars}),
        {0: lambda s: s.sell("AAA", 10)},
        rules=[rule],
        allow_short=True,
    )
    assert _exit(result) == (3, 105.6)


def test_trailing_stop_trail_on_close_with_close_fill_sets_level_at_the_fill() -> None:
    # bought at close 0 (100): level 90 at once, checked from bar 1 (low 89 -> 90)
    bars = [FLAT, (100, 101, 89, 95), FLAT]
    rule = DynamicTrailingStop(initial_trail_pct=0.10, trail_on="close")
    result = run(
        make_panel({"AAA": bars}), {0: lambda s: s.buy("AAA", 10)}, rules=[rule], fill="close"
    )
    assert _exit(result) == (1, 90.0)


# ------------------------------------------------------------------ include_entry_bar=False
# Entry 100 at bar 1's open. Default: level after bar 1 = high 110 × 0.9 = 99; bar 2's low 95
# → 99. include_entry_bar=False: level stays 90 (from the fill) after bar 1; bar 2 (low 95)
# holds and its high 106 → 95.4; bar 3's low 95 → 95.4.
ENTRY_BARS = [FLAT, (100, 110, 99, 105), (104, 106, 95, 100), (96, 97, 95, 96), FLAT]


@pytest.mark.parametrize(("include", "expected"), [(True, (2, 99.0)), (False, (3, 95.4))])
def test_trailing_stop_include_entry_bar_false_ignores_the_entry_bar_high(
    include: bool, expected: tuple[int, float]
) -> None:
    rule = DynamicTrailingStop(initial_trail_pct=0.10, include_entry_bar=include)
    result = run(make_panel({"AAA": ENTRY_BARS}), {0: lambda s: s.buy("AAA", 10)}, rules=[rule])
    assert _exit(result) == expected


def test_trailing_stop_reference_keeps_a_tighter_fixed_stop() -> None:
    # fixed 3 % stop at 97 beside the close trail (88.2 after bar 1): bar 2's low 89 → 97
    rules = [PriceBasedStopLoss(0.03), DynamicTrailingStop(0.10, trail_on="close")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # two stop setters: the point here
        result = run(make_panel({"AAA": CLOSE_BARS}), {0: lambda s: s.buy("AAA", 10)}, rules=rules)
    assert _exit(result) == (2, 97.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"trail_on": "open"}, "trail_on must be one of"),
        ({"include_entry_bar": 0}, "include_entry_bar must be a bool"),
        ({"trail_on": "close", "include_entry_bar": False}, "needs trail_on='high'"),
        ({"trail_on": "close", "tighten_per_bar": 0.01}, "tighten_per_bar=0"),
        ({"include_entry_bar": False, "tighten_per_bar": 0.01}, "tighten_per_bar=0"),
    ],
)
def test_trailing_stop_reference_bad_settings_raise(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DynamicTrailingStop(0.05, **kwargs)


def _walk_panel(n_symbols: int = 6, n_bars: int = 150, seed: int = 3) -> MarketData:
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_symbols):
        close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n_bars)))
        open_ = close * np.exp(rng.normal(0, 0.01, n_bars))
        frames.append(
            pl.DataFrame(
                {
                    "timestamp": [T0 + timedelta(days=i) for i in range(n_bars)],
                    "symbol": f"S{k}",
                    "open": open_,
                    "high": np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, n_bars)),
                    "low": np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, n_bars)),
                    "close": close,
                    "volume": 1e6,
                    "score": rng.normal(size=n_bars),
                }
            )
        )
    panel = pl.concat(frames).with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))
    return MarketData.from_frame(panel, signal_columns=["score"])


def _top_n_run(rules: list[Any], vectorized: bool = True, **config: Any) -> Any:
    for rule in rules:
        rule.vectorized = rule.vectorized and vectorized
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a fixed stop beside the trailing one
        manager = RiskManager(rules)
    strategy = TopNStrategy("score", n=3, rebalance_every=4)
    return BacktestEngine(_walk_panel(), strategy, manager, ExecutionConfig(**config)).run()


@pytest.mark.parametrize("settings", [{"trail_on": "close"}, {"include_entry_bar": False}])
def test_trailing_stop_reference_batch_matches_per_position_evaluation(
    settings: dict[str, Any],
) -> None:
    def rules() -> list[Any]:
        return [PriceBasedStopLoss(0.06), DynamicTrailingStop(0.04, **settings)]

    fast = _top_n_run(rules())
    slow = _top_n_run(rules(), vectorized=False)
    default = _top_n_run([PriceBasedStopLoss(0.06), DynamicTrailingStop(0.04)])
    assert (fast.trades["exit_reason"] == "DynamicTrailingStop").sum() > 10
    assert fast.trades.equals(slow.trades)
    assert fast.portfolio_states.equals(slow.portfolio_states)
    assert not fast.trades.equals(default.trades)  # the setting changes the exits


def test_parity_settings_run_the_loop_not_the_compiled_kernels() -> None:
    data = _walk_panel()
    strategy = TopNStrategy("score", n=3)
    default = RiskManager([DynamicTrailingStop(0.04)])
    assert default.basic_kernel() is not None
    assert compiled_reason(data, strategy, default, ExecutionConfig()) is None
    for settings in ({"trail_on": "close"}, {"include_entry_bar": False}):
        risk = RiskManager([DynamicTrailingStop(0.04, **settings)])
        assert risk.basic_kernel() is None
        reason = compiled_reason(data, strategy, risk, ExecutionConfig())
        assert reason is not None and "trailing reference price" in reason
        engine = BacktestEngine(data, strategy, risk, ExecutionConfig())
        assert engine.compiled_reason == reason
    delayed = ExecutionConfig(fill="close", stop_activation="second_bar")
    assert "second_bar" in (compiled_reason(data, strategy, default, delayed) or "")


# ------------------------------------------------------------------ target_rounding
# 10 shares bought at bar 1's open (30); at close 1 the target is 100 of value at close 30,
# i.e. 3.33 shares. "position": target 3 -> sell 7. "order": 3.33 - 10 = -6.67 -> sell 6.
@pytest.mark.parametrize(("rounding", "sold"), [("position", -7.0), ("order", -6.0)])
def test_target_rounding_rounds_the_target_or_the_order(rounding: str, sold: float) -> None:
    bars = {"AAA": [(30, 30, 30, 30)] * 4}
    plan = {
        0: lambda s: s.buy("AAA", 10),
        1: lambda s: s.order_target_value("AAA", 100.0),
    }
    result = run(make_panel(bars), plan, target_rounding=rounding)
    assert result.fills["quantity"].to_list() == [10.0, sold]


def test_target_rounding_order_buys_the_truncated_difference() -> None:
    # from flat: 0.07 × 1000 / 30 = 2.33 shares → 2 under both (target and order are equal)
    bars = {"AAA": [(30, 30, 30, 30)] * 4}
    plan = {0: lambda s: s.order_target_percent("AAA", 0.07)}
    for rounding in ("position", "order"):
        result = run(make_panel(bars), plan, target_rounding=rounding, initial_cash=1000.0)
        assert result.fills["quantity"].to_list() == [2.0]


def test_target_rounding_bad_value_raises() -> None:
    with pytest.raises(ValueError, match="target_rounding must be one of"):
        ExecutionConfig(target_rounding="nearest")


# ------------------------------------------------------------------ stop_activation
# Buy 10 at close 0 (fill="close", 100), 5 % stop at 95. Bar 1's low 94 stops it under
# "next_bar"; under "second_bar" the level is first checked on bar 2 (low 94.5 -> 95).
SECOND_BARS = [FLAT, (99, 100, 94, 99), (98, 99, 94.5, 96), FLAT]


@pytest.mark.parametrize(("activation", "bar"), [("next_bar", 1), ("second_bar", 2)])
def test_stop_activation_second_bar_delays_levels_of_close_fills(activation: str, bar: int) -> None:
    result = run(
        make_panel({"AAA": SECOND_BARS}),
        {0: lambda s: s.buy("AAA", 10)},
        rules=[PriceBasedStopLoss(0.05)],
        fill="close",
        stop_activation=activation,
    )
    assert _exit(result) == (bar, 95.0)


def test_stop_activation_second_bar_leaves_open_fills_as_next_bar() -> None:
    # entry at bar 1's open (99): stop 94.05; bar 2's low 94 reaches it under both settings
    bars = [FLAT, (99, 100, 95, 99), (98, 99, 94, 96), FLAT]
    exits = [
        _exit(
            run(
                make_panel({"AAA": bars}),
                {0: lambda s: s.buy("AAA", 10)},
                rules=[PriceBasedStopLoss(0.05)],
                stop_activation=activation,
            )
        )
        for activation in ("next_bar", "second_bar")
    ]
    assert exits == [(2, 94.05), (2, 94.05)]
