"""Delistings, stated once for both engine drivers.

A symbol is delisted at a bar when its data ends there before the panel's last session, or
when its next bar comes more than ``gap_sessions`` sessions of the panel later (a ticker
reused by another security after a gap). At that bar's close, after the close's fills:

- every working order of a delisted symbol ends: rejected when it was submitted on this bar,
  cancelled otherwise (:func:`delisted_order_fate`), reason ``delisted``; the same holds at
  later bars for orders submitted for a symbol that has had no bar since its delisting;
- an open position is closed at :func:`delisting_price`, ``close × (1 + delisting_return)``
  (``exit_reason = "delisted"``).

:func:`delisting_rows` finds the delisting bars once before the run. The decisions are plain
Python (``name``, called by the Python driver's :class:`engine.mechanics.MarketMechanics`)
compiled from the same source (``name_nb``, called by :func:`delisted_book_pass`, the compiled
TopN driver's pass over its order book).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engine.core.jit import njit
from engine.core.layout import (
    C_BOOK,
    EV_CANCELLED,
    EV_REJECTED,
    S_CANCELLED,
    S_REJECTED,
    SR_DELISTED,
)
from engine.core.ledger import finish_order

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def delisting_rows(offsets: IntArray, sym_id: IntArray, gap_sessions: int) -> BoolArray:
    """Rows at which their symbol is delisted (module docstring).

    Parameters
    ----------
    offsets : int64 array, shape (n_timestamps + 1,)
        Bar ``i``'s rows are ``offsets[i]:offsets[i + 1]``.
    sym_id : int64 array, shape (n_rows,)
        Symbol id of each row (at most one row per symbol and bar).
    gap_sessions : int
        Missing sessions of the panel after which the data is taken to belong to another
        security (>= 1).

    Returns
    -------
    bool array, shape (n_rows,)
        True at a symbol's last row before the panel's last session, and at a row whose
        symbol's next row is more than ``gap_sessions`` sessions later. The rule reads the
        symbol's future rows: the delisting is taken as announced (Zipline's
        ``auto_close_date`` does the same).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    n_t = offsets.size - 1
    sym = np.asarray(sym_id, dtype=np.int64)
    out = np.zeros(sym.size, dtype=np.bool_)
    if sym.size == 0:
        return out
    bar = np.repeat(np.arange(n_t, dtype=np.int64), np.diff(offsets))
    order = np.lexsort((bar, sym))
    s = sym[order]
    b = bar[order]
    same_next = np.concatenate((s[1:] == s[:-1], [False]))
    gap = np.concatenate((b[1:] - b[:-1] - 1, [0]))
    out[order] = np.where(same_next, gap > gap_sessions, b < n_t - 1)
    return out


def delisting_price(close: float, delisting_return: float) -> float:
    """The price a delisted position is closed at: its last close ``close`` (currency per
    share) times ``1 + delisting_return`` (CRSP's delisting return, a fraction; -1: worthless)."""
    return close * (1.0 + delisting_return)


def delisted_order_fate(submit_index: int, i: int) -> tuple[int, int]:
    """``(status, event)`` codes (:mod:`engine.core.layout`) of a working order of a symbol
    delisted at bar ``i``: rejected (``S_REJECTED``, ``EV_REJECTED``) when it was submitted on
    bar ``i`` (``submit_index == i``), cancelled (``S_CANCELLED``, ``EV_CANCELLED``) when it
    was working from an earlier bar."""
    if submit_index == i:
        return S_REJECTED, EV_REJECTED
    return S_CANCELLED, EV_CANCELLED


delisting_price_nb = njit(delisting_price)
delisted_order_fate_nb = njit(delisted_order_fate)


@njit
def delisted_book_pass(
    i: int,
    lo: int,
    hi: int,
    terminal: BoolArray,
    sym_id: IntArray,
    delisted: BoolArray,
    orders: npt.NDArray[np.void],
    book: IntArray,
    counts: IntArray,
    pending: FloatArray,
    aux_i: IntArray,
    rejections: npt.NDArray[np.void],
) -> None:
    """The order-book step of a delisting at bar ``i`` (rows ``lo:hi``) for a compiled
    driver: ``delisted[s]`` (bool, per symbol) becomes ``terminal[r]`` for each symbol ``s``
    with a row ``r`` now (a new bar ends an earlier delisting), then every order of the book
    (``book[:counts[C_BOOK]]``, ids of ``orders`` records) of a delisted symbol ends as
    :func:`delisted_order_fate` says, reason ``delisted``
    (:func:`engine.core.ledger.finish_order`: pending shares released, a rejection record),
    and leaves the book. The driver then closes the positions of the rows ``terminal`` marks
    at :func:`delisting_price`."""
    for r in range(lo, hi):
        delisted[sym_id[r]] = terminal[r]
    n_book = counts[C_BOOK]
    kept = 0
    for b in range(n_book):
        o = book[b]
        if delisted[orders[o]["sid"]]:
            status, event = delisted_order_fate_nb(orders[o]["submit_index"], i)
            finish_order(
                o, status, SR_DELISTED, event, i, orders, counts, pending, aux_i, rejections
            )
        else:
            book[kept] = o
            kept += 1
    counts[C_BOOK] = kept
