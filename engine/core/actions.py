"""Corporate actions on the ledger at a bar boundary: splits and cash dividends.

Compiled kernels over the core's per-symbol state (:mod:`engine.core.layout`), written once
as plain Python and compiled from that source, so every driver applies an ex-date the same
way (the Python driver's broker calls them from :class:`engine.mechanics.MarketMechanics`).

A split of ratio ``r`` (new shares per old share: 7.0 for a 7:1 split, 0.05 for a 1:20
reverse split) multiplies the held quantity by ``r`` and divides every per-share price of
the position by ``r``: the average entry price, the latest mark, the stop-loss and
take-profit levels and the best/worst prices since the entry (MFE/MAE). Quantity × price is
unchanged, so the position's value and its unrealized P&L do not move on the ex-date.
A cash dividend of ``d`` (currency per share, in the prices of the day before the ex-date)
moves ``quantity × d`` into the cash: credited to a long, debited from a short. With a pay
date after the ex-date's bar (:func:`paid_later`) the amount is owed from the ex-date (the
receivable, part of the equity, not of the cash) and moves into the cash at the first bar on
or after its pay date (:func:`pay_due`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engine.core.jit import njit
from engine.core.layout import ACC_CASH, AVG, BEST, MARK, QTY, STOP, T_MARKET, TP, WORST
from engine.core.ledger import round_quantity_nb

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@njit
def apply_splits(
    sids: IntArray, ratios: FloatArray, fstate: FloatArray, pending: FloatArray
) -> None:
    """Apply the splits ``ratios[k]`` (new shares per old share, > 0) to symbols ``sids[k]``.

    ``fstate``, float64, shape (N_FLOAT_FIELDS, n_symbols): rows ``QTY`` (× r) and ``AVG``,
    ``MARK``, ``STOP``, ``TP``, ``BEST``, ``WORST`` (÷ r; NaN stays NaN) are updated in place.
    ``pending``, float64, shape (n_symbols,): signed shares of working market orders (× r).
    """
    for k in range(sids.size):
        s = sids[k]
        r = ratios[k]
        if r == 1.0:
            continue
        fstate[QTY, s] *= r
        fstate[AVG, s] /= r
        fstate[MARK, s] /= r
        fstate[STOP, s] /= r
        fstate[TP, s] /= r
        fstate[BEST, s] /= r
        fstate[WORST, s] /= r
        pending[s] *= r


@njit
def split_and_dividend(
    s: int, ratio: float, dividend: float, fractional: bool, fstate: FloatArray, pending: FloatArray
) -> tuple[float, float, float, float]:
    """One corporate action on symbol ``s``: the dividend on the shares held before it, then
    the split (:func:`apply_splits` for one symbol); without ``fractional`` a split's fraction
    of a share is paid out at the split-adjusted previous close (cash in lieu), unless that
    would leave less than one share (a small holding after a reverse split keeps its
    fraction).

    Returns
    -------
    (quantity_before, quantity_after, dividend_cash, cash_in_lieu) : tuple of float
        Shares and currency; the driver adds ``cash_in_lieu`` then ``dividend_cash`` to the
        cash, in that order (both drivers do, so their sums agree to the last bit).
    """
    q0 = fstate[QTY, s]
    cash = q0 * dividend
    lieu = 0.0
    if ratio != 1.0:
        sids = np.empty(1, dtype=np.int64)
        sids[0] = s
        ratios = np.empty(1)
        ratios[0] = ratio
        apply_splits(sids, ratios, fstate, pending)
        q = fstate[QTY, s]
        if not fractional and q != 0.0:
            whole = np.floor(abs(q) + 1e-9)
            if whole >= 1.0:
                whole = whole if q > 0 else -whole
                if whole != q:
                    lieu = (q - whole) * fstate[MARK, s]
                    fstate[QTY, s] = whole
    return q0, fstate[QTY, s], cash, lieu


def split_order(quantity: float, filled: float, ratio: float) -> tuple[float, float]:
    """A working order's shares after a split of ``ratio``: ``(remaining, filled)``, both ×
    ``ratio`` (signed shares). The caller rounds ``remaining`` toward zero to whole shares
    unless fractional shares are on (:func:`engine.core.ledger.round_quantity`), so an order
    for whole shares stays one and the exit of a whole position (split to ``floor(|q| ×
    ratio)`` shares, the fraction paid in cash) still matches it, and sets the order's
    quantity to ``filled + remaining``; its prices are divided by ``ratio``. (An order whose
    remaining shares round to zero, less than one share after a reverse split, stays working
    for no shares and never fills.)"""
    return (quantity - filled) * ratio, filled * ratio


split_order_nb = njit(split_order)


EV_BEFORE, EV_AFTER, EV_CASH, EV_LIEU, EV_ORDERS, EV_APPLIED = range(6)
N_EV = 6
"""Columns of the compiled driver's event output (one row per scheduled action)."""

MX_RECEIVABLE, MX_PAY_LO, MX_NEXT_PAY = range(3)
N_MX = 3
"""Slots of the dividend-payment state (float64): the receivable (currency), the first
scheduled action that may still be owed, the earliest pay day still owed (:data:`NEVER`:
none)."""
NEVER = 2**62
"""A pay day no bar reaches (days since 1970-01-01)."""


def paid_later(pay_day: int, today: int) -> bool:
    """True when a dividend whose ex-date is applied on day ``today`` (days since
    1970-01-01, the bar's UTC date) is paid on a later bar: its pay date ``pay_day`` (days;
    -1: none, paid with the ex-date) comes after ``today``."""
    return pay_day > today


paid_later_nb = njit(paid_later)


