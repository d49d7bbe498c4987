"""The execution core's codes and transitions (engine.core) are the ones both drivers use."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from engine.core import layout, ledger, matching
from engine.core import limits as core_limits
from engine.core.records import FILL_DTYPE, ORDER_DTYPE, Records, empty_records
from engine.orders import TRANSITIONS, Order, OrderStatus, OrderType, TimeInForce
from tests.engine.fastpath_helpers import use_python_kernels


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


class _Book:
    """A one-symbol ledger state for the core's compiled ledger (a few orders)."""

    def __init__(self, cash: float = 10_000.0) -> None:
        self.fstate = np.full((layout.N_FLOAT_FIELDS, 1), np.nan)
        self.fstate[layout.QTY] = 0.0
        self.fstate[layout.AVG] = 0.0
        self.istate = np.zeros((layout.N_INT_FIELDS, 1), dtype=np.int64)
        self.aux_i = np.zeros((layout.N_A, 1), dtype=np.int64)
        self.aux_f = np.zeros((layout.N_B, 1))
        self.pending = np.zeros(1)
        self.orders = empty_records("orders", 8)
        self.fills = empty_records("fills", 8)
        self.trades = empty_records("trades", 8)
        self.rejections = empty_records("rejections", 8)
        self.counts = np.zeros(layout.N_C, dtype=np.int64)
        self.acc = np.zeros(layout.N_ACC)
        self.acc[layout.ACC_CASH] = cash

    def fill(
        self,
        q: float,
        price: float,
        commission: float = 0.0,
        *,
        bar: int = 0,
        allow_short: bool = True,
        reason: int = layout.R_STRATEGY,
    ) -> bool:
        o = ledger.new_order(
            0, q, layout.T_MARKET, reason, bar, bar, math.nan, math.nan,
            self.orders, self.counts, self.pending,
        )  # fmt: skip
        layout.set_status(self.orders, o, layout.S_ACCEPTED)
        return bool(
            ledger.execute_fill(
                o,
                q,
                price,
                price,
                commission,
                bar,
                bar,
                0.0,
                allow_short,
                False,
                self.fstate,
                self.istate,
                self.pending,
                self.aux_i,
                self.aux_f,
                self.orders,
                self.fills,
                self.trades,
                self.rejections,
                self.counts,
                self.acc,
            )  # fmt: skip
        )

    @property
    def qty(self) -> float:
        return float(self.fstate[layout.QTY, 0])


