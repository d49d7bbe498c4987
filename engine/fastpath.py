"""The compiled whole-run path: :class:`TopNStrategy` runs as one numba kernel (issue 16).

When a run qualifies (:func:`compiled_reason` returns ``None``), :class:`engine.BacktestEngine`
runs it here instead of its per-timestamp Python loop: the strategy's ranking and orders, the
fills at the open, the stop-loss / take-profit levels, trailing stops and time exits of the
built-in fixed-percent rules, and the accounting (cash, positions, trades) all happen in
:func:`run_topn`, one compiled call for the whole run, and the output frames are built from its
typed column buffers without any per-row Python.

The kernel is a transcription of the Python path, step for step and in the same order (see
:class:`engine.BacktestEngine` for the steps): it keeps the broker's per-symbol state in the
same two matrices (:mod:`engine.risk.kernels` layout) and calls the very kernels the broker
calls for the levels and marks (``level_hits``, ``mark_bar_basic_rules``, ``mark_bar``,
``portfolio_value``), so both paths compute the same numbers with the same floating-point
operations in the same order. ``tests/engine/test_fastpath.py`` checks that both paths give
identical trades, fills, orders, rejections, portfolio states and open positions, on the S&P
file under several settings and on hypothesis-generated panels.

What qualifies (anything else runs the Python loop, with the same results):

- a :class:`MarketData` panel (not chunked) and a strategy that is exactly
  :class:`TopNStrategy` (not a subclass);
- no risk manager, an empty one, or one whose rules are all exactly ``PriceBasedStopLoss``,
  ``PriceBasedTakeProfit``, ``DynamicTrailingStop`` or ``TimeBasedExit``
  (:meth:`RiskManager.basic_kernel` without order rules);
- ``NoCommission`` or ``PercentageCommission``, ``NoSlippage``, ``fill="next_open"``, either
  ``bar_event_order``, ``stop_activation="next_bar"``, ``exit_conflict="open_sell_wins"``,
  ``cash_check="execution"``, no re-entry cooldown, no volume cap, no shorting; whole or
  fractional shares and ``close_at_end`` either way;
- portfolio limits at hook B that are exactly ``MaxDrawdownRule(action="halt")``,
  ``MaxDailyLossRule``, ``MaxPositionSizeRule`` or ``MaxPositionsRule``.

Compilation: the kernels are compiled on first use (some 10-40 s on the 2-core machine, once
per clone) and cached in ``engine/__pycache__``. numba's cache tracks only this file's own
source: after editing :mod:`engine.risk.kernels` (whose kernels ``run_topn`` calls), delete
``engine/__pycache__/fastpath*.nb*`` so the run kernel is rebuilt.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt
import polars as pl

from engine.config import ExecutionConfig
from engine.core.layout import (
    A_CLOSED_AT,
    A_DIDX,
    A_DROW,
    A_ENTRY_INDEX,
    A_EXIT_PENDING,
    A_OPEN,
    A_PARTIAL_DONE,
    A_PARTIAL_ENTRY,
    A_TARGET,
    AVG,
    B_CLOSED_DIR,
    B_COMM,
    B_DIR,
    B_PARTIAL_ORIGINAL,
    B_QTY,
    B_SLIP,
    BEST,
    BREAKEVEN,
    CODE,
    DEFERRED,
    ENTRY_ORDINAL,
    ENTRY_PENDING,
    EPS,
    EV_CANCELLED,
    EV_REJECTED,
    EV_SHRUNK,
    FACTOR,
    FIXED_REASONS,
    KIND,
    L_DAILY_LOSS,
    L_DRAWDOWN,
    L_LEVERAGE,
    L_POSITION_SIZE,
    L_POSITIONS,
    LAST_ROW,
    LIM_KIND,
    LIM_PARAM,
    MARK,
    MAX_BARS,
    N_A,
    N_B,
    N_FLOAT_FIELDS,
    N_INT_FIELDS,
    N_LIM,
    N_RULE_FIELDS,
    N_RULES_COLS,
    OUT_CODE,
    OUT_LEVEL,
    OUT_SID,
    PARTIAL,
    PRIORITY,
    QTY,
    R_END,
    R_RULE0,
    R_STOP_LOSS,
    R_STRATEGY,
    R_TAKE_PROFIT,
    S_ACCEPTED,
    S_CANCELLED,
    S_FILLED,
    S_PARTIAL,
    S_REJECTED,
    S_SUBMITTED,
    SR_CASH,
    SR_CLOSED_BY_STOP,
    SR_LIMIT,
    SR_NONE,
    SR_SHORT,
    STOP,
    STOP_LOSS,
    STOP_RULE,
    T_LIMIT,
    T_MARKET,
    T_STOP,
    TAKE_PROFIT,
    TIME_EXIT,
    TP,
    TP_RULE,
    TRAIL_INITIAL,
    TRAILING,
    WORST,
    set_status,
)
from engine.core.matching import level_exit_price_nb
from engine.core.records import RecordArray, Records, empty_records
from engine.costs.commission import NoCommission, PercentageCommission
from engine.costs.slippage import NoSlippage
from engine.data import ChunkedMarketData, MarketData
from engine.risk import kernels
from engine.risk.manager import _KERNEL_RULES, BasicRulesKernel
from engine.risk.rules.base import RiskRule
from engine.risk.rules.dynamic import BreakEvenRule, PartialProfitTaking
from engine.risk.rules.portfolio import (
    MaxDailyLossRule,
    MaxDrawdownRule,
    MaxLeverageRule,
    MaxPositionSizeRule,
    MaxPositionsRule,
)
from engine.strategies import TopNStrategy

if TYPE_CHECKING:
    from engine.risk.manager import RiskManager
    from engine.strategy import Strategy

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# counters
C_ORDERS, C_FILLS, C_TRADES, C_REJ, C_BOOK, C_STATUS, C_DAY = range(7)
N_C = 7
ST_OK, ST_FULL, ST_SHORT_BOOK, ST_FRACTIONAL = 0, 1, 2, 3
# scalar parameters
(
    P_N,
    P_EVERY,
    P_WEIGHT,
    P_RATE,
    P_TOL,
    P_FRACTIONAL,
    P_STOPS_FIRST,
    P_CLOSE_AT_END,
    P_ENTRY_RULES,
    P_LEVELS_SET,
    P_HAS_RULES,
) = range(11)
N_P = 11
# accumulators
ACC_CASH, ACC_REALIZED, ACC_PEAK, ACC_LAST_EQUITY, ACC_DAY_START = range(5)
N_ACC = 5
_DAY_US = 86_400_000_000

_F = TypeVar("_F", bound=Callable[..., Any])
_Limit = (
    MaxDrawdownRule | MaxDailyLossRule | MaxPositionSizeRule | MaxPositionsRule | MaxLeverageRule
)


def _jit(func: _F) -> _F:
    """Compile ``func`` in nopython mode, cached on disk next to this module."""
    return cast(_F, numba.njit(cache=True, nogil=True)(func))


# ---------------------------------------------------------------------------------- kernel
@_jit
def _round_quantity(quantity: float, fractional: bool) -> float:
    """``Broker.round_quantity``: toward zero to whole shares unless fractional."""
    if fractional:
        return quantity
    return math.copysign(math.floor(abs(quantity) + EPS), quantity)


@_jit
def _held(qty: FloatArray, out: IntArray) -> int:
    """Ids of the symbols with a non-zero position into ``out`` (ascending); their count."""
    n = 0
    for sid in range(qty.size):
        if qty[sid] != 0.0:
            out[n] = sid
            n += 1
    return n


@_jit
def _held_since(
    qty: FloatArray, held: IntArray, nh: int, listed_at: int, fills: int
) -> tuple[int, int]:
    """``(nh, listed_at)`` for ``held[:nh]``, the held ids listed by :func:`_held` when the fill
    count was ``listed_at``: listed again only if ``fills`` differs (the held set changes only
    with a fill)."""
    if fills == listed_at:
        return nh, listed_at
    return _held(qty, held), fills


@_jit
def _new_order(
    sid: int,
    quantity: float,
    kind: int,
    reason: int,
    submit: int,
    decision_row: int,
    limit: float,
    stop: float,
    orders: RecordArray,
    c: IntArray,
    pending: FloatArray,
) -> int:
    """``Broker._new_order``: a new order (status submitted); its id."""
    o = c[C_ORDERS]
    c[C_ORDERS] = o + 1
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


@_jit
def _finish(
    o: int,
    status: int,
    status_reason: int,
    event: int,
    i: int,
    orders: RecordArray,
    c: IntArray,
    pending: FloatArray,
    aux_i: IntArray,
    rejections: RecordArray,
) -> None:
    """``Broker._finish``: terminal status, pending released, the event recorded."""
    remaining = orders[o]["quantity"] - orders[o]["filled"]
    set_status(orders, o, status)
    orders[o]["status_reason"] = status_reason
    sid = orders[o]["sid"]
    if orders[o]["order_type"] == T_MARKET:
        pending[sid] -= remaining
    if orders[o]["reason"] != R_STRATEGY:  # pragma: no cover - risk exits are sells, never refused
        aux_i[A_EXIT_PENDING, sid] = 0
    k = c[C_REJ]
    c[C_REJ] = k + 1
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


@_jit
def _apply_position(
    sid: int,
    q: float,
    price: float,
    commission: float,
    slip: float,
    o: int,
    row: int,
    i: int,
    track_closed: bool,
    ordinal: IntArray,
    fstate: FloatArray,
    istate: IntArray,
    aux_i: IntArray,
    aux_f: FloatArray,
    orders: RecordArray,
    trades: RecordArray,
    c: IntArray,
    acc: FloatArray,
) -> bool:
    """``Broker._apply_position`` for a long-only book: position, average price and trade
    records; True if the exposure grew."""
    pos = fstate[QTY, sid]
    new = pos + q
    if abs(new) < EPS:
        new = 0.0
    if pos == 0.0:
        # Broker._open_trade
        istate[ENTRY_ORDINAL, sid] = ordinal[row]
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
        fstate[QTY, sid] = new
        return True
    if pos * q > 0:  # pragma: no cover - TopN buys only flat symbols with nothing pending
        fstate[AVG, sid] = (fstate[AVG, sid] * abs(pos) + price * abs(q)) / (abs(pos) + abs(q))
        aux_f[B_QTY, sid] += abs(q)
        aux_f[B_COMM, sid] += commission
        aux_f[B_SLIP, sid] += slip
        if price > fstate[BEST, sid]:
            fstate[BEST, sid] = price
        if price < fstate[WORST, sid]:
            fstate[WORST, sid] = price
        fstate[QTY, sid] = new
        return True
    closing = abs(pos) if abs(pos) < abs(q) else abs(q)
    frac = closing / abs(pos)
    part_comm = aux_f[B_COMM, sid] * frac
    part_slip = aux_f[B_SLIP, sid] * frac
    aux_f[B_COMM, sid] -= part_comm
    aux_f[B_SLIP, sid] -= part_slip
    share = closing / abs(q)
    best = fstate[BEST, sid]
    if price > best:
        best = price
    worst = fstate[WORST, sid]
    if price < worst:
        worst = price
    entry = fstate[AVG, sid]
    exit_comm = commission * share
    direction = aux_f[B_DIR, sid]
    k = c[C_TRADES]
    c[C_TRADES] = k + 1
    trades[k]["sid"] = sid
    trades[k]["entry_index"] = aux_i[A_ENTRY_INDEX, sid]
    trades[k]["exit_index"] = i
    trades[k]["exit_reason"] = orders[o]["reason"]
    trades[k]["bars_held"] = ordinal[row] - istate[ENTRY_ORDINAL, sid]
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
    trades[k]["exit_slippage"] = slip * share
    trades[k]["best_price"] = best
    trades[k]["worst_price"] = worst
    trades[k]["stop_at_exit"] = fstate[STOP, sid]
    trades[k]["take_profit_at_exit"] = fstate[TP, sid]
    acc[ACC_REALIZED] += (price - entry) * closing * direction - part_comm - exit_comm
    aux_f[B_QTY, sid] -= closing
    fstate[QTY, sid] = new
    if new == 0.0:
        # Broker._close_trade
        if track_closed:
            aux_i[A_CLOSED_AT, sid] = i
            aux_f[B_CLOSED_DIR, sid] = direction
        aux_i[A_OPEN, sid] = 0
        fstate[AVG, sid] = 0.0
        fstate[STOP, sid] = math.nan
        fstate[TP, sid] = math.nan
        fstate[BEST, sid] = math.nan
        fstate[WORST, sid] = math.nan
    # a flip through zero needs a sell beyond the position, refused on a long-only book
    return False


@_jit
def _execute(
    o: int,
    q: float,
    raw: float,
    row: int,
    i: int,
    closing: bool,
    track_closed: bool,
    params: FloatArray,
    ordinal: IntArray,
    fstate: FloatArray,
    istate: IntArray,
    pending: FloatArray,
    aux_i: IntArray,
    aux_f: FloatArray,
    orders: RecordArray,
    fills: RecordArray,
    trades: RecordArray,
    rejections: RecordArray,
    c: IntArray,
    acc: FloatArray,
) -> None:
    """``Broker._execute`` without slippage: fill ``q`` shares of order ``o`` at ``raw``."""
    sid = orders[o]["sid"]
    kind = orders[o]["order_type"]
    price = raw
    pos = fstate[QTY, sid]
    if q < 0 and pos + q < -EPS:  # pragma: no cover - exits never exceed the position
        _finish(o, S_REJECTED, SR_SHORT, EV_REJECTED, i, orders, c, pending, aux_i, rejections)
        return
    commission = params[P_RATE] * abs(q) * price
    if q > 0 and q * price + commission > acc[ACC_CASH] + params[P_TOL]:
        _finish(o, S_REJECTED, SR_CASH, EV_REJECTED, i, orders, c, pending, aux_i, rejections)
        return
    acc[ACC_CASH] -= q * price + commission
    slip = (price - raw) * q
    f = c[C_FILLS]
    c[C_FILLS] = f + 1
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
    done = abs(orders[o]["quantity"] - orders[o]["filled"]) < EPS
    set_status(orders, o, S_FILLED if done else S_PARTIAL)
    if done and orders[o]["reason"] != R_STRATEGY:
        aux_i[A_EXIT_PENDING, sid] = 0
    if math.isnan(fstate[MARK, sid]):  # pragma: no cover - orders are decided on a bar
        fstate[MARK, sid] = price
    increased = _apply_position(
        sid, q, price, commission, slip, o, row, i, track_closed,
        ordinal, fstate, istate, aux_i, aux_f, orders, trades, c, acc,
    )  # fmt: skip
    if increased and params[P_ENTRY_RULES] != 0.0 and not closing:
        istate[ENTRY_PENDING, sid] = 1


@_jit
def _fill_level_hits(
    n: int,
    i: int,
    track_closed: bool,
    open_: FloatArray,
    prev_row: IntArray,
    params: FloatArray,
    ordinal: IntArray,
    fstate: FloatArray,
    istate: IntArray,
    pending: FloatArray,
    aux_i: IntArray,
    aux_f: FloatArray,
    orders: RecordArray,
    fills: RecordArray,
    trades: RecordArray,
    rejections: RecordArray,
    c: IntArray,
    acc: FloatArray,
) -> None:
    """``Broker._fill_level_hits``: exit the ``n`` positions found by ``level_hits``."""
    for k in range(n):
        sid = istate[OUT_SID, k]
        stop_hit = istate[OUT_CODE, k]
        level = fstate[OUT_LEVEL, k]
        pos = fstate[QTY, sid]
        if pos == 0:  # pragma: no cover - level hits are held positions
            continue
        row = istate[LAST_ROW, sid]
        o_ = open_[row]
        if stop_hit:
            kind = T_STOP
            code = istate[STOP_RULE, sid]
            reason = R_RULE0 + code if code > 0 else R_STOP_LOSS
        else:
            kind = T_LIMIT
            code = istate[TP_RULE, sid]
            reason = R_RULE0 + code if code > 0 else R_TAKE_PROFIT
        raw = level_exit_price_nb(pos > 0, stop_hit != 0, level, o_)
        o = _new_order(
            sid, -pos, kind, reason, max(i - 1, 0), prev_row[row],
            level if kind == T_LIMIT else math.nan,
            level if kind == T_STOP else math.nan,
            orders, c, pending,
        )  # fmt: skip
        set_status(orders, o, S_ACCEPTED)
        _execute(
            o, orders[o]["quantity"], raw, row, i, False, track_closed, params, ordinal, fstate,
            istate, pending, aux_i, aux_f, orders, fills, trades, rejections, c, acc,
        )  # fmt: skip


@_jit
def _open_pass(
    i: int,
    lo: int,
    use_closed: bool,
    open_: FloatArray,
    book: IntArray,
    params: FloatArray,
    ordinal: IntArray,
    fstate: FloatArray,
    istate: IntArray,
    pending: FloatArray,
    aux_i: IntArray,
    aux_f: FloatArray,
    orders: RecordArray,
    fills: RecordArray,
    trades: RecordArray,
    rejections: RecordArray,
    c: IntArray,
    acc: FloatArray,
) -> None:
    """``Broker.fill_pending_at_open`` for a book of market orders: each order whose symbol
    has a bar now fills at the open (submission order); the others stay in the book."""
    kept = 0
    for k in range(c[C_BOOK]):
        o = book[k]
        status = orders[o]["status"]
        if status not in (S_SUBMITTED, S_ACCEPTED, S_PARTIAL):  # pragma: no cover - done
            continue  # filled and refused orders leave the book at once
        sid = orders[o]["sid"]
        if (
            use_closed
            and aux_i[A_CLOSED_AT, sid] == i
            and orders[o]["quantity"] * aux_f[B_CLOSED_DIR, sid] < 0
            and fstate[QTY, sid] == 0
        ):  # pragma: no cover - open_sell_wins: a queued exit suspends the position's levels
            _finish(
                o, S_CANCELLED, SR_CLOSED_BY_STOP, EV_CANCELLED, i,
                orders, c, pending, aux_i, rejections,
            )  # fmt: skip
            continue
        row = istate[LAST_ROW, sid]
        if row < lo:
            book[kept] = o
            kept += 1
            continue
        remaining = orders[o]["quantity"] - orders[o]["filled"]
        if remaining != 0:
            _execute(
                o, remaining, open_[row], row, i, False, False, params, ordinal, fstate,
                istate, pending, aux_i, aux_f, orders, fills, trades, rejections, c, acc,
            )  # fmt: skip
        status = orders[o]["status"]
        if status in (S_ACCEPTED, S_PARTIAL):  # pragma: no cover - no volume cap: all or none
            book[kept] = o
            kept += 1
    c[C_BOOK] = kept


@_jit
def _risk_exit(
    sid: int,
    quantity: float,
    reason: int,
    row: int,
    i: int,
    fractional: bool,
    fstate: FloatArray,
    pending: FloatArray,
    aux_i: IntArray,
    orders: RecordArray,
    book: IntArray,
    c: IntArray,
) -> None:
    """``Broker._risk_exit``: a market exit of ``quantity`` shares (NaN: the whole position),
    queued for the next open."""
    if aux_i[A_EXIT_PENDING, sid]:
        return
    pos = fstate[QTY, sid]
    if pos == 0:
        return
    size = abs(pos)
    if not math.isnan(quantity) and not abs(pos) < abs(quantity):
        size = abs(quantity)
    size = _round_quantity(size, fractional)
    if size <= 0:
        return
    o = _new_order(
        sid, -math.copysign(size, pos), T_MARKET, reason, i, row, math.nan, math.nan,
        orders, c, pending,
    )  # fmt: skip
    set_status(orders, o, S_ACCEPTED)
    aux_i[A_EXIT_PENDING, sid] = 1
    book[c[C_BOOK]] = o
    c[C_BOOK] += 1


@_jit
def _accept(o: int, orders: RecordArray, book: IntArray, c: IntArray) -> None:
    """Hook B without order rules: the strategy's order is accepted into the book."""
    set_status(orders, o, S_ACCEPTED)
    book[c[C_BOOK]] = o
    c[C_BOOK] += 1


