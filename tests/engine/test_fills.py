"""Hand-computed fills, cash, P&L and commission for market orders in both fill modes."""

from __future__ import annotations

import math

import pytest

from engine import PercentageCommission, Strategy
from tests.engine.helpers import make_panel, run, ts

# AAA: bar k = (open, high, low, close)
AAA = [
    (10, 11, 9, 10.5),
    (11, 12, 10, 11.5),
    (12, 13, 11, 12.5),
    (12, 12.5, 11.5, 12),
    (13, 14, 12, 13),
]


def _buy(q: float, sym: str = "AAA") -> object:
    return lambda s: s.buy(sym, q)


def _sell(q: float, sym: str = "AAA") -> object:
    return lambda s: s.sell(sym, q)


def test_market_order_next_open_round_trip_hand_computed() -> None:
    # buy decided at bar0's close fills at bar1's open (11), sell decided at bar2 fills at bar3 (12)
    result = run(
        make_panel({"AAA": AAA}),
        {0: _buy(100), 2: _sell(100)},
        commission=PercentageCommission(0.001),
        initial_cash=100_000.0,
    )
    fills = result.fills
    assert fills["timestamp"].to_list() == [ts(1), ts(3)]
    assert fills["price"].to_list() == [11.0, 12.0]
    assert fills["commission"].to_list() == pytest.approx([1.1, 1.2])
    trade = result.trades.row(0, named=True)
    assert trade["entry_timestamp"] == ts(1) and trade["exit_timestamp"] == ts(3)
    assert trade["decision_timestamp"] == ts(0)
    assert trade["pnl_gross"] == pytest.approx(100.0)
    assert trade["pnl_net"] == pytest.approx(100.0 - 1.1 - 1.2)
    assert trade["return_pct"] == pytest.approx(97.7 / 1100.0)
    assert trade["bars_held"] == 2
    assert trade["exit_reason"] == "strategy"
    # held through bar1 (h 12, l 10) and bar2 (h 13, l 11), exit at 12
    assert trade["mfe"] == pytest.approx(200.0) and trade["mae"] == pytest.approx(-100.0)
    states = result.portfolio_states
    cash_after_buy = 100_000.0 - 1100.0 - 1.1
    assert states["cash"].to_list()[1] == pytest.approx(cash_after_buy)
    assert states["equity"].to_list()[1] == pytest.approx(cash_after_buy + 100 * 11.5)
    assert states["equity"].to_list()[-1] == pytest.approx(100_000.0 + 97.7)
    assert states["n_positions"].to_list() == [0, 1, 1, 0, 0]


def test_mfe_mae_keep_the_extremes_of_the_whole_holding_not_the_last_bar() -> None:
    # buy fills at bar1's open (10); the highest high (15, bar1) and the lowest low (7, bar2)
    # come before the last bar held (bar3: h 11, l 9); the sell fills at bar4's open (10)
    bars = [(10, 10, 10, 10), (10, 15, 9, 12), (11, 12, 7, 9), (10, 11, 9, 10), (10, 10, 10, 10)]
    result = run(make_panel({"AAA": bars}), {0: _buy(100), 3: _sell(100)})
    trade = result.trades.row(0, named=True)
    assert trade["entry_price"] == 10.0 and trade["exit_price"] == 10.0
    assert trade["mfe"] == pytest.approx(500.0) and trade["mae"] == pytest.approx(-300.0)


def test_market_order_close_mode_fills_at_decision_bar_close() -> None:
    result = run(
        make_panel({"AAA": AAA}),
        {0: _buy(100), 2: _sell(100)},
        fill="close",
        commission=PercentageCommission(0.001),
    )
    assert result.fills["price"].to_list() == [10.5, 12.5]
    assert result.fills["timestamp"].to_list() == [ts(0), ts(2)]
    trade = result.trades.row(0, named=True)
    assert trade["pnl_net"] == pytest.approx(200.0 - 1.05 - 1.25)
    assert trade["bars_held"] == 2
    # entry at bar0's close: bar0's range is not part of the excursion; bar1 h12/l10, exit 12.5
    assert trade["mfe"] == pytest.approx(250.0) and trade["mae"] == pytest.approx(-50.0)


