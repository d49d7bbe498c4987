"""Portfolio limits at hook B, compiled: each new order passes, shrinks or is rejected.

:func:`apply_limits` judges each new order, in submission order, against the portfolio plus
the orders accepted before it, with the limits of a table (rows ``LIM_KIND``, ``LIM_PARAM``,
in priority order; :mod:`engine.core.layout`). The formulas are those of the rules in
:mod:`engine.risk.rules.portfolio`, which keep their validation and reason texts; the
compiled driver hands their parameters over (:mod:`engine.compiled.plan`). Let ``current`` be
the symbol's position plus its accepted pending shares, ``q`` the order's shares, ``equity``
the cash plus the positions marked at the latest closes; an order *grows* the exposure unless
it reduces ``current`` without crossing zero.

- ``L_DRAWDOWN`` (``MaxDrawdownRule``, ``action="halt"``): reject a growing order when
  ``equity / peak - 1 <= -max_drawdown``;
- ``L_DAILY_LOSS`` (``MaxDailyLossRule``): reject a growing order when
  ``equity - day_start <= -max_loss_pct × day_start``;
- ``L_POSITION_SIZE`` (``MaxPositionSizeRule``): shrink a growing order to
  ``|current + q| <= max_pct × equity / mark``, reject when nothing is left;
- ``L_LEVERAGE`` (``MaxLeverageRule``): shrink a growing order so that the projected gross
  exposure ``Σ |qty + pending| × mark`` stays within ``max_leverage × equity``;
- ``L_POSITIONS`` (``MaxPositionsRule``): reject an order opening a new symbol when the
  projected number of positions is already ``max_positions``.

A shrunk quantity is rounded (whole shares unless fractional) and a rejection or shrink is
recorded with the limit's row and the figures of its reason text.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from engine.core.jit import njit
from engine.core.layout import (
    ACC_CASH,
    ACC_DAY_START,
    ACC_PEAK,
    C_BOOK,
    C_REJ,
    EV_REJECTED,
    EV_SHRUNK,
    L_DAILY_LOSS,
    L_DRAWDOWN,
    L_LEVERAGE,
    L_POSITION_SIZE,
    L_POSITIONS,
    LIM_KIND,
    LIM_PARAM,
    MARK,
    QTY,
    S_ACCEPTED,
    S_REJECTED,
    SR_LIMIT,
    SR_NONE,
    set_status,
)
from engine.core.ledger import round_quantity_nb
from engine.risk import kernels

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
RecordArray = npt.NDArray[np.void]


@njit
def accept_order(o: int, orders: RecordArray, book: IntArray, counts: IntArray) -> None:
    """Accept order ``o`` (status accepted) and append it to ``book`` (``counts[C_BOOK]``
    entries long)."""
    set_status(orders, o, S_ACCEPTED)
    book[counts[C_BOOK]] = o
    counts[C_BOOK] += 1


@njit
def _block_sum(a: FloatArray, lo: int, n: int) -> float:
    """NumPy's pairwise-sum leaf for ``a[lo:lo + n]``, ``n <= 128``."""
    if n < 8:
        res: float = -0.0
        for k in range(n):
            res += a[lo + k]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    k = 8
    while k < n - (n % 8):
        r0 += a[lo + k]
        r1 += a[lo + k + 1]
        r2 += a[lo + k + 2]
        r3 += a[lo + k + 3]
        r4 += a[lo + k + 4]
        r5 += a[lo + k + 5]
        r6 += a[lo + k + 6]
        r7 += a[lo + k + 7]
        k += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while k < n:
        res += a[lo + k]
        k += 1
    return res


