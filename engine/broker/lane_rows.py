"""The market-order lane's order records (:mod:`engine.broker.lane`): a growable
``ORDER_DTYPE`` buffer, its mutable fields' views, and the book of working lane orders.

Kept apart from :mod:`engine.broker.lane` so the broker's state can hold an
:class:`OrderRows` without importing the lane's passes (which read the broker's state).
"""

from __future__ import annotations

import math

import numpy as np

from engine.core.layout import (
    N_ACC,
    R_STRATEGY,
    S_ACCEPTED,
    S_PARTIAL,
    S_SUBMITTED,
    SR_NONE,
    T_MARKET,
)
from engine.core.records import ORDER_DTYPE, RecordArray, Records
from engine.data import FloatArray, IntArray
from engine.orders import Order

__all__ = ["OrderRows", "blank_rows"]


class OrderRows:
    """The lane's order records: a growable ``ORDER_DTYPE`` buffer (row = order id) with
    views of its mutable fields, and the book of working lane orders (row ids, in order).

    Parameters
    ----------
    records : Records
        The run's records (the status-reason texts of the rows' ``status_reason`` codes).
    n_symbols : int
        Size of the symbol universe.
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
    )

    def __init__(self, records: Records, n_symbols: int, capacity: int = 4096) -> None:
        self.texts = records.texts
        self.text_code = records.text_code
        self.book: IntArray = np.empty(capacity, dtype=np.int64)
        self.n_book = 0
        self.acc: FloatArray = np.zeros(N_ACC)  # cash and realized P&L of a call
        self.held: IntArray = np.empty(n_symbols, dtype=np.int64)  # held ids of a call
        # (bar index, fills so far, value, gross, positions held) after the bar's step 2
        self.value: tuple[int, int, float, float, int] = (-1, -1, 0.0, 0.0, 0)
        self.room = 0  # free rows known in each record buffer the step writes
        self._use(blank_rows(capacity))

    def _use(self, rows: RecordArray) -> None:
        self.rows = rows
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
            grown = blank_rows(max(n, 2 * self.rows.size))
            grown[: self.rows.size] = self.rows
            self._use(grown)

    def accept(self, orders: list[Order]) -> None:
        """Step 4 without order rules: the lane's new ``orders`` still submitted become
        accepted (a change the core's transition matrix allows, checked at import) and join
        the end of the book, in their order; orders no longer submitted are skipped."""
        status = self.status
        n = self.n_book
        if n + len(orders) > self.book.size:
            self.book = np.concatenate((self.book, np.empty(n + len(orders), dtype=np.int64)))
        book = self.book
        first = orders[0].order_id
        end = first + len(orders)
        if end - first > 16 and orders[-1].order_id == end - 1:
            # many consecutive ids (as the lane places them): NumPy over the range
            ids = np.arange(first, end, dtype=np.int64)
            ids = ids[status[first:end] == S_SUBMITTED]
            status[ids] = S_ACCEPTED
            book[n : n + ids.size] = ids
            self.n_book = n + ids.size
            return
        for order in orders:
            o = order.order_id
            if status.item(o) == S_SUBMITTED:
                status[o] = S_ACCEPTED
                book[n] = o
                n += 1
        self.n_book = n

    def working(self) -> list[int]:
        """Ids of the book's orders that are still active, in book order."""
        ids = self.book[: self.n_book]
        status = self.status[ids]
        active = (status == S_SUBMITTED) | (status == S_ACCEPTED) | (status == S_PARTIAL)
        return ids[active].tolist()  # type: ignore[no-any-return]


def blank_rows(n: int) -> RecordArray:
    """``n`` order rows with the fields every lane order shares: a submitted GTC market
    order of the strategy, nothing filled, no limit or stop price, no parent."""
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