@_jit
def _mark_and_hook_c(
    lo: int,
    hi: int,
    i: int,
    sym_id: IntArray,
    close: FloatArray,
    high: FloatArray,
    low: FloatArray,
    ordinal: IntArray,
    held: IntArray,
    fstate: FloatArray,
    istate: IntArray,
    rules: FloatArray,
    partial: FloatArray,
    aux_i: IntArray,
    aux_f: FloatArray,
) -> int:
    """:func:`engine.risk.kernels.mark_bar_basic_rules` plus ``BreakEvenRule`` and
    ``PartialProfitTaking``, merged as the general path merges them
    (:class:`engine.risk.batch.PositionActions`): stops in rule order, the higher long stop
    wins, earlier rules win ties, NaN never wins; a whole (time) exit beats the partial one.

    ``BreakEvenRule``: ``mfe = max(0, best / entry - 1)``; at ``mfe >= trigger`` the stop
    candidate is ``entry × (1 + offset)``. ``PartialProfitTaking`` (at most one per run): each
    level ``(return_pct, fraction)`` of ``partial`` not yet reached by this trade fires once
    when ``close / entry - 1 >= return_pct``, for ``fraction ×`` the position's size when the
    rule first saw the trade (state in ``A_PARTIAL_*`` / ``B_PARTIAL_ORIGINAL``, keyed by the
    trade's entry bar as the rule keys it by entry time).

    Writes the exits to ``OUT_SID`` / ``OUT_CODE`` and their quantity to ``OUT_LEVEL`` (NaN:
    the whole position); returns their number, or -1 for a short position with a bar now.
    """
    if not kernels.mark_long_book(lo, hi, i, sym_id, close, high, low, held, fstate, istate, rules):
        return -1
    last_row = istate[LAST_ROW]
    qty = fstate[QTY]
    n = 0
    for k in range(held.size):
        sid = held[k]
        row = last_row[sid]
        if row < lo:
            continue
        bars_held = ordinal[row] - istate[ENTRY_ORDINAL, sid]
        current = fstate[STOP, sid]
        entry = fstate[AVG, sid]
        level = math.nan
        code = 0
        first = True
        exit_code = 0
        partial_code = 0
        partial_size = 0.0
        for r in range(rules.shape[0]):
            kind = rules[r, KIND]
            value = math.nan
            setter = False
            if kind == TRAILING:
                value = kernels.trailing_level(rules, r, bars_held, fstate[BEST, sid], current)
                setter = True
            elif kind == BREAKEVEN:
                mfe = np.maximum(0.0, (fstate[BEST, sid] / entry - 1.0) * 1.0)
                if mfe >= rules[r, TRAIL_INITIAL]:
                    value = entry * rules[r, FACTOR]
                setter = True
            elif kind == TIME_EXIT and exit_code == 0 and bars_held >= rules[r, MAX_BARS]:
                exit_code = int(rules[r, CODE])
            elif kind == PARTIAL:
                if aux_i[A_PARTIAL_ENTRY, sid] != aux_i[A_ENTRY_INDEX, sid]:
                    aux_i[A_PARTIAL_ENTRY, sid] = aux_i[A_ENTRY_INDEX, sid]
                    aux_i[A_PARTIAL_DONE, sid] = 0
                    aux_f[B_PARTIAL_ORIGINAL, sid] = abs(qty[sid])
                ret = (close[row] / entry - 1.0) * 1.0
                original = aux_f[B_PARTIAL_ORIGINAL, sid]
                done = aux_i[A_PARTIAL_DONE, sid]
                size = 0.0
                for j in range(partial.shape[0]):
                    if not (done >> j) & 1 and ret >= partial[j, 0]:
                        done |= 1 << j
                        size += partial[j, 1] * original
                aux_i[A_PARTIAL_DONE, sid] = done
                if size > 0:
                    partial_code = int(rules[r, CODE])
                    partial_size = abs(qty[sid]) if abs(qty[sid]) < size else size
            if setter and kernels.stop_wins(first, value, level):
                level = value
                code = int(rules[r, CODE])
                first = False
            elif setter:
                first = False
        kernels.write_stop(sid, level, code, i + 1, fstate, istate)
        if exit_code:
            istate[OUT_SID, n] = sid
            istate[OUT_CODE, n] = exit_code
            fstate[OUT_LEVEL, n] = math.nan
            n += 1
        elif partial_code:
            istate[OUT_SID, n] = sid
            istate[OUT_CODE, n] = partial_code
            fstate[OUT_LEVEL, n] = partial_size
            n += 1
    return n