def test_buy_beyond_cash_rejected_insufficient_cash_not_shrunk() -> None:
    result = run(make_panel({"AAA": AAA}), {0: _buy(100)}, initial_cash=1_000.0)
    assert result.fills.height == 0
    rej = result.rejections.row(0, named=True)
    assert rej["reason"] == "insufficient_cash" and rej["event"] == "rejected"
    assert rej["quantity"] == 100.0 and rej["timestamp"] == ts(1)
    assert result.orders["status"].to_list() == ["rejected"]
    assert result.portfolio_states["equity"].to_list() == [1_000.0] * 5


def test_commission_counts_toward_cash_check() -> None:
    # 90 shares at 11 = 990 fits in 1000, but 990 + 1 % commission (9.9) does not
    result = run(
        make_panel({"AAA": AAA}),
        {0: _buy(90)},
        initial_cash=999.0,
        commission=PercentageCommission(0.01),
    )
    assert result.rejections["reason"].to_list() == ["insufficient_cash"]


def test_sell_without_position_long_only_rejected_short_not_allowed() -> None:
    result = run(make_panel({"AAA": AAA}), {0: _sell(10)})
    assert result.rejections["reason"].to_list() == ["short_not_allowed"]
    assert result.fills.height == 0


def test_short_round_trip_when_allowed_pnl_mirrored() -> None:
    result = run(make_panel({"AAA": AAA}), {0: _sell(10), 2: _buy(10)}, allow_short=True)
    trade = result.trades.row(0, named=True)
    assert trade["side"] == "short"
    assert trade["pnl_net"] == pytest.approx((11.0 - 12.0) * 10)
    assert result.portfolio_states["cash"].to_list()[1] == pytest.approx(1_000_000.0 + 110.0)


def test_order_for_symbol_without_bar_waits_for_its_next_bar() -> None:
    panel = make_panel(
        {"AAA": AAA, "BBB": [(5, 6, 4, 5), None, None, (7, 8, 6, 7.5), (8, 9, 7, 8)]}
    )
    result = run(panel, {0: _buy(10, "BBB")})
    fill = result.fills.row(0, named=True)
    assert fill["timestamp"] == ts(3) and fill["price"] == 7.0
    # marked at its last close while it has no bar: bar1/bar2 equity unchanged
    assert result.portfolio_states["positions_value"].to_list() == [0, 0, 0, 75.0, 80.0]


def test_position_marked_at_last_close_when_symbol_has_no_bar() -> None:
    panel = make_panel(
        {"AAA": AAA, "BBB": [(5, 6, 4, 5), (5, 6, 4, 5.5), None, (7, 8, 6, 7.5), None]}
    )
    result = run(panel, {0: _buy(10, "BBB")})
    assert result.portfolio_states["positions_value"].to_list() == [0, 55.0, 55.0, 75.0, 75.0]


def test_orders_fill_in_submission_order_sell_funds_buy() -> None:
    panel = make_panel({"AAA": AAA, "BBB": [(10, 10, 10, 10)] * 5})
    # hold 90 BBB; then sell them and buy AAA with the proceeds on the same open
    result = run(
        panel,
        {0: _buy(90, "BBB"), 1: lambda s: (s.sell("BBB", 90), s.buy("AAA", 80))},
        initial_cash=1_000.0,
    )
    assert result.fills["symbol"].to_list() == ["BBB", "BBB", "AAA"]
    assert result.rejections.height == 0


def test_fractional_quantity_refused_unless_enabled() -> None:
    with pytest.raises(ValueError, match="fractional shares are off"):
        run(make_panel({"AAA": AAA}), {0: _buy(1.5)})
    result = run(make_panel({"AAA": AAA}), {0: _buy(1.5)}, fractional_shares=True)
    assert result.fills["quantity"].to_list() == [1.5]


