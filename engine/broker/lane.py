"""The market-order lane: plain market orders held as the core's order records, their fills
at the open booked by the core ledger in one compiled call per bar.

In the simplest settings (no risk manager; slippage none or a fixed fraction, commission
none, a percentage, per share or per trade: :func:`_lane_cost_models`; no volume cap, fills at
the open, ``bar_event_order="chronological"``, ``cash_check="execution"``, no market mechanics
and no fill listener) every order a strategy places with a plain
``submit(symbol, quantity)`` / ``close_position`` is a market order that fills whole at its
symbol's next open. The lane keeps such orders as rows of an ``ORDER_DTYPE`` buffer
(:class:`OrderRows`, the row is the order id) and a book of row ids; the open pass is one call
of :func:`lane_open_step`, which runs :func:`engine.core.ledger.execute_fill` (the core's
cash and short checks, fill and trade records, positions) for each order in book order. The
strategy still receives :class:`engine.Order` objects: :class:`RecordOrder`, whose status,
quantities and decision row are read from and written to the order's row.

The first order outside the lane (limit, stop, trailing, bracket or ``DAY`` order) ends it for
the rest of the run (:func:`lane_off`): the working lane orders move, in their order, into the
broker's Python book, where the general passes handle them as any other order.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from engine.broker.lane_refs import LaneRefs, lane_refs
from engine.broker.lane_rows import OrderRows
from engine.compiled.cost_plan import plan_costs
from engine.core.costs import COMM_KIND, COMM_NONE, SLIP_KIND, SLIP_NONE, Costs, fill_costs
from engine.core.jit import compiled_entry, njit, njit_held
from engine.core.layout import (
    ACC_CASH,
    ACC_REALIZED,
    C_FILLS,
    LAST_ROW,
    MARK,
    QTY,
    R_STRATEGY,
    S_ACCEPTED,
    S_PARTIAL,
    S_SUBMITTED,
    SR_NONE,
    T_MARKET,
)
from engine.core.ledger import execute_fill, portfolio_value
from engine.core.records import Kind, RecordArray
from engine.costs.commission import (
    NoCommission,
    PercentageCommission,
    PerShareCommission,
    PerTradeCommission,
)
from engine.costs.slippage import FixedBpsSlippage, FixedPercentageSlippage, NoSlippage
from engine.data import FloatArray, IntArray
from engine.orders import Order
from engine.risk.kernels import mark_bar, set_last_rows

if TYPE_CHECKING:
    from engine.broker.state import BrokerState


_LANE_SLIPPAGE = (NoSlippage, FixedPercentageSlippage, FixedBpsSlippage)
_LANE_COMMISSION = (NoCommission, PercentageCommission, PerShareCommission, PerTradeCommission)


def lane_costs(broker: BrokerState) -> Costs:
    """The run's slippage and commission in the core's compiled form
    (:func:`engine.compiled.cost_plan.plan_costs`), as the lane's fills at the open charge
    them; for a run whose models the lane takes (:func:`lane_settings`)."""
    config = broker._config
    return plan_costs(broker.data, config.slippage, config.commission)


def _lane_cost_models(broker: BrokerState) -> bool:
    """True when the lane can charge the run's costs: slippage none or a fixed fraction of
    the price (``FixedPercentageSlippage``, ``FixedBpsSlippage``: they read no bar),
    commission none, a percentage, per share or per trade (no state kept between fills);
    False for any other model (a subclass too: it may price otherwise)."""
    config = broker._config
    return type(config.slippage) in _LANE_SLIPPAGE and type(config.commission) in _LANE_COMMISSION


def lane_settings(broker: BrokerState) -> bool:
    """True when the run's settings let plain market orders take the lane (module
    docstring)."""
    config = broker._config
    return (
        broker._risk is None
        and _lane_cost_models(broker)
        and broker._volume_cap is None
        and not broker._fill_at_close
        and not broker._stops_first
        and config.cash_check == "execution"
        and broker.mechanics is None
        and broker._no_fill_hooks
    )


def lane_order(broker: BrokerState, rows: OrderRows, sid: int, quantity: float) -> Order:
    """A plain GTC market order of the strategy (``submitted``) as a lane row and its
    :class:`RecordOrder` (the fields :func:`engine.orders.plain_market_order` gives)."""
    i = broker.i
    row: int = broker.last_row.item(sid) if i >= 0 else -1
    decision_row = row if row >= broker.lo else -1
    orders = broker.orders
    order_id = len(orders)
    if order_id >= rows.capacity:
        rows.ensure(order_id + 1)
    rows.rows[order_id] = rows.blank  # the fields every lane order shares
    rows.submit_index[order_id] = i
    rows.sid[order_id] = sid
    rows.decision_row[order_id] = decision_row
    rows.quantity[order_id] = quantity
    order = rows.view(order_id)
    orders.append(order)
    pending = broker.pending
    pending[sid] = pending.item(sid) + quantity
    rows.placed_now(order_id, order_id + 1)
    return order


def lane_batch(
    broker: BrokerState,
    rows: OrderRows,
    ids: IntArray | list[int],
    quantities: FloatArray | list[float] | float | None,
) -> IntArray:
    """Plain GTC market orders of the strategy for symbol ids ``ids``, in their order, each
    placed as :func:`lane_order` places one (by :func:`lane_intake`, without an
    :class:`engine.Order` object: ``broker.orders`` makes an order's view when asked):
    ``quantities`` (signed shares, one per id or one number for all) or, with ``None``, an
    order closing each symbol's position plus its working orders (none where they net to
    less than 1e-9 shares, so a symbol twice closes once). The whole of
    :meth:`engine.broker.broker.Broker.submit_batch` / ``close_positions`` while the lane
    runs (their argument checks included: one Python call per batch).

    Every id and quantity is checked before any order is placed.

    Returns
    -------
    ndarray[int64]
        The ids of the orders placed, in order.

    Raises
    ------
    ValueError
        If ``ids`` is not one-dimensional, ``quantities`` has another length than ``ids``,
        an id is outside the universe, or a quantity is not finite, is zero, or is
        fractional while fractional shares are off (nothing is placed then).
    """
    sids = batch_ids(ids)
    direct = True  # the compiled entry, for contiguous int64 ids and float64 quantities
    q = None if quantities is None else batch_quantities(sids, quantities)
    if q is None:
        each = rows.none
    elif isinstance(q, float):
        each = rows.one
        each[0] = q
    else:
        each = q
        direct = each.flags.c_contiguous
    orders = broker.orders
    first = len(orders)
    if first + sids.size > rows.capacity:
        rows.ensure(first + sids.size)
    if direct and sids.flags.c_contiguous:
        refs = rows.refs
        if refs is None:
            refs = gather_refs(broker, rows)
        placed: int = rows.intake(
            refs, sids, each, quantities is None, broker.fractional, broker.i, broker.lo, first
        )
    else:  # the dispatcher reads any layout
        placed = lane_intake(
            rows.rows, sids, each, quantities is None, broker.fractional, broker.i, broker.lo,
            first, broker.last_row, broker.qty, broker.pending,
        )  # fmt: skip
    if placed <= 0:
        if placed < 0:
            raise ValueError(intake_error(broker, sids, q, -1 - placed))
        return np.empty(0, dtype=np.int64)
    orders.add_rows(placed)
    end = first + placed
    if rows.new_to == rows.new_from:  # the first placed in this bar (OrderRows.placed_now)
        rows.new_from = first
    rows.new_to = end
    ids_ = rows.ids
    if end > ids_.size:
        ids_ = rows.ids = np.arange(2 * end, dtype=np.int64)
    return ids_[first:end].copy()  # the ids placed are consecutive


def batch_ids(ids: IntArray | list[int]) -> IntArray:
    """``ids`` of a batch call (``submit_batch``, ``close_positions``) as int64 symbol ids.

    Raises
    ------
    ValueError
        If ``ids`` is not one-dimensional.
    """
    sids = np.asarray(ids, dtype=np.int64)
    if sids.ndim != 1:
        raise ValueError(f"symbol ids must be one-dimensional, got shape {sids.shape}")
    return sids


def batch_quantities(
    sids: IntArray, quantities: FloatArray | list[float] | float
) -> FloatArray | float:
    """``quantities`` of ``submit_batch`` (signed shares) as one float for all of ``sids``
    or a float64 array with one per id.

    Raises
    ------
    ValueError
        If an array of quantities has another shape than ``sids``.
    """
    if isinstance(quantities, (int, float)):  # noqa: UP038 - a tuple is faster per call
        return float(quantities)
    q = np.asarray(quantities, dtype=np.float64)
    if q.shape != sids.shape:
        raise ValueError(f"quantities must have the shape of ids {sids.shape}, got {q.shape}")
    return q


@njit_held
def lane_intake(
    rows: RecordArray,
    sids: IntArray,
    quantities: FloatArray,
    close: bool,
    fractional: bool,
    i: int,
    lo: int,
    first: int,
    last_row: IntArray,
    qty: FloatArray,
    pending: FloatArray,
) -> int:
    """Place :func:`lane_batch`'s orders as rows ``first, first + 1, ...`` of ``rows``
    (each row written whole: the fields every lane order shares, as ``blank_rows`` sets
    them, then its decision bar ``i``, symbol, decision row and quantity; rows past them are
    never read) and add each to ``pending``.

    ``quantities``: one per id, one for all (size 1) or, with ``close``, none (each order
    closes its symbol's position plus working orders; none where they net to less than
    1e-9 shares). Every id and quantity is checked before any order is placed.

    Returns
    -------
    int
        The number of orders placed, or ``-1 - k`` when the ``k``-th entry is bad (an id
        outside the universe, or a quantity not finite, zero, or fractional while
        ``fractional`` is off); nothing is placed then.
    """
    n = sids.size
    n_symbols = qty.size
    one = quantities.size == 1
    for k in range(n):
        sid = sids[k]
        if sid < 0 or sid >= n_symbols:
            return -1 - k
        if not close:
            q = quantities[0] if one else quantities[k]
            if not math.isfinite(q) or q == 0.0 or (not fractional and q != math.floor(q)):
                return -1 - k
    m = 0
    for k in range(n):
        sid = sids[k]
        if close:
            current = qty[sid] + pending[sid]
            if abs(current) < 1e-9:
                continue
            q = -current
        else:
            q = quantities[0] if one else quantities[k]
        o = first + m
        decision_row = -1
        if i >= 0:
            row = last_row[sid]
            if row >= lo:
                decision_row = row
        row = rows[o]
        row["submit_index"] = i
        row["sid"] = sid
        row["order_type"] = T_MARKET  # the fields every lane order shares (blank_rows)
        row["status"] = S_SUBMITTED
        row["reason"] = R_STRATEGY
        row["status_reason"] = SR_NONE
        row["tif"] = 0
        row["parent_id"] = -1
        row["decision_row"] = decision_row
        row["quantity"] = q
        row["filled"] = 0.0
        row["limit_price"] = math.nan
        row["stop_price"] = math.nan
        pending[sid] += q
        m += 1
    return m


def intake_error(
    broker: BrokerState, sids: IntArray, quantities: FloatArray | float | None, k: int
) -> str:
    """The message for the bad ``k``-th entry of a batch of orders (:func:`lane_batch`)."""
    sid = int(sids[k])
    if not 0 <= sid < broker.data.n_symbols:
        return f"symbol id {sid} (position {k}) is outside 0..{broker.data.n_symbols - 1}"
    q = float(quantities if isinstance(quantities, float) else np.asarray(quantities)[k])
    return (
        f"order for {q} shares of {broker._names[sid]!r} (position {k}): quantities must be "
        "finite, non-zero"
        + ("" if broker.fractional else " and whole shares (fractional_shares=False)")
    )


def lane_off(broker: BrokerState) -> None:
    """End the lane for the rest of the run: its working orders join the Python book, in
    their order, ahead of anything placed there since (nothing is, while the lane runs)."""
    rows = broker._lane
    if rows is None:
        return
    broker._lane = None
    orders = broker.orders
    broker.book = [orders[o] for o in rows.working_book()] + broker.book
    # the orders placed in this bar wait for step 4 with the orders placed after them
    broker._new_orders = [orders[o] for o in range(rows.new_from, rows.new_to)] + (
        broker._new_orders
    )
    rows.new_from = rows.new_to


@njit
def _working(status: int) -> bool:
    """Whether an order of this status code is still working (submitted, accepted or
    partially filled)."""
    return status in (S_SUBMITTED, S_ACCEPTED, S_PARTIAL)


@njit_held
def lane_open_step(
    lo: int,
    hi: int,
    i: int,
    n_book: int,
    new_from: int,
    new_to: int,
    book: IntArray,
    orders: RecordArray,
    fills: RecordArray,
    trades: RecordArray,
    rejections: RecordArray,
    sym_id: IntArray,
    open_: FloatArray,
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    ordinal: IntArray,
    tolerance: float,
    allow_short: bool,
    fstate: FloatArray,
    istate: IntArray,
    pending: FloatArray,
    aux_i: IntArray,
    aux_f: FloatArray,
    counts: IntArray,
    acc: FloatArray,
    held: IntArray,
    cost_params: FloatArray,
    tiers: FloatArray,
    tier_state: FloatArray,
    cost_rows: FloatArray,
) -> tuple[int, int, float, float, int]:
    """Steps 1 and 2 of bar ``i`` (data rows ``lo:hi``) with the lane, in one call: step 4
    of the bar before for the orders ``new_from:new_to`` placed then and not accepted yet
    (:meth:`OrderRows.accept`: those still submitted become accepted and join the end of
    ``book``, which has room for them); the symbols' latest rows
    (:func:`engine.risk.kernels.set_last_rows`); the book's fills at the open: each working
    order of ``book[:n_book]`` (order ids, in submission order) whose symbol has a bar now
    fills what remains at the bar's open through :func:`engine.core.ledger.execute_fill`, at
    the price and commission of the run's costs (``cost_params`` ... ``cost_rows``: the
    fields of :func:`lane_costs`' :class:`engine.core.costs.Costs`, priced as the compiled
    driver prices a fill; none reads a bar), orders no longer working leave the book, the
    others stay in
    their order (compacted to its front); then the marks and extremes of the positions held
    (:func:`lane_marks`) and their value at the marks.

    ``held``: a buffer of at least ``n_symbols`` int64 (its front receives the held ids).

    Returns
    -------
    tuple
        ``(kept, n_held, value, gross, n_filled)``: the orders left in ``book``, the number
        of symbols held, the positions' net and gross value at the marks (currency), and the
        number of fills booked.
    """
    for o in range(new_from, new_to):
        if orders[o]["status"] == S_SUBMITTED:
            orders[o]["status"] = S_ACCEPTED
            book[n_book] = o
            n_book += 1
    last_row = istate[LAST_ROW]
    set_last_rows(lo, hi, sym_id, last_row)
    fills_before = counts[C_FILLS]
    costly = cost_params[SLIP_KIND] != SLIP_NONE or cost_params[COMM_KIND] != COMM_NONE
    kept = 0
    for k in range(n_book):
        o = book[k]
        if not _working(orders[o]["status"]):
            continue
        row = last_row[orders[o]["sid"]]
        if row >= lo:
            q = orders[o]["quantity"] - orders[o]["filled"]
            if q != 0.0:
                raw = open_[row]
                price = raw
                commission = 0.0
                if costly:
                    price, commission = fill_costs(
                        cost_params, cost_rows, tiers, tier_state, raw, q, row, -1, 0, False,
                        T_MARKET,
                    )  # fmt: skip
                execute_fill(
                    o, q, raw, price, commission, ordinal[row], i, tolerance, allow_short, False,
                    fstate, istate, pending, aux_i, aux_f, orders, fills, trades, rejections,
                    counts, acc,
                )  # fmt: skip
            if not _working(orders[o]["status"]):
                continue
        book[kept] = o
        kept += 1
    n_held, value, gross = lane_marks(lo, hi, sym_id, high, low, close, fstate, istate, held)
    return kept, n_held, value, gross, counts[C_FILLS] - fills_before


@njit
def lane_marks(
    lo: int,
    hi: int,
    sym_id: IntArray,
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    fstate: FloatArray,
    istate: IntArray,
    held: IntArray,
) -> tuple[int, float, float]:
    """Step 2 of the lane's bar (data rows ``lo:hi``): the marks and extremes of the
    positions held (:func:`engine.risk.kernels.mark_bar`) and their value at the marks
    (:func:`engine.core.ledger.portfolio_value`); the held ids, ascending, go to the front of
    ``held`` (int64, at least ``n_symbols``).

    Returns
    -------
    tuple
        ``(n_held, value, gross)``: the number of symbols held and the positions' net and
        gross value (currency).
    """
    qty = fstate[QTY]
    n_held = 0
    for sid in range(qty.size):
        if qty[sid] != 0.0:
            held[n_held] = sid
            n_held += 1
    ids = held[:n_held]
    mark_bar(lo, hi, sym_id, close, high, low, ids, fstate, istate)
    value, gross = portfolio_value(ids, qty, fstate[MARK])
    return n_held, value, gross


@njit_held
def lane_idle_step(
    lo: int,
    hi: int,
    sym_id: IntArray,
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    fstate: FloatArray,
    istate: IntArray,
    held: IntArray,
) -> tuple[int, float, float]:
    """Steps 1 and 2 of a lane bar with no order to fill (data rows ``lo:hi``): the symbols'
    latest rows (:func:`engine.risk.kernels.set_last_rows`), then :func:`lane_marks`.

    Returns
    -------
    tuple
        :func:`lane_marks`' ``(n_held, value, gross)``.
    """
    set_last_rows(lo, hi, sym_id, istate[LAST_ROW])
    return lane_marks(lo, hi, sym_id, high, low, close, fstate, istate, held)


@njit_held
def lane_bar(
    lo: int, hi: int, i: int, n_book: int, new_from: int, new_to: int, refs: LaneRefs
) -> tuple[int, int, float, float, int]:
    """:func:`lane_open_step` over the arrays of ``refs`` (one argument to unbox).

    Returns
    -------
    tuple
        :func:`lane_open_step`'s ``(kept, n_held, value, gross, n_filled)``.
    """
    return lane_open_step(
        lo, hi, i, n_book, new_from, new_to, refs.book, refs.orders, refs.fills, refs.trades,
        refs.rejections, refs.sym_id, refs.open_, refs.high, refs.low, refs.close,
        refs.ordinal, refs.tolerance, refs.allow_short, refs.fstate, refs.istate,
        refs.pending, refs.aux_i, refs.aux_f, refs.counts, refs.acc, refs.held,
        refs.cost_params, refs.tiers, refs.tier_state, refs.cost_rows,
    )  # fmt: skip


@njit_held
def lane_idle(lo: int, hi: int, refs: LaneRefs) -> tuple[int, float, float]:
    """:func:`lane_idle_step` over the arrays of ``refs``.

    Returns
    -------
    tuple
        :func:`lane_marks`' ``(n_held, value, gross)``.
    """
    return lane_idle_step(
        lo, hi, refs.sym_id, refs.high, refs.low, refs.close, refs.fstate, refs.istate,
        refs.held,
    )  # fmt: skip


@njit_held
def lane_take(
    refs: LaneRefs,
    sids: IntArray,
    quantities: FloatArray,
    close: bool,
    fractional: bool,
    i: int,
    lo: int,
    first: int,
) -> int:
    """:func:`lane_intake` into the order rows of ``refs``, reading and updating its
    latest rows, positions and pending shares.

    Returns
    -------
    int
        :func:`lane_intake`'s count of orders placed, or ``-1 - k`` for a bad ``k``-th entry.
    """
    return lane_intake(
        refs.orders, sids, quantities, close, fractional, i, lo, first,
        refs.istate[LAST_ROW], refs.fstate[QTY], refs.pending,
    )  # fmt: skip


_LANE_KINDS: tuple[Kind, ...] = ("fills", "trades", "rejections")


def gather_refs(broker: BrokerState, rows: OrderRows) -> LaneRefs:
    """The lane's arrays as one :class:`engine.broker.lane_refs.LaneRefs` (the arguments of
    :func:`lane_open_step` from ``book`` on), kept in ``rows.refs`` until one of them is
    replaced (a new market-data window, a grown book, order rows or record buffer: whoever
    replaces one sets ``rows.refs`` to None). The compiled entries of :func:`lane_bar`,
    :func:`lane_idle` and :func:`lane_take` for their types are taken with the first of a
    window (:func:`engine.core.jit.compiled_entry`: every array keeps its type within a
    window, the same arrays or buffers grown as whole contiguous arrays of the same dtype).
    Only the lane writes the record buffers' tails while it runs (rows the Python passes
    record are staged, and :func:`make_room` flushes them first)."""
    data = broker.data
    records = broker._recorder.records
    tails = records.tails
    refs = rows.refs = lane_refs(
        rows.book, rows.rows, tails["fills"], tails["trades"], tails["rejections"],
        data.sym_id, data.open, data.high, data.low, data.close, data.ordinal,
        broker._cash_tol, broker._allow_short, broker.fstate, broker._istate,
        broker.pending, broker._aux_i, broker._aux_f, records.tail_counts,
        rows.acc, rows.held, *rows.costs,
    )  # fmt: skip
    if not rows.bound:
        rows.step = compiled_entry(lane_bar, (0, 0, 0, 0, 0, 0, refs))
        rows.idle = compiled_entry(lane_idle, (0, 0, refs))
        rows.intake = compiled_entry(lane_take, (refs, rows.book, rows.one, True, True, 0, 0, 0))
        rows.bound = True
    return refs


def make_room(broker: BrokerState, rows: OrderRows, n: int) -> None:
    """Before a step with ``n`` orders in the book: room for ``n`` more rows in each record
    buffer the step writes (rows the Python passes staged go first), and in the book."""
    if n > rows.book.size:
        rows.book = np.concatenate((rows.book, np.empty(n, dtype=np.int64)))
        rows.refs = None
    records = broker._recorder.records
    if n > rows.room or records.fills or records.trades or records.rejections:
        # rows staged by the Python passes go first; room for the whole book
        tails = records.tails
        before = (tails["fills"], tails["trades"], tails["rejections"])
        rows.room = records.make_room(_LANE_KINDS, n)
        if any(
            a is not b
            for a, b in zip(
                before, (tails["fills"], tails["trades"], tails["rejections"]), strict=True
            )
        ):
            rows.refs = None  # a buffer was replaced


def lane_step(broker: BrokerState, rows: OrderRows) -> None:
    """Steps 1 and 2 of the current bar with the lane (:func:`lane_open_step`; the orders
    placed in the bar before and not accepted yet are accepted first), writing the
    fill, trade and rejection records straight into the run's record buffers
    (:meth:`engine.core.records.Records.reserve`; their counts are the call's ``counts``);
    the cash and fill counts taken over from the call, the portfolio's value kept for the
    bar's state record."""
    new_from = rows.new_from
    new_to = rows.new_to
    n = rows.n_book + new_to - new_from  # the book once the orders of the bar before join
    if n == 0:  # nothing to fill: the bar's rows and marks only (a call with fewer arguments)
        refs = rows.refs
        if refs is None:
            refs = gather_refs(broker, rows)
        n_held, value, gross = rows.idle(broker.lo, broker.hi, refs)
        broker._marked = broker.i
        rows.value = (broker.i, broker.n_fills, value, gross, n_held)
        return
    rows.new_from = new_to
    make_room(broker, rows, n)
    rows.room -= n
    refs = rows.refs
    if refs is None:
        refs = gather_refs(broker, rows)
    acc = rows.acc
    acc[ACC_CASH] = broker.cash
    acc[ACC_REALIZED] = broker._realized
    rows.n_book, n_held, value, gross, n_fills = rows.step(
        broker.lo, broker.hi, broker.i, rows.n_book, new_from, new_to, refs
    )
    if n_fills:
        broker.cash = acc.item(ACC_CASH)
        broker._realized = acc.item(ACC_REALIZED)
        broker.n_fills += n_fills
        broker._fills_today += n_fills
        broker._held = None
    broker._marked = broker.i
    rows.value = (broker.i, broker.n_fills, value, gross, n_held)
