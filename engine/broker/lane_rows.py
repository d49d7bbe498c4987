"""The market-order lane's order records (:mod:`engine.broker.lane`): a growable
``ORDER_DTYPE`` buffer, its mutable fields' views, the book of working lane orders, the
:class:`engine.Order` view of one row (:class:`RecordOrder`) and the run's order log
(:class:`OrderLog`: every order by id, a lane row's view made when it is first asked for).

Kept apart from :mod:`engine.broker.lane` so the broker's state can hold an
:class:`OrderRows` without importing the lane's passes (which read the broker's state).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn, overload

import numpy as np

from engine.broker.lane_refs import LaneRefs
from engine.core.costs import N_COST_PARAMS, Costs
from engine.core.layout import (
    N_ACC,
    R_STRATEGY,
    S_ACCEPTED,
    S_PARTIAL,
    S_SUBMITTED,
    SR_NONE,
    STATUS_NAMES,
    T_MARKET,
    TRANSITIONS,
)
from engine.core.records import ORDER_DTYPE, RecordArray, Records
from engine.data import FloatArray, IntArray
from engine.orders import Order, OrderStatus, OrderType, TimeInForce

__all__ = ["OrderLog", "OrderRows", "RecordOrder", "blank_rows"]

_STATUSES = tuple(OrderStatus(name) for name in STATUS_NAMES)
_STATUS_CODES = {status: code for code, status in enumerate(_STATUSES)}
_MARKET = OrderType.MARKET
_GTC = TimeInForce.GTC
_new_object = object.__new__
if not TRANSITIONS[S_SUBMITTED, S_ACCEPTED]:
    raise RuntimeError("the core's transition matrix must allow submitted -> accepted")


def _not_gathered(*args: object) -> NoReturn:
    """The lane's step before its arguments were gathered
    (:func:`engine.broker.lane.gather_refs` binds the compiled entries)."""
    raise RuntimeError("the lane's step is called before its arguments were gathered")


class RecordOrder(Order):
    """An :class:`engine.Order` whose status, quantities, status reason and decision row live
    in the lane's order row (:class:`OrderRows`); the other fields are its own."""

    __slots__ = ("_rows",)
    _rows: OrderRows
    # the fields every lane order shares (class attributes: nothing to set per order)
    order_type = _MARKET
    limit_price = math.nan
    stop_price = math.nan
    trail_amount = math.nan
    trail_percent = math.nan
    trail_extreme = math.nan
    triggered = False
    tif = _GTC
    reason = "strategy"
    take_profit = math.nan
    stop_loss = math.nan
    parent_id = -1
    oco_id = -1
    bars_eligible = 0

    @property
    def submit_index(self) -> int:
        """Index of the decision bar (from its row)."""
        return int(self._rows.submit_index.item(self.order_id))

    @submit_index.setter
    def submit_index(self, value: int) -> None:
        self._rows.submit_index[self.order_id] = value

    @property
    def status(self) -> OrderStatus:
        """The order's status (from its row)."""
        return _STATUSES[self._rows.status.item(self.order_id)]

    @status.setter
    def status(self, value: OrderStatus) -> None:
        self._rows.status[self.order_id] = _STATUS_CODES[value]

    @property
    def quantity(self) -> float:
        """Signed shares requested (from its row)."""
        return float(self._rows.quantity.item(self.order_id))

    @quantity.setter
    def quantity(self, value: float) -> None:
        self._rows.quantity[self.order_id] = value

    @property
    def filled(self) -> float:
        """Signed shares filled so far (from its row)."""
        return float(self._rows.filled.item(self.order_id))

    @filled.setter
    def filled(self, value: float) -> None:
        self._rows.filled[self.order_id] = value

    @property
    def status_reason(self) -> str:
        """Why it was rejected, cancelled or expired (from its row; ``""`` otherwise)."""
        return self._rows.texts[self._rows.status_reason.item(self.order_id)]

    @status_reason.setter
    def status_reason(self, value: str) -> None:
        self._rows.status_reason[self.order_id] = self._rows.text_code(value)

    @property
    def decision_row(self) -> int:
        """Market-data row of the decision bar (from its row; -1: none)."""
        return int(self._rows.decision_row.item(self.order_id))

    @decision_row.setter
    def decision_row(self, value: int) -> None:
        self._rows.decision_row[self.order_id] = value


