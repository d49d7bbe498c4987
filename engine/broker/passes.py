"""The fill passes of one bar: working orders at the open, levels, and the close.

Fill rules (``fill_price`` before slippage, always within the bar's [low, high]):

- market: the bar's open (step 1) or close (step 5, ``fill="close"``);
- limit buy (sell): the open if it is at or below (above) the limit, else the limit if the low
  (high) reaches it;
- stop buy (sell): the open if it is at or above (below) the stop (a gap), else the stop if the
  high (low) reaches it;
- stop-limit: the stop triggers as above; it then fills at the trigger price if that satisfies
  the limit, otherwise it works as a limit order from the next bar;
- trailing stop: a stop whose level trails the best price since submission (the latest close at
  submission, then each bar's high for a sell / low for a buy, updated after the bar's check);
- stop-loss / take-profit levels of open positions: as stop / limit orders for the whole
  position, checked after the open's fills; the stop-loss wins when one bar touches both.

The prices themselves are the core's (:mod:`engine.core.matching`). Order of one bar's events
(``ExecutionConfig.bar_event_order``): ``chronological`` = market orders at the open, then
resting orders, then levels; ``stops_first`` = resting orders and levels against the whole bar,
then the market orders at the open (a look-ahead matching Backtrader and VectorBT callbacks).
See :class:`engine.ExecutionConfig` for ``exit_conflict``, ``stop_activation``,
``cash_check``, ``reentry_cooldown_bars`` and ``cash_tolerance``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from engine.broker.accounting import execute
from engine.broker.hooks import flush_entries, risk_exit
from engine.broker.lane import lane_step
from engine.broker.state import (
    ACCEPTED,
    CANCELLED,
    DAY,
    EXPIRED,
    LIMIT,
    MARKET,
    STOP,
    STOP_LIMIT,
    TRAILING_STOP,
    BrokerState,
    trail_stop_level,
)
from engine.core import layout
from engine.core.ledger import closed_by_level_exit
from engine.core.matching import (
    level_exit_price,
    limit_fill_price,
    participation_quantity,
    stop_fill_price,
    stop_limit_fill_price,
)
from engine.orders import ACTIVE, Order
from engine.risk import kernels


def fill_pending_at_open(
    broker: BrokerState, select: Callable[[Order], bool] | None = None
) -> None:
    """Step 1a: working orders against this bar (submission order).

    ``select``: only orders for which it is true are matched now; the others stay in the
    book in their place (used by the ``stops_first`` bar event order).
    """
    if not broker.book:
        return
    book = broker.book
    kept: list[Order] = []
    broker.book = kept  # bracket children spawned by this step's fills are appended too
    open_ = broker.data.open
    last_row = broker.last_row
    lo = broker.lo
    uncapped = broker._volume_cap is None
    closed_now = broker._stop_closed
    for order in book:
        if order.status not in ACTIVE:
            continue
        if select is not None and not select(order):
            kept.append(order)
            continue
        sid = order.sid
        kind = order.order_type
        if (
            closed_now
            and kind is MARKET
            and sid in closed_now
            and closed_by_level_exit(order.quantity, closed_now[sid], broker.qty.item(sid))
        ):
            # exit_conflict="stop_wins": the level exit of this bar took precedence
            broker._finish(order, CANCELLED, "position_closed_by_stop", "cancelled")
            continue
        row: int = last_row.item(sid)
        if row < lo:  # no bar for the symbol now
            kept.append(order)
            continue
        if kind is not MARKET:
            match_order(broker, order, row)
        elif uncapped:
            # fill_order without a volume cap: the whole remainder at the open
            remaining = order.quantity - order.filled
            if remaining != 0:
                execute(broker, order, remaining, open_.item(row), row)
        else:
            fill_order(broker, order, row, open_.item(row))
        if order.status in ACTIVE:
            if order.tif is DAY:
                broker._finish(order, EXPIRED, "day_order_not_filled", "expired")
            else:
                kept.append(order)
    if broker._new_entries:
        flush_entries(broker)


def match_order(broker: BrokerState, order: Order, row: int) -> None:
    """Match the working non-market ``order`` against data row ``row`` (the raw price from
    :mod:`engine.core.matching`; a trailing stop ratchets when it is not hit) and fill it."""
    data = broker.data
    o = float(data.open[row])
    h = float(data.high[row])
    lo = float(data.low[row])
    buy = order.quantity > 0
    kind = order.order_type
    raw = math.nan
    if kind is MARKET:
        raw = o
    elif kind is LIMIT or (kind is STOP_LIMIT and order.triggered):
        raw = limit_fill_price(buy, order.limit_price, o, h, lo)
    elif kind is STOP:
        raw = stop_fill_price(buy, order.stop_price, o, h, lo)
    elif kind is STOP_LIMIT:
        trigger = stop_fill_price(buy, order.stop_price, o, h, lo)
        if not math.isnan(trigger):
            order.triggered = True
            raw = stop_limit_fill_price(buy, trigger, order.limit_price)
    elif kind is TRAILING_STOP:
        order.stop_price = trail_stop_level(order)
        raw = stop_fill_price(buy, order.stop_price, o, h, lo)
        if math.isnan(raw):
            # ratchet with this bar's extreme, effective from the next bar
            if buy:
                order.trail_extreme = min(order.trail_extreme, lo)
            else:
                order.trail_extreme = max(order.trail_extreme, h)
            order.stop_price = trail_stop_level(order)
    if not math.isnan(raw):
        fill_order(broker, order, row, raw)


def fill_order(broker: BrokerState, order: Order, row: int, raw: float) -> None:
    """Fill what remains of ``order`` at raw price ``raw`` on data row ``row``, at most the
    volume participation cap's share of the bar's volume (not for ``end_of_data`` closes)."""
    remaining = order.quantity - order.filled
    cap = broker._volume_cap
    if cap is not None and order.reason != "end_of_data":
        q = participation_quantity(remaining, cap, broker.data.volume.item(row), broker.fractional)
    else:
        q = remaining
    if q == 0:
        return
    execute(broker, order, q, raw, row)


def chronological_step(broker: BrokerState) -> None:
    """Step 1 under ``bar_event_order="chronological"``: the market orders at the open (in
    submission order), then resting orders against the bar (in submission order; a gap
    fills them at the open price), then position levels."""
    book = broker.book
    if book:
        mixed = False
        for order in book:
            if order.order_type is not MARKET:
                mixed = True
                break
        if mixed:
            now = broker.i
            fill_pending_at_open(broker, lambda order: order.order_type is MARKET)
            # not the bracket children spawned by this bar's fills: they start next bar
            fill_pending_at_open(
                broker, lambda order: order.order_type is not MARKET and order.submit_index < now
            )
        else:
            fill_pending_at_open(broker)
    if broker._lane is not None:  # the book is empty: the lane's orders are its own
        lane_step(broker, broker._lane)
        return
    if broker._kernel is None:
        check_levels(broker)
        return
    # compiled rules: the level check and, when it touches nothing, the bar's marks and
    # hook C in one call (update_marks then has nothing left to do)
    held = broker.held()
    if held.size == 0:
        return
    data = broker.data
    n = kernels.check_mark_bar_basic_rules(
        broker.lo, broker.hi, broker.i,
        data.sym_id, data.close, data.high, data.low, data.ordinal,
        held, broker.fstate, broker._istate, broker._rules,
    )  # fmt: skip
    if n > 0:
        fill_level_hits(broker, n)
    else:
        broker._kernel_exits = -1 - n
        broker._marked = broker.i


def stops_first_step(broker: BrokerState) -> None:
    """Step 1 under ``bar_event_order="stops_first"`` (see :class:`ExecutionConfig`).

    Resting orders, then position levels, against the whole bar; then the market orders at
    the open; then, if anything was left for later (bracket children and levels of positions
    whose queued exit did not fill, ``entry_bar`` levels of the open's entries), those.
    """
    deferred = broker._deferred
    held_exits: list[int] = []
    if broker.book and not broker._stop_wins:
        # exit_conflict="open_sell_wins": a queued market exit suspends the levels
        qty = broker.qty
        for order in broker.book:
            if order.order_type is MARKET and order.is_active:
                sid = order.sid
                if order.quantity * qty[sid] < 0 and broker.last_row[sid] >= broker.lo:
                    deferred[sid] = 1
                    held_exits.append(sid)
    skipped: set[int] = set()
    broker._closed_now = {}
    try:
        if broker.book:

            def resting(order: Order) -> bool:
                if order.order_type is MARKET:
                    return False
                if order.parent_id >= 0 and deferred[order.sid]:
                    skipped.add(order.order_id)
                    return False
                return True

            fill_pending_at_open(broker, resting)
        check_levels(broker)  # not the deferred positions
        broker._stop_closed = broker._closed_now
        broker._closed_now = None
        if broker.book:
            fill_pending_at_open(broker, lambda order: order.order_type is MARKET)
        if skipped and broker.book:
            # suspended bracket children of positions whose queued exit did not fill
            fill_pending_at_open(broker, lambda order: order.order_id in skipped)
    finally:
        broker._closed_now = None
        broker._stop_closed = None
        if held_exits:
            deferred[held_exits] = 0
    if held_exits or broker._entry_bar:
        check_levels(broker)


def check_levels(broker: BrokerState) -> None:
    """Step 1b: stop-loss / take-profit levels of open positions against this bar (not
    those of positions marked in ``_deferred``)."""
    if not broker._levels_set:
        return
    held = broker.held()
    if held.size == 0:
        return
    data = broker.data
    n = kernels.level_hits(
        held,
        broker.lo,
        broker.i,
        data.low,
        data.high,
        broker.fstate,
        broker._istate,
        broker._rules,
    )
    if n:
        fill_level_hits(broker, n)


def fill_level_hits(broker: BrokerState, n: int) -> None:
    """Exit the ``n`` positions whose levels the compiled check found touched (ids, stop
    or target, level in the kernel's output buffers), in that order."""
    data = broker.data
    sids = broker._istate[layout.OUT_SID, :n].tolist()
    stops = broker._istate[layout.OUT_CODE, :n].tolist()
    levels = broker.fstate[layout.OUT_LEVEL, :n].tolist()
    for sid, stop_hit, level in zip(sids, stops, levels, strict=True):
        pos = float(broker.qty[sid])
        if pos == 0:
            continue
        row = int(broker.last_row[sid])
        o = float(data.open[row])
        is_long = pos > 0
        if stop_hit:
            kind, reason = STOP, broker._rule_names[broker._stop_rule[sid]] or "stop_loss"
        else:
            kind, reason = LIMIT, broker._rule_names[broker._tp_rule[sid]] or "take_profit"
        raw = level_exit_price(is_long, bool(stop_hit), level, o)
        order = broker._new_order(
            sid,
            -pos,
            order_type=kind,
            reason=reason,
            submit_index=max(broker.i - 1, 0),
            decision_row=int(data.prev_row[row]),
            stop_price=level if kind is STOP else math.nan,
            limit_price=level if kind is LIMIT else math.nan,
        )
        order.transition(ACCEPTED)
        execute(broker, order, order.quantity, raw, row)
        if kind is STOP and broker._cooldown and broker.qty[sid] == 0:
            broker._stopped_at[sid] = broker.i
            broker._stopped_dir[sid] = 1.0 if is_long else -1.0


def update_marks(broker: BrokerState) -> bool:
    """Step 2 prelude: marks <- this bar's closes; MFE/MAE extremes <- highs/lows. With the
    compiled rules, also hook C for them (trailing levels, time exits).

    Returns True when hook C is done (compiled rules); False when the engine runs it (no
    compiled rules, or a short position has a bar now).
    """
    data = broker.data
    if broker._kernel is None:
        if broker._marked == broker.i:  # marked by the lane's step (lane_step)
            return False
        kernels.mark_bar(
            broker.lo, broker.hi, data.sym_id, data.close, data.high, data.low,
            broker.held(), broker.fstate, broker._istate,
        )  # fmt: skip
        return False
    if broker._marked == broker.i:
        n = broker._kernel_exits  # marked with the level check (chronological_step)
    else:
        n = kernels.mark_bar_basic_rules(
            broker.lo, broker.hi, broker.i,
            data.sym_id, data.close, data.high, data.low, data.ordinal,
            broker.held(), broker.fstate, broker._istate, broker._rules,
        )  # fmt: skip
    if n < 0:
        return False
    if n:
        sids = broker._istate[layout.OUT_SID, :n].tolist()
        codes = broker._istate[layout.OUT_CODE, :n].tolist()
        names = broker._rule_names
        for sid, code in zip(sids, codes, strict=True):
            risk_exit(broker, sid, None, names[code], int(broker.last_row[sid]))
    return True


def fill_at_close(broker: BrokerState) -> None:
    """Step 5: with ``fill="close"``, this bar's market orders fill at its close."""
    accepted = broker._accepted_this_bar
    if not accepted:
        return
    broker._accepted_this_bar = []
    if not broker._fill_at_close:
        return
    data = broker.data
    broker._closing = True
    try:
        for order in accepted:
            if not order.is_active or order.order_type is not MARKET:
                continue
            row = broker._row(order.sid)
            if row >= 0:
                fill_order(broker, order, row, float(data.close[row]))
                if order.is_active and order.tif is DAY:
                    broker._finish(order, EXPIRED, "day_order_not_filled", "expired")
        flush_entries(broker)
    finally:
        broker._closing = False
    broker.book = [o for o in broker.book if o.is_active]


def close_all(broker: BrokerState, reason: str) -> None:
    """Close every open position at its latest close (used for ``close_at_end``)."""
    broker._closing = True
    try:
        for sid in broker.held().tolist():
            pos = float(broker.qty[sid])
            if pos == 0:
                continue
            row = int(broker.last_row[sid])
            order = broker._new_order(
                sid, -pos, reason=reason, submit_index=broker.i, decision_row=row
            )
            order.transition(ACCEPTED)
            execute(broker, order, -pos, float(broker.marks[sid]), row)
    finally:
        broker._closing = False


def close_at(
    broker: BrokerState, sid: int, pos: float, price: float, row: int, reason: str
) -> None:
    """Close the ``pos`` shares of ``sid`` at ``price`` on data row ``row`` (an order
    tagged ``reason``; used for delistings)."""
    broker._closing = True
    try:
        order = broker._new_order(sid, -pos, reason=reason, submit_index=broker.i, decision_row=row)
        order.transition(ACCEPTED)
        execute(broker, order, -pos, price, row)
    finally:
        broker._closing = False
