"""Order types and fill rules (issue 4), each hand-checked on short bar sequences."""

from __future__ import annotations

from typing import Any

import pytest

from engine import Order, Strategy
from engine.orders import TRANSITIONS, OrderStatus, plain_market_order
from tests.engine.helpers import make_panel, run, ts

START = (10, 10.5, 9.5, 10)


def _fills(result: Any) -> list[tuple[Any, float, float]]:
    f = result.fills
    return list(zip(f["timestamp"], f["quantity"], f["price"], strict=True))


@pytest.mark.parametrize(
    ("bars", "expected"),
    [
        # never reaches 9 on bar1, touches it on bar2 → fills at the limit
        ([START, (9.8, 10, 9.2, 9.5), (9.5, 9.6, 8.8, 9.0)], [(ts(2), 10.0, 9.0)]),
        # bar1 opens below the limit → fills at the (better) open
        ([START, (8.5, 9.0, 8.4, 8.8)], [(ts(1), 10.0, 8.5)]),
    ],
)
def test_limit_buy_fills_at_limit_or_better_open(bars: list[Any], expected: list[Any]) -> None:
    result = run(make_panel({"AAA": bars}), {0: lambda s: s.buy("AAA", 10, limit_price=9.0)})
    assert _fills(result) == expected
    assert result.fills["order_type"].to_list() == ["limit"]


@pytest.mark.parametrize(
    ("bar2", "price"), [((10.5, 11.2, 10.4, 11), 11.0), ((11.5, 11.8, 11.4, 11.6), 11.5)]
)
def test_limit_sell_fills_at_limit_or_gap_open(bar2: Any, price: float) -> None:
    bars = [START, (10, 10.4, 9.9, 10.2), bar2]
    plan = {0: lambda s: s.buy("AAA", 10), 1: lambda s: s.sell("AAA", 10, limit_price=11.0)}
    result = run(make_panel({"AAA": bars}), plan)
    assert result.fills["price"].to_list() == [10.0, price]


@pytest.mark.parametrize(
    ("bar1", "price"), [((10.5, 11.5, 10.4, 11.2), 11.0), ((11.3, 11.6, 11.2, 11.5), 11.3)]
)
def test_stop_buy_triggers_on_high_gap_fills_at_open(bar1: Any, price: float) -> None:
    result = run(make_panel({"AAA": [START, bar1]}), {0: lambda s: s.buy("AAA", 10, stop_price=11)})
    assert result.fills["price"].to_list() == [price]


@pytest.mark.parametrize(
    ("bar2", "price"), [((9.5, 9.6, 8.5, 9.0), 9.0), ((8.7, 8.9, 8.5, 8.6), 8.7)]
)
def test_stop_sell_triggers_on_low_gap_fills_at_open(bar2: Any, price: float) -> None:
    bars = [START, (10, 10.4, 9.9, 10.2), bar2]
    plan = {0: lambda s: s.buy("AAA", 10), 1: lambda s: s.sell("AAA", 10, stop_price=9.0)}
    result = run(make_panel({"AAA": bars}), plan)
    assert result.fills["price"].to_list() == [10.0, price]


def test_stop_limit_fills_at_trigger_when_within_limit() -> None:
    bars = [START, (10.5, 11.5, 10.4, 11.2)]
    plan = {0: lambda s: s.buy("AAA", 10, stop_price=11.0, limit_price=11.2)}
    result = run(make_panel({"AAA": bars}), plan)
    assert result.fills["price"].to_list() == [11.0]
    assert result.fills["order_type"].to_list() == ["stop_limit"]


def test_stop_limit_gap_above_limit_then_works_as_limit() -> None:
    bars = [START, (11.5, 11.8, 11.4, 11.6), (11.3, 11.4, 11.0, 11.1)]
    plan = {0: lambda s: s.buy("AAA", 10, stop_price=11.0, limit_price=11.2)}
    result = run(make_panel({"AAA": bars}), plan)
    assert _fills(result) == [(ts(2), 10.0, 11.2)]