class OrderRows:
    """The lane's order records: a growable ``ORDER_DTYPE`` buffer (row = order id) with
    views of its mutable fields, the book of working lane orders (row ids, in order) and the
    range of ids placed during the current bar (``new_from:new_to``, accepted at step 4).

    Parameters
    ----------
    records : Records
        The run's records (the status-reason texts of the rows' ``status_reason`` codes).
    n_symbols : int
        Size of the symbol universe.
    names : list of str, optional
        The symbol names by id (the ``symbol`` of the orders' :class:`RecordOrder` views).
    """

    __slots__ = (
        "rows",
        "status",
        "quantity",
        "filled",
        "status_reason",
        "decision_row",
        "book",
        "n_book",
        "texts",
        "text_code",
        "submit_index",
        "sid",
        "acc",
        "held",
        "value",
        "room",
        "capacity",
        "names",
        "new_from",
        "new_to",
        "one",
        "none",
        "refs",
        "step",
        "idle",
        "bound",
        "intake",
        "ids",
        "blank",
        "costs",
    )

    def __init__(
        self,
        records: Records,
        n_symbols: int,
        capacity: int = 4096,
        names: list[str] | None = None,
    ) -> None:
        self.texts = records.texts
        self.text_code = records.text_code
        self.names: list[str] = names if names is not None else []
        self.book: IntArray = np.empty(capacity, dtype=np.int64)
        self.n_book = 0
        self.new_from = 0  # ids new_from:new_to: placed in the current bar, not yet accepted
        self.new_to = 0
        self.one: FloatArray = np.zeros(1)  # a call's quantity when one is given for all
        self.none: FloatArray = np.zeros(0)  # a call's quantities when it closes positions
        self.acc: FloatArray = np.zeros(N_ACC)  # cash and realized P&L of a call
        self.held: IntArray = np.empty(n_symbols, dtype=np.int64)  # held ids of a call
        # (bar index, fills so far, value, gross, positions held) after the bar's step 2
        self.value: tuple[int, int, float, float, int] = (-1, -1, 0.0, 0.0, 0)
        self.room = 0  # free rows known in each record buffer the step writes
        # the lane's arrays as one compiled argument (engine.broker.lane_refs; None: to be
        # gathered again, after the window, the book, the order rows or a record buffer was
        # replaced), and the compiled entries of the lane's step, idle step and intake for
        # the window's argument types (engine.broker.lane.gather_refs)
        self.refs: LaneRefs | None = None
        self.step: Callable[..., tuple[int, int, float, float, int]] = _not_gathered
        self.idle: Callable[..., tuple[int, float, float]] = _not_gathered
        self.bound = False  # step and idle are the compiled entries
        self.intake: Callable[..., int] = _not_gathered
        self.ids: IntArray = np.arange(capacity, dtype=np.int64)  # order ids, to slice
        self.blank = blank_rows(1)[0]  # a placed row's fields before its own are written
        # the run's costs as the fills at the open read them (engine.broker.lane.lane_costs)
        self.costs: Costs = Costs(
            params=np.zeros(N_COST_PARAMS), tiers=np.zeros((0, 2)),
            tier_state=np.array([np.nan, 0.0]), rows=np.zeros(0),
        )  # fmt: skip
        self._use(np.empty(capacity, dtype=ORDER_DTYPE))  # each row written whole when placed

    def _use(self, rows: RecordArray) -> None:
        self.rows = rows
        self.refs = None  # the lane's refs hold the order rows
        self.capacity = rows.size
        self.submit_index: IntArray = rows["submit_index"]
        self.sid: IntArray = rows["sid"]
        self.status: IntArray = rows["status"]
        self.quantity: FloatArray = rows["quantity"]
        self.filled: FloatArray = rows["filled"]
        self.status_reason: IntArray = rows["status_reason"]
        self.decision_row: IntArray = rows["decision_row"]

    def ensure(self, n: int) -> None:
        """Room for order ids below ``n``."""
        if n > self.rows.size:
            # rows beyond the placed ones stay unwritten (pages never written are never
            # mapped): an order's row is written whole when it is placed
            grown = np.empty(max(n, 2 * self.rows.size), dtype=ORDER_DTYPE)
            grown[: self.rows.size] = self.rows
            self._use(grown)

    def view(self, order_id: int) -> RecordOrder:
        """A new :class:`RecordOrder` over row ``order_id``."""
        order: RecordOrder = _new_object(RecordOrder)
        order._rows = self
        order.order_id = order_id
        sid: int = self.sid.item(order_id)
        order.sid = sid
        order.symbol = self.names[sid]
        return order

    def placed_now(self, first: int, end: int) -> None:
        """Ids ``first:end`` were placed in the current bar (after those placed before)."""
        if self.new_to == self.new_from:
            self.new_from = first
        self.new_to = end

    def accept(self) -> None:
        """Step 4 without order rules: the orders placed in this bar (``new_from:new_to``)
        still submitted become accepted (a change the core's transition matrix allows,
        checked at import) and join the end of the book, in their order; orders no longer
        submitted are skipped."""
        first, end = self.new_from, self.new_to
        if end == first:
            return
        self.new_from = end
        status = self.status
        n = self.n_book
        if n + end - first > self.book.size:
            self.book = np.concatenate((self.book, np.empty(n + end - first, dtype=np.int64)))
        book = self.book
        if end - first > 16:  # a long run of ids: NumPy over the range
            ids = np.arange(first, end, dtype=np.int64)
            ids = ids[status[first:end] == S_SUBMITTED]
            status[ids] = S_ACCEPTED
            book[n : n + ids.size] = ids
            self.n_book = n + ids.size
            return
        for o in range(first, end):
            if status.item(o) == S_SUBMITTED:
                status[o] = S_ACCEPTED
                book[n] = o
                n += 1
        self.n_book = n

    def working(self) -> list[int]:
        """Ids of the lane's active orders, in order: the book's, then those placed in the
        current bar."""
        ids = np.concatenate(
            (self.book[: self.n_book], np.arange(self.new_from, self.new_to, dtype=np.int64))
        )
        status = self.status[ids]
        active = (status == S_SUBMITTED) | (status == S_ACCEPTED) | (status == S_PARTIAL)
        return ids[active].tolist()  # type: ignore[no-any-return]

    def working_book(self) -> list[int]:
        """Ids of the book's orders that are still active, in book order."""
        ids = self.book[: self.n_book]
        status = self.status[ids]
        active = (status == S_SUBMITTED) | (status == S_ACCEPTED) | (status == S_PARTIAL)
        return ids[active].tolist()  # type: ignore[no-any-return]


