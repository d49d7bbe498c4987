"""The broker's side of the risk hooks: hook B (new orders) and hook C (open positions).

Hook B (:func:`validate_new_orders`, step 4): the re-entry cooldown, then each new order of the
strategy passed, shrunk or rejected by the risk manager's order rules against the portfolio
plus the orders accepted before it; :func:`check_submission_cash` for
``cash_check="submission"``. Hook C: the open positions as a
:class:`engine.risk.batch.PositionBatch` (:func:`position_batch`), the rules' level updates
and exits applied (:func:`apply_actions`, :func:`risk_exit`), the initial levels of new entries
(:func:`flush_entries`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np

from engine.broker.state import ACCEPTED, LIMIT, MARKET, REJECTED, SUBMITTED, BrokerState
from engine.core.ledger import (
    levels_active_from,
    reentry_refused,
    submission_quantity,
    submission_refused,
    zero_shares_order,
)
from engine.data import IntArray
from engine.orders import Order
from engine.risk import kernels
from engine.risk.batch import PositionActions, PositionBatch
from engine.risk.context import PortfolioSnapshot, RiskContext
from engine.risk.decision import OrderAction


def context(
    broker: BrokerState,
    sid: int,
    row: int,
    snapshot: PortfolioSnapshot | Callable[[], PortfolioSnapshot],
) -> RiskContext:
    """The risk context of the open position in ``sid`` on data row ``row`` (-1: no bar
    now)."""
    trade = broker.trades[sid]
    data = broker.data
    return RiskContext(
        data=data,
        timestamp=broker._now,
        bar_index=broker.i,
        symbol=str(data.symbols[sid]),
        sid=sid,
        row=row,
        quantity=float(broker.qty[sid]),
        entry_price=float(broker._avg[sid]),
        entry_time=data.datetimes[trade.entry_index],
        bars_held=int(data.ordinal[row]) - trade.entry_ordinal if row >= 0 else 0,
        max_price=float(broker._best[sid]),
        min_price=float(broker._worst[sid]),
        stop_loss=float(broker._stop[sid]),
        take_profit=float(broker._tp[sid]),
        portfolio=snapshot,
    )


def held_with_bar(broker: BrokerState, held: IntArray) -> tuple[IntArray, IntArray]:
    """The held symbol ids that have a bar now, and their data rows."""
    rows = broker._rows_now(held)
    ok = rows >= 0
    return held[ok], rows[ok]


def position_batch(
    broker: BrokerState,
) -> tuple[PositionBatch, Callable[[], list[RiskContext]]] | None:
    """Hook C input: open positions whose symbol has a bar now, as arrays, plus a factory
    of per-position contexts (same order) sharing one lazily built portfolio snapshot."""
    held = broker.held()
    if held.size == 0:
        return None
    sids, rows = held_with_bar(broker, held)
    if sids.size == 0:
        return None
    return batch_and_contexts(broker, sids, rows)


def batch_and_contexts(
    broker: BrokerState, sids: IntArray, rows: IntArray
) -> tuple[PositionBatch, Callable[[], list[RiskContext]]]:
    """The positions ``sids`` (data rows ``rows``) as a batch, and a lazy builder of their
    per-position contexts; both share one portfolio snapshot, taken on first use."""
    shared: list[PortfolioSnapshot] = []

    def snapshot() -> PortfolioSnapshot:
        if not shared:
            shared.append(broker.snapshot())
        return shared[0]

    batch = PositionBatch(
        data=broker.data,
        timestamp=broker._now,
        bar_index=broker.i,
        sids=sids,
        rows=rows,
        source=broker._batch_source,
        portfolio=snapshot,
        long_only=broker._long_only,
    )

    def contexts() -> list[RiskContext]:
        return [
            context(broker, sid, row, snapshot)
            for sid, row in zip(sids.tolist(), rows.tolist(), strict=True)
        ]

    return batch, contexts


def flush_entries(broker: BrokerState) -> None:
    """Initial stop/take-profit levels for the positions this step's fills opened or
    increased (active from the next bar), all at once."""
    entries = broker._new_entries
    if not entries or broker._risk is None:
        return
    broker._new_entries = {}
    sids = np.fromiter(entries, dtype=np.int64, count=len(entries))
    # stop_activation="entry_bar": levels of step-1 fills are live on this bar already
    active_from = levels_active_from(broker.i, broker._entry_bar, broker._closing)
    if broker._closing and broker._config.stop_activation == "second_bar":
        active_from = broker.i + 2  # Backtrader cheat-on-close: notified a bar late
    kernel = broker._kernel
    if kernel is not None and kernels.entry_levels(
        sids, broker.fstate, broker._istate, active_from, broker._rules
    ):
        return
    rows = np.fromiter(entries.values(), dtype=np.int64, count=len(entries))
    open_ = broker.qty[sids] != 0
    if not open_.all():
        sids, rows = sids[open_], rows[open_]
        if sids.size == 0:
            return
    batch, contexts = batch_and_contexts(broker, sids, rows)

    actions = broker._risk.entry_levels(batch, contexts)
    if actions.any:
        apply_actions(broker, batch, actions, active_from=active_from)


def apply_actions(
    broker: BrokerState,
    batch: PositionBatch,
    actions: PositionActions,
    active_from: int | None = None,
) -> None:
    """Hook C output: level updates (effective next bar unless ``active_from`` says
    otherwise) and exit orders."""
    sids = batch.sids
    nxt = broker.i + 1 if active_from is None else active_from
    for values, rule_names, levels, level_rules in (
        (actions.stop_loss, actions.stop_rule, broker._stop, broker._stop_rule),
        (actions.take_profit, actions.tp_rule, broker._tp, broker._tp_rule),
    ):
        if values is None or rule_names is None:
            continue
        codes = np.fromiter(
            (rule_code(broker, name) for name in rule_names.tolist()),
            dtype=np.int64,
            count=rule_names.size,
        )
        mask = np.isfinite(values)
        broker._levels_set = True
        if mask.all():
            levels[sids] = values
            level_rules[sids] = codes
            broker._level_from[sids] = nxt
        elif mask.any():
            target = sids[mask]
            levels[target] = values[mask]
            level_rules[target] = codes[mask]
            broker._level_from[target] = nxt
    if actions.flatten_all:
        for sid in broker.held().tolist():
            risk_exit(broker, sid, None, actions.flatten_all, int(broker.last_row[sid]))
    exit_ = actions.exit
    if exit_ is None or actions.exit_quantity is None or actions.exit_rule is None:
        return
    for k in np.flatnonzero(exit_).tolist():
        qty = float(actions.exit_quantity[k])
        risk_exit(
            broker,
            int(sids[k]),
            None if math.isnan(qty) else qty,
            str(actions.exit_rule[k]),
            int(batch.rows[k]),
        )


def rule_code(broker: BrokerState, name: str) -> int:
    """Code of the rule ``name`` in ``_rule_names`` (added on first use)."""
    code = broker._rule_codes.get(name)
    if code is None:
        code = broker._rule_codes[name] = len(broker._rule_names)
        broker._rule_names.append(name)
    return code


def risk_exit(broker: BrokerState, sid: int, quantity: float | None, rule: str, row: int) -> None:
    """Queue an accepted market order of the risk ``rule`` that closes ``quantity`` shares of
    the position in ``sid`` (None: all of it); none while an exit of ``sid`` is working."""
    if broker._exit_pending[sid]:
        return
    pos = float(broker.qty[sid])
    if pos == 0:
        return
    wanted = abs(pos) if quantity is None else min(abs(quantity), abs(pos))
    size = broker.round_quantity(wanted)
    if size <= 0:
        if zero_shares_order(wanted, broker.fractional):
            broker._recorder.unplaced(broker.i, sid, -math.copysign(wanted, pos), rule)
        return
    order = broker._new_order(
        sid,
        -math.copysign(size, pos),
        reason=rule,
        submit_index=broker.i,
        decision_row=row,
    )
    order.transition(ACCEPTED)
    broker._exit_pending[sid] = 1
    broker.book.append(order)
    broker._accepted_this_bar.append(order)


def validate_new_orders(broker: BrokerState) -> None:
    """Step 4 (hook B): pass, shrink or reject the strategy's new orders."""
    lane = broker._lane
    if lane is not None:
        # no risk manager, no fill at the close; every new order is the lane's (an order
        # outside it ends the lane), and no stop exit has happened (no reentry cooldown)
        lane.accept()
        return
    if not broker._new_orders:
        return
    orders = broker._new_orders
    broker._new_orders = []
    if broker._cooldown:
        apply_cooldown(broker, orders)
    risk = broker._risk
    if risk is None or not risk.order_rules:
        book = broker.book
        accepted = broker._accepted_this_bar
        for order in orders:
            if order.status is SUBMITTED:
                order.transition(ACCEPTED)
                book.append(order)
                accepted.append(order)
        return
    # while validating, `pending` holds only orders already accepted: take the new ones out
    # so each order is judged against the portfolio plus the orders accepted before it
    pending = broker.pending
    for order in orders:
        if order.status is SUBMITTED and order.order_type is MARKET:
            pending[order.sid] -= order.quantity
    snapshot = broker.snapshot()
    for order in orders:
        if order.status is not SUBMITTED:
            continue
        verdict = risk.validate_order(order, snapshot)
        if verdict.action is OrderAction.SHRINK and verdict.quantity is not None:
            new_q = broker.round_quantity(verdict.quantity)
            if new_q == 0:
                broker._finish(
                    order, REJECTED, verdict.reason, "rejected", verdict.rule, release=False
                )
                continue
            broker._recorder.rejection(
                broker.i, order, "shrunk", verdict.reason, verdict.rule, order.quantity
            )
            order.quantity = new_q
        elif verdict.action is OrderAction.REJECT:
            broker._finish(order, REJECTED, verdict.reason, "rejected", verdict.rule, release=False)
            continue
        if order.order_type is MARKET:
            pending[order.sid] += order.quantity
        order.transition(ACCEPTED)
        broker.book.append(order)
        broker._accepted_this_bar.append(order)


