"""The per-bar passes of the compiled TopN driver (:func:`engine.compiled.topn.run_topn`).

One fill with the run's slippage and commission (:func:`_fill`, priced by
:func:`engine.core.costs.fill_costs`);
step 1's fills at the open (:func:`_open_pass`) and of the stop-loss / take-profit levels hit
(:func:`_fill_level_hits`), with the entry levels of ``stop_activation="entry_bar"``
(:func:`_pending_levels`); a risk rule's exit queued for the next open (:func:`_risk_exit`);
hook B's re-entry cooldown (:func:`_cooldown`) and netting of a closed symbol's working
orders under a volume cap (:func:`_net_working`); ``cash_check="submission"``
(:func:`_submission_cash`) and step 5 with ``fill="close"`` (:func:`_fill_at_close`). Each
calls the execution core (:mod:`engine.core.ledger`, :mod:`engine.core.matching`,
:mod:`engine.core.costs`) as the Python loop's broker does.
"""

from __future__ import annotations

import math

import numba

from engine.compiled.state import (
    P_ALLOW_SHORT,
    P_ENTRY_BAR,
    P_ENTRY_RULES,
    P_FRACTIONAL,
    P_STOP_WINS,
    P_TOL,
    P_VOLUME_CAP,
    Bars,
    FloatArray,
    IntArray,
    RunRecords,
    RunState,
    Tables,
)
from engine.core.costs import (
    COMM_A,
    COMM_B,
    COMM_C,
    COMM_KIND,
    COMM_TIERED,
    fill_commission_nb,
    fill_costs,
    month_number_nb,
    tiered_commission_nb,
)
from engine.core.jit import njit
from engine.core.layout import (
    A_CLOSED_AT,
    A_EXIT_PENDING,
    A_STOPPED_AT,
    ACC_CASH,
    B_CLOSED_DIR,
    B_STOPPED_DIR,
    C_BOOK,
    C_FILLS,
    ENTRY_PENDING,
    EV_CANCELLED,
    EV_REJECTED,
    LAST_ROW,
    MARK,
    OUT_CODE,
    OUT_LEVEL,
    OUT_SID,
    QTY,
    R_RULE0,
    R_STOP_LOSS,
    R_STRATEGY,
    R_TAKE_PROFIT,
    S_ACCEPTED,
    S_CANCELLED,
    S_PARTIAL,
    S_REJECTED,
    SR_CLOSED_BY_STOP,
    SR_COOLDOWN,
    SR_NETTED_CLOSE,
    SR_SUBMISSION_CASH,
    STOP_RULE,
    T_LIMIT,
    T_MARKET,
    T_STOP,
    TP_RULE,
    set_status,
)
from engine.core.ledger import (
    closed_by_level_exit_nb,
    execute_fill,
    finish_order,
    levels_active_from_nb,
    netted_by_close_nb,
    new_order,
    reject_unplaced,
    round_quantity_nb,
    short_refused_nb,
    submission_quantity_nb,
    submission_refused_nb,
    zero_shares_order_nb,
)
from engine.core.matching import level_exit_price_nb, participation_quantity_nb
from engine.core.records import RecordArray
from engine.risk import kernels

_inline = numba.njit(cache=True, nogil=True, inline="always")
"""Compiled and inlined into its callers at numba's IR level: a compiled call passing the
run's tuples costs their arrays' reference counts, some 100 ns per fill."""


