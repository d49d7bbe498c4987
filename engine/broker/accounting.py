"""One fill's execution and bookkeeping: price, cash check, cash, position, trades, records.

:func:`execute` is the per-fill hot path of the Python driver: slippage and commission objects
give the fill's price and commission, then every decision is the core ledger's
(:mod:`engine.core.ledger`, in its Python form): a sell beyond the position is refused with
``short_not_allowed`` when ``allow_short=False``; a buy with ``insufficient_cash`` when
``price × qty + commission`` exceeds the cash by more than ``cash_tolerance``. Both are
recorded, never shrunk. A fill then opens, adds to, reduces, closes or flips the symbol's
round trip (kept in the core's trade matrices ``aux_i`` / ``aux_f``,
:mod:`engine.core.layout`), appends its fill row (and a trade row for each closed part),
spawns the bracket children of a filled parent and serves the fill listeners (hook D,
``Strategy.on_fill``).
"""

from __future__ import annotations

import math

from engine.broker.state import (
    ACCEPTED,
    EPS,
    FILLED,
    LIMIT,
    MARKET,
    PARTIALLY_FILLED,
    REJECTED,
    STOP,
    TYPE_NAMES,
    BrokerState,
)
from engine.core.layout import (
    A_DIDX,
    A_DROW,
    A_ENTRY_INDEX,
    A_OPEN,
    B_COMM,
    B_DIR,
    B_QTY,
    B_SLIP,
)
from engine.core.ledger import (
    P_ADD,
    P_CLOSE,
    P_FLIP,
    P_OPEN,
    added_average,
    cash_refused,
    closed_part,
    fill_amounts,
    flip_rest,
    order_done,
    position_step,
    short_refused,
)
from engine.data import BarView
from engine.events import Fill
from engine.orders import Order


def execute(broker: BrokerState, order: Order, q: float, raw: float, row: int) -> Fill | None:
    """Fill ``q`` shares of ``order`` at raw price ``raw`` on market-data row ``row``."""
    # hot path (one call per fill): state read as Python scalars (``.item``), each array
    # element read once; the arithmetic is the same float64 arithmetic as on NumPy scalars
    sid = order.sid
    kind = order.order_type
    kname = TYPE_NAMES[kind]
    if broker._no_slippage:
        price = raw
    else:
        price = broker._config.slippage.fill_price(raw, q, BarView(broker.data, row), kname)
    pos: float = broker.qty.item(sid)
    if short_refused(q, pos, broker._allow_short):
        broker._finish(order, REJECTED, "short_not_allowed", "rejected")
        return None
    commission = 0.0 if broker._free else broker._commission.compute(q, price, broker.now_us)
    if cash_refused(q, price, commission, broker.cash, broker._cash_tol):
        broker._finish(order, REJECTED, "insufficient_cash", "rejected")
        return None
    cost, slip = fill_amounts(q, raw, price, commission)
    broker.cash -= cost
    fill_id = broker.n_fills
    broker.n_fills = fill_id + 1
    broker._fills_today += 1
    i = broker.i
    reason = order.reason
    broker._fill_rows.append(
        (
            order.order_id,
            i,
            sid,
            q,
            raw,
            price,
            commission,
            slip,
            kname,
            reason,
        )
    )
    filled = order.filled + q
    order.filled = filled
    if kind is MARKET:
        pending = broker.pending
        pending[sid] = pending.item(sid) - q
    done = order_done(order.quantity, filled)
    order.transition(FILLED if done else PARTIALLY_FILLED)
    if done and reason != "strategy":
        broker._exit_pending[sid] = 0
    if order.oco_id >= 0:
        sibling = broker.orders[order.oco_id]
        if sibling.is_active:
            if done:
                broker.cancel(sibling, "oco_sibling_filled")
            else:
                sibling.quantity -= q
    marks = broker.marks
    if math.isnan(marks.item(sid)):
        marks[sid] = price
    step, new = position_step(pos, q)
    if step == P_OPEN:  # opening from flat (most fills): no apply_position call
        open_trade(broker, sid, q, price, commission, slip, order, row)
        broker.qty[sid] = new
        increased = True
    else:
        increased = apply_position(
            broker, sid, pos, q, step, new, price, commission, slip, order, row
        )
    broker._held = None
    if broker._no_fill_hooks:  # no cooldown, fill listeners or entry rules to serve
        if done and (math.isfinite(order.take_profit) or math.isfinite(order.stop_loss)):
            spawn_bracket(broker, order)
        return None
    if broker._cooldown and reason == "bracket_stop_loss" and broker.qty.item(sid) == 0:
        broker._stopped_at[sid] = i
        broker._stopped_dir[sid] = -1.0 if q > 0 else 1.0

    fill: Fill | None = None
    if broker._wants_fill_events:
        fill = Fill(
            fill_id,
            order.order_id,
            broker._now,
            order.symbol,
            q,
            raw,
            price,
            commission,
            slip,
            kname,
            reason,
            i,
        )
    if increased and broker._has_entry_rules:
        # initial levels are set for all new entries of this step at once
        # (flush_entries); remember what was known at the fill (the compiled rules of a
        # long-only run read no row: -1). Entries at the open of a long-only run with
        # compiled rules: the next compiled step of this bar sets them.
        if broker._defer_entries and not broker._closing:
            broker._entry_pending[sid] = 1
        elif broker._entry_rows_unused:
            broker._new_entries[sid] = -1
        else:
            broker._new_entries[sid] = row if broker._closing else int(broker.data.prev_row[row])
    if fill is not None and broker._risk_sees_fills and broker._risk is not None:
        broker._risk.record_fill(fill)
    if done and (math.isfinite(order.take_profit) or math.isfinite(order.stop_loss)):
        spawn_bracket(broker, order)
    if fill is not None and broker._on_fill is not None:
        broker._on_fill(fill)
    return fill


