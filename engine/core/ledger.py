"""The ledger: orders created and finished, one fill executed, positions and trades kept.

Compiled kernels over the core's state layout (:mod:`engine.core.layout`) and record dtypes
(:mod:`engine.core.records`), called by the compiled drivers (:mod:`engine.compiled.topn`).
Every decision of a fill is written once as plain Python over scalars and compiled from that
source (``*_nb``, as :mod:`engine.core.matching` does): whether it is refused
(:func:`short_refused`, :func:`cash_refused`), what it costs (:func:`fill_amounts`), whether
its order is done (:func:`order_done`), what it does to the position (:func:`position_step`)
and its average price (:func:`added_average`), what a reducing fill closes and realizes
(:func:`closed_part`), what a flip opens (:func:`flip_rest`), and the share rounding
(:func:`round_quantity`, :func:`zero_shares_order`), and the two checks at submission:
the re-entry cooldown (:func:`reentry_refused`) and ``cash_check="submission"``
(:func:`submission_quantity`, :func:`submission_refused`), the cancellations of working
orders by a close under a volume cap (:func:`netted_by_close`) and by a level exit under
``exit_conflict="stop_wins"`` (:func:`closed_by_level_exit`), and when entry levels go live
(:func:`levels_active_from`). The Python driver's broker
(:class:`engine.broker.Broker`) calls the plain forms on its scalars (no numba call per
fill), the kernels below the compiled forms; the two drivers differ only in where they keep
the state and how they append the record rows (of the same dtypes).
The price and commission of a fill are computed by the driver and passed in, as VectorBT's
``process_order_nb(price, fees, ...)`` takes them.

Arguments shared by the kernels:

- ``orders``, ``fills``, ``trades``, ``rejections``: record arrays (``ORDER_DTYPE``, ...),
  written at the row given by ``counts``;
- ``counts``, int64: ``counts[C_ORDERS]``, ``counts[C_FILLS]``, ``counts[C_TRADES]``,
  ``counts[C_REJ]``: the records written so far;
- ``acc``, float64: ``acc[ACC_CASH]`` (cash, currency), ``acc[ACC_REALIZED]`` (realized P&L);
- ``fstate`` / ``istate`` / ``aux_i`` / ``aux_f``: the per-symbol state matrices;
- ``pending``, float64, shape (n_symbols,): signed shares of the working market orders.

Accounting (currency; quantities in shares, signed): a fill of ``q`` shares at ``price``
with ``commission`` moves ``q × price + commission`` out of the cash. Opening from flat
starts a trade (average price = fill price); a fill on the position's side adds to it (the
average price is the quantity-weighted mean); a fill against it closes ``min(|q|, |pos|)``
shares: one trade record, with the entry commission and slippage taken pro rata, and realized
P&L ``(price - entry) × closed × direction - entry commission part - exit commission part``;
the rest of a fill through zero opens a new trade in the other direction.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from engine.core.jit import njit
from engine.core.layout import (
    A_DIDX,
    A_DROW,
    A_ENTRY_INDEX,
    A_EXIT_PENDING,
    A_OPEN,
    ACC_CASH,
    ACC_REALIZED,
    AVG,
    B_COMM,
    B_DIR,
    B_QTY,
    B_SLIP,
    BEST,
    C_FILLS,
    C_ORDERS,
    C_REJ,
    C_TRADES,
    ENTRY_ORDINAL,
    ENTRY_PENDING,
    EPS,
    EV_REJECTED,
    MARK,
    QTY,
    R_STRATEGY,
    S_FILLED,
    S_PARTIAL,
    S_REJECTED,
    S_SUBMITTED,
    SR_CASH,
    SR_NONE,
    SR_SHORT,
    SR_ZERO_SHARES,
    STOP,
    STOP_RULE,
    T_MARKET,
    TP,
    TP_RULE,
    UNPLACED,
    WORST,
    set_status,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
RecordArray = npt.NDArray[np.void]


def round_quantity(quantity: float, fractional: bool) -> float:
    """``quantity`` (shares) rounded toward zero to whole shares unless ``fractional``.

    A tolerance of ``EPS`` shares keeps ``2.9999999999`` at 3.
    """
    if fractional:
        return quantity
    return math.copysign(math.floor(abs(quantity) + EPS), quantity)


round_quantity_nb = njit(round_quantity)


def added_average(avg: float, pos: float, price: float, q: float) -> float:
    """Average price (currency per share) of a position of ``pos`` shares at ``avg`` after
    adding ``q`` shares (same side) at ``price``: the quantity-weighted mean."""
    return (avg * abs(pos) + price * abs(q)) / (abs(pos) + abs(q))


def closed_part(
    pos: float,
    q: float,
    price: float,
    commission: float,
    slip: float,
    entry: float,
    direction: float,
    open_commission: float,
    open_slippage: float,
) -> tuple[float, float, float, float, float, float]:
    """What a fill of ``q`` shares against a position of ``pos`` shares closes.

    Parameters
    ----------
    pos, q : float
        Shares, signed, of opposite signs.
    price, commission, slip : float
        The fill's price (currency per share), commission and slippage (currency).
    entry, direction : float
        The position's average entry price and direction (+1 long, -1 short).
    open_commission, open_slippage : float
        The entry commission and slippage (currency) of the position's open part.

    Returns
    -------
    tuple of float
        ``(closed, entry_commission, entry_slippage, exit_commission, exit_slippage, pnl)``:
        the shares closed (``min(|q|, |pos|)``), the entry costs of that part (pro rata of
        the open part), the fill's costs of that part (pro rata of the fill) and the
        realized P&L ``(price - entry) × closed × direction - entry commission - exit
        commission`` (currency).
    """
    closing = min(abs(q), abs(pos))
    frac = closing / abs(pos)
    part_comm = open_commission * frac
    part_slip = open_slippage * frac
    share = closing / abs(q)
    exit_comm = commission * share
    pnl = (price - entry) * closing * direction - part_comm - exit_comm
    return closing, part_comm, part_slip, exit_comm, slip * share, pnl


P_OPEN, P_ADD, P_REDUCE, P_CLOSE, P_FLIP = range(5)
"""What a fill does to a position (:func:`position_step`): opens one from flat, adds to it,
reduces it, closes it, or flips it through zero."""


def short_refused(q: float, pos: float, allow_short: bool) -> bool:
    """True when a sell of ``q`` shares (``q < 0``) would take the position of ``pos``
    shares below zero by more than ``EPS`` while short selling is off
    (``short_not_allowed``)."""
    return q < 0 and not allow_short and pos + q < -EPS


def cash_refused(q: float, price: float, commission: float, cash: float, tolerance: float) -> bool:
    """True when a buy of ``q`` shares at ``price`` (currency per share) with ``commission``
    (currency) costs more than ``cash + tolerance`` (``insufficient_cash``); sells are never
    refused for cash."""
    return q > 0 and q * price + commission > cash + tolerance


def fill_amounts(q: float, raw: float, price: float, commission: float) -> tuple[float, float]:
    """``(cost, slippage)`` of a fill of ``q`` shares at ``price`` (``raw`` before slippage):
    the cash it takes, ``q × price + commission``, and its slippage cost
    ``(price - raw) × q`` (currency)."""
    return q * price + commission, (price - raw) * q


def order_done(quantity: float, filled: float) -> bool:
    """True when an order of ``quantity`` shares with ``filled`` shares filled has nothing
    left (within ``EPS``): it is filled, else partially filled."""
    return abs(quantity - filled) < EPS


def position_step(pos: float, q: float) -> tuple[int, float]:
    """``(step, new)``: what a fill of ``q`` shares does to a position of ``pos`` shares
    (``P_OPEN``, ``P_ADD``, ``P_REDUCE``, ``P_CLOSE`` or ``P_FLIP``) and the position after
    it (a result within ``EPS`` of zero is zero)."""
    new = pos + q
    if abs(new) < EPS:
        new = 0.0
    if pos == 0.0:
        return P_OPEN, new
    if pos * q > 0:
        return P_ADD, new
    if new == 0.0:
        return P_CLOSE, new
    if new * pos < 0:
        return P_FLIP, new
    return P_REDUCE, new


def flip_rest(
    q: float, closing: float, commission: float, slip: float
) -> tuple[float, float, float]:
    """The new trade a fill of ``q`` shares opens after closing ``closing`` shares through
    zero: ``(shares, commission, slippage)``, the costs pro rata of the fill."""
    rest = abs(q) - closing
    return math.copysign(rest, q), commission * rest / abs(q), slip * rest / abs(q)


def reentry_refused(q: float, stopped_at: int, stopped_dir: float, i: int, bars: int) -> bool:
    """True when a new order of ``q`` shares decided at bar ``i`` re-enters too soon after a
    stop-loss exit (``reentry_cooldown``, ``ExecutionConfig.reentry_cooldown_bars`` =
    ``bars``): the symbol's position of direction ``stopped_dir`` (+1 long, -1 short) was
    stopped out at bar ``stopped_at`` (a large negative number: never), within the last
    ``bars`` bars, and the order goes the same way."""
    return stopped_at > i - bars and q * stopped_dir > 0


def netted_by_close(submit_index: int, now: int, remaining: float, direction: float) -> bool:
    """True when a working strategy market order submitted at bar ``submit_index`` with
    ``remaining`` shares (signed) is cancelled at bar ``now`` by a new order of its symbol in
    ``direction`` (+1 / -1; 0: a close of the position, which nets every one) under a volume
    participation cap: it is from an earlier bar and goes against the new order."""
    return submit_index < now and (direction == 0.0 or remaining * direction < 0)


def closed_by_level_exit(quantity: float, closed_direction: float, pos: float) -> bool:
    """``exit_conflict="stop_wins"``: True when a queued market order of ``quantity`` shares
    is cancelled (``position_closed_by_stop``) because a level exit of the same bar closed
    the position of direction ``closed_direction`` (+1 long, -1 short) that it would have
    reduced, and the symbol is still flat (``pos`` shares)."""
    return quantity * closed_direction < 0 and pos == 0.0


def levels_active_from(i: int, entry_bar: bool, at_close: bool) -> int:
    """The first bar at which the entry levels of a fill at bar ``i`` are checked: the next
    bar, or ``i`` itself with ``stop_activation="entry_bar"`` for a fill in step 1 (not at
    the close)."""
    return i if entry_bar and not at_close else i + 1


def submission_quantity(q: float, held_long: float, allow_short: bool) -> float:
    """The shares of an order of ``q`` (signed) that ``cash_check="submission"`` counts: a
    sell only up to the ``held_long`` shares (the long position plus the buys counted before
    it, >= 0) when shorting is off; otherwise ``q``."""
    if q < 0 and not allow_short:
        return -min(-q, held_long)
    return q


def submission_refused(cost: float, cash: float, tolerance: float) -> bool:
    """True when an order whose pseudo-execution costs ``cost`` (currency: ``q × price +
    commission`` at its creation price; negative for a sale) takes the running ``cash``
    below ``-tolerance`` (``insufficient_cash_at_submission``)."""
    return cost > 0 and cash - cost < -tolerance


added_average_nb = njit(added_average)
closed_part_nb = njit(closed_part)
short_refused_nb = njit(short_refused)
cash_refused_nb = njit(cash_refused)
fill_amounts_nb = njit(fill_amounts)
order_done_nb = njit(order_done)
position_step_nb = njit(position_step)
flip_rest_nb = njit(flip_rest)
reentry_refused_nb = njit(reentry_refused)
netted_by_close_nb = njit(netted_by_close)
closed_by_level_exit_nb = njit(closed_by_level_exit)
levels_active_from_nb = njit(levels_active_from)
submission_quantity_nb = njit(submission_quantity)
submission_refused_nb = njit(submission_refused)


@njit
def new_order(
    sid: int,
    quantity: float,
    kind: int,
    reason: int,
    submit: int,
    decision_row: int,
    limit: float,
    stop: float,
    orders: RecordArray,
    counts: IntArray,
    pending: FloatArray,
) -> int:
    """Record a new GTC order (status submitted) and return its id.

    ``quantity``: signed shares; ``kind``: a ``T_*`` code; ``reason``: a reason code;
    ``submit``: the decision bar; ``decision_row``: the symbol's data row then (-1: none);
    ``limit`` / ``stop``: prices (NaN: none). A market order's quantity joins ``pending``.
    """
    o = counts[C_ORDERS]
    counts[C_ORDERS] = o + 1
    orders[o]["sid"] = sid
    orders[o]["submit_index"] = submit
    orders[o]["decision_row"] = decision_row
    orders[o]["order_type"] = kind
    orders[o]["status"] = S_SUBMITTED
    orders[o]["reason"] = reason
    orders[o]["status_reason"] = SR_NONE
    orders[o]["quantity"] = quantity
    orders[o]["filled"] = 0.0
    orders[o]["limit_price"] = limit
    orders[o]["stop_price"] = stop
    orders[o]["tif"] = 0
    orders[o]["parent_id"] = -1
    if kind == T_MARKET:
        pending[sid] += quantity
    return int(o)


@njit
def finish_order(
    o: int,
    status: int,
    status_reason: int,
    event: int,
    i: int,
    orders: RecordArray,
    counts: IntArray,
    pending: FloatArray,
    aux_i: IntArray,
    rejections: RecordArray,
) -> None:
    """Move order ``o`` to the terminal ``status`` (an ``S_*`` code) for ``status_reason``
    (an ``SR_*`` code) at bar ``i``: a market order's remaining shares leave ``pending``, a
    risk exit no longer blocks the next one (``A_EXIT_PENDING``), and a rejection record of
    ``event`` (an ``EV_*`` code) for the remaining shares is written.

    Raises
    ------
    RuntimeError
        If the order's status may not move to ``status``.
    """
    remaining = orders[o]["quantity"] - orders[o]["filled"]
    set_status(orders, o, status)
    orders[o]["status_reason"] = status_reason
    sid = orders[o]["sid"]
    if orders[o]["order_type"] == T_MARKET:
        pending[sid] -= remaining
    if orders[o]["reason"] != R_STRATEGY:
        aux_i[A_EXIT_PENDING, sid] = 0
    k = counts[C_REJ]
    counts[C_REJ] = k + 1
    rejections[k]["bar_index"] = i
    rejections[k]["order_id"] = o
    rejections[k]["sid"] = sid
    rejections[k]["order_type"] = orders[o]["order_type"]
    rejections[k]["event"] = event
    rejections[k]["reason"] = status_reason
    rejections[k]["rule"] = 0
    rejections[k]["limit"] = -1
    rejections[k]["shrink_text"] = 0
    rejections[k]["quantity"] = remaining
    rejections[k]["value"] = math.nan
    rejections[k]["bound"] = math.nan


def zero_shares_order(quantity: float, fractional: bool) -> bool:
    """True when an order for ``quantity`` shares (signed, before rounding) cannot be placed
    because it rounds to zero shares (:func:`round_quantity`); a zero or NaN quantity is no
    order at all (False)."""
    return quantity != 0.0 and not fractional and abs(quantity) + EPS < 1.0


zero_shares_order_nb = njit(zero_shares_order)


@njit
def reject_unplaced(
    sid: int, quantity: float, i: int, reason: int, counts: IntArray, rejections: RecordArray
) -> None:
    """Record that a market order for ``quantity`` shares (signed, before rounding) of symbol
    ``sid`` was never placed at bar ``i`` because it rounds to zero shares: a rejection row
    with ``order_id`` ``UNPLACED`` (-1), event rejected, reason ``rounds_to_zero_shares``.

    ``reason``: the reason code of who wanted the order (``R_STRATEGY``, or a risk rule's
    ``R_RULE0 + k``); it is kept in the row's ``rule`` field, which the driver turns into the
    rule's name (a text code) after the run (0, the strategy's, is the empty text). The
    Python driver writes the same row through :meth:`engine.recorder.Recorder.unplaced`.
    """
    k = counts[C_REJ]
    counts[C_REJ] = k + 1
    rejections[k]["bar_index"] = i
    rejections[k]["order_id"] = UNPLACED
    rejections[k]["sid"] = sid
    rejections[k]["order_type"] = T_MARKET
    rejections[k]["event"] = EV_REJECTED
    rejections[k]["reason"] = SR_ZERO_SHARES
    rejections[k]["rule"] = reason
    rejections[k]["limit"] = -1
    rejections[k]["shrink_text"] = 0
    rejections[k]["quantity"] = quantity
    rejections[k]["value"] = math.nan
    rejections[k]["bound"] = math.nan


@njit
def _open_trade(
    sid: int,
    q: float,
    price: float,
    commission: float,
    slip: float,
    o: int,
    ordinal_now: int,
    i: int,
    fstate: FloatArray,
    istate: IntArray,
    aux_i: IntArray,
    aux_f: FloatArray,
    orders: RecordArray,
) -> None:
    istate[ENTRY_ORDINAL, sid] = ordinal_now
    aux_i[A_OPEN, sid] = 1
    aux_i[A_ENTRY_INDEX, sid] = i
    aux_i[A_DROW, sid] = orders[o]["decision_row"]
    aux_i[A_DIDX, sid] = orders[o]["submit_index"]
    aux_f[B_DIR, sid] = math.copysign(1.0, q)
    aux_f[B_QTY, sid] = abs(q)
    aux_f[B_COMM, sid] = commission
    aux_f[B_SLIP, sid] = slip
    fstate[AVG, sid] = price
    fstate[BEST, sid] = price
    fstate[WORST, sid] = price
    fstate[STOP, sid] = math.nan
    fstate[TP, sid] = math.nan
    istate[STOP_RULE, sid] = 0
    istate[TP_RULE, sid] = 0


@njit
def _close_trade(sid: int, fstate: FloatArray, aux_i: IntArray) -> None:
    aux_i[A_OPEN, sid] = 0
    fstate[AVG, sid] = 0.0
    fstate[STOP, sid] = math.nan
    fstate[TP, sid] = math.nan
    fstate[BEST, sid] = math.nan
    fstate[WORST, sid] = math.nan


@njit
def apply_position(
    sid: int,
    q: float,
    price: float,
    commission: float,
    slip: float,
    o: int,
    ordinal_now: int,
    i: int,
    fstate: FloatArray,
    istate: IntArray,
    aux_i: IntArray,
    aux_f: FloatArray,
    orders: RecordArray,
    trades: RecordArray,
    counts: IntArray,
    acc: FloatArray,
) -> bool:
    """Book a fill of ``q`` shares of order ``o`` on symbol ``sid`` at ``price`` (currency
    per share) with ``commission`` and ``slip`` (currency) into the position, its average
    price and the trades (module docstring); ``ordinal_now``: the symbol's bar ordinal at the
    fill, ``i``: the bar index.

    Returns
    -------
    bool
        True if the exposure grew (an open, an addition or a flip through zero).
    """
    pos = fstate[QTY, sid]
    step, new = position_step_nb(pos, q)
    if step == P_OPEN:
        _open_trade(
            sid, q, price, commission, slip, o, ordinal_now, i,
            fstate, istate, aux_i, aux_f, orders,
        )  # fmt: skip
        fstate[QTY, sid] = new
        return True
    if step == P_ADD:
        fstate[AVG, sid] = added_average_nb(fstate[AVG, sid], pos, price, q)
        aux_f[B_QTY, sid] += abs(q)
        aux_f[B_COMM, sid] += commission
        aux_f[B_SLIP, sid] += slip
        fstate[BEST, sid] = max(fstate[BEST, sid], price)
        fstate[WORST, sid] = min(fstate[WORST, sid], price)
        fstate[QTY, sid] = new
        return True
    entry = fstate[AVG, sid]
    direction = aux_f[B_DIR, sid]
    closing, part_comm, part_slip, exit_comm, exit_slip, pnl = closed_part_nb(
        pos, q, price, commission, slip, entry, direction, aux_f[B_COMM, sid], aux_f[B_SLIP, sid]
    )
    aux_f[B_COMM, sid] -= part_comm
    aux_f[B_SLIP, sid] -= part_slip
    k = counts[C_TRADES]
    counts[C_TRADES] = k + 1
    trades[k]["sid"] = sid
    trades[k]["entry_index"] = aux_i[A_ENTRY_INDEX, sid]
    trades[k]["exit_index"] = i
    trades[k]["exit_reason"] = orders[o]["reason"]
    trades[k]["bars_held"] = ordinal_now - istate[ENTRY_ORDINAL, sid]
    trades[k]["decision_row"] = aux_i[A_DROW, sid]
    trades[k]["decision_index"] = aux_i[A_DIDX, sid]
    trades[k]["exit_decision_row"] = orders[o]["decision_row"]
    trades[k]["exit_decision_index"] = orders[o]["submit_index"]
    trades[k]["partial"] = closing < abs(pos) - EPS
    trades[k]["direction"] = direction
    trades[k]["entry_price"] = entry
    trades[k]["exit_price"] = price
    trades[k]["quantity"] = closing
    trades[k]["entry_commission"] = part_comm
    trades[k]["exit_commission"] = exit_comm
    trades[k]["entry_slippage"] = part_slip
    trades[k]["exit_slippage"] = exit_slip
    trades[k]["best_price"] = max(fstate[BEST, sid], price)
    trades[k]["worst_price"] = min(fstate[WORST, sid], price)
    trades[k]["stop_at_exit"] = fstate[STOP, sid]
    trades[k]["take_profit_at_exit"] = fstate[TP, sid]
    acc[ACC_REALIZED] += pnl
    aux_f[B_QTY, sid] -= closing
    fstate[QTY, sid] = new
    if step == P_CLOSE:
        _close_trade(sid, fstate, aux_i)
        return False
    if step == P_FLIP:
        _close_trade(sid, fstate, aux_i)
        rest_q, rest_comm, rest_slip = flip_rest_nb(q, closing, commission, slip)
        _open_trade(
            sid, rest_q, price, rest_comm, rest_slip,
            o, ordinal_now, i, fstate, istate, aux_i, aux_f, orders,
        )  # fmt: skip
        return True
    return False


@njit
def execute_fill(
    o: int,
    q: float,
    raw: float,
    price: float,
    commission: float,
    ordinal_now: int,
    i: int,
    tolerance: float,
    allow_short: bool,
    mark_entry: bool,
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
) -> bool:
    """Fill ``q`` shares of order ``o`` at ``price`` (``raw`` before slippage; currency per
    share) with ``commission`` (currency), at bar ``i``; ``ordinal_now``: the symbol's bar
    ordinal.

    Refused, with the order rejected (:func:`finish_order`): a sell beyond the position when
    ``not allow_short`` (``short_not_allowed``), a buy whose ``q × price + commission``
    exceeds the cash by more than ``tolerance`` (``insufficient_cash``). Otherwise: the cash,
    the fill record, the order's filled shares and status (filled, or partially filled), the
    position and trades (:func:`apply_position`); ``mark_entry``: a fill that grew the exposure
    marks the position ``ENTRY_PENDING`` (its entry levels are still to be set).

    Returns
    -------
    bool
        True if the fill was executed.
    """
    sid = orders[o]["sid"]
    kind = orders[o]["order_type"]
    pos = fstate[QTY, sid]
    if short_refused_nb(q, pos, allow_short):
        finish_order(
            o, S_REJECTED, SR_SHORT, EV_REJECTED, i, orders, counts, pending, aux_i, rejections
        )
        return False
    if cash_refused_nb(q, price, commission, acc[ACC_CASH], tolerance):
        finish_order(
            o, S_REJECTED, SR_CASH, EV_REJECTED, i, orders, counts, pending, aux_i, rejections
        )
        return False
    cost, slip = fill_amounts_nb(q, raw, price, commission)
    acc[ACC_CASH] -= cost
    f = counts[C_FILLS]
    counts[C_FILLS] = f + 1
    fills[f]["order_id"] = o
    fills[f]["bar_index"] = i
    fills[f]["sid"] = sid
    fills[f]["order_type"] = kind
    fills[f]["reason"] = orders[o]["reason"]
    fills[f]["quantity"] = q
    fills[f]["price_before_slippage"] = raw
    fills[f]["price"] = price
    fills[f]["commission"] = commission
    fills[f]["slippage"] = slip
    orders[o]["filled"] += q
    if kind == T_MARKET:
        pending[sid] -= q
    done = order_done_nb(orders[o]["quantity"], orders[o]["filled"])
    set_status(orders, o, S_FILLED if done else S_PARTIAL)
    if done and orders[o]["reason"] != R_STRATEGY:
        aux_i[A_EXIT_PENDING, sid] = 0
    if math.isnan(fstate[MARK, sid]):
        fstate[MARK, sid] = price
    increased = apply_position(
        sid, q, price, commission, slip, o, ordinal_now, i,
        fstate, istate, aux_i, aux_f, orders, trades, counts, acc,
    )  # fmt: skip
    if increased and mark_entry:
        istate[ENTRY_PENDING, sid] = 1
    return True


@njit
def portfolio_value(held: IntArray, qty: FloatArray, marks: FloatArray) -> tuple[float, float]:
    """Net and gross value of the positions ``held`` (currency): ``(Σ q·mark, Σ |q·mark|)``.

    Summed in ``held`` order (ascending symbol ids), one term after the other, so the figure
    is the same in the Python loop and the compiled run (VectorBT's callbacks sum the same
    way); a BLAS dot product may sum in another order and differ in the last bits.
    """
    value = 0.0
    gross = 0.0
    for k in range(held.size):
        sid = held[k]
        v = qty[sid] * marks[sid]
        value += v
        gross += abs(v)
    return value, gross


@njit
def count_projected(qty: FloatArray, pending: FloatArray, tolerance: float) -> int:
    """Number of symbols whose ``|qty + pending| > tolerance`` (shares)."""
    n = 0
    for sid in range(qty.size):
        if abs(qty[sid] + pending[sid]) > tolerance:
            n += 1
    return n
