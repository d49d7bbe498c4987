"""The execution core's codes and transitions (engine.core) are the ones both drivers use."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.core import layout, matching
from engine.core.records import ORDER_DTYPE
from engine.orders import TRANSITIONS, Order, OrderStatus, OrderType, TimeInForce


def test_layout_names_equal_order_enum_values() -> None:
    assert list(layout.TYPE_NAMES) == [t.value for t in OrderType]
    assert list(layout.TIF_NAMES) == [t.value for t in TimeInForce]
    assert sorted(layout.STATUS_NAMES) == sorted(s.value for s in OrderStatus)


def test_orders_transition_table_is_the_layout_matrix() -> None:
    for a, name in enumerate(layout.STATUS_NAMES):
        allowed = {
            OrderStatus(layout.STATUS_NAMES[b]) for b in np.flatnonzero(layout.TRANSITIONS[a])
        }
        assert TRANSITIONS[OrderStatus(name)] == allowed
    # terminal statuses have no way out; a working order may fill, partly fill or be refused
    for terminal in (layout.S_FILLED, layout.S_REJECTED, layout.S_CANCELLED, layout.S_EXPIRED):
        assert not layout.TRANSITIONS[terminal].any()
    assert layout.TRANSITIONS[layout.S_ACCEPTED, layout.S_FILLED]
    assert not layout.TRANSITIONS[layout.S_SUBMITTED, layout.S_FILLED]


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "py_func"])
def test_set_status_legal_change_writes_illegal_raises(compiled: bool) -> None:
    set_status = layout.set_status if compiled else layout.set_status.py_func
    oi = np.zeros(2, dtype=ORDER_DTYPE)
    oi["status"] = layout.S_SUBMITTED
    set_status(oi, 1, layout.S_ACCEPTED)
    set_status(oi, 1, layout.S_FILLED)
    assert oi["status"][1] == layout.S_FILLED
    with pytest.raises(RuntimeError, match="illegal order status change"):
        set_status(oi, 1, layout.S_CANCELLED)
    with pytest.raises(RuntimeError, match="illegal order status change"):
        set_status(oi, 0, layout.S_PARTIAL)
    assert oi["status"][0] == layout.S_SUBMITTED


def test_python_order_transition_checks_the_same_table() -> None:
    order = Order(0, "A", 0, 10.0)
    order.transition(OrderStatus.ACCEPTED)
    order.transition(OrderStatus.FILLED)
    with pytest.raises(RuntimeError, match="illegal status change"):
        order.transition(OrderStatus.CANCELLED)


_BAR = {"open_": 100.0, "high": 104.0, "low": 97.0}


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
@pytest.mark.parametrize(
    ("buy", "limit", "expected"),
    [
        (True, 101.0, 100.0),  # opens below a buy limit: the open
        (True, 98.0, 98.0),  # the low reaches it: the limit
        (True, 96.0, math.nan),  # never reached
        (False, 99.0, 100.0),  # opens above a sell limit: the open
        (False, 103.0, 103.0),
        (False, 105.0, math.nan),
    ],
)
def test_limit_fill_price_gap_touch_miss(
    compiled: bool, buy: bool, limit: float, expected: float
) -> None:
    price = (matching.limit_fill_price_nb if compiled else matching.limit_fill_price)(
        buy, limit, **_BAR
    )
    assert price == expected or (math.isnan(price) and math.isnan(expected))


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
@pytest.mark.parametrize(
    ("buy", "stop", "expected"),
    [
        (True, 99.0, 100.0),  # opens above a buy stop: the open
        (True, 103.0, 103.0),
        (True, 105.0, math.nan),
        (False, 101.0, 100.0),  # opens below a sell stop: the open
        (False, 98.0, 98.0),
        (False, 96.0, math.nan),
    ],
)
def test_stop_fill_price_gap_touch_miss(
    compiled: bool, buy: bool, stop: float, expected: float
) -> None:
    price = (matching.stop_fill_price_nb if compiled else matching.stop_fill_price)(
        buy, stop, **_BAR
    )
    assert price == expected or (math.isnan(price) and math.isnan(expected))


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_stop_limit_and_trail_level_forms_agree(compiled: bool) -> None:
    stop_limit = matching.stop_limit_fill_price_nb if compiled else matching.stop_limit_fill_price
    trail = matching.trail_level_nb if compiled else matching.trail_level
    assert stop_limit(True, 103.0, 103.5) == 103.0  # trigger within the limit
    assert math.isnan(stop_limit(True, 103.0, 102.0))  # triggered, limit not satisfied
    assert stop_limit(False, 98.0, 97.5) == 98.0
    assert math.isnan(stop_limit(False, 98.0, 99.0))
    assert trail(False, 110.0, 2.0, math.nan) == 108.0  # sell stop 2 below the high
    assert trail(True, 90.0, math.nan, 0.1) == pytest.approx(99.0)  # buy stop 10 % above
    assert trail(False, 110.0, math.nan, 0.1) == pytest.approx(99.0)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
@pytest.mark.parametrize(
    ("is_long", "stop_hit", "level", "open_", "expected"),
    [
        (True, True, 95.0, 94.0, 94.0),  # long stop, gap down: the open
        (True, True, 95.0, 96.0, 95.0),  # long stop touched intrabar: the level
        (True, False, 105.0, 106.0, 106.0),  # long target, gap up: the open
        (True, False, 105.0, 104.0, 105.0),
        (False, True, 105.0, 106.0, 106.0),  # short stop, gap up
        (False, False, 95.0, 94.0, 94.0),  # short target, gap down
        (False, False, 95.0, 96.0, 95.0),
    ],
)
def test_level_exit_price_gap_takes_open(
    compiled: bool, is_long: bool, stop_hit: bool, level: float, open_: float, expected: float
) -> None:
    func = matching.level_exit_price_nb if compiled else matching.level_exit_price
    assert func(is_long, stop_hit, level, open_) == expected