@_inline
def _fill(
    o: int,
    q: float,
    raw: float,
    row: int,
    i: int,
    closing: bool,
    bars: Bars,
    tables: Tables,
    state: RunState,
    records: RunRecords,
) -> None:
    """Fill ``q`` shares of order ``o`` at raw price ``raw`` on data row ``row`` at bar ``i``
    with the run's slippage and commission (:mod:`engine.core.costs`: the price after
    slippage, then the commission on it; a sale the ledger refuses as a short computes no
    commission, as the Python loop checks it first); ``closing``: a ``close_at_end`` fill (it
    sets no entry levels)."""
    params, cost_params = tables.params, tables.cost_params
    fstate = state.fstate
    orders = records.orders
    allow_short = params[P_ALLOW_SHORT] != 0.0
    price, commission = fill_costs(
        cost_params, tables.cost_rows, tables.tiers, tables.tier_state, raw, q, row,
        bars.prev_row[row], bars.timestamps[i],
        short_refused_nb(q, fstate[QTY, orders[o]["sid"]], allow_short),
        orders[o]["order_type"],
    )  # fmt: skip
    execute_fill(
        o, q, raw, price, commission, bars.ordinal[row], i, params[P_TOL], allow_short,
        params[P_ENTRY_RULES] != 0.0 and not closing,
        fstate, state.istate, state.pending, state.aux_i, state.aux_f, orders, records.fills,
        records.trades, records.rejections, state.counts, state.acc,
    )  # fmt: skip


@njit
def _fill_level_hits(
    n: int, i: int, bars: Bars, tables: Tables, state: RunState, records: RunRecords
) -> None:
    """Exit the ``n`` positions whose stop-loss or take-profit level
    :func:`engine.risk.kernels.level_hits` found touched (ids, stop or target, level in the
    ``OUT_*`` rows), in that order: a stop (limit) order for the whole position, submitted
    on the previous bar and filled at :func:`engine.core.matching.level_exit_price`."""
    fstate, istate, counts, pending = state.fstate, state.istate, state.counts, state.pending
    orders, open_, prev_row = records.orders, bars.open_, bars.prev_row
    for k in range(n):
        sid = istate[OUT_SID, k]
        stop_hit = istate[OUT_CODE, k]
        level = fstate[OUT_LEVEL, k]
        pos = fstate[QTY, sid]
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
        o = new_order(
            sid, -pos, kind, reason, max(i - 1, 0), prev_row[row],
            level if kind == T_LIMIT else math.nan,
            level if kind == T_STOP else math.nan,
            orders, counts, pending,
        )  # fmt: skip
        set_status(orders, o, S_ACCEPTED)
        _fill(o, orders[o]["quantity"], raw, row, i, False, bars, tables, state, records)
        if fstate[QTY, sid] == 0.0:
            direction = 1.0 if pos > 0 else -1.0
            if stop_hit:  # reentry_cooldown_bars
                state.aux_i[A_STOPPED_AT, sid] = i
                state.aux_f[B_STOPPED_DIR, sid] = direction
            # exit_conflict="stop_wins": the position this bar's level exit closed
            state.aux_i[A_CLOSED_AT, sid] = i + 1
            state.aux_f[B_CLOSED_DIR, sid] = direction


