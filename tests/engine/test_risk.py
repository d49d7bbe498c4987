"""Risk rules through the engine: intrabar stops, gaps, stop-vs-target, time exits, hooks."""

from __future__ import annotations

import warnings

import pytest

from engine import (
    FunctionRule,
    Order,
    OrderDecision,
    PercentageCommission,
    PortfolioSnapshot,
    PriceBasedStopLoss,
    PriceBasedTakeProfit,
    RiskContext,
    RiskDecision,
    RiskManager,
    RiskRule,
    TimeBasedExit,
)
from engine.risk.decision import merge_decisions
from tests.engine.helpers import make_panel, run, ts


def _buy(q: float) -> object:
    return lambda s: s.buy("AAA", q)


@pytest.mark.parametrize("fill", ["next_open", "close"])
def test_stop_loss_intrabar_fills_at_level(fill: str) -> None:
    # entry 100 (bar1 open for next_open, bar0 close for close) → stop 95
    bars = [(99, 101, 98, 100), (100, 101, 99, 100), (97, 98, 94, 96), (96, 97, 95, 96)]
    result = run(
        make_panel({"AAA": bars}), {0: _buy(10)}, rules=[PriceBasedStopLoss(0.05)], fill=fill
    )
    trade = result.trades.row(0, named=True)
    assert trade["entry_price"] == 100.0
    assert trade["exit_price"] == pytest.approx(95.0)
    assert trade["exit_timestamp"] == ts(2)
    assert trade["exit_reason"] == "PriceBasedStopLoss"
    assert trade["stop_loss_at_exit"] == pytest.approx(95.0)
    assert trade["pnl_net"] == pytest.approx(-50.0)


def test_stop_loss_gap_through_level_fills_at_open() -> None:
    bars = [(99, 101, 98, 100), (100, 101, 99, 100), (93, 94, 90, 92), (92, 93, 91, 92)]
    result = run(make_panel({"AAA": bars}), {0: _buy(10)}, rules=[PriceBasedStopLoss(0.05)])
    trade = result.trades.row(0, named=True)
    assert trade["exit_price"] == 93.0 and trade["exit_timestamp"] == ts(2)
    assert result.fills["order_type"].to_list() == ["market", "stop"]
    assert trade["mae"] == pytest.approx(-70.0)  # worst price is the exit (the gap open)


def test_stop_level_not_active_on_entry_bar() -> None:
    # bar1 (entry at its open 100) trades down to 90 but the stop starts on bar2
    bars = [(99, 101, 98, 100), (100, 101, 90, 99), (99, 100, 97, 99), (99, 100, 94, 95)]
    result = run(make_panel({"AAA": bars}), {0: _buy(10)}, rules=[PriceBasedStopLoss(0.05)])
    trade = result.trades.row(0, named=True)
    assert trade["exit_timestamp"] == ts(3) and trade["exit_price"] == 95.0


def test_stop_and_take_profit_same_bar_stop_wins() -> None:
    bars = [(99, 101, 98, 100), (100, 101, 99, 100), (100, 111, 94, 105), (105, 106, 104, 105)]
    result = run(
        make_panel({"AAA": bars}),
        {0: _buy(10)},
        rules=[PriceBasedStopLoss(0.05), PriceBasedTakeProfit(0.10)],
    )
    trade = result.trades.row(0, named=True)
    assert trade["exit_reason"] == "PriceBasedStopLoss" and trade["exit_price"] == 95.0
    assert trade["take_profit_at_exit"] == pytest.approx(110.0)


def test_take_profit_touched_fills_at_level_gap_fills_at_open() -> None:
    bars = [(99, 101, 98, 100), (100, 101, 99, 100), (101, 111, 100, 105)]
    result = run(make_panel({"AAA": bars}), {0: _buy(10)}, rules=[PriceBasedTakeProfit(0.10)])
    assert result.trades["exit_price"].to_list() == pytest.approx([110.0])
    assert result.trades["exit_reason"].to_list() == ["PriceBasedTakeProfit"]
    gap = [(99, 101, 98, 100), (100, 101, 99, 100), (112, 115, 111, 113)]
    result = run(make_panel({"AAA": gap}), {0: _buy(10)}, rules=[PriceBasedTakeProfit(0.10)])
    assert result.trades["exit_price"].to_list() == [112.0]