@_jit
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


@_jit
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


@_jit
def _gross_term(qty: FloatArray, pending: FloatArray, marks: FloatArray, sid: int) -> float:
    """One term of :func:`_projected_gross` (0 for NaN, as ``nansum``)."""
    v = abs(qty[sid] + pending[sid]) * marks[sid]
    return 0.0 if math.isnan(v) else v


@_jit
def _projected_gross(
    qty: FloatArray, pending: FloatArray, marks: FloatArray, scratch: FloatArray
) -> float:
    """``PortfolioSnapshot.projected_gross_exposure``: ``nansum(|qty + pending| × mark)``.

    ``scratch``: float64, shape (256 + n_symbols,) (the sum's stack, then the terms, which
    stay there for :func:`_validate_new_orders` to update one by one)."""
    n = qty.size
    e = scratch[256 : 256 + n]
    for sid in range(n):
        e[sid] = _gross_term(qty, pending, marks, sid)
    return _pairwise_sum(e, 0, n, scratch[:256].reshape((4, 64)))


@_jit
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
    c: IntArray,
    rejections: RecordArray,
) -> int:
    """Record a limit's rejection or shrink of order ``o``; the row's index."""
    k = c[C_REJ]
    c[C_REJ] = k + 1
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


@_jit
def _validate_new_orders(
    new: IntArray,
    i: int,
    limits: FloatArray,
    fractional: bool,
    acc: FloatArray,
    fstate: FloatArray,
    pending: FloatArray,
    orders: RecordArray,
    book: IntArray,
    c: IntArray,
    rejections: RecordArray,
    scratch: FloatArray,
    held: IntArray,
) -> None:
    """Hook B (``Broker.validate_new_orders`` with ``RiskManager.validate_order``) for the
    compiled portfolio limits, in priority order; each order is judged against the portfolio
    plus the orders accepted before it (``MaxDrawdownRule`` with ``action="halt"``,
    ``MaxDailyLossRule``, ``MaxPositionSizeRule``, ``MaxPositionsRule``, ``MaxLeverageRule``:
    the same formulas). ``scratch``: see :func:`_projected_gross`; ``held``: the ids of the
    symbols with a position (ascending), for the snapshot's equity."""
    qty = fstate[QTY]
    marks = fstate[MARK]
    if limits.shape[0] == 0:
        for k in range(new.size):
            _accept(new[k], orders, book, c)
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
                if q == 0:  # pragma: no cover - allowed > 0 here
                    rejected = r
                    shrink_text = True
                    break
                quantity = q
                shrunk = r
            elif kind == L_LEVERAGE:
                price = marks[sid]
                if not grows or not math.isfinite(price) or price <= 0:
                    continue
                if terms_ready:
                    gross = _pairwise_sum(terms, 0, terms.size, stack)
                else:
                    gross = _projected_gross(qty, pending, marks, scratch)
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
                if q == 0:  # pragma: no cover - room > 0 here
                    rejected = r
                    shrink_text = True
                    break
                quantity = q
                shrunk = r
            elif kind == L_POSITIONS:
                if current != 0:
                    continue
                if projected >= param:
                    rejected = r
                    break
        if rejected < 0 and shrunk >= 0:
            new_q = _round_quantity(quantity, fractional)
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
                    c,
                    rejections,
                )
                orders[o]["quantity"] = new_q
        if rejected >= 0:
            row = _limit_event(
                o, EV_REJECTED, rejected, shrink_text, value, bound,
                orders[o]["quantity"] - orders[o]["filled"], i, orders, c, rejections,
            )  # fmt: skip
            set_status(orders, o, S_REJECTED)
            orders[o]["status_reason"] = SR_LIMIT + row
            continue
        was = abs(qty[sid] + pending[sid]) > 1e-9
        pending[sid] += orders[o]["quantity"]
        projected += int(abs(qty[sid] + pending[sid]) > 1e-9) - int(was)
        if terms_ready:
            terms[sid] = _gross_term(qty, pending, marks, sid)
        _accept(o, orders, book, c)