def test_trailing_stop_percent_ratchets_with_highs_and_fills_at_level() -> None:
    bars = [
        (100, 100, 100, 100),
        (100, 110, 99, 108),  # level 90 not hit; extreme → 110, level → 99
        (107, 108, 100, 101),  # low 100 > 99: no fill
        (100, 101, 98, 99),  # low 98 ≤ 99 → fills at 99
    ]
    plan = {0: lambda s: (s.buy("AAA", 10), s.sell("AAA", 10, trail_percent=0.10))}
    result = run(make_panel({"AAA": bars}), plan, fill="close")
    assert _fills(result) == [(ts(0), 10.0, 100.0), (ts(3), -10.0, pytest.approx(99.0))]
    assert result.fills["order_type"].to_list() == ["market", "trailing_stop"]


def test_trailing_stop_amount_gap_fills_at_open() -> None:
    bars = [(100, 100, 100, 100), (100, 106, 99, 105), (95, 96, 94, 95)]
    plan = {0: lambda s: (s.buy("AAA", 10), s.sell("AAA", 10, trail_amount=5.0))}
    result = run(make_panel({"AAA": bars}), plan, fill="close")
    # level 95 → after bar1 ratchets to 101; bar2 opens at 95 below it → fills at the open
    assert result.fills["price"].to_list() == [100.0, 95.0]


def _bracket(s: Strategy) -> None:
    s.buy("AAA", 10, take_profit=110.0, stop_loss=95.0)


def test_bracket_take_profit_fills_and_cancels_stop_sibling() -> None:
    bars = [(100, 100, 100, 100), (100, 101, 99, 100), (100, 111, 99, 105), (105, 106, 90, 95)]
    result = run(make_panel({"AAA": bars}), {0: _bracket})
    assert _fills(result) == [(ts(1), 10.0, 100.0), (ts(2), -10.0, 110.0)]
    assert result.trades["exit_reason"].to_list() == ["bracket_take_profit"]
    statuses = dict(zip(result.orders["reason"], result.orders["status"], strict=True))
    assert statuses["bracket_stop_loss"] == "cancelled"
    assert "oco_sibling_filled" in result.rejections["reason"].to_list()


def test_bracket_both_children_touched_same_bar_stop_wins() -> None:
    bars = [(100, 100, 100, 100), (100, 101, 99, 100), (100, 111, 94, 105)]
    result = run(make_panel({"AAA": bars}), {0: _bracket})
    assert result.trades["exit_reason"].to_list() == ["bracket_stop_loss"]
    assert result.trades["exit_price"].to_list() == [95.0]


def test_bracket_children_cancelled_when_position_closed_elsewhere() -> None:
    bars = [(100, 100, 100, 100)] * 4
    result = run(make_panel({"AAA": bars}), {0: _bracket, 1: lambda s: s.close_position("AAA")})
    assert result.trades["exit_reason"].to_list() == ["strategy"]
    children = result.orders.filter(result.orders["parent_id"] >= 0)
    assert children["status"].to_list() == ["cancelled", "cancelled"]


def test_day_order_expires_after_its_first_bar() -> None:
    bars = [START, (9.8, 10, 9.2, 9.5), (9.5, 9.6, 8.8, 9.0)]
    result = run(
        make_panel({"AAA": bars}), {0: lambda s: s.buy("AAA", 10, limit_price=9.0, tif="DAY")}
    )
    assert result.fills.height == 0
    assert result.rejections["event"].to_list() == ["expired"]
    assert result.rejections["timestamp"].to_list() == [ts(1)]


def test_cancel_and_replace_working_order() -> None:
    bars = [START, (9.8, 10, 9.2, 9.5), (9.5, 9.6, 9.1, 9.3), (9.3, 9.4, 9.05, 9.2)]
    held: dict[str, Order] = {}

    def place(s: Strategy) -> None:
        held["o"] = s.buy("AAA", 10, limit_price=9.0)

    def replace(s: Strategy) -> None:
        new = s.replace_order(held["o"], limit_price=9.1)
        assert new is not None and new.limit_price == 9.1
        assert s.cancel_order(held["o"]) is False  # already cancelled by the replace

    result = run(make_panel({"AAA": bars}), {0: place, 1: replace})
    assert _fills(result) == [(ts(2), 10.0, 9.1)]
    assert result.orders["status"].to_list() == ["cancelled", "filled"]
    assert result.rejections["reason"].to_list() == ["replaced"]