@pytest.fixture(params=["compiled", "py_func"])
def ledger_kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the ledger compiled, or as the plain Python it is compiled from (coverage)."""
    if request.param == "py_func":
        use_python_kernels(monkeypatch, ledger, layout)
    return str(request.param)


@pytest.mark.usefixtures("ledger_kernels")
def test_ledger_add_partial_close_and_flip_hand_checked() -> None:
    book = _Book()
    assert book.fill(10, 100.0, commission=1.0)  # open long 10 @ 100
    assert book.fill(10, 110.0, commission=1.0, bar=1)  # add 10 @ 110: average 105
    assert book.qty == 20 and book.fstate[layout.AVG, 0] == 105.0
    assert book.aux_f[layout.B_COMM, 0] == 2.0 and book.fstate[layout.BEST, 0] == 110.0
    assert book.fill(-5, 120.0, commission=0.5, bar=2)  # close 5 @ 120
    trade = book.trades[0]
    assert trade["quantity"] == 5 and trade["partial"] and trade["entry_price"] == 105.0
    assert trade["entry_commission"] == 0.5  # 2.0 × 5 / 20
    assert book.acc[layout.ACC_REALIZED] == (120.0 - 105.0) * 5 - 0.5 - 0.5
    # sell 25 through zero: 15 close the long, 10 open a short at 90
    assert book.fill(-25, 90.0, commission=2.5, bar=3)
    closed = book.trades[1]
    assert closed["quantity"] == 15 and not closed["partial"]
    assert closed["exit_commission"] == 2.5 * 15 / 25
    assert book.qty == -10 and book.fstate[layout.AVG, 0] == 90.0
    assert book.aux_f[layout.B_DIR, 0] == -1.0 and book.aux_f[layout.B_COMM, 0] == 1.0
    assert book.aux_i[layout.A_ENTRY_INDEX, 0] == 3 and book.aux_i[layout.A_OPEN, 0] == 1
    cash = 10_000.0 - 1000 - 1 - 1100 - 1 + 600 - 0.5 + 2250 - 2.5
    assert book.acc[layout.ACC_CASH] == pytest.approx(cash)
    assert book.counts[layout.C_FILLS] == 4 and book.counts[layout.C_TRADES] == 2


@pytest.mark.usefixtures("ledger_kernels")
def test_ledger_refuses_short_sale_and_overdraft_with_rejection_records() -> None:
    book = _Book(cash=500.0)
    assert not book.fill(10, 100.0)  # 1,000 > 500 of cash
    assert book.orders[0]["status"] == layout.S_REJECTED
    assert book.rejections[0]["reason"] == layout.SR_CASH
    assert book.fill(4, 100.0)
    book.aux_i[layout.A_EXIT_PENDING, 0] = 1  # a risk exit is queued
    assert not book.fill(-5, 100.0, allow_short=False, reason=layout.R_STOP_LOSS)
    assert book.orders[2]["status"] == layout.S_REJECTED
    assert book.rejections[1]["reason"] == layout.SR_SHORT
    assert book.rejections[1]["quantity"] == -5
    assert book.aux_i[layout.A_EXIT_PENDING, 0] == 0  # a refused risk exit frees the symbol
    assert book.qty == 4 and book.counts[layout.C_REJ] == 2


@pytest.mark.usefixtures("ledger_kernels")
def test_ledger_first_fill_marks_a_symbol_without_a_close() -> None:
    book = _Book()
    assert book.fill(1, 50.0)
    assert book.fstate[layout.MARK, 0] == 50.0


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_round_quantity_toward_zero_unless_fractional(compiled: bool) -> None:
    round_quantity = ledger.round_quantity_nb if compiled else ledger.round_quantity
    assert round_quantity(2.9999999999, False) == 3.0
    assert round_quantity(-2.5, False) == -2.0
    assert round_quantity(2.5, True) == 2.5


def test_records_stage_python_rows_and_convert_once_with_codes() -> None:
    records = Records()
    records.fills.append((0, 3, 1, 10.0, 100.0, 100.5, 1.0, 5.0, "limit", "MyRule"))
    records.fills.append((1, 4, 1, -10.0, 99.0, 99.0, 0.0, 0.0, "market", "strategy"))
    assert records.count("fills") == 2
    assert records.values("fills", "bar_index", 1).tolist() == [4]
    table = records.table("fills")
    assert table.dtype == FILL_DTYPE and not records.fills
    assert [records.reasons[c] for c in table["reason"]] == ["MyRule", "strategy"]
    assert [layout.TYPE_NAMES[c] for c in table["order_type"]] == ["limit", "market"]
    # typed records (the compiled driver's) follow the converted ones
    extra = empty_records("fills", 1)
    extra[0] = table[1]
    records.extend("fills", extra)
    assert records.count("fills") == 3
    assert records.values("fills", "order_id", 1).tolist() == [1, 1]
    with pytest.raises(TypeError, match="fills records must have dtype"):
        records.extend("fills", empty_records("trades", 1))
    assert records.text_code("position_closed_by_stop") == layout.SR_CLOSED_BY_STOP
    assert records.text_code("new text") == len(layout.STATUS_REASONS)


def test_records_adopt_takes_typed_records_without_a_copy_after_the_staged_ones() -> None:
    records = Records()
    records.fills.append((0, 3, 1, 10.0, 100.0, 100.5, 1.0, 5.0, "market", "strategy"))
    buffer = empty_records("fills", 4)
    buffer[:] = records.table("fills")[0]
    buffer["bar_index"] = [5, 6, 7, 8]
    records.adopt("fills", buffer[1:3])  # a view of a kernel's buffer, read in place
    assert records.values("fills", "bar_index").tolist() == [3, 6, 7]
    table = records.table("fills")
    assert records.count("fills") == 3 and table["bar_index"].tolist() == [3, 6, 7]
    states = empty_records("states", 2)
    fresh = Records()
    fresh.adopt("states", states)
    assert fresh.table("states") is states  # one part: the adopted array itself
    with pytest.raises(TypeError, match="fills records must have dtype"):
        records.adopt("fills", empty_records("trades", 1))


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_closed_part_and_added_average_hand_checked(compiled: bool) -> None:
    closed_part = ledger.closed_part_nb if compiled else ledger.closed_part
    added_average = ledger.added_average_nb if compiled else ledger.added_average
    assert added_average(100.0, 10.0, 110.0, 30.0) == 107.5
    # sell 25 against a long of 20 at 105 (entry costs 2.0 / 0.4 open): 20 close, 5 left over
    closed, e_comm, e_slip, x_comm, x_slip, pnl = closed_part(
        20.0, -25.0, 120.0, 2.5, -1.0, 105.0, 1.0, 2.0, 0.4
    )
    assert (closed, e_comm, e_slip) == (20.0, 2.0, 0.4)
    assert x_comm == pytest.approx(2.0) and x_slip == pytest.approx(-0.8)
    assert pnl == pytest.approx(15.0 * 20 - 2.0 - 2.0)
    # buy 5 against a short of 10 at 50: half the short's entry costs
    closed, e_comm, _, x_comm, _, pnl = closed_part(
        -10.0, 5.0, 45.0, 1.0, 0.0, 50.0, -1.0, 4.0, 0.0
    )
    assert (closed, e_comm, x_comm) == (5.0, 2.0, 1.0)
    assert pnl == pytest.approx(5.0 * 5 - 2.0 - 1.0)


# ---------------------------------------------------------------------- portfolio limits
_LIMIT_FORMS = [True, False]


def _form(name: str, compiled: bool) -> Any:
    return getattr(core_limits, f"{name}_nb" if compiled else name)


@pytest.mark.parametrize("compiled", _LIMIT_FORMS, ids=["compiled", "python"])
@pytest.mark.parametrize(
    ("current", "q", "expected"),
    [
        (0.0, 10.0, True),  # opening
        (10.0, 5.0, True),  # adding
        (10.0, -4.0, False),  # reducing
        (10.0, -10.0, False),  # closing exactly
        (10.0, -15.0, True),  # flipping through zero
        (-10.0, 4.0, False),  # covering part of a short
    ],
)
def test_limit_grows_only_reductions_toward_zero_are_false(
    compiled: bool, current: float, q: float, expected: bool
) -> None:
    assert _form("grows", compiled)(current, q) is expected


@pytest.mark.parametrize("compiled", _LIMIT_FORMS, ids=["compiled", "python"])
def test_limit_drawdown_and_daily_loss_breach_at_the_bound(compiled: bool) -> None:
    drawdown = _form("drawdown_breached", compiled)
    # 79 from a peak of 100: -21 %, breached at a 20 % limit, not at 25 %
    assert drawdown(79.0, 100.0, 0.2) == (True, pytest.approx(-0.21))
    assert drawdown(79.0, 100.0, 0.25)[0] is False
    assert drawdown(79.0, 0.0, 0.2) == (False, 0.0)  # no peak yet
    daily = _form("daily_loss_breached", compiled)
    # the day started at 1,000; 2 % = 20 currency: 979 is past it, 981 is not
    assert daily(979.0, 1_000.0, 0.02) == (True, -21.0, -20.0)
    assert daily(981.0, 1_000.0, 0.02)[0] is False


@pytest.mark.parametrize("compiled", _LIMIT_FORMS, ids=["compiled", "python"])
@pytest.mark.parametrize(
    ("current", "q", "price", "expected"),
    [
        # equity 10,000, cap 10 % = 1,000 currency = 10 shares at 100
        (0.0, 8.0, 100.0, (core_limits.V_ALLOW, 8.0)),
        (0.0, 15.0, 100.0, (core_limits.V_SHRINK, 10.0)),
        (6.0, 8.0, 100.0, (core_limits.V_SHRINK, 4.0)),  # 4 shares left under the cap
        (10.0, 1.0, 100.0, (core_limits.V_REJECT, 1.0)),  # already at the cap
        (4.0, -20.0, 100.0, (core_limits.V_SHRINK, -14.0)),  # a flip: |4| back, then 10 short
        (12.0, -5.0, 100.0, (core_limits.V_ALLOW, -5.0)),  # reducing always passes
        (0.0, 15.0, math.nan, (core_limits.V_ALLOW, 15.0)),  # no price: not judged
    ],
)
def test_limit_position_size_verdict_cases(
    compiled: bool, current: float, q: float, price: float, expected: tuple[int, float]
) -> None:
    verdict = _form("position_size_verdict", compiled)(current, q, price, 10_000.0, 0.1)
    assert verdict == (expected[0], pytest.approx(expected[1]))


@pytest.mark.parametrize("compiled", _LIMIT_FORMS, ids=["compiled", "python"])
@pytest.mark.parametrize(
    ("current", "q", "gross", "expected"),
    [
        # equity 10,000 at leverage 1: room = 10,000 - gross; price 100
        (0.0, 20.0, 5_000.0, (core_limits.V_ALLOW, 20.0)),  # 2,000 fits in 5,000
        (0.0, 80.0, 5_000.0, (core_limits.V_SHRINK, 50.0)),  # 5,000 of room = 50 shares
        (0.0, 10.0, 10_000.0, (core_limits.V_REJECT, 10.0)),  # no room
        (-10.0, 80.0, 9_000.0, (core_limits.V_SHRINK, 30.0)),  # 2 × 10 back + 10 more
    ],
)
def test_limit_leverage_verdict_cases(
    compiled: bool, current: float, q: float, gross: float, expected: tuple[int, float]
) -> None:
    verdict = _form("leverage_verdict", compiled)(current, q, 100.0, 10_000.0, gross, 1.0)
    assert verdict == (expected[0], pytest.approx(expected[1]))
    assert _form("limit_applies", compiled)(current, q, 100.0)


@pytest.mark.parametrize("compiled", _LIMIT_FORMS, ids=["compiled", "python"])
def test_limit_positions_full_only_for_a_new_symbol(compiled: bool) -> None:
    full = _form("positions_full", compiled)
    assert full(0.0, 3, 3.0) is True
    assert full(0.0, 2, 3.0) is False
    assert full(5.0, 3, 3.0) is False  # adding to a held symbol opens nothing


def test_portfolio_rules_decide_with_the_core_formulas() -> None:
    """The Python rules' decisions are the core's verdicts (one implementation)."""
    from engine.risk.context import PortfolioSnapshot
    from engine.risk.decision import OrderAction
    from engine.risk.rules.portfolio import MaxLeverageRule, MaxPositionSizeRule

    qty = np.array([6.0, 0.0])
    marks = np.array([100.0, 100.0])
    snapshot = PortfolioSnapshot(
        timestamp=datetime(2024, 1, 2, tzinfo=UTC),
        bar_index=0,
        equity=10_000.0,
        cash=9_400.0,
        positions_value=600.0,
        gross_exposure=600.0,
        n_positions=1,
        peak_equity=10_000.0,
        day_start_equity=10_000.0,
        realized_pnl=0.0,
        trades_today=0,
        quantities=qty,
        marks=marks,
        pending=np.zeros(2),
    )
    order = Order(0, "A", 0, 8.0)
    size = MaxPositionSizeRule(0.1).validate_order(order, snapshot)
    assert (size.action, size.quantity) == (OrderAction.SHRINK, pytest.approx(4.0))
    assert core_limits.position_size_verdict(6.0, 8.0, 100.0, 10_000.0, 0.1) == (
        core_limits.V_SHRINK,
        pytest.approx(4.0),
    )
    lev = MaxLeverageRule(0.1).validate_order(order, snapshot)
    # room = 1,000 - 600 = 400 currency = 4 shares
    assert (lev.action, lev.quantity) == (OrderAction.SHRINK, pytest.approx(4.0))


# ---------------------------------------------------------------------- ledger decisions
def _ledger(name: str, compiled: bool) -> Any:
    return getattr(ledger, f"{name}_nb" if compiled else name)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
@pytest.mark.parametrize(
    ("pos", "q", "step", "new"),
    [
        (0.0, 10.0, ledger.P_OPEN, 10.0),
        (0.0, -5.0, ledger.P_OPEN, -5.0),
        (10.0, 5.0, ledger.P_ADD, 15.0),
        (10.0, -4.0, ledger.P_REDUCE, 6.0),
        (10.0, -10.0, ledger.P_CLOSE, 0.0),
        (10.0, -10.0 + 1e-12, ledger.P_CLOSE, 0.0),  # within EPS of flat is flat
        (10.0, -15.0, ledger.P_FLIP, -5.0),
        (-8.0, 8.0, ledger.P_CLOSE, 0.0),
    ],
)
def test_ledger_position_step_classifies_each_fill(
    compiled: bool, pos: float, q: float, step: int, new: float
) -> None:
    assert _ledger("position_step", compiled)(pos, q) == (step, new)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_ledger_refusals_and_amounts(compiled: bool) -> None:
    short = _ledger("short_refused", compiled)
    assert short(-15.0, 10.0, False) is True  # sells 5 shares more than held
    assert short(-10.0, 10.0, False) is False
    assert short(-15.0, 10.0, True) is False  # shorts allowed
    cash = _ledger("cash_refused", compiled)
    # 10 × 100 + 1 = 1,001 against 1,000 of cash
    assert cash(10.0, 100.0, 1.0, 1_000.0, 0.0) is True
    assert cash(10.0, 100.0, 1.0, 1_000.0, 1.0) is False  # within the tolerance
    assert cash(-10.0, 100.0, 1.0, 0.0, 0.0) is False  # a sell is never refused for cash
    # bought 10 at 100.5 (100 before slippage) with 2 of commission
    assert _ledger("fill_amounts", compiled)(10.0, 100.0, 100.5, 2.0) == (1_007.0, 5.0)
    assert _ledger("order_done", compiled)(10.0, 10.0 - 1e-12) is True
    assert _ledger("order_done", compiled)(10.0, 6.0) is False


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_ledger_flip_rest_takes_costs_pro_rata(compiled: bool) -> None:
    # sold 15 against a 10-share long: 5 open short with a third of the costs
    shares, comm, slip = _ledger("flip_rest", compiled)(-15.0, 10.0, 3.0, 1.5)
    assert (shares, comm, slip) == (-5.0, pytest.approx(1.0), pytest.approx(0.5))


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
@pytest.mark.parametrize(
    ("quantity", "fractional", "expected"),
    [
        (0.4, False, True),
        (-0.999, False, True),
        (1.0 - 1e-12, False, False),  # rounds to one share (EPS)
        (2.5, False, False),
        (0.4, True, False),  # fractional shares: placed as is
        (0.0, False, False),  # no order at all
    ],
)
def test_ledger_zero_shares_order(
    compiled: bool, quantity: float, fractional: bool, expected: bool
) -> None:
    assert _ledger("zero_shares_order", compiled)(quantity, fractional) is expected