def apply_cooldown(broker: BrokerState, orders: list[Order]) -> None:
    """``reentry_cooldown_bars``: reject re-entries decided too soon after a stop exit."""
    now, k = broker.i, broker._cooldown
    for order in orders:
        sid = order.sid
        if order.status is SUBMITTED and reentry_refused(
            order.quantity, broker._stopped_at.item(sid), broker._stopped_dir.item(sid), now, k
        ):
            broker._finish(order, REJECTED, "reentry_cooldown", "rejected")


def check_submission_cash(broker: BrokerState) -> None:
    """``cash_check="submission"``: pseudo-execute this bar's accepted orders at their
    creation prices against the cash now; reject those that would overdraw it."""
    accepted = broker._accepted_this_bar
    if not accepted:
        return
    data = broker.data
    commission = copy.copy(broker._config.commission)  # stateful models must not advance
    allow_short = broker._config.allow_short
    cash = broker.cash
    longs: dict[int, float] = {}
    for order in accepted:
        if not order.is_active:
            continue
        sid = order.sid
        q = order.remaining
        kind = order.order_type
        if kind is MARKET:
            row = order.decision_row
            price = float(data.close[row]) if row >= 0 else float(broker.marks[sid])
        elif kind is LIMIT:
            price = order.limit_price
        else:  # stop, stop-limit (its trigger), trailing (its current stop)
            price = order.stop_price
        if not math.isfinite(price):
            continue
        if q < 0 and not allow_short:
            held = longs.get(sid, max(float(broker.qty[sid]), 0.0))
            q = submission_quantity(q, held, allow_short)
            longs[sid] = held + q
            if q == 0:
                continue
        elif q > 0:
            longs[sid] = longs.get(sid, max(float(broker.qty[sid]), 0.0)) + q
        cost = q * price + commission.compute(q, price, broker.now_us)
        if submission_refused(cost, cash, broker._cash_tol):
            if q > 0:
                longs[sid] -= q
            broker._finish(order, REJECTED, "insufficient_cash_at_submission", "rejected")
            continue
        cash -= cost