def spawn_bracket(broker: BrokerState, parent: Order) -> None:
    """Accept the take-profit (limit) and stop-loss (stop) children of the filled ``parent``,
    one-cancels-other when both are set, for its filled quantity."""
    sid = parent.sid
    qty = -parent.filled
    children: list[Order] = []
    if math.isfinite(parent.take_profit):
        children.append(
            broker._new_order(
                sid,
                qty,
                order_type=LIMIT,
                reason="bracket_take_profit",
                submit_index=broker.i,
                decision_row=parent.decision_row,
                limit_price=parent.take_profit,
                parent_id=parent.order_id,
            )
        )
    if math.isfinite(parent.stop_loss):
        children.append(
            broker._new_order(
                sid,
                qty,
                order_type=STOP,
                reason="bracket_stop_loss",
                submit_index=broker.i,
                decision_row=parent.decision_row,
                stop_price=parent.stop_loss,
                parent_id=parent.order_id,
            )
        )
    if len(children) == 2:
        children[0].oco_id = children[1].order_id
        children[1].oco_id = children[0].order_id
    # the stop-loss child goes first in the book: when one bar touches both, the stop wins
    for child in reversed(children):
        child.transition(ACCEPTED)
        broker.book.append(child)
    broker._children.setdefault(sid, []).extend(children)