@njit
def _pairwise_sum(a: FloatArray, lo: int, n: int, stack: FloatArray) -> float:
    """NumPy's pairwise summation of ``a[lo:lo + n]`` (float64, contiguous): the same
    additions in the same order, so ``np.sum`` / ``np.nansum`` figures are reproduced. A block
    of more than 128 values is split at ``n2 = n // 2 - (n // 2) % 8`` and the two halves'
    sums added; written with an explicit stack (numba's on-disk cache and recursion do not
    mix): ``stack``, float64 of shape (4, 64), scratch (64 levels cover any array size)."""
    s_lo = stack[0]
    s_n = stack[1]
    s_state = stack[2]
    s_left = stack[3]
    s_lo[0] = lo
    s_n[0] = n
    s_state[0] = 0
    sp = 1
    ret = 0.0
    while sp > 0:
        t = sp - 1
        m = int(s_n[t])
        if m <= 128:
            ret = _block_sum(a, int(s_lo[t]), m)
            sp -= 1
            continue
        n2 = m // 2
        n2 -= n2 % 8
        state = s_state[t]
        if state == 0:
            s_state[t] = 1
            s_lo[sp] = s_lo[t]
            s_n[sp] = n2
            s_state[sp] = 0
            sp += 1
        elif state == 1:
            s_left[t] = ret
            s_state[t] = 2
            s_lo[sp] = s_lo[t] + n2
            s_n[sp] = m - n2
            s_state[sp] = 0
            sp += 1
        else:
            ret = s_left[t] + ret
            sp -= 1
    return ret


@njit
def _gross_term(qty: FloatArray, pending: FloatArray, marks: FloatArray, sid: int) -> float:
    """One term of :func:`projected_gross` (0 for NaN, as ``nansum``)."""
    v = abs(qty[sid] + pending[sid]) * marks[sid]
    return 0.0 if math.isnan(v) else v


@njit
def projected_gross(
    qty: FloatArray, pending: FloatArray, marks: FloatArray, scratch: FloatArray
) -> float:
    """The projected gross exposure ``nansum(|qty + pending| × mark)`` (currency), summed as
    NumPy sums it (as ``PortfolioSnapshot.projected_gross_exposure`` does).

    ``scratch``: float64, shape (256 + n_symbols,) (the sum's stack, then the terms, which
    stay there for :func:`apply_limits` to update one by one)."""
    n = qty.size
    e = scratch[256 : 256 + n]
    for sid in range(n):
        e[sid] = _gross_term(qty, pending, marks, sid)
    return _pairwise_sum(e, 0, n, scratch[:256].reshape((4, 64)))


@njit
def _limit_event(
    o: int,
    event: int,
    limit: int,
    shrink_text: bool,
    value: float,
    bound: float,
    quantity: float,
    i: int,
    orders: RecordArray,
    counts: IntArray,
    rejections: RecordArray,
) -> int:
    """Record a limit's rejection or shrink of order ``o``; the row's index."""
    k = counts[C_REJ]
    counts[C_REJ] = k + 1
    rejections[k]["bar_index"] = i
    rejections[k]["order_id"] = o
    rejections[k]["sid"] = orders[o]["sid"]
    rejections[k]["order_type"] = orders[o]["order_type"]
    rejections[k]["event"] = event
    rejections[k]["reason"] = SR_NONE
    rejections[k]["rule"] = 0
    rejections[k]["limit"] = limit
    rejections[k]["shrink_text"] = 1 if shrink_text else 0
    rejections[k]["quantity"] = quantity
    rejections[k]["value"] = value
    rejections[k]["bound"] = bound
    return int(k)