@_jit
def _top_rows(
    lo: int, hi: int, sig: FloatArray, n: int, top_val: FloatArray, top_row: IntArray
) -> int:
    """The rows ``lo:hi`` with the ``n`` largest finite ``sig`` (decreasing; ties keep row
    order, as a stable sort on ``-sig``) into ``top_row``; their count (``<= n``)."""
    cnt = 0
    for r in range(lo, hi):
        v = sig[r]
        if not math.isfinite(v):
            continue
        if cnt == n and not v > top_val[n - 1]:
            continue
        p = cnt if cnt < n else n - 1
        while p > 0 and top_val[p - 1] < v:
            p -= 1
        last = cnt if cnt < n else n - 1
        for j in range(last, p, -1):
            top_val[j] = top_val[j - 1]
            top_row[j] = top_row[j - 1]
        top_val[p] = v
        top_row[p] = r
        if cnt < n:
            cnt += 1
    return cnt


@_jit
def run_topn(
    timestamps: IntArray,
    offsets: IntArray,
    sym_id: IntArray,
    open_: FloatArray,
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    ordinal: IntArray,
    prev_row: IntArray,
    sig: FloatArray,
    params: FloatArray,
    rules: FloatArray,
    partial: FloatArray,
    limits: FloatArray,
    fstate: FloatArray,
    istate: IntArray,
    pending: FloatArray,
    aux_i: IntArray,
    aux_f: FloatArray,
    orders: RecordArray,
    fills: RecordArray,
    trades: RecordArray,
    rejections: RecordArray,
    states: RecordArray,
    book: IntArray,
    c: IntArray,
    acc: FloatArray,
) -> None:
    """The whole run of :class:`TopNStrategy` with the compiled rules (module docstring).

    Inputs: the market data arrays (:class:`MarketData` attributes; ``sig`` the signal
    column), ``params`` (the ``P_*`` slots), the rule table of
    :class:`engine.risk.manager.BasicRulesKernel` (0 rows: no rules). Run state, in place:
    ``fstate`` / ``istate`` (:mod:`engine.risk.kernels` layout), ``pending`` (shares of working
    market orders per symbol), ``aux_i`` / ``aux_f`` (the open trades and the ``A_*`` / ``B_*``
    rows), ``acc`` (cash, realized P&L). Outputs, in place: the order, fill, trade and
    rejection buffers (``O*``, ``F*``, ``T*``, ``R*`` columns), one portfolio state row per
    timestamp (``SF_*``), the counters ``c`` (``C_*``). ``c[C_STATUS]`` is ``ST_OK``, or
    ``ST_FULL`` when the order buffers would overflow (the caller retries with larger ones),
    ``ST_SHORT_BOOK`` / ``ST_FRACTIONAL`` when the Python path must run instead (a short
    position, or an order the Python path refuses with an error).
    """
    n_t = offsets.size - 1
    n_sym = fstate.shape[1]
    n = int(params[P_N])
    every = int(params[P_EVERY])
    weight = params[P_WEIGHT]
    fractional = params[P_FRACTIONAL] != 0.0
    stops_first = params[P_STOPS_FIRST] != 0.0
    close_at_end = params[P_CLOSE_AT_END] != 0.0
    levels_set = params[P_LEVELS_SET] != 0.0
    has_rules = params[P_HAS_RULES] != 0.0
    qty = fstate[QTY]
    marks = fstate[MARK]
    last_row = istate[LAST_ROW]
    deferred = istate[DEFERRED]
    held = np.empty(n_sym, dtype=np.int64)
    deferred_sids = np.empty(book.size, dtype=np.int64)
    top_val = np.empty(max(n, 1))
    top_row = np.empty(max(n, 1), dtype=np.int64)
    new = np.empty(n_sym + n + 1, dtype=np.int64)
    scratch = np.empty(256 + n_sym)
    cap = orders.shape[0]
    per_bar = 4 * n_sym + n + 8  # most orders one bar can create
    nh = 0
    held_at = -1  # fill count when ``held[:nh]`` was last listed (-1: never)
    for i in range(n_t):
        if c[C_ORDERS] + per_bar > cap:
            c[C_STATUS] = ST_FULL
            return
        lo = offsets[i]
        hi = offsets[i + 1]
        for r in range(lo, hi):
            last_row[sym_id[r]] = r
        day = timestamps[i] // _DAY_US
        if day != c[C_DAY]:
            acc[ACC_DAY_START] = acc[ACC_LAST_EQUITY]
            c[C_DAY] = day
        # 1. fills against the bar
        if stops_first:
            # exit_conflict="open_sell_wins": a queued market exit suspends the levels
            n_def = 0
            for k in range(c[C_BOOK]):
                o = book[k]
                sid = orders[o]["sid"]
                if orders[o]["quantity"] * qty[sid] < 0 and last_row[sid] >= lo:
                    deferred[sid] = 1
                    deferred_sids[n_def] = sid
                    n_def += 1
            if levels_set:
                nh, held_at = _held_since(qty, held, nh, held_at, c[C_FILLS])
                if nh:
                    m = kernels.level_hits(held[:nh], lo, i, low, high, fstate, istate, rules)
                    if m:
                        _fill_level_hits(
                            m, i, True, open_, prev_row, params, ordinal, fstate, istate,
                            pending, aux_i, aux_f, orders, fills, trades, rejections, c, acc,
                        )  # fmt: skip
            _open_pass(
                i, lo, True, open_, book, params, ordinal, fstate, istate, pending,
                aux_i, aux_f, orders, fills, trades, rejections, c, acc,
            )  # fmt: skip
            for k in range(n_def):
                deferred[deferred_sids[k]] = 0
            if n_def and levels_set:
                nh, held_at = _held_since(qty, held, nh, held_at, c[C_FILLS])
                if nh:
                    m = kernels.level_hits(held[:nh], lo, i, low, high, fstate, istate, rules)
                    # the deferred positions whose queued exit did not fill (none without caps)
                    if m:  # pragma: no cover
                        _fill_level_hits(
                            m, i, False, open_, prev_row, params, ordinal, fstate, istate,
                            pending, aux_i, aux_f, orders, fills, trades, rejections, c, acc,
                        )  # fmt: skip
        else:
            _open_pass(
                i, lo, False, open_, book, params, ordinal, fstate, istate, pending,
                aux_i, aux_f, orders, fills, trades, rejections, c, acc,
            )  # fmt: skip
            if has_rules:
                nh, held_at = _held_since(qty, held, nh, held_at, c[C_FILLS])
                if nh:
                    m = kernels.level_hits(held[:nh], lo, i, low, high, fstate, istate, rules)
                    if m:
                        _fill_level_hits(
                            m, i, False, open_, prev_row, params, ordinal, fstate, istate,
                            pending, aux_i, aux_f, orders, fills, trades, rejections, c, acc,
                        )  # fmt: skip
        # 2. marks and hook C (trailing levels, time exits)
        nh, held_at = _held_since(qty, held, nh, held_at, c[C_FILLS])
        exits = 0
        if has_rules:
            exits = _mark_and_hook_c(
                lo, hi, i, sym_id, close, high, low, ordinal, held[:nh], fstate, istate, rules,
                partial, aux_i, aux_f,
            )  # fmt: skip
            if exits < 0:
                c[C_STATUS] = ST_SHORT_BOOK
                return
        else:
            kernels.mark_bar(lo, hi, sym_id, close, high, low, held[:nh], fstate, istate)
        for k in range(exits):
            sid = istate[OUT_SID, k]
            _risk_exit(
                sid, fstate[OUT_LEVEL, k], R_RULE0 + istate[OUT_CODE, k], last_row[sid], i,
                fractional, fstate, pending, aux_i, orders, book, c,
            )  # fmt: skip
        # 3. the strategy (TopNStrategy.on_timestamp_batch) and 4. hook B (no order rules)
        if i % every == 0:
            n_new = 0
            cnt = _top_rows(lo, hi, sig, n, top_val, top_row)
            stamp = i + 1
            for k in range(cnt):
                aux_i[A_TARGET, sym_id[top_row[k]]] = stamp
            # held: unchanged since the marks (orders only, no fills)
            for k in range(nh):
                sid = held[k]
                if aux_i[A_TARGET, sid] == stamp:
                    continue
                current = qty[sid] + pending[sid]
                if abs(current) < EPS:
                    continue
                if not fractional and -current != math.floor(-current):
                    c[C_STATUS] = ST_FRACTIONAL
                    return
                row = last_row[sid] if last_row[sid] >= lo else -1
                new[n_new] = _new_order(
                    sid, -current, T_MARKET, R_STRATEGY, i, row, math.nan, math.nan,
                    orders, c, pending,
                )  # fmt: skip
                n_new += 1
            cash = acc[ACC_CASH]
            if nh:
                value, _ = kernels.portfolio_value(held[:nh], qty, marks)
                equity = cash + value
            else:
                equity = cash
            budget = weight * equity
            for k in range(cnt):
                row = top_row[k]
                sid = sym_id[row]
                price = close[row]
                if qty[sid] != 0 or pending[sid] != 0 or price <= 0:
                    continue
                shares = _round_quantity(budget / price, fractional)
                if shares > 0:
                    new[n_new] = _new_order(
                        sid, shares, T_MARKET, R_STRATEGY, i, row, math.nan, math.nan,
                        orders, c, pending,
                    )  # fmt: skip
                    n_new += 1
            _validate_new_orders(
                new[:n_new], i, limits, fractional, acc, fstate, pending, orders, book, c,
                rejections, scratch, held[:nh],
            )  # fmt: skip
        # close_at_end: every position at its latest close
        if close_at_end and i == n_t - 1:
            nh, held_at = _held_since(qty, held, nh, held_at, c[C_FILLS])
            for k in range(nh):
                sid = held[k]
                pos = qty[sid]
                if pos == 0:  # pragma: no cover - held positions
                    continue
                row = last_row[sid]
                o = _new_order(
                    sid, -pos, T_MARKET, R_END, i, row, math.nan, math.nan, orders, c, pending
                )
                set_status(orders, o, S_ACCEPTED)
                _execute(
                    o, -pos, marks[sid], row, i, True, False, params, ordinal, fstate,
                    istate, pending, aux_i, aux_f, orders, fills, trades, rejections, c, acc,
                )  # fmt: skip
        # 6. the portfolio state (after close_at_end's fills)
        nh, held_at = _held_since(qty, held, nh, held_at, c[C_FILLS])
        cash = acc[ACC_CASH]
        value = 0.0
        gross = 0.0
        if nh:
            value, gross = kernels.portfolio_value(held[:nh], qty, marks)
        equity = cash + value
        acc[ACC_LAST_EQUITY] = equity
        if equity > acc[ACC_PEAK]:
            acc[ACC_PEAK] = equity
        states[i]["bar_index"] = i
        states[i]["equity"] = equity
        states[i]["cash"] = cash
        states[i]["positions_value"] = value
        states[i]["gross"] = gross
        states[i]["n_positions"] = nh
    c[C_STATUS] = ST_OK