def test_short_stop_loss_mirrored_triggers_on_high() -> None:
    bars = [(99, 101, 98, 100), (100, 101, 99, 100), (101, 106, 100, 104), (104, 105, 103, 104)]
    result = run(
        make_panel({"AAA": bars}),
        {0: lambda s: s.sell("AAA", 10)},
        rules=[PriceBasedStopLoss(0.05)],
        allow_short=True,
    )
    trade = result.trades.row(0, named=True)
    assert trade["side"] == "short" and trade["exit_price"] == pytest.approx(105.0)
    assert trade["pnl_net"] == pytest.approx(-50.0)


FLAT = [(100, 101, 99, 100)] * 7


def test_time_based_exit_next_open() -> None:
    # entry bar1 (bars_held 0); at bar3's close bars_held = 2 → exit at bar4's open
    result = run(make_panel({"AAA": FLAT}), {0: _buy(10)}, rules=[TimeBasedExit(max_bars=2)])
    trade = result.trades.row(0, named=True)
    assert trade["exit_reason"] == "TimeBasedExit"
    assert trade["entry_timestamp"] == ts(1) and trade["exit_timestamp"] == ts(4)
    assert trade["bars_held"] == 3


def test_time_based_exit_close_mode_exits_at_that_close() -> None:
    result = run(
        make_panel({"AAA": FLAT}), {0: _buy(10)}, rules=[TimeBasedExit(max_bars=2)], fill="close"
    )
    trade = result.trades.row(0, named=True)
    assert trade["entry_timestamp"] == ts(0) and trade["exit_timestamp"] == ts(2)
    assert trade["bars_held"] == 2


def test_time_based_exit_counts_symbol_bars_not_calendar() -> None:
    bars = [FLAT[0], FLAT[0], None, None, FLAT[0], FLAT[0], FLAT[0]]
    other = {"BBB": FLAT}
    result = run(
        make_panel({"AAA": bars, **other}), {0: _buy(10)}, rules=[TimeBasedExit(max_bars=2)]
    )
    # AAA bars: 0, 1 (entry), 4 (held 1), 5 (held 2 → exit), fill at bar 6
    assert result.trades["exit_timestamp"].to_list() == [ts(6)]


def test_risk_manager_none_same_as_no_rules() -> None:
    panel = make_panel({"AAA": FLAT})
    plan = {0: _buy(10), 3: lambda s: s.sell("AAA", 10)}
    a = run(panel, plan, commission=PercentageCommission(0.001))
    b = run(panel, plan, rules=[], commission=PercentageCommission(0.001))
    assert a.trades.equals(b.trades) and a.portfolio_states.equals(b.portfolio_states)


class _Recorder(RiskRule):
    """Counts hook calls; rejects orders above ``limit`` shares and shrinks others to 7."""

    validates_orders = True

    def __init__(self, limit: float) -> None:
        super().__init__(priority=5)
        self.limit = limit
        self.contexts: list[RiskContext] = []

    def evaluate(self, context: RiskContext) -> RiskDecision:
        self.contexts.append(context)
        return RiskDecision.hold()

    def validate_order(self, order: Order, portfolio: PortfolioSnapshot) -> OrderDecision:
        if abs(order.quantity) > self.limit:
            return OrderDecision.reject(f"more than {self.limit} shares")
        if abs(order.quantity) > 7:
            return OrderDecision.shrink(7.0, "capped at 7")
        return OrderDecision.allow()