def new_payment_state() -> FloatArray:
    """The dividend-payment state before the first bar (``MX_*`` slots: nothing owed)."""
    mx = np.zeros(N_MX)
    mx[MX_NEXT_PAY] = float(NEVER)
    return mx


@njit
def pay_due(
    today: int, lo: int, hi: int, pay_day: IntArray, owed: FloatArray
) -> tuple[float, int, int]:
    """The dividends owed by the actions ``lo:hi`` (``owed[k] != 0``, currency, signed) whose
    pay day has come (not :func:`paid_later` than ``today``), summed in action order; their
    ``owed`` become 0.

    Returns
    -------
    (due, first, next_day) : tuple of (float, int, int)
        The amount to move from the receivable into the cash, the first action still owed
        (``hi`` if none) and the earliest pay day still owed (:data:`NEVER` if none).
    """
    due = 0.0
    first = hi
    next_day = NEVER
    for k in range(lo, hi):
        amount = owed[k]
        if amount == 0.0:
            continue
        if paid_later_nb(pay_day[k], today):
            if first == hi:
                first = k
            if pay_day[k] < next_day:
                next_day = pay_day[k]
        else:
            due += amount
            owed[k] = 0.0
    return due, first, next_day


@njit
def bar_payments(
    today: int, k: int, pay_day: IntArray, owed: FloatArray, acc: FloatArray, mx: FloatArray
) -> None:
    """The dividends paid on day ``today`` for a compiled driver (after the bar's actions;
    ``k``: the actions applied so far): :func:`pay_due` over the actions still owed; the
    receivable (``mx[MX_RECEIVABLE]``) −= due, then the cash (``acc[ACC_CASH]``) += due."""
    if mx[MX_NEXT_PAY] > today:
        return
    due, first, next_day = pay_due(today, int(mx[MX_PAY_LO]), k, pay_day, owed)
    mx[MX_PAY_LO] = first
    mx[MX_NEXT_PAY] = next_day
    mx[MX_RECEIVABLE] -= due
    acc[ACC_CASH] += due


@njit
def bar_actions(
    i: int,
    today: int,
    k: int,
    ev_bar: IntArray,
    ev_sid: IntArray,
    ev_ratio: FloatArray,
    ev_div: FloatArray,
    ev_pay: IntArray,
    fractional: bool,
    fstate: FloatArray,
    pending: FloatArray,
    open_qty: FloatArray,
    partial_original: FloatArray,
    acc: FloatArray,
    orders: npt.NDArray[np.void],
    book: IntArray,
    n_book: int,
    ev_out: FloatArray,
    dividends: FloatArray,
    owed: FloatArray,
    mx: FloatArray,
) -> int:
    """The scheduled actions due at bar ``i`` (``ev_bar[k] <= i`` from ``k`` on; ``today``:
    the bar's UTC day), for a compiled driver; returns the next ``k``.

    Per action (:func:`split_and_dividend`): cash (``acc[ACC_CASH]``) += cash in lieu, then
    += dividend cash, unless the dividend is :func:`paid_later` (``ev_pay[k]``: its pay day,
    -1 none): then ``owed[k]`` = dividend cash and the receivable (``mx[MX_RECEIVABLE]``) +=
    it, paid by :func:`bar_payments`; ``dividends[i]`` += dividend cash; on a split of a held
    symbol the open trade's shares (``open_qty[s]``) become ``|quantity|`` and
    ``PartialProfitTaking``'s starting size of it (``partial_original[s]``) is × ratio, and
    the working
    orders of the symbol (``book[:n_book]``, ids of ``orders`` records, ``ORDER_DTYPE``) get
    their ``quantity`` and ``filled`` split (:func:`split_order`; a market order's change of
    the remaining shares by the rounding goes into ``pending``) and their prices divided by
    the ratio. ``ev_out[k]`` (columns ``EV_*``) records what happened.
    """
    while k < ev_bar.size and ev_bar[k] <= i:
        s = ev_sid[k]
        r = ev_ratio[k]
        q0, q1, cash, lieu = split_and_dividend(s, r, ev_div[k], fractional, fstate, pending)
        acc[ACC_CASH] += lieu
        if cash != 0.0:
            if paid_later_nb(ev_pay[k], today):
                owed[k] = cash
                mx[MX_RECEIVABLE] += cash
                if k < mx[MX_PAY_LO]:
                    mx[MX_PAY_LO] = k
                if ev_pay[k] < mx[MX_NEXT_PAY]:
                    mx[MX_NEXT_PAY] = ev_pay[k]
            else:
                acc[ACC_CASH] += cash
            dividends[i] += cash
        n_orders = 0
        if r != 1.0:
            if q0 != 0.0:
                open_qty[s] = abs(q1)
                partial_original[s] *= r
            for b in range(n_book):
                o = book[b]
                if orders[o]["sid"] == s:
                    qo, fo = orders[o]["quantity"], orders[o]["filled"]
                    rest, fn = split_order_nb(qo, fo, r)
                    if not fractional:
                        whole = round_quantity_nb(rest, False)
                        if orders[o]["order_type"] == T_MARKET:
                            pending[s] += whole - rest
                        rest = whole
                    orders[o]["quantity"] = fn + rest
                    orders[o]["filled"] = fn
                    orders[o]["limit_price"] /= r
                    orders[o]["stop_price"] /= r
                    n_orders += 1
        ev_out[k, EV_BEFORE] = q0
        ev_out[k, EV_AFTER] = q1
        ev_out[k, EV_CASH] = cash
        ev_out[k, EV_LIEU] = lieu
        ev_out[k, EV_ORDERS] = n_orders
        ev_out[k, EV_APPLIED] = 1.0
        k += 1
    return k