def test_partial_exit_records_partial_trade_and_keeps_rest_open() -> None:
    result = run(
        make_panel({"AAA": AAA}),
        {0: _buy(100), 1: _sell(40), 2: _sell(60)},
        commission=PercentageCommission(0.001),
    )
    trades = result.trades
    assert trades["quantity"].to_list() == [40.0, 60.0]
    assert trades["partial"].to_list() == [True, False]
    # entry commission 1.1 is split 40/60 between the two rows
    assert trades["entry_commission"].to_list() == pytest.approx([0.44, 0.66])
    assert trades["commission"].sum() == pytest.approx(result.fills["commission"].sum())


def test_strategy_helpers_target_value_and_close_position() -> None:
    seen: dict[str, float] = {}

    def step0(s: Strategy) -> None:
        s.order_target_value("AAA", 1_000.0)  # 1000 / 10.5 → 95 shares
        seen["pending_target"] = s.order_target_value("AAA", 1_000.0) is None

    def step1(s: Strategy) -> None:
        seen["pos"] = s.get_position("AAA")
        seen["value"] = s.get_position_value("AAA")
        seen["pnl_pct"] = s.get_unrealized_pnl_pct("AAA")
        s.close_position("AAA")
        seen["second_close"] = s.close_position("AAA") is None

    result = run(make_panel({"AAA": AAA}), {0: step0, 1: step1})
    assert result.fills["quantity"].to_list() == [95.0, -95.0]
    assert seen["pending_target"] is True and seen["second_close"] is True
    assert seen["pos"] == 95.0 and seen["value"] == pytest.approx(95 * 11.5)
    assert seen["pnl_pct"] == pytest.approx(11.5 / 11.0 - 1.0)


def test_on_fill_sees_every_fill_with_costs() -> None:
    captured: list[Strategy] = []

    def step0(s: Strategy) -> None:
        captured.append(s)
        s.buy("AAA", 10)

    run(make_panel({"AAA": AAA}), {0: step0}, commission=PercentageCommission(0.001))
    (fill,) = captured[0].seen_fills  # type: ignore[attr-defined]
    assert fill.price == 11.0 and fill.commission == pytest.approx(0.11)
    assert fill.side == "buy" and fill.reason == "strategy"


def test_helpers_outside_run_raise_runtime_error() -> None:
    class Idle(Strategy):
        def on_timestamp_batch(self, timestamp, batch, context):  # type: ignore[no-untyped-def]
            pass

    with pytest.raises(RuntimeError, match="during BacktestEngine.run"):
        Idle().buy("AAA", 1)


def test_close_at_end_closes_with_end_of_data_reason() -> None:
    result = run(make_panel({"AAA": AAA}), {0: _buy(10)}, close_at_end=True)
    trade = result.trades.row(0, named=True)
    assert trade["exit_reason"] == "end_of_data" and trade["exit_price"] == 13.0
    assert result.portfolio_states["n_positions"].to_list()[-1] == 0


def test_open_positions_not_in_trades_by_default() -> None:
    result = run(make_panel({"AAA": AAA}), {0: _buy(10)})
    assert result.trades.height == 0
    assert math.isclose(result.final_equity, 1_000_000.0 + 10 * (13.0 - 11.0))


def test_open_positions_reconcile_with_equity() -> None:
    result = run(
        make_panel({"AAA": AAA, "BBB": [(5, 6, 4, 5)] * 5}),
        {0: lambda s: (s.buy("AAA", 100), s.buy("BBB", 10)), 2: _sell(40)},
        commission=PercentageCommission(0.001),
    )
    open_ = result.open_positions
    assert open_["symbol"].to_list() == ["AAA", "BBB"]
    assert open_["quantity"].to_list() == [60.0, 10.0]
    assert open_["mark"].to_list() == [13.0, 5.0]
    total = result.trades["pnl_net"].sum() + open_["unrealized_pnl"].sum()
    assert total == pytest.approx(result.final_equity - 1_000_000.0)