class OrderLog(Sequence[Order]):
    """Every order of a run by id (``log[order_id]``), in placing order.

    The Python driver's :class:`engine.Order` objects, and the market-order lane's rows
    (:class:`OrderRows`), whose :class:`RecordOrder` view is made the first time the order
    is asked for and kept (the same object on every later ask). Compares equal to a list of
    the same orders.
    """

    __slots__ = ("_items", "_rows")

    def __init__(self) -> None:
        self._items: list[Order | None] = []  # None: a lane row without its view yet
        self._rows: OrderRows | None = None

    def bind(self, rows: OrderRows) -> None:
        """Read the lane's orders from ``rows``."""
        self._rows = rows

    def append(self, order: Order) -> None:
        """Add the next order (its ``order_id`` is ``len(self)``)."""
        self._items.append(order)

    def add_rows(self, n: int) -> None:
        """The next ``n`` ids are lane rows (their views made when asked for)."""
        self._items.extend([None] * n)

    def __len__(self) -> int:
        return len(self._items)

    def _get(self, k: int) -> Order:
        item = self._items[k]
        if item is None:
            rows = self._rows
            if rows is None:
                raise RuntimeError("order rows without the lane's records")
            item = self._items[k] = rows.view(k if k >= 0 else len(self._items) + k)
        return item

    @overload
    def __getitem__(self, k: int) -> Order: ...

    @overload
    def __getitem__(self, k: slice) -> list[Order]: ...

    def __getitem__(self, k: int | slice) -> Order | list[Order]:
        if isinstance(k, slice):
            return [self._get(j) for j in range(*k.indices(len(self._items)))]
        return self._get(k)

    def __iter__(self) -> Iterator[Order]:
        for k in range(len(self._items)):
            yield self._get(k)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, OrderLog | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def order_records(self, start: int, end: int) -> RecordArray:
        """The lane's ``ORDER_DTYPE`` rows of ids ``start:end`` (a view)."""
        rows = self._rows
        if rows is None:
            raise RuntimeError("order rows without the lane's records")
        return rows.rows[start:end]

    def runs(self) -> Iterator[tuple[int, int, bool]]:
        """``(start, end, is_rows)`` runs of ids: lane orders (``is_rows``: their fields are
        the rows') or the Python driver's orders."""
        items = self._items
        n = len(items)
        start = 0
        while start < n:
            rows = items[start] is None or type(items[start]) is RecordOrder
            end = start + 1
            while end < n and (items[end] is None or type(items[end]) is RecordOrder) == rows:
                end += 1
            yield start, end, rows
            start = end


def blank_rows(n: int) -> RecordArray:
    """``n`` order rows with the fields every lane order shares: a submitted GTC market
    order of the strategy, nothing filled, no limit or stop price, no parent (the
    template of :func:`engine.broker.lane.lane_order`; :func:`engine.broker.lane.lane_intake`
    writes the same fields)."""
    rows = np.empty(n, dtype=ORDER_DTYPE)
    rows["order_type"] = T_MARKET
    rows["status"] = S_SUBMITTED
    rows["reason"] = R_STRATEGY
    rows["status_reason"] = SR_NONE
    rows["tif"] = 0
    rows["parent_id"] = -1
    rows["filled"] = 0.0
    rows["limit_price"] = math.nan
    rows["stop_price"] = math.nan
    return rows
