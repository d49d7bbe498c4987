"""The execution core's codes and transitions (engine.core) are the ones both drivers use."""

from __future__ import annotations

import numpy as np
import pytest

from engine.core import layout
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
    oi = np.zeros((2, layout.N_OI), dtype=np.int64)
    oi[:, layout.OI_STATUS] = layout.S_SUBMITTED
    set_status(oi, 1, layout.S_ACCEPTED)
    set_status(oi, 1, layout.S_FILLED)
    assert oi[1, layout.OI_STATUS] == layout.S_FILLED
    with pytest.raises(RuntimeError, match="illegal order status change"):
        set_status(oi, 1, layout.S_CANCELLED)
    with pytest.raises(RuntimeError, match="illegal order status change"):
        set_status(oi, 0, layout.S_PARTIAL)
    assert oi[0, layout.OI_STATUS] == layout.S_SUBMITTED


def test_python_order_transition_checks_the_same_table() -> None:
    order = Order(0, "A", 0, 10.0)
    order.transition(OrderStatus.ACCEPTED)
    order.transition(OrderStatus.FILLED)
    with pytest.raises(RuntimeError, match="illegal status change"):
        order.transition(OrderStatus.CANCELLED)