# ---------------------------------------------------------------------------------- planning
def compiled_reason(
    data: MarketData | ChunkedMarketData,
    strategy: Strategy,
    risk: RiskManager | None,
    config: ExecutionConfig,
) -> str | None:
    """Why this run cannot take the compiled path, or ``None`` when it can (module docstring).

    Returns
    -------
    str or None
        A short reason naming the first setting that rules it out.
    """
    if not isinstance(data, MarketData) or data.first_index != 0:
        return "chunked market data"
    if type(strategy) is not TopNStrategy:
        return f"strategy {type(strategy).__name__} is not TopNStrategy"
    if risk is not None and risk.rules:
        for rule in risk.rules:
            kind = type(rule)
            if kind not in _POSITION_RULES and _limit_kind(rule) == 0:
                return f"rule {rule.name} has no compiled form"
            if kind is PartialProfitTaking and len(cast(PartialProfitTaking, rule).levels) > 62:
                return "PartialProfitTaking with more than 62 levels"
        if sum(type(r) is PartialProfitTaking for r in risk.rules) > 1:
            return "more than one PartialProfitTaking rule"
        if any(type(r) is MaxLeverageRule for r in risk.rules) and data.n_symbols > 8192:
            return "MaxLeverageRule on more than 8192 symbols"
    checks = (
        (type(config.commission) in (NoCommission, PercentageCommission), "commission model"),
        (type(config.slippage) is NoSlippage, "slippage model"),
        (config.fill == "next_open", "fill"),
        (config.stop_activation == "next_bar", "stop_activation"),
        (config.exit_conflict == "open_sell_wins", "exit_conflict"),
        (config.cash_check == "execution", "cash_check"),
        (config.reentry_cooldown_bars == 0, "reentry_cooldown_bars"),
        (config.max_volume_participation is None, "max_volume_participation"),
        (not config.allow_short, "allow_short"),
    )
    for ok, name in checks:
        if not ok:
            return f"{name} setting"
    return None


