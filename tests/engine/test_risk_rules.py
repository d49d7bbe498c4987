"""Issue 5's rule library, each rule hand-checked on short bar sequences through the engine."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from engine import (
    BacktestEngine,
    BreakEvenRule,
    DynamicTrailingStop,
    ExecutionConfig,
    FunctionRule,
    MarketData,
    MaxDailyLossRule,
    MaxDrawdownRule,
    MaxLeverageRule,
    MaxPositionSizeRule,
    MaxPositionsRule,
    PartialProfitTaking,
    PriceBasedStopLoss,
    RegimeDependentRule,
    RiskDecision,
    RiskManager,
    SessionEndExit,
    VolatilityScaledStopLoss,
    VolatilityScaledTakeProfit,
    build_rule,
)
from tests.engine.helpers import Script, make_context, make_panel, run

FLAT = (100, 100, 100, 100)


def _atr_panel(bars: list[Any], atr: list[float]) -> pl.DataFrame:
    return make_panel({"AAA": bars}, signals={"atr_14": {"AAA": atr}})


@pytest.mark.parametrize(
    ("side", "bar2", "exit_price"),
    [("long", (99, 99.5, 95.5, 97), 96.0), ("short", (101, 104.5, 100.5, 103), 104.0)],
)
def test_volatility_scaled_stop_uses_atr_known_before_entry(
    side: str, bar2: Any, exit_price: float
) -> None:
    # ATR 2.0 at the decision bar (bar0); bar1's ATR of 10 must not be used
    panel = _atr_panel([FLAT, FLAT, bar2, FLAT], [2.0, 10.0, 10.0, 10.0])
    order = (lambda s: s.buy("AAA", 10)) if side == "long" else (lambda s: s.sell("AAA", 10))
    result = run(
        panel,
        {0: order},
        rules=[VolatilityScaledStopLoss(atr_multiplier=2.0)],
        indicator_columns=["atr_14"],
        allow_short=True,
    )
    trade = result.trades.row(0, named=True)
    assert trade["exit_price"] == pytest.approx(exit_price)
    assert trade["exit_reason"] == "VolatilityScaledStopLoss"
    assert trade["entry_atr_14"] == 2.0


def test_volatility_scaled_take_profit_level() -> None:
    panel = _atr_panel([FLAT, FLAT, (101, 107, 100, 106), FLAT], [2.0, 10.0, 10.0, 10.0])
    result = run(
        panel,
        {0: lambda s: s.buy("AAA", 10)},
        rules=[VolatilityScaledTakeProfit(3.0)],
        indicator_columns=["atr_14"],
    )
    assert result.trades["exit_price"].to_list() == pytest.approx([106.0])


def test_volatility_rule_missing_column_raises_clearly() -> None:
    with pytest.raises(ValueError, match="needs the column 'atr_14'"):
        run(
            make_panel({"AAA": [FLAT, FLAT, FLAT]}),
            {0: lambda s: s.buy("AAA", 1)},
            rules=[VolatilityScaledStopLoss()],
        )


def test_dynamic_trailing_stop_ratchets_and_tightens() -> None:
    bars = [
        FLAT,
        (100, 105, 99, 104),  # entry at 100; close: max 105, trail 10 % → 94.5
        (104, 110, 95, 108),  # low 95 > 94.5; close: max 110, trail 8 % → 101.2
        (108, 109, 100, 101),  # low 100 ≤ 101.2 → exit at 101.2
    ]
    rule = DynamicTrailingStop(initial_trail_pct=0.10, tighten_per_bar=0.02, min_trail_pct=0.04)
    result = run(make_panel({"AAA": bars}), {0: lambda s: s.buy("AAA", 10)}, rules=[rule])
    trade = result.trades.row(0, named=True)
    assert trade["exit_price"] == pytest.approx(101.2)
    assert trade["stop_loss_at_exit"] == pytest.approx(101.2)
    assert trade["exit_reason"] == "DynamicTrailingStop"
    assert rule.trail(10) == 0.04  # floor


def test_break_even_moves_stop_to_entry_after_trigger() -> None:
    bars = [FLAT, (100, 106, 99, 104), (103, 104, 99, 100), FLAT]
    with pytest.warns(UserWarning, match="stop-loss"):
        manager_rules = [PriceBasedStopLoss(0.10), BreakEvenRule(trigger_pct=0.05)]
        RiskManager(manager_rules)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = run(
            make_panel({"AAA": bars}), {0: lambda s: s.buy("AAA", 10)}, rules=manager_rules
        )
    trade = result.trades.row(0, named=True)
    assert trade["exit_price"] == 100.0 and trade["exit_reason"] == "BreakEvenRule"
    assert trade["mfe"] == pytest.approx(60.0)  # from the 106 high, not a close


def test_partial_profit_taking_slices() -> None:
    bars = [FLAT, (100, 106, 99, 106), (107, 112, 106, 111), (112, 113, 111, 112), FLAT]
    rule = PartialProfitTaking([(0.05, 0.5), (0.10, 0.5)])
    result = run(make_panel({"AAA": bars}), {0: lambda s: s.buy("AAA", 10)}, rules=[rule])
    trades = result.trades
    assert trades["quantity"].to_list() == [5.0, 5.0]
    assert trades["exit_price"].to_list() == [107.0, 112.0]
    assert trades["partial"].to_list() == [True, False]
    assert trades["exit_reason"].to_list() == ["PartialProfitTaking"] * 2


@pytest.mark.parametrize(("vix", "exit_price"), [(30.0, 98.0), (20.0, 90.0)])
def test_regime_dependent_rule_picks_stop_by_vix(vix: float, exit_price: float) -> None:
    bars = [FLAT, FLAT, (99, 99, 89, 92), FLAT]
    rule = build_rule(
        {
            "type": "RegimeDependentRule",
            "context_column": "vix",
            "threshold": 25.0,
            "above": {"type": "PriceBasedStopLoss", "stop_pct": 0.02},
            "below": {"type": "PriceBasedStopLoss", "stop_pct": 0.10},
        }
    )
    assert isinstance(rule, RegimeDependentRule)
    result = run(
        make_panel({"AAA": bars}),
        {0: lambda s: s.buy("AAA", 10)},
        rules=[rule],
        context=make_context({"vix": [vix, 50.0, 50.0, 50.0]}),
    )
    trade = result.trades.row(0, named=True)
    assert trade["exit_price"] == pytest.approx(exit_price)
    assert trade["exit_reason"] == "PriceBasedStopLoss"
    assert trade["entry_vix"] == vix


def _intraday_panel() -> pl.DataFrame:
    start = datetime(2024, 1, 2, 20, 0, tzinfo=UTC)  # 15:00 New York (EST)
    rows = [
        {
            "timestamp": start + timedelta(minutes=30 * k),
            "symbol": "AAA",
            "open": 10.0,
            "high": 10.0,
            "low": 10.0,
            "close": 10.0 + k,
            "volume": 1e6,
        }
        for k in range(3)
    ]
    return pl.DataFrame(rows).with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))


@pytest.mark.parametrize(("minutes_before", "exit_price"), [(0, 12.0), (30, 11.0)])
def test_session_end_exit_flat_at_session_close(minutes_before: int, exit_price: float) -> None:
    result = run(
        _intraday_panel(),
        {0: lambda s: s.buy("AAA", 1)},
        rules=[SessionEndExit("16:00", "America/New_York", minutes_before=minutes_before)],
        fill="close",
    )
    assert result.trades["exit_price"].to_list() == [exit_price]
    assert result.trades["exit_reason"].to_list() == ["SessionEndExit"]


def test_max_daily_loss_halts_entries_but_allows_exits() -> None:
    bars = [FLAT, (100, 100, 97, 97), FLAT, FLAT]
    plan = {
        0: lambda s: s.buy("AAA", 100),
        1: lambda s: (s.buy("AAA", 1), s.sell("AAA", 50)),
    }
    result = run(
        make_panel({"AAA": bars}),
        plan,
        rules=[MaxDailyLossRule(0.02)],
        initial_cash=10_000.0,
        fill="close",
    )
    assert result.rejections["rule"].to_list() == ["MaxDailyLossRule"]
    assert result.fills["quantity"].to_list() == [100.0, -50.0]


@pytest.mark.parametrize("action", ["halt", "flatten"])
def test_max_drawdown_rule_halt_or_flatten(action: str) -> None:
    bars = [FLAT, (100, 100, 80, 80), (80, 80, 80, 80), (80, 80, 80, 80)]
    plan = {0: lambda s: s.buy("AAA", 100), 2: lambda s: s.buy("AAA", 1)}
    result = run(
        make_panel({"AAA": bars}),
        plan,
        rules=[MaxDrawdownRule(0.1, action=action)],
        initial_cash=10_000.0,
        fill="close",
    )
    # bar1: equity 8000 = −20 % ≤ −10 %
    assert "MaxDrawdownRule" in result.rejections["rule"].to_list()
    if action == "flatten":
        assert result.trades["exit_reason"].to_list() == ["MaxDrawdownRule"]
        assert result.trades["exit_timestamp"].to_list()[0] == result.fills["timestamp"][1]
    else:
        assert result.trades.height == 0


def test_max_leverage_shrinks_order_to_fit() -> None:
    result = run(
        make_panel({"AAA": [FLAT, FLAT]}),
        {0: lambda s: s.buy("AAA", 150)},
        rules=[MaxLeverageRule(1.0)],
        initial_cash=10_000.0,
        fill="close",
    )
    assert result.fills["quantity"].to_list() == [100.0]
    rej = result.rejections.row(0, named=True)
    assert rej["event"] == "shrunk" and rej["quantity"] == 150.0


def test_max_position_size_shrinks_then_rejects() -> None:
    plan = {0: lambda s: s.buy("AAA", 150), 1: lambda s: s.buy("AAA", 50)}
    result = run(
        make_panel({"AAA": [FLAT, FLAT, FLAT]}),
        plan,
        rules=[MaxPositionSizeRule(0.1)],
        initial_cash=100_000.0,
        fill="close",
    )
    # cap = 0.1 × 100000 / 100 = 100 shares
    assert result.fills["quantity"].to_list() == [100.0]
    assert result.rejections["event"].to_list() == ["shrunk", "rejected"]


def test_max_positions_counts_pending_sells_and_buys() -> None:
    panel = make_panel({s: [FLAT, FLAT, FLAT] for s in ("AAA", "BBB", "CCC", "DDD")})
    plan = {
        0: lambda s: (s.buy("AAA", 1), s.buy("BBB", 1), s.buy("CCC", 1)),
        1: lambda s: (s.close_position("AAA"), s.buy("DDD", 1)),
    }
    result = run(panel, plan, rules=[MaxPositionsRule(2)], fill="close")
    assert result.rejections["symbol"].to_list() == ["CCC"]
    assert result.fills["symbol"].to_list() == ["AAA", "BBB", "AAA", "DDD"]


def test_one_context_per_position_per_bar_with_ten_rules() -> None:
    rules = [FunctionRule(lambda ctx: RiskDecision.hold(), name=f"R{k}") for k in range(10)]
    data = MarketData.from_frame(make_panel({"AAA": [FLAT] * 6, "BBB": [FLAT] * 6}))
    plan = {0: lambda s: (s.buy("AAA", 1), s.buy("BBB", 1))}
    result = BacktestEngine(data, Script(plan), RiskManager(rules), ExecutionConfig()).run()
    assert result.risk_context_builds == 2 * 5  # 2 positions × bars 1..5


def test_rule_specs_from_registry_with_bad_params() -> None:
    with pytest.raises(ValueError, match="action"):
        build_rule({"type": "MaxDrawdownRule", "max_drawdown": 0.2, "action": "panic"})
    with pytest.raises(ValueError, match="increase"):
        build_rule({"type": "PartialProfitTaking", "levels": [[0.1, 0.5], [0.05, 0.5]]})
    with pytest.raises(ValueError, match="session_close"):
        build_rule({"type": "SessionEndExit", "session_close": "4pm"})


def _random_panel(n_symbols: int = 12, n_bars: int = 150) -> MarketData:
    import numpy as np

    rng = np.random.default_rng(7)
    frames = []
    for k in range(n_symbols):
        close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n_bars)))
        open_ = close * np.exp(rng.normal(0, 0.005, n_bars))
        high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, n_bars))
        low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, n_bars))
        frames.append(
            pl.DataFrame(
                {
                    "timestamp": [
                        datetime(2024, 1, 1, 21, tzinfo=UTC) + timedelta(days=d)
                        for d in range(n_bars)
                    ],
                    "symbol": f"S{k:02d}",
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": 1e6,
                    "score": rng.normal(0, 1, n_bars),
                }
            )
        )
    panel = pl.concat(frames).with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))
    return MarketData.from_frame(panel, signal_columns=["score"])


def test_vectorised_rules_match_per_position_evaluation() -> None:
    from engine import TimeBasedExit, TopNStrategy

    data = _random_panel()

    def rules(vectorized: bool) -> list[Any]:
        chosen: list[Any] = [
            PriceBasedStopLoss(0.04),
            DynamicTrailingStop(0.08, tighten_per_bar=0.005, min_trail_pct=0.03),
            BreakEvenRule(0.03),
            TimeBasedExit(7),
        ]
        for rule in chosen:
            rule.vectorized = rule.vectorized and vectorized
        return chosen

    results = []
    for vectorized in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            manager = RiskManager(rules(vectorized))
        results.append(
            BacktestEngine(
                data,
                TopNStrategy("score", n=4, rebalance_every=3),
                manager,
                ExecutionConfig(),
                compiled=False,  # the loop's vectorised and per-position hook C
            ).run()
        )
    fast, slow = results
    assert fast.trades.height > 20
    assert set(fast.trades["exit_reason"].unique()) >= {
        "DynamicTrailingStop",
        "TimeBasedExit",
        "strategy",
    }
    assert fast.trades.equals(slow.trades)
    assert fast.portfolio_states.equals(slow.portfolio_states)
    assert fast.risk_context_builds == 0 and slow.risk_context_builds > 0


def test_dynamic_trailing_stop_short_ratchets_down_from_lows() -> None:
    bars = [FLAT, (100, 101, 95, 96), (97, 105, 96, 104), FLAT]
    result = run(
        make_panel({"AAA": bars}),
        {0: lambda s: s.sell("AAA", 10)},
        rules=[DynamicTrailingStop(initial_trail_pct=0.10)],
        allow_short=True,
    )
    trade = result.trades.row(0, named=True)
    # after bar1: lowest low 95 → level 95 × 1.10 = 104.5; bar2's high 105 reaches it
    assert trade["side"] == "short" and trade["exit_price"] == pytest.approx(104.5)
    assert trade["pnl_gross"] == pytest.approx(-45.0)


@pytest.mark.parametrize(("mode", "exit_bar"), [("any", 2), ("all", 4)])
def test_composite_rule_or_and(mode: str, exit_bar: int) -> None:
    from engine import CompositeRule, TimeBasedExit
    from tests.engine.helpers import ts

    def after_three(ctx: Any) -> RiskDecision:
        return RiskDecision.exit("late") if ctx.bars_held >= 3 else RiskDecision.hold()

    rule = CompositeRule(
        [TimeBasedExit(1), FunctionRule(after_three, "AfterThree")], mode=mode, name="Both"
    )
    result = run(make_panel({"AAA": [FLAT] * 7}), {0: lambda s: s.buy("AAA", 1)}, rules=[rule])
    # entry bar1; OR: TimeBasedExit at bar2's close; AND: both only at bar4 (held 3) → fill bar5
    assert result.trades["exit_timestamp"].to_list() == [ts(exit_bar + 1)]