def test_all_three_hooks_called_through_engine() -> None:
    rule = _Recorder(limit=50)
    manager = RiskManager([rule, PriceBasedStopLoss(0.05)])
    from engine import BacktestEngine, ExecutionConfig, MarketData
    from tests.engine.helpers import Script

    data = MarketData.from_frame(make_panel({"AAA": FLAT}))
    plan = {0: lambda s: s.buy("AAA", 100), 1: _buy(10)}
    result = BacktestEngine(data, Script(plan), manager, ExecutionConfig()).run()
    # hook B: 100 rejected, 10 shrunk to 7
    rej = result.rejections
    assert rej["event"].to_list() == ["rejected", "shrunk"]
    assert rej["rule"].to_list() == ["_Recorder", "_Recorder"]
    assert result.fills["quantity"].to_list() == [7.0]
    # hook C: one context per bar while the position is open (bars 2..6), built once each
    assert [c.bars_held for c in rule.contexts] == [0, 1, 2, 3, 4]
    assert result.risk_context_builds == 5
    ctx = rule.contexts[0]
    assert ctx.entry_price == 100.0 and ctx.stop_loss == pytest.approx(95.0)
    assert ctx.portfolio.n_positions == 1
    # hook D
    assert manager.fills_seen == 1


def test_function_rule_exit_tagged_with_its_name() -> None:
    def exit_on_bar_one(ctx: RiskContext) -> RiskDecision:
        return RiskDecision.exit("one bar") if ctx.bars_held >= 1 else RiskDecision.hold()

    result = run(make_panel({"AAA": FLAT}), {0: _buy(10)}, rules=[FunctionRule(exit_on_bar_one)])
    assert result.trades["exit_reason"].to_list() == ["exit_on_bar_one"]


def test_partial_exit_decision_closes_part() -> None:
    def half(ctx: RiskContext) -> RiskDecision:
        if ctx.bars_held == 1 and ctx.quantity == 10:
            return RiskDecision.exit("half", quantity=5)
        return RiskDecision.hold()

    result = run(make_panel({"AAA": FLAT}), {0: _buy(10)}, rules=[FunctionRule(half, "Half")])
    assert result.trades["quantity"].to_list() == [5.0]
    assert result.trades["partial"].to_list() == [True]


def test_merge_exit_beats_hold_and_tighter_stop_wins() -> None:
    a = RiskDecision.adjust(stop_loss=95.0, rule="A", priority=1)
    b = RiskDecision.adjust(stop_loss=97.0, rule="B", priority=0)
    merged = merge_decisions([a, b], is_long=True)
    assert merged.update_stop_loss == 97.0 and merged.metadata["stop_rule"] == "B"
    assert merge_decisions([a, b], is_long=False).update_stop_loss == 95.0
    exit_ = RiskDecision.exit("x", rule="C")
    merged = merge_decisions([RiskDecision.hold(), exit_, a], is_long=True)
    assert merged.should_exit and merged.rule == "C" and merged.update_stop_loss == 95.0


def test_two_stop_rules_warn_at_registration() -> None:
    with pytest.warns(UserWarning, match="stop-loss"):
        RiskManager([PriceBasedStopLoss(0.05), PriceBasedStopLoss(0.02)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RiskManager([PriceBasedStopLoss(0.05), TimeBasedExit(5)])


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: PriceBasedStopLoss(0.0), "stop_pct"),
        (lambda: PriceBasedStopLoss(1.5), "stop_pct"),
        (lambda: TimeBasedExit(0), "max_bars"),
        (lambda: TimeBasedExit(2.5), "max_bars"),  # type: ignore[arg-type]
        (lambda: RiskManager(["nope"]), "RiskRule"),  # type: ignore[list-item]
    ],
)
def test_rule_bad_parameters_raise_value_error(factory: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()  # type: ignore[operator]


def test_hook_d_sees_every_fill_including_risk_exits() -> None:
    class Watcher(RiskRule):
        observes_fills = True
        evaluates_positions = False

        def __init__(self) -> None:
            super().__init__()
            self.reasons: list[str] = []

        def evaluate(self, context: RiskContext) -> RiskDecision:
            return RiskDecision.hold()

        def on_fill(self, fill: object) -> None:
            self.reasons.append(fill.reason)  # type: ignore[attr-defined]

    watcher = Watcher()
    bars = [(99, 101, 98, 100), (100, 101, 99, 100), (97, 98, 94, 96), (96, 97, 95, 96)]
    run(make_panel({"AAA": bars}), {0: _buy(10)}, rules=[watcher, PriceBasedStopLoss(0.05)])
    assert watcher.reasons == ["strategy", "PriceBasedStopLoss"]