def _capacity(n_t: int, n: int, n_sym: int) -> int:
    """First size of the order buffers (doubled while the kernel reports them full)."""
    return max(1024, n_t * (2 * n + 4) + 4 * n_sym + n + 8)


_POSITION_RULES = (*_KERNEL_RULES, BreakEvenRule, PartialProfitTaking)


def _rule_table(
    rules: list[RiskRule],
) -> tuple[FloatArray, list[str], FloatArray, bool]:
    """The run's rule table (``engine.risk.kernels`` columns plus ``PRIORITY``), rule names by
    code (0: ``""``), the ``PartialProfitTaking`` levels (rows ``return_pct, fraction``) and
    whether some rule sets a stop or target level."""
    chosen = [r for r in rules if type(r) in _POSITION_RULES]
    names = [""]
    table = np.zeros((len(chosen), N_RULES_COLS))
    partial = np.zeros((0, 2))
    if chosen:
        basic = [r for r in chosen if type(r) in _KERNEL_RULES]
        basic_table = BasicRulesKernel(basic).rules if basic else table[:0]
        k = 0
        for r, rule in enumerate(chosen):
            row = table[r]
            if type(rule) in _KERNEL_RULES:
                row[:N_RULE_FIELDS] = basic_table[k]
                k += 1
            elif isinstance(rule, BreakEvenRule):
                row[KIND] = BREAKEVEN
                row[FACTOR] = 1.0 + 1.0 * rule.offset_pct
                row[TRAIL_INITIAL] = rule.trigger_pct
            elif isinstance(rule, PartialProfitTaking):
                row[KIND] = PARTIAL
                partial = np.asarray(rule.levels, dtype=np.float64).reshape(-1, 2)
            row[CODE] = len(names)
            row[PRIORITY] = rule.priority
            names.append(rule.name)
    level_kinds = (STOP_LOSS, TAKE_PROFIT, TRAILING, BREAKEVEN)
    sets_levels = bool(np.isin(table[:, KIND], level_kinds).any())
    return table, names, partial, sets_levels


