"""The market-order lane: plain market orders held as the core's order records, their fills
at the open booked by the core ledger in one compiled call per bar.

In the simplest settings (no risk manager, no slippage or commission model, no volume cap,
fills at the open, ``bar_event_order="chronological"``, ``cash_check="execution"``, no market
mechanics and no fill listener) every order a strategy places with a plain
``submit(symbol, quantity)`` / ``close_position`` is a market order that fills whole at its
symbol's next open. The lane keeps such orders as rows of an ``ORDER_DTYPE`` buffer
(:class:`OrderRows`, the row is the order id) and a book of row ids; the open pass is one call
of :func:`lane_open_step`, which runs :func:`engine.core.ledger.execute_fill` (the core's
cash and short checks, fill and trade records, positions) for each order in book order. The
strategy still receives :class:`engine.Order` objects: :class:`RecordOrder`, whose status,
quantities and decision row are read from and written to the order's row.

The first order outside the lane (limit, stop, trailing, bracket or ``DAY`` order) ends it for
the rest of the run (:func:`lane_off`): the working lane orders move, in their order, into the
broker's Python book, where the general passes handle them as any other order.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from engine.broker.lane_rows import OrderRows
from engine.core.jit import njit
from engine.core.layout import (
    ACC_CASH,
    ACC_REALIZED,
    C_FILLS,
    LAST_ROW,
    MARK,
    QTY,
    S_ACCEPTED,
    S_PARTIAL,
    S_SUBMITTED,
    STATUS_NAMES,
    TRANSITIONS,
)
from engine.core.ledger import execute_fill, portfolio_value
from engine.core.records import Kind, RecordArray
from engine.data import FloatArray, IntArray
from engine.orders import Order, OrderStatus, OrderType, TimeInForce
from engine.risk.kernels import mark_bar, set_last_rows

if TYPE_CHECKING:
    from engine.broker.state import BrokerState

_STATUSES = tuple(OrderStatus(name) for name in STATUS_NAMES)
_STATUS_CODES = {status: code for code, status in enumerate(_STATUSES)}
_MARKET = OrderType.MARKET
_GTC = TimeInForce.GTC
_new_object = object.__new__
if not TRANSITIONS[S_SUBMITTED, S_ACCEPTED]:
    raise RuntimeError("the core's transition matrix must allow submitted -> accepted")


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


def lane_settings(broker: BrokerState) -> bool:
    """True when the run's settings let plain market orders take the lane (module
    docstring)."""
    config = broker._config
    return (
        broker._risk is None
        and broker._no_slippage
        and broker._free
        and broker._volume_cap is None
        and not broker._fill_at_close
        and not broker._stops_first
        and config.cash_check == "execution"
        and broker.mechanics is None
        and broker._no_fill_hooks
    )


def lane_order(broker: BrokerState, rows: OrderRows, sid: int, quantity: float) -> Order:
    """A plain GTC market order of the strategy (``submitted``) as a lane row and its
    :class:`RecordOrder` (the fields :func:`engine.orders.plain_market_order` gives)."""
    i = broker.i
    row: int = broker.last_row.item(sid) if i >= 0 else -1
    decision_row = row if row >= broker.lo else -1
    orders = broker.orders
    order_id = len(orders)
    if order_id >= rows.capacity:
        rows.ensure(order_id + 1)
    # the row's other fields are those of every lane order (_blank_rows)
    rows.submit_index[order_id] = i
    rows.sid[order_id] = sid
    rows.decision_row[order_id] = decision_row
    rows.quantity[order_id] = quantity
    order: RecordOrder = _new_object(RecordOrder)
    order._rows = rows
    order.order_id = order_id
    order.symbol = broker._names[sid]
    order.sid = sid
    orders.append(order)
    pending = broker.pending
    pending[sid] = pending.item(sid) + quantity
    broker._new_orders.append(order)
    return order


def lane_batch(
    broker: BrokerState,
    rows: OrderRows,
    sids: IntArray,
    quantities: FloatArray | float | None,
) -> IntArray:
    """Plain GTC market orders of the strategy for symbol ids ``sids``, in their order, each
    placed as :func:`lane_order` places one: ``quantities`` (signed shares, one per id or one
    for all) or, with ``None``, an order closing each symbol's position plus its working
    orders (none where they net to less than 1e-9 shares, so a symbol twice closes once).

    Every id and quantity is checked before any order is placed.

    Returns
    -------
    ndarray[int64]
        The ids of the orders placed, in order.

    Raises
    ------
    ValueError
        If ``sids`` has an id outside the universe, or a quantity is not finite, is zero, or
        is fractional while fractional shares are off (nothing is placed then).
    """
    ids: list[int] = sids.tolist()
    n_symbols = broker.data.n_symbols
    for k, sid in enumerate(ids):
        if not 0 <= sid < n_symbols:
            raise ValueError(intake_error(broker, sids, quantities, k))
    first = len(broker.orders)
    if quantities is None:
        qty = broker.qty
        pending = broker.pending
        placed = []
        for sid in ids:
            current: float = qty.item(sid) + pending.item(sid)
            if abs(current) >= 1e-9:
                placed.append(lane_order(broker, rows, sid, -current).order_id)
        return np.array(placed, dtype=np.int64)
    each: list[float] = (
        [quantities] * len(ids) if isinstance(quantities, float) else quantities.tolist()
    )
    fractional = broker.fractional
    for k, q in enumerate(each):
        if not math.isfinite(q) or q == 0.0 or (not fractional and q != math.floor(q)):
            raise ValueError(intake_error(broker, sids, quantities, k))
    for sid, q in zip(ids, each, strict=True):
        lane_order(broker, rows, sid, q)
    return np.arange(first, first + len(ids), dtype=np.int64)


def intake_error(
    broker: BrokerState, sids: IntArray, quantities: FloatArray | float | None, k: int
) -> str:
    """The message for the bad ``k``-th entry of a batch of orders (:func:`lane_batch`)."""
    sid = int(sids[k])
    if not 0 <= sid < broker.data.n_symbols:
        return f"symbol id {sid} (position {k}) is outside 0..{broker.data.n_symbols - 1}"
    q = float(quantities if isinstance(quantities, float) else np.asarray(quantities)[k])
    return (
        f"order for {q} shares of {broker._names[sid]!r} (position {k}): quantities must be "
        "finite, non-zero"
        + ("" if broker.fractional else " and whole shares (fractional_shares=False)")
    )


def lane_off(broker: BrokerState) -> None:
    """End the lane for the rest of the run: its working orders join the Python book, in
    their order, ahead of anything placed there since (nothing is, while the lane runs)."""
    rows = broker._lane
    if rows is None:
        return
    broker._lane = None
    orders = broker.orders
    broker.book = [orders[o] for o in rows.working()] + broker.book


@njit
def _working(status: int) -> bool:
    """Whether an order of this status code is still working (submitted, accepted or
    partially filled)."""
    return status in (S_SUBMITTED, S_ACCEPTED, S_PARTIAL)


@njit
def lane_open_step(
    lo: int,
    hi: int,
    i: int,
    sym_id: IntArray,
    open_: FloatArray,
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    ordinal: IntArray,
    book: IntArray,
    n_book: int,
    tolerance: float,
    allow_short: bool,
    fstate: FloatArray,
    istate: IntArray,
    pending: FloatArray,
    aux_i: IntArray,
    aux_f: FloatArray,
    orders: RecordArray,
    fills: RecordArray,
    trades: RecordArray,
    rejections: RecordArray,
    counts: IntArray,
    acc: FloatArray,
    held: IntArray,
) -> tuple[int, int, float, float]:
    """Steps 1 and 2 of bar ``i`` (data rows ``lo:hi``) with the lane, in one call: the
    symbols' latest rows (:func:`engine.risk.kernels.set_last_rows`); the book's fills at the
    open: each working order of ``book[:n_book]`` (order ids, in submission order) whose
    symbol has a bar now fills what remains at the bar's open through
    :func:`engine.core.ledger.execute_fill` (no slippage, no commission), orders no longer
    working leave the book, the others stay in their order (compacted to its front); then the
    marks and extremes of the positions held (:func:`lane_marks`) and their value at the marks.

    ``held``: a buffer of at least ``n_symbols`` int64 (its front receives the held ids).

    Returns
    -------
    tuple
        ``(kept, n_held, value, gross)``: the orders left in ``book``, the number of symbols
        held, and the positions' net and gross value at the marks (currency).
    """
    last_row = istate[LAST_ROW]
    set_last_rows(lo, hi, sym_id, last_row)
    kept = 0
    for k in range(n_book):
        o = book[k]
        if not _working(orders[o]["status"]):
            continue
        row = last_row[orders[o]["sid"]]
        if row >= lo:
            q = orders[o]["quantity"] - orders[o]["filled"]
            if q != 0.0:
                price = open_[row]
                execute_fill(
                    o, q, price, price, 0.0, ordinal[row], i, tolerance, allow_short, False,
                    fstate, istate, pending, aux_i, aux_f, orders, fills, trades, rejections,
                    counts, acc,
                )  # fmt: skip
            if not _working(orders[o]["status"]):
                continue
        book[kept] = o
        kept += 1
    n_held, value, gross = lane_marks(lo, hi, sym_id, high, low, close, fstate, istate, held)
    return kept, n_held, value, gross


@njit
def lane_marks(
    lo: int,
    hi: int,
    sym_id: IntArray,
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    fstate: FloatArray,
    istate: IntArray,
    held: IntArray,
) -> tuple[int, float, float]:
    """Step 2 of the lane's bar (data rows ``lo:hi``): the marks and extremes of the
    positions held (:func:`engine.risk.kernels.mark_bar`) and their value at the marks
    (:func:`engine.core.ledger.portfolio_value`); the held ids, ascending, go to the front of
    ``held`` (int64, at least ``n_symbols``).

    Returns
    -------
    tuple
        ``(n_held, value, gross)``: the number of symbols held and the positions' net and
        gross value (currency).
    """
    qty = fstate[QTY]
    n_held = 0
    for sid in range(qty.size):
        if qty[sid] != 0.0:
            held[n_held] = sid
            n_held += 1
    ids = held[:n_held]
    mark_bar(lo, hi, sym_id, close, high, low, ids, fstate, istate)
    value, gross = portfolio_value(ids, qty, fstate[MARK])
    return n_held, value, gross


_LANE_KINDS: tuple[Kind, ...] = ("fills", "trades", "rejections")


def lane_step(broker: BrokerState, rows: OrderRows) -> None:
    """Steps 1 and 2 of the current bar with the lane (:func:`lane_open_step`), writing the
    fill, trade and rejection records straight into the run's record buffers
    (:meth:`engine.core.records.Records.reserve`; their counts are the call's ``counts``);
    the cash and fill counts taken over from the call, the portfolio's value kept for the
    bar's state record."""
    n = rows.n_book
    data = broker.data
    if n == 0:  # nothing to fill: the bar's rows and marks only (a call with fewer arguments)
        set_last_rows(broker.lo, broker.hi, data.sym_id, broker.last_row)
        n_held, value, gross = lane_marks(
            broker.lo, broker.hi, data.sym_id, data.high, data.low, data.close,
            broker.fstate, broker._istate, rows.held,
        )  # fmt: skip
        broker._marked = broker.i
        rows.value = (broker.i, broker.n_fills, value, gross, n_held)
        return
    records = broker._recorder.records
    if n > rows.room or records.fills or records.trades or records.rejections:
        # rows staged by the Python passes go first; room for the whole book
        rows.room = records.make_room(_LANE_KINDS, n)
    rows.room -= n
    counts = records.tail_counts
    before: int = counts.item(C_FILLS)
    acc = rows.acc
    acc[ACC_CASH] = broker.cash
    acc[ACC_REALIZED] = broker._realized
    tails = records.tails
    rows.n_book, n_held, value, gross = lane_open_step(
        broker.lo, broker.hi, broker.i, data.sym_id, data.open, data.high, data.low,
        data.close, data.ordinal, rows.book, n, broker._cash_tol, broker._allow_short,
        broker.fstate, broker._istate, broker.pending, broker._aux_i, broker._aux_f,
        rows.rows, tails["fills"], tails["trades"], tails["rejections"], counts, acc,
        rows.held,
    )  # fmt: skip
    n_fills = counts.item(C_FILLS) - before
    if n_fills:
        broker.cash = acc.item(ACC_CASH)
        broker._realized = acc.item(ACC_REALIZED)
        broker.n_fills += n_fills
        broker._fills_today += n_fills
        broker._held = None
    broker._marked = broker.i
    rows.value = (broker.i, broker.n_fills, value, gross, n_held)