def test_volume_participation_cap_partial_fills_over_several_bars() -> None:
    bars = [START, (10, 10, 10, 10), (11, 11, 11, 11), (12, 12, 12, 12), (12, 12, 12, 12)]
    result = run(
        make_panel({"AAA": bars}, volume=100.0),
        {0: lambda s: s.buy("AAA", 25)},
        max_volume_participation=0.1,
    )
    assert _fills(result) == [(ts(1), 10.0, 10.0), (ts(2), 10.0, 11.0), (ts(3), 5.0, 12.0)]
    assert result.orders["status"].to_list() == ["filled"]
    assert result.orders["filled"].to_list() == [25.0]


def test_limit_order_for_symbol_without_bar_waits() -> None:
    panel = make_panel({"AAA": [START, None, (8.5, 9.0, 8.4, 8.8)], "BBB": [START, START, START]})
    result = run(panel, {0: lambda s: s.buy("AAA", 10, limit_price=9.0)})
    assert _fills(result) == [(ts(2), 10.0, 8.5)]


def test_buy_percent_and_position_sizing_helpers() -> None:
    seen: dict[str, float] = {}

    def step(s: Strategy) -> None:
        s.buy_percent("AAA", 0.5)  # 0.5 × 1000 / 10 = 50 shares
        seen["atr_size"] = s.calculate_position_size(price=10.0, atr=0.5, risk_pct=0.01)

    result = run(make_panel({"AAA": [START, START]}), {0: step}, initial_cash=1_000.0)
    assert result.fills["quantity"].to_list() == [50.0]
    assert seen["atr_size"] == 20.0  # 0.01 × 1000 / 0.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit_price": -1.0}, "limit_price"),
        ({"trail_percent": 1.5}, "trail_percent"),
        ({"trail_amount": 1.0, "limit_price": 9.0}, "trailing stop"),
        ({"tif": "IOC"}, "tif"),
        ({"take_profit": 90.0, "stop_loss": 95.0}, "bracket levels inverted"),
    ],
)
def test_bad_order_arguments_raise(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run(make_panel({"AAA": [START]}), {0: lambda s: s.buy("AAA", 1, **kwargs)})


def test_unknown_symbol_raises_key_error() -> None:
    with pytest.raises(KeyError, match="unknown symbol 'ZZZ'"):
        run(make_panel({"AAA": [START]}), {0: lambda s: s.buy("ZZZ", 1)})


def test_status_table_terminal_states_have_no_exit() -> None:
    for status in (
        OrderStatus.FILLED,
        OrderStatus.CANCELLED,
        OrderStatus.REJECTED,
        OrderStatus.EXPIRED,
    ):
        assert TRANSITIONS[status] == frozenset()
    order = Order(0, "AAA", 0, 1.0)
    order.transition(OrderStatus.ACCEPTED)
    order.transition(OrderStatus.FILLED)
    with pytest.raises(RuntimeError, match="illegal status change"):
        order.transition(OrderStatus.CANCELLED)


@pytest.mark.parametrize(
    ("quantity", "submit_index", "decision_row"), [(10.0, 7, 42), (-3.0, 0, -1)]
)
def test_plain_market_order_equals_the_keyword_constructor(
    quantity: float, submit_index: int, decision_row: int
) -> None:
    fast = plain_market_order(5, "AAA", 2, quantity, submit_index, decision_row)
    slow = Order(5, "AAA", 2, quantity, submit_index=submit_index, decision_row=decision_row)
    for name in Order.__slots__:
        a, b = getattr(fast, name), getattr(slow, name)
        assert a == b or (a != a and b != b), name  # NaN fields are NaN in both
    assert type(fast) is Order and fast.is_active