@njit
def _open_pass(
    i: int, lo: int, bars: Bars, tables: Tables, state: RunState, records: RunRecords
) -> None:
    """The book of market orders at bar ``i`` (data rows from ``lo``): each order whose
    symbol has a bar now fills at the open, in submission order, or is refused; the others
    stay in the book. Without a volume cap an order fills whole or not at all; under one
    (``P_VOLUME_CAP`` > 0) it fills at most :func:`engine.core.matching.participation_quantity`
    of the bar's volume and the rest stays working (in the book)."""
    book, counts, last_row = state.book, state.counts, state.istate[LAST_ROW]
    orders, open_ = records.orders, bars.open_
    cap = tables.params[P_VOLUME_CAP]
    entry_bar = tables.params[P_ENTRY_BAR] != 0.0
    stop_wins = tables.params[P_STOP_WINS] != 0.0
    first_fill = counts[C_FILLS]
    kept = 0
    for k in range(counts[C_BOOK]):
        o = book[k]
        sid = orders[o]["sid"]
        if (
            stop_wins
            and state.aux_i[A_CLOSED_AT, sid] == i + 1
            and closed_by_level_exit_nb(
                orders[o]["quantity"], state.aux_f[B_CLOSED_DIR, sid], state.fstate[QTY, sid]
            )
        ):
            # exit_conflict="stop_wins": this bar's level exit took precedence
            finish_order(
                o, S_CANCELLED, SR_CLOSED_BY_STOP, EV_CANCELLED, i, orders, counts,
                state.pending, state.aux_i, records.rejections,
            )  # fmt: skip
            continue
        row = last_row[sid]
        if row < lo:
            book[kept] = o
            kept += 1
            continue
        remaining = orders[o]["quantity"] - orders[o]["filled"]
        if cap != 0.0:
            remaining = participation_quantity_nb(
                remaining, cap, bars.volume[row], tables.params[P_FRACTIONAL] != 0.0
            )
        if remaining != 0:
            _fill(o, remaining, open_[row], row, i, False, bars, tables, state, records)
        if cap != 0.0 and _working(orders[o]["status"]):
            book[kept] = o
            kept += 1
    counts[C_BOOK] = kept
    if not entry_bar:
        # hook D, once for all of this pass's entries (the Python driver's flush_entries):
        # their levels from what was known at the fill (the symbol's previous bar), live
        # from the next bar; none for a position the pass left flat; a short stays pending
        # (the mark step then hands the run to the loop)
        fills, istate, fstate = records.fills, state.istate, state.fstate
        for f in range(first_fill, counts[C_FILLS]):
            sid = fills[f]["sid"]
            if istate[ENTRY_PENDING, sid] and fstate[QTY, sid] > 0.0:
                kernels.set_entry_levels(
                    sid, fstate, istate, i + 1, tables.rules, tables.inputs,
                    bars.prev_row[istate[LAST_ROW, sid]],
                )  # fmt: skip


@_inline
def _working(status: int) -> bool:
    """True for a status an order keeps working in (accepted, partially filled)."""
    return S_ACCEPTED <= status <= S_PARTIAL  # the codes of the two are adjacent


@njit
def _pending_levels(
    held: IntArray,
    active_from: int,
    fstate: FloatArray,
    istate: IntArray,
    rules: FloatArray,
    inputs: FloatArray,
    prev_row: IntArray,
    ids: IntArray,
) -> bool:
    """The entry levels of the positions in ``held`` marked ``ENTRY_PENDING`` by this bar's
    open fills, live from bar ``active_from``, from what was known at the fill (the symbol's
    bar before its fill row; :func:`engine.risk.kernels.set_entry_levels`; ``ids``: scratch,
    int64, at least ``held.size`` long). False, writing nothing, when one of them is short
    (the Python loop runs)."""
    n = 0
    for k in range(held.size):
        sid = held[k]
        if istate[ENTRY_PENDING, sid]:
            if fstate[QTY, sid] < 0.0:
                return False
            ids[n] = sid
            n += 1
    for k in range(n):
        sid = ids[k]
        if fstate[QTY, sid] != 0.0:
            known = prev_row[istate[LAST_ROW, sid]]
            kernels.set_entry_levels(sid, fstate, istate, active_from, rules, inputs, known)
    return True