def _limit_kind(rule: RiskRule) -> int:
    """The ``L_*`` code of a portfolio limit the kernel runs at hook B (0: none)."""
    kind = type(rule)
    if kind is MaxLeverageRule:
        return L_LEVERAGE
    if kind is MaxDrawdownRule:
        return L_DRAWDOWN if cast(MaxDrawdownRule, rule).action == "halt" else 0
    if kind is MaxDailyLossRule:
        return L_DAILY_LOSS
    if kind is MaxPositionSizeRule:
        return L_POSITION_SIZE
    return L_POSITIONS if kind is MaxPositionsRule else 0


def _limit_param(rule: RiskRule) -> float:
    if isinstance(rule, MaxDrawdownRule):
        return rule.max_drawdown
    if isinstance(rule, MaxDailyLossRule):
        return rule.max_loss_pct
    if isinstance(rule, MaxPositionSizeRule):
        return rule.max_pct
    if isinstance(rule, MaxPositionsRule):
        return float(rule.max_positions)
    if isinstance(rule, MaxLeverageRule):
        return rule.max_leverage
    raise ValueError(f"{rule!r} is not a compiled limit")  # pragma: no cover


class CompiledRun:
    """The outputs of :func:`run_topn` for one run.

    Attributes
    ----------
    records : Records
        The run's orders, fills, trades, rejections and portfolio states
        (:mod:`engine.core.records`), read by :class:`engine.recorder.Recorder` as the Python
        driver's are; empty unless ``status == ST_OK``.
    status : int
        ``ST_OK``, or why the Python loop must run instead (``ST_SHORT_BOOK``,
        ``ST_FRACTIONAL``).
    fstate, istate, aux_i, aux_f : ndarray
        The final per-symbol state (open positions).
    cash : float
        Final cash, currency.
    n_fills : int
    """

    def __init__(
        self,
        data: MarketData,
        strategy: TopNStrategy,
        risk: RiskManager | None,
        config: ExecutionConfig,
    ) -> None:
        if strategy.signal not in data.columns:
            raise ValueError(
                f"TopNStrategy signal {strategy.signal!r} is not a signal/indicator column of "
                f"the market data (have {sorted(data.columns)})"
            )
        rules, rule_names, partial, sets_levels = _rule_table(
            list(risk.rules) if risk is not None else []
        )
        limit_rules = list(risk.order_rules) if risk is not None else []
        limits = np.zeros((len(limit_rules), N_LIM))
        for r, rule in enumerate(limit_rules):
            limits[r, LIM_KIND] = _limit_kind(rule)
            limits[r, LIM_PARAM] = _limit_param(rule)
        commission = config.commission
        rate = commission.rate if isinstance(commission, PercentageCommission) else 0.0
        weight = strategy.weight if strategy.weight is not None else 1.0 / strategy.n
        params = np.zeros(N_P)
        params[P_N] = strategy.n
        params[P_EVERY] = strategy.rebalance_every
        params[P_WEIGHT] = weight
        params[P_RATE] = rate
        params[P_TOL] = config.cash_tolerance
        params[P_FRACTIONAL] = float(config.fractional_shares)
        params[P_STOPS_FIRST] = float(config.bar_event_order == "stops_first")
        params[P_CLOSE_AT_END] = float(config.close_at_end)
        params[P_ENTRY_RULES] = float(risk is not None and bool(risk.entry_rules))
        params[P_LEVELS_SET] = float(sets_levels)
        params[P_HAS_RULES] = float(rules.shape[0] > 0)
        n_sym = data.n_symbols
        n_t = data.n_timestamps
        cap = _capacity(n_t, strategy.n, n_sym)
        sig = np.ascontiguousarray(data.columns[strategy.signal], dtype=np.float64)
        while True:
            fstate = np.full((N_FLOAT_FIELDS, n_sym), np.nan)
            fstate[QTY] = 0.0
            fstate[AVG] = 0.0
            istate = np.zeros((N_INT_FIELDS, n_sym), dtype=np.int64)
            istate[LAST_ROW] = -1
            aux_i = np.zeros((N_A, n_sym), dtype=np.int64)
            aux_i[A_CLOSED_AT] = -1
            aux_i[A_PARTIAL_ENTRY] = -1
            aux_f = np.zeros((N_B, n_sym))
            pending = np.zeros(n_sym)
            orders = empty_records("orders", cap)
            fills = empty_records("fills", cap)
            trades = empty_records("trades", cap)
            rejections = empty_records("rejections", cap)
            states = empty_records("states", n_t)
            book = np.empty(cap, dtype=np.int64)
            c = np.zeros(N_C, dtype=np.int64)
            c[C_DAY] = -1
            acc = np.full(N_ACC, config.initial_cash)
            acc[ACC_REALIZED] = 0.0
            run_topn(
                data.timestamps, data.offsets, data.sym_id, data.open, data.high, data.low,
                data.close, data.ordinal, data.prev_row, sig, params, rules, partial, limits,
                fstate, istate, pending, aux_i, aux_f, orders, fills, trades, rejections, states,
                book, c, acc,
            )  # fmt: skip
            if c[C_STATUS] != ST_FULL:
                break
            cap *= 2
        self.status = int(c[C_STATUS])
        self.cash = float(acc[ACC_CASH])
        self.fstate = fstate
        self.istate = istate
        self.aux_i = aux_i
        self.aux_f = aux_f
        self.n_fills = int(c[C_FILLS])
        self.n_bars = n_t
        self.records = Records([*FIXED_REASONS, *rule_names[1:]])
        if self.status != ST_OK:
            return  # the Python loop runs instead
        n_rej = int(c[C_REJ])
        rejections = rejections[:n_rej]
        _limit_texts(rejections, limit_rules, self.records)
        orders = orders[: c[C_ORDERS]]
        by_limit = orders["status_reason"] >= SR_LIMIT
        if by_limit.any():
            rows = orders["status_reason"][by_limit] - SR_LIMIT
            orders["status_reason"][by_limit] = rejections["reason"][rows]
        self.records.extend("orders", orders)
        self.records.extend("fills", fills[: c[C_FILLS]])
        self.records.extend("trades", trades[: c[C_TRADES]])
        self.records.extend("rejections", rejections)
        self.records.extend("states", states)

    def open_positions_frame(self, data: MarketData) -> pl.DataFrame:
        """``Broker.open_positions_frame`` from the final state."""
        sids = np.flatnonzero(self.aux_i[A_OPEN]).astype(np.int64)
        q = self.fstate[QTY, sids]
        avg = self.fstate[AVG, sids]
        mark = self.fstate[MARK, sids]
        comm = self.aux_f[B_COMM, sids]
        frame = pl.DataFrame(
            {
                "symbol": _gather(_symbol_series(data), sids),
                "side": pl.Series(np.where(q > 0, "long", "short"), dtype=pl.String),
                "quantity": q,
                "avg_price": avg,
                "mark": mark,
                "entry_timestamp": data.timestamps[self.aux_i[A_ENTRY_INDEX, sids]],
                "entry_commission": comm,
                "unrealized_pnl": (mark - avg) * q - comm,
                "stop_loss": self.fstate[STOP, sids],
                "take_profit": self.fstate[TP, sids],
            },
            schema_overrides={"entry_timestamp": pl.Int64},
        )
        return frame.with_columns(pl.col("entry_timestamp").cast(pl.Datetime("us", "UTC")))


