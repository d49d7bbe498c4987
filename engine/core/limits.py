"""Portfolio limits at hook B, compiled: each new order passes, shrinks or is rejected.

:func:`apply_limits` judges each new order, in submission order, against the portfolio plus
the orders accepted before it, with the limits of a table (rows ``LIM_KIND``, ``LIM_PARAM``,
in priority order; :mod:`engine.core.layout`). Each limit's formula is stated once below as
plain Python (:func:`grows`, :func:`drawdown_breached`, :func:`daily_loss_breached`,
:func:`position_size_verdict`, :func:`leverage_verdict`, :func:`positions_full`) and
compiled from that source (``*_nb``): the rules of :mod:`engine.risk.rules.portfolio` (the
Python driver; they keep their validation, state and reason texts) call the plain forms,
:func:`apply_limits` the compiled ones; the compiled driver hands the rules' parameters over
(:mod:`engine.compiled.plan`). Let ``current`` be
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
from engine.core.ledger import count_projected, portfolio_value, round_quantity_nb

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
RecordArray = npt.NDArray[np.void]

V_ALLOW, V_SHRINK, V_REJECT = 0, 1, 2
"""Verdicts of a size limit on one order: pass it, shrink it, reject it."""

# ---------------------------------------------------------------------- the formulas, once
# Plain Python, compiled from the same source (``*_nb``, as engine.core.matching does): the
# Python driver's rules (engine.risk.rules.portfolio) call the plain forms, apply_limits the
# compiled ones. Quantities in shares (signed), prices in currency per share, equity in
# currency.


def grows(current: float, q: float) -> bool:
    """False only for an order of ``q`` shares that shrinks ``current`` (the symbol's position
    plus its accepted working market orders, shares) toward zero without crossing it."""
    return not (current * q < 0 and abs(q) <= abs(current) + 1e-9)


def limit_applies(current: float, q: float, price: float) -> bool:
    """True when a size limit judges an order of ``q`` shares: it :func:`grows` the exposure
    ``current`` and its ``price`` (currency per share) is a finite number > 0."""
    growing = not (current * q < 0 and abs(q) <= abs(current) + 1e-9)
    return growing and math.isfinite(price) and price > 0


def drawdown_breached(equity: float, peak: float, max_drawdown: float) -> tuple[bool, float]:
    """``(breached, drawdown)``: ``drawdown = equity / peak - 1`` (fraction, 0 when ``peak``
    is not > 0), breached when ``drawdown <= -max_drawdown`` (``MaxDrawdownRule``)."""
    drawdown = equity / peak - 1.0 if peak > 0 else 0.0
    return drawdown <= -max_drawdown, drawdown


def daily_loss_breached(
    equity: float, day_start: float, max_loss_pct: float
) -> tuple[bool, float, float]:
    """``(breached, pnl, bound)``: the day's P&L ``equity - day_start`` (currency) against
    ``bound = -max_loss_pct × day_start``, breached when ``pnl <= bound``
    (``MaxDailyLossRule``)."""
    bound = -max_loss_pct * day_start
    pnl = equity - day_start
    return pnl <= bound, pnl, bound


def position_size_verdict(
    current: float, q: float, price: float, equity: float, max_pct: float
) -> tuple[int, float]:
    """``MaxPositionSizeRule``: ``(verdict, shares)`` for an order of ``q`` shares at
    ``price`` on a symbol with exposure ``current``, capped at
    ``|current + q| × price <= max_pct × equity``.

    An order the limit does not judge (:func:`limit_applies`) or within the cap passes
    (``V_ALLOW``, ``q``); otherwise it shrinks to the shares left under the cap (``V_SHRINK``;
    a flip may first remove ``|current|``), or is rejected (``V_REJECT``) when none are.
    The shrunk quantity is not rounded.
    """
    growing = not (current * q < 0 and abs(q) <= abs(current) + 1e-9)
    if not growing or not math.isfinite(price) or price <= 0:
        return V_ALLOW, q
    cap_shares = max_pct * equity / price
    if abs(current + q) <= cap_shares + 1e-9:
        return V_ALLOW, q
    allowed = cap_shares - abs(current) if current * q > 0 else cap_shares + abs(current)
    if allowed <= 0:
        return V_REJECT, q
    return V_SHRINK, math.copysign(allowed if allowed < abs(q) else abs(q), q)


def leverage_verdict(
    current: float, q: float, price: float, equity: float, gross: float, max_leverage: float
) -> tuple[int, float]:
    """``MaxLeverageRule``: ``(verdict, shares)`` for an order of ``q`` shares at ``price``
    on a symbol with exposure ``current``, when the projected gross exposure (currency,
    ``Σ |qty + pending| × mark``) is ``gross``: the added exposure
    ``(|current + q| - |current|) × price`` must fit in ``room = max_leverage × equity -
    gross``.

    Passes (``V_ALLOW``, ``q``) when it fits (the caller checks :func:`limit_applies` first,
    so ``gross`` is summed only when needed); rejected (``V_REJECT``) when there is no room;
    otherwise shrunk (``V_SHRINK``) to ``room / price`` shares (a flip first removes
    ``|current|`` shares of exposure: ``2 |current| + room / price``). Not rounded.
    """
    room = max_leverage * equity - gross
    extra = (abs(current + q) - abs(current)) * price
    if extra <= room + 1e-9:
        return V_ALLOW, q
    if room <= 0:
        return V_REJECT, q
    shares = room / price if current * q >= 0 else 2.0 * abs(current) + room / price
    return V_SHRINK, math.copysign(shares if shares < abs(q) else abs(q), q)


def positions_full(current: float, projected: int, max_positions: float) -> bool:
    """``MaxPositionsRule``: True when an order on a symbol of exposure ``current`` opens a
    new symbol (``current == 0``) while ``projected`` symbols already have a non-zero
    position plus working market orders and ``projected >= max_positions``."""
    return current == 0 and projected >= max_positions


grows_nb = njit(grows)
limit_applies_nb = njit(limit_applies)
drawdown_breached_nb = njit(drawdown_breached)
daily_loss_breached_nb = njit(daily_loss_breached)
position_size_verdict_nb = njit(position_size_verdict)
leverage_verdict_nb = njit(leverage_verdict)
positions_full_nb = njit(positions_full)


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
        value, _ = portfolio_value(held, qty, marks)
    equity = cash + value
    # count_projected, kept up to date as orders are accepted (one symbol changes);
    # likewise the terms of the projected gross exposure (summed anew when read)
    projected = count_projected(qty, pending, 1e-9)
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
            if kind == L_DRAWDOWN:
                breached, value = drawdown_breached_nb(equity, peak, param)
                if breached and grows_nb(current, quantity):
                    rejected = r
                    break
            elif kind == L_DAILY_LOSS:
                breached, value, bound = daily_loss_breached_nb(equity, day_start, param)
                if breached and grows_nb(current, quantity):
                    rejected = r
                    break
            elif kind == L_POSITION_SIZE:
                verdict, q = position_size_verdict_nb(current, quantity, marks[sid], equity, param)
                if verdict == V_REJECT:
                    rejected = r
                    break
                if verdict == V_SHRINK:
                    quantity = q
                    shrunk = r
            elif kind == L_LEVERAGE:
                price = marks[sid]
                if not limit_applies_nb(current, quantity, price):
                    continue
                if terms_ready:
                    gross = _pairwise_sum(terms, 0, terms.size, stack)
                else:
                    gross = projected_gross(qty, pending, marks, scratch)
                    terms_ready = True
                verdict, q = leverage_verdict_nb(current, quantity, price, equity, gross, param)
                if verdict == V_REJECT:
                    rejected = r
                    break
                if verdict == V_SHRINK:
                    quantity = q
                    shrunk = r
            elif kind == L_POSITIONS and positions_full_nb(current, projected, param):
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