@njit
def _submission_cash(
    i: int,
    bars: Bars,
    tables: Tables,
    state: RunState,
    records: RunRecords,
    longs: FloatArray,
    seen: IntArray,
    tier_copy: FloatArray,
) -> None:
    """``cash_check="submission"`` (:func:`engine.broker.hooks.check_submission_cash`): the
    orders accepted at bar ``i`` (the book's orders submitted at ``i``, in acceptance order)
    pseudo-executed at the close of their decision bar (the latest close without one) against
    the cash now, with the commission of a copy of the run's commission state; an order
    :func:`engine.core.ledger.submission_refused` refuses is rejected
    (``insufficient_cash_at_submission``) and leaves the book. ``longs`` / ``seen``
    (float64 / int64, shape (n_symbols,)): the long shares counted so far this bar, valid
    where ``seen == i``; ``tier_copy``: scratch, shape (2,)."""
    book, counts, orders = state.book, state.counts, records.orders
    params, cost_params = tables.params, tables.cost_params
    allow_short = params[P_ALLOW_SHORT] != 0.0
    qty, marks = state.fstate[QTY], state.fstate[MARK]
    cash = state.acc[ACC_CASH]
    tier_copy[:] = tables.tier_state
    month = month_number_nb(bars.timestamps[i])
    kept = 0
    for k in range(counts[C_BOOK]):
        o = book[k]
        if orders[o]["submit_index"] == i:
            sid = orders[o]["sid"]
            q = orders[o]["quantity"] - orders[o]["filled"]
            row = orders[o]["decision_row"]
            price = bars.close[row] if row >= 0 else marks[sid]
            if seen[sid] != i:
                seen[sid] = i
                longs[sid] = max(qty[sid], 0.0)
            counted = math.isfinite(price)
            if counted and q < 0 and not allow_short:
                q = submission_quantity_nb(q, longs[sid], allow_short)
                longs[sid] += q
                counted = q != 0
            elif counted and q > 0:
                longs[sid] += q
            if counted:
                if cost_params[COMM_KIND] == COMM_TIERED:
                    commission = tiered_commission_nb(tables.tiers, tier_copy, q, price, month)
                else:
                    commission = fill_commission_nb(
                        cost_params[COMM_KIND], cost_params[COMM_A], cost_params[COMM_B],
                        cost_params[COMM_C], q, price,
                    )  # fmt: skip
                cost = q * price + commission
                if submission_refused_nb(cost, cash, params[P_TOL]):
                    if q > 0:
                        longs[sid] -= q
                    finish_order(
                        o, S_REJECTED, SR_SUBMISSION_CASH, EV_REJECTED, i, orders, counts,
                        state.pending, state.aux_i, records.rejections,
                    )  # fmt: skip
                    continue
                cash -= cost
        book[kept] = o
        kept += 1
    counts[C_BOOK] = kept


@njit
def _fill_at_close(
    i: int, lo: int, bars: Bars, tables: Tables, state: RunState, records: RunRecords, ids: IntArray
) -> bool:
    """Step 5 with ``fill="close"`` (:func:`engine.broker.passes.fill_at_close`): the orders
    accepted at bar ``i`` (the book's orders submitted at ``i``) whose symbol has a bar now
    fill at its close (under a volume cap, their capped part); the entry levels of the
    positions they open or increase are set live from bar ``i + 1`` (the ATR known at the
    fill: the fill bar's own). ``ids``: scratch, int64, at least ``n_symbols + 1`` long.
    False when such an entry is short (the Python loop runs)."""
    book, counts, orders = state.book, state.counts, records.orders
    istate, fstate = state.istate, state.fstate
    cap = tables.params[P_VOLUME_CAP]
    fractional = tables.params[P_FRACTIONAL] != 0.0
    kept = 0
    n = 0
    for k in range(counts[C_BOOK]):
        o = book[k]
        sid = orders[o]["sid"]
        row = istate[LAST_ROW, sid]
        if orders[o]["submit_index"] == i and row >= lo:
            remaining = orders[o]["quantity"] - orders[o]["filled"]
            if cap != 0.0:
                remaining = participation_quantity_nb(remaining, cap, bars.volume[row], fractional)
            if remaining != 0:
                _fill(o, remaining, bars.close[row], row, i, False, bars, tables, state, records)
                if istate[ENTRY_PENDING, sid]:
                    ids[n] = sid
                    n += 1
            if not _working(orders[o]["status"]):
                continue
        book[kept] = o
        kept += 1
    counts[C_BOOK] = kept
    live = levels_active_from_nb(i, tables.params[P_ENTRY_BAR] != 0.0, True)
    for k in range(n):
        if fstate[QTY, ids[k]] < 0.0:
            return False
    for k in range(n):
        sid = ids[k]
        if fstate[QTY, sid] != 0.0:
            # the ATR / regime known at a close fill: the fill bar's own row
            row = istate[LAST_ROW, sid]
            kernels.set_entry_levels(sid, fstate, istate, live, tables.rules, tables.inputs, row)
    return True