def apply_position(
    broker: BrokerState,
    sid: int,
    pos: float,
    q: float,
    step: int,
    new: float,
    price: float,
    commission: float,
    slip: float,
    order: Order,
    row: int,
) -> bool:
    """Update position (``pos`` shares before this fill, ``new`` after it), average
    price and trade records for a fill that is not an open: ``step`` is
    :func:`engine.core.ledger.position_step`'s ``P_ADD``, ``P_REDUCE``, ``P_CLOSE`` or
    ``P_FLIP``; True if exposure grew."""
    aux_f = broker._aux_f
    aux_i = broker._aux_i
    best_arr = broker._best
    worst_arr = broker._worst
    if step == P_ADD:
        broker._avg[sid] = added_average(broker._avg.item(sid), pos, price, q)
        aux_f[B_QTY, sid] += abs(q)
        aux_f[B_COMM, sid] += commission
        aux_f[B_SLIP, sid] += slip
        best_arr[sid] = max(best_arr.item(sid), price)
        worst_arr[sid] = min(worst_arr.item(sid), price)
        broker.qty[sid] = new
        return True
    entry: float = broker._avg.item(sid)
    direction: float = aux_f.item(B_DIR, sid)
    closing, part_comm, part_slip, exit_comm, exit_slip, pnl = closed_part(
        pos,
        q,
        price,
        commission,
        slip,
        entry,
        direction,
        aux_f.item(B_COMM, sid),
        aux_f.item(B_SLIP, sid),
    )
    aux_f[B_COMM, sid] -= part_comm
    aux_f[B_SLIP, sid] -= part_slip
    best: float = max(best_arr.item(sid), price)
    worst: float = min(worst_arr.item(sid), price)
    broker._trade_rows.append(
        (
            sid,
            direction,
            aux_i.item(A_ENTRY_INDEX, sid),
            broker.i,
            entry,
            price,
            closing,
            part_comm,
            exit_comm,
            part_slip,
            exit_slip,
            order.reason,
            broker.data.ordinal.item(row) - broker._entry_ordinal.item(sid),
            best,
            worst,
            aux_i.item(A_DROW, sid),
            aux_i.item(A_DIDX, sid),
            order.decision_row,
            order.submit_index,
            broker._stop.item(sid),
            broker._tp.item(sid),
            closing < abs(pos) - EPS,
        )
    )
    broker._realized += pnl
    aux_f[B_QTY, sid] -= closing
    broker.qty[sid] = new
    if step == P_CLOSE:
        close_trade(broker, sid)
        return False
    if step == P_FLIP:  # through zero: the rest opens a new trade
        close_trade(broker, sid)
        rest_q, rest_comm, rest_slip = flip_rest(q, closing, commission, slip)
        open_trade(broker, sid, rest_q, price, rest_comm, rest_slip, order, row)
        return True
    return False


def open_trade(
    broker: BrokerState,
    sid: int,
    q: float,
    price: float,
    commission: float,
    slip: float,
    order: Order,
    row: int,
) -> None:
    """Open the round trip of ``q`` shares of ``sid`` at ``price`` (fill on data row ``row``):
    entry, average price and extremes set, levels cleared."""
    broker._entry_ordinal[sid] = broker.data.ordinal.item(row)
    aux_i = broker._aux_i
    aux_i[A_OPEN, sid] = 1
    aux_i[A_ENTRY_INDEX, sid] = broker.i
    aux_i[A_DROW, sid] = order.decision_row
    aux_i[A_DIDX, sid] = order.submit_index
    aux_f = broker._aux_f
    aux_f[B_DIR, sid] = math.copysign(1.0, q)
    aux_f[B_QTY, sid] = abs(q)
    aux_f[B_COMM, sid] = commission
    aux_f[B_SLIP, sid] = slip
    broker._avg[sid] = price
    broker._best[sid] = price
    broker._worst[sid] = price
    broker._stop[sid] = math.nan
    broker._tp[sid] = math.nan
    broker._stop_rule[sid] = 0
    broker._tp_rule[sid] = 0


def close_trade(broker: BrokerState, sid: int) -> None:
    """Forget the closed round trip of ``sid``: average price, levels and extremes cleared,
    its working bracket children cancelled (``position_closed``)."""
    if broker._closed_now is not None:
        broker._closed_now[sid] = broker._aux_f.item(B_DIR, sid)
    broker._aux_i[A_OPEN, sid] = 0
    broker._avg[sid] = 0.0
    broker._stop[sid] = math.nan
    broker._tp[sid] = math.nan
    broker._best[sid] = math.nan
    broker._worst[sid] = math.nan
    children = broker._children.pop(sid, None) if broker._children else None
    if children:
        for child in children:
            if child.is_active:
                broker.cancel(child, "position_closed")