@njit
def apply_limits(
    new: IntArray,
    i: int,
    limits: FloatArray,
    fractional: bool,
    acc: FloatArray,
    fstate: FloatArray,
    pending: FloatArray,
    orders: RecordArray,
    book: IntArray,
    counts: IntArray,
    rejections: RecordArray,
    scratch: FloatArray,
    held: IntArray,
) -> None:
    """Hook B: the new orders ``new`` (ids, submission order) pass, shrink or are rejected
    by the limits of the table ``limits`` (module docstring), and the passing ones join the
    ``book`` accepted.

    ``acc``: cash, peak and day-start equity (``ACC_*``); ``pending`` holds the new orders'
    shares on entry and only the accepted ones' on return; ``scratch``, float64, shape
    (256 + n_symbols,): see :func:`projected_gross`; ``held``: the ids of the symbols with a
    position (ascending), for the equity. A rejection sets the order's status reason to
    ``SR_LIMIT + k``, ``k`` its rejection record.
    """
    qty = fstate[QTY]
    marks = fstate[MARK]
    if limits.shape[0] == 0:
        for k in range(new.size):
            accept_order(new[k], orders, book, counts)
        return
    for k in range(new.size):
        o = new[k]
        pending[orders[o]["sid"]] -= orders[o]["quantity"]
    cash = acc[ACC_CASH]
    value = 0.0
    if held.size:
        value, _ = kernels.portfolio_value(held, qty, marks)
    equity = cash + value
    # kernels.count_projected, kept up to date as orders are accepted (one symbol changes);
    # likewise the terms of the projected gross exposure (summed anew when read)
    projected = kernels.count_projected(qty, pending, 1e-9)
    terms_ready = False
    terms = scratch[256 : 256 + qty.size]
    stack = scratch[:256].reshape((4, 64))
    peak = acc[ACC_PEAK]
    day_start = acc[ACC_DAY_START]
    for k in range(new.size):
        o = new[k]
        sid = orders[o]["sid"]
        quantity = orders[o]["quantity"]
        rejected = -1
        shrunk = -1
        shrink_text = False
        value = 0.0
        bound = 0.0
        for r in range(limits.shape[0]):
            kind = limits[r, LIM_KIND]
            param = limits[r, LIM_PARAM]
            current = qty[sid] + pending[sid]
            grows = not (current * quantity < 0 and abs(quantity) <= abs(current) + 1e-9)
            if kind == L_DRAWDOWN:
                drawdown = equity / peak - 1.0 if peak > 0 else 0.0
                if drawdown <= -param and grows:
                    rejected = r
                    value = drawdown
                    break
            elif kind == L_DAILY_LOSS:
                bound = -param * day_start
                value = equity - day_start
                if value <= bound and grows:
                    rejected = r
                    break
            elif kind == L_POSITION_SIZE:
                price = marks[sid]
                if not grows or not math.isfinite(price) or price <= 0:
                    continue
                cap_shares = param * equity / price
                if abs(current + quantity) <= cap_shares + 1e-9:
                    continue
                if current * quantity > 0:
                    allowed = cap_shares - abs(current)
                else:
                    allowed = cap_shares + abs(current)
                if allowed <= 0:
                    rejected = r
                    break
                q = math.copysign(allowed if allowed < abs(quantity) else abs(quantity), quantity)
                quantity = q
                shrunk = r
            elif kind == L_LEVERAGE:
                price = marks[sid]
                if not grows or not math.isfinite(price) or price <= 0:
                    continue
                if terms_ready:
                    gross = _pairwise_sum(terms, 0, terms.size, stack)
                else:
                    gross = projected_gross(qty, pending, marks, scratch)
                    terms_ready = True
                room = param * equity - gross
                extra = (abs(current + quantity) - abs(current)) * price
                if extra <= room + 1e-9:
                    continue
                if room <= 0:
                    rejected = r
                    break
                if current * quantity >= 0:
                    shares = room / price
                else:
                    shares = 2.0 * abs(current) + room / price
                q = math.copysign(shares if shares < abs(quantity) else abs(quantity), quantity)
                quantity = q
                shrunk = r
            elif kind == L_POSITIONS:
                if current != 0:
                    continue
                if projected >= param:
                    rejected = r
                    break
        if rejected < 0 and shrunk >= 0:
            new_q = round_quantity_nb(quantity, fractional)
            if new_q == 0:
                rejected = shrunk
                shrink_text = True
            else:
                _limit_event(
                    o,
                    EV_SHRUNK,
                    shrunk,
                    True,
                    0.0,
                    0.0,
                    orders[o]["quantity"],
                    i,
                    orders,
                    counts,
                    rejections,
                )
                orders[o]["quantity"] = new_q
        if rejected >= 0:
            row = _limit_event(
                o, EV_REJECTED, rejected, shrink_text, value, bound,
                orders[o]["quantity"] - orders[o]["filled"], i, orders, counts, rejections,
            )  # fmt: skip
            set_status(orders, o, S_REJECTED)
            orders[o]["status_reason"] = SR_LIMIT + row
            continue
        was = abs(qty[sid] + pending[sid]) > 1e-9
        pending[sid] += orders[o]["quantity"]
        projected += int(abs(qty[sid] + pending[sid]) > 1e-9) - int(was)
        if terms_ready:
            terms[sid] = _gross_term(qty, pending, marks, sid)
        accept_order(o, orders, book, counts)