@njit
def _cooldown(new: IntArray, i: int, bars_: int, state: RunState, records: RunRecords) -> int:
    """``reentry_cooldown_bars`` (``bars_``) at hook B (:func:`engine.broker.hooks.apply_cooldown`):
    the new orders ``new`` (ids) in the direction of a position a stop-loss exit closed in
    the last ``bars_`` bars are rejected (``reentry_cooldown``); the others are moved to the
    front of ``new`` in order; returns their number."""
    orders, aux_i, aux_f = records.orders, state.aux_i, state.aux_f
    last = i - bars_
    kept = 0
    for k in range(new.size):
        o = new[k]
        sid = orders[o]["sid"]
        if (
            aux_i[A_STOPPED_AT, sid] > last
            and orders[o]["quantity"] * aux_f[B_STOPPED_DIR, sid] > 0
        ):
            finish_order(
                o, S_REJECTED, SR_COOLDOWN, EV_REJECTED, i, orders, state.counts,
                state.pending, aux_i, records.rejections,
            )  # fmt: skip
            continue
        new[kept] = o
        kept += 1
    return kept


@njit
def _net_working(sid: int, i: int, state: RunState, records: RunRecords) -> None:
    """``TopNStrategy``'s close of ``sid`` under a volume participation cap
    (:func:`engine.broker.intake.close_position`): the symbol's working strategy market
    orders of earlier bars are cancelled (``netted_by_close_position``) and leave the book."""
    book, counts, orders = state.book, state.counts, records.orders
    kept = 0
    for k in range(counts[C_BOOK]):
        o = book[k]
        remaining = orders[o]["quantity"] - orders[o]["filled"]
        if (
            orders[o]["sid"] == sid
            and orders[o]["reason"] == R_STRATEGY
            and netted_by_close_nb(orders[o]["submit_index"], i, remaining, 0.0)
        ):
            finish_order(
                o, S_CANCELLED, SR_NETTED_CLOSE, EV_CANCELLED, i, orders, counts,
                state.pending, state.aux_i, records.rejections,
            )  # fmt: skip
            continue
        book[kept] = o
        kept += 1
    counts[C_BOOK] = kept


@njit
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
    counts: IntArray,
    rejections: RecordArray,
) -> None:
    """A risk rule's market exit (reason code ``reason``) of ``quantity`` shares of ``sid``
    (NaN: the whole position; at most the position), queued for the next open and accepted;
    nothing if an exit is already queued; a rejection row (``reject_unplaced``) if the size
    rounds to 0 shares."""
    if aux_i[A_EXIT_PENDING, sid]:
        return
    pos = fstate[QTY, sid]
    if pos == 0:
        return
    size = abs(pos)
    if not math.isnan(quantity) and not abs(pos) < abs(quantity):
        size = abs(quantity)
    wanted = size
    size = round_quantity_nb(wanted, fractional)
    if size <= 0:
        if zero_shares_order_nb(wanted, fractional):
            reject_unplaced(sid, -math.copysign(wanted, pos), i, reason, counts, rejections)
        return
    o = new_order(
        sid, -math.copysign(size, pos), T_MARKET, reason, i, row, math.nan, math.nan,
        orders, counts, pending,
    )  # fmt: skip
    set_status(orders, o, S_ACCEPTED)
    aux_i[A_EXIT_PENDING, sid] = 1
    book[counts[C_BOOK]] = o
    counts[C_BOOK] += 1