def _symbol_series(data: MarketData) -> pl.Series:
    return pl.Series(data.symbols.tolist(), dtype=pl.String)


def _gather(names: pl.Series, codes: npt.NDArray[Any]) -> pl.Series:
    """``names[codes]`` as a String series (no per-row Python)."""
    return names.gather(pl.Series(codes, dtype=pl.Int64)) if codes.size else names.clear()


def _limit_texts(rejections: RecordArray, limits: list[RiskRule], records: Records) -> None:
    """The reason texts and rule names of the rejection / shrink rows a compiled portfolio
    limit wrote (``limit >= 0``), from the limits' own ``reason_text``, as codes of
    ``records.texts`` (a few rows: one Python call per rejected or shrunk order)."""
    memo: dict[tuple[int, int, float, float], int] = {}
    for k in np.flatnonzero(rejections["limit"] >= 0).tolist():
        r = int(rejections["limit"][k])
        key = (
            r,
            int(rejections["shrink_text"][k]),
            float(rejections["value"][k]),
            float(rejections["bound"][k]),
        )
        code = memo.get(key)
        if code is None:
            limit = cast(_Limit, limits[r])
            code = memo[key] = records.text_code(limit.reason_text(bool(key[1]), key[2], key[3]))
        rejections["reason"][k] = code
        rejections["rule"][k] = records.text_code(limits[r].name)
