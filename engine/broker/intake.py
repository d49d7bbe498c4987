"""Order intake: the strategy's orders checked, typed and queued for hook B.

:func:`submit` takes a signed quantity and optional limit / stop / trailing / bracket prices,
checks them (a :class:`ValueError` names the bad argument) and queues the order for validation
at step 4 of the current bar; plain market orders take a shorter path (:func:`market_order`).
:func:`order_target_value` and :func:`close_position` size an order from the position plus
the working market orders; :func:`replace` cancels and resubmits.
"""

from __future__ import annotations

import math

import numpy as np

from engine.broker.lane import (
    batch_ids,
    batch_quantities,
    intake_error,
    lane_batch,
    lane_off,
    lane_order,
)
from engine.broker.state import (
    EPS,
    LIMIT,
    MARKET,
    STOP,
    STOP_LIMIT,
    TRAILING_STOP,
    BrokerState,
    trail_stop_level,
)
from engine.core.ledger import netted_by_close, zero_shares_order
from engine.data import FloatArray, IntArray
from engine.orders import Order, TimeInForce, plain_market_order


def submit(
    broker: BrokerState,
    symbol: str,
    quantity: float,
    *,
    limit_price: float | None = None,
    stop_price: float | None = None,
    trail_amount: float | None = None,
    trail_percent: float | None = None,
    tif: str = "GTC",
    take_profit: float | None = None,
    stop_loss: float | None = None,
) -> Order:
    """A strategy order (signed quantity); validated at step 4 of the current bar."""
    sid = broker._symbol_index.get(symbol)
    if sid is None:
        sid = broker.data.resolve(symbol)  # raises KeyError
    if (
        limit_price is None
        and stop_price is None
        and trail_amount is None
        and trail_percent is None
        and take_profit is None
        and stop_loss is None
        and tif == "GTC"
    ):
        return market_order(broker, sid, symbol, quantity)
    check_quantity(broker, symbol, quantity)
    for name, value in (
        ("limit_price", limit_price),
        ("stop_price", stop_price),
        ("trail_amount", trail_amount),
        ("take_profit", take_profit),
        ("stop_loss", stop_loss),
    ):
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if trail_percent is not None and not (0 < trail_percent < 1):
        raise ValueError(f"trail_percent must be a fraction in (0, 1), got {trail_percent!r}")
    trailing = trail_amount is not None or trail_percent is not None
    if trailing and (limit_price is not None or stop_price is not None):
        raise ValueError("a trailing stop takes no limit_price or stop_price")
    if trail_amount is not None and trail_percent is not None:
        raise ValueError("give trail_amount or trail_percent, not both")
    if trailing:
        kind = TRAILING_STOP
    elif limit_price is not None and stop_price is not None:
        kind = STOP_LIMIT
    elif limit_price is not None:
        kind = LIMIT
    elif stop_price is not None:
        kind = STOP
    else:
        kind = MARKET
    try:
        time_in_force = TimeInForce(tif)
    except ValueError:
        raise ValueError(f"tif must be 'GTC' or 'DAY', got {tif!r}") from None
    if take_profit is not None and stop_loss is not None:
        bad = take_profit <= stop_loss if quantity > 0 else take_profit >= stop_loss
        if bad:
            raise ValueError(
                f"bracket levels inverted for a {'buy' if quantity > 0 else 'sell'}: "
                f"take_profit={take_profit}, stop_loss={stop_loss}"
            )
    lane_off(broker)  # an order outside the market-order lane ends it
    decision_row = broker._row(sid) if broker.i >= 0 else -1
    order = broker._new_order(
        sid,
        quantity,
        order_type=kind,
        submit_index=broker.i,
        decision_row=decision_row,
        limit_price=math.nan if limit_price is None else float(limit_price),
        stop_price=math.nan if stop_price is None else float(stop_price),
        trail_amount=math.nan if trail_amount is None else float(trail_amount),
        trail_percent=math.nan if trail_percent is None else float(trail_percent),
        tif=time_in_force,
        take_profit=math.nan if take_profit is None else float(take_profit),
        stop_loss=math.nan if stop_loss is None else float(stop_loss),
    )
    if kind is TRAILING_STOP:
        mark = float(broker.marks[sid])
        if not math.isfinite(mark):
            raise ValueError(f"trailing stop on {symbol!r} before its first bar")
        order.trail_extreme = mark
        order.stop_price = trail_stop_level(order)
    broker._new_orders.append(order)
    return order


def order_target_value(broker: BrokerState, symbol: str, value: float) -> Order | None:
    """A market order taking position + working market orders of ``symbol`` to
    ``value`` (signed currency) at the latest close; None when no trade is needed. Whole
    shares as ``ExecutionConfig.target_rounding`` says (the target position or the order).

    A target that rounds to zero shares from a flat book (``0 < |value / price| < 1``
    whole share) places no order and records a ``rounds_to_zero_shares`` rejection row
    (:func:`record_unplaced`).

    Raises
    ------
    KeyError
        If ``symbol`` is unknown.
    ValueError
        If the symbol has had no bar yet.
    """
    sid = broker.data.resolve(symbol)
    price = float(broker.marks[sid])
    if not math.isfinite(price) or price <= 0:
        raise ValueError(f"no price yet for {symbol!r}: it has not had a bar")
    wanted = value / price
    # target_rounding="order": only the order size is rounded (Backtrader, VectorBT)
    target = wanted if broker._config.target_rounding == "order" else broker.round_quantity(wanted)
    current = float(broker.qty[sid] + broker.pending[sid])
    delta = broker.round_quantity(target - current)
    if abs(delta) >= EPS and net_working(broker, sid, delta, "netted_by_new_order"):
        current = float(broker.qty[sid] + broker.pending[sid])
        delta = broker.round_quantity(target - current)
    if abs(delta) < EPS:
        if current == 0.0 and zero_shares_order(wanted, broker.fractional):
            record_unplaced(broker, sid, wanted)
        return None
    return submit(broker, symbol, delta)


def record_unplaced(broker: BrokerState, sid: int, quantity: float) -> None:
    """Record that the strategy's market order for ``quantity`` shares (signed, before
    rounding) of symbol id ``sid`` was not placed because it rounds to zero shares: a
    rejection row at the current bar with ``order_id`` -1 and reason
    ``rounds_to_zero_shares`` (the compiled driver writes the same row)."""
    broker._recorder.unplaced(broker.i, sid, quantity)


def close_position(broker: BrokerState, symbol: str) -> Order | None:
    """Close the position: under a volume participation cap the symbol's working market
    orders of earlier bars are cancelled first (``netted_by_close_position``); then one
    market order takes the position plus the pending orders to zero."""
    sid = broker._symbol_index.get(symbol)
    if sid is None:
        sid = broker.data.resolve(symbol)  # raises KeyError
    if broker._volume_cap is not None:
        net_working(broker, sid, 0.0, "netted_by_close_position")
    current: float = broker.qty.item(sid) + broker.pending.item(sid)
    if abs(current) < EPS:
        return None
    if broker._lane is not None:
        # whole shares unless fractional (the position and orders were checked), finite
        return lane_order(broker, broker._lane, sid, -current)
    return market_order(broker, sid, symbol, -current)


def submit_batch(
    broker: BrokerState, ids: IntArray | list[int], quantities: FloatArray | list[float] | float
) -> IntArray:
    """Plain GTC market orders, one per symbol id of ``ids`` (``MarketData.symbols`` index,
    as ``BarBatch.ids`` gives them) in order, of signed shares ``quantities`` (one per id,
    or one number for all): the same orders as ``submit(symbol, quantity)`` for each in
    turn, placed in one call.

    Returns
    -------
    ndarray[int64]
        The order ids, in order.

    Raises
    ------
    ValueError
        If ``ids`` is not one-dimensional, ``quantities`` has another length than ``ids``,
        an id is outside ``0 .. n_symbols - 1``, or a quantity is not finite, is zero, or is
        fractional while fractional shares are off; nothing is placed then.
    """
    lane = broker._lane
    if lane is not None:  # the same checks, then the orders as the lane's rows
        return lane_batch(broker, lane, ids, quantities)
    sids = batch_ids(ids)
    q = batch_quantities(sids, quantities)
    each = np.broadcast_to(np.asarray(q, dtype=np.float64), sids.shape)
    n = broker.data.n_symbols
    for k, (sid, quantity) in enumerate(zip(sids.tolist(), each.tolist(), strict=True)):
        if not 0 <= sid < n or not math.isfinite(quantity) or quantity == 0:
            raise ValueError(intake_error(broker, sids, q, k))
        if not broker.fractional and quantity != math.floor(quantity):
            raise ValueError(intake_error(broker, sids, q, k))
    names = broker._names
    return np.array(
        [
            market_order(broker, sid, names[sid], quantity).order_id
            for sid, quantity in zip(sids.tolist(), each.tolist(), strict=True)
        ],
        dtype=np.int64,
    )


def close_positions(broker: BrokerState, ids: IntArray | list[int]) -> IntArray:
    """:func:`close_position` for each symbol id of ``ids`` (``MarketData.symbols`` index)
    in turn, in one call; a symbol with nothing to close places no order.

    Returns
    -------
    ndarray[int64]
        The ids of the orders placed, in order.

    Raises
    ------
    ValueError
        If ``ids`` is not one-dimensional or an id is outside ``0 .. n_symbols - 1``;
        nothing is placed then.
    """
    lane = broker._lane
    if lane is not None:  # no volume cap: nothing to net
        return lane_batch(broker, lane, ids, None)
    sids = batch_ids(ids)
    n = broker.data.n_symbols
    for k, sid in enumerate(sids.tolist()):
        if not 0 <= sid < n:
            raise ValueError(intake_error(broker, sids, None, k))
    names = broker._names
    placed = [close_position(broker, names[sid]) for sid in sids.tolist()]
    return np.array([order.order_id for order in placed if order is not None], dtype=np.int64)


def net_working(broker: BrokerState, sid: int, direction: float, reason: str) -> bool:
    """Cancel the working market orders of ``sid`` placed by the strategy on earlier bars
    that go against ``direction`` (every one when ``direction`` is 0); True if any was.

    A market order stays working across bars only when a volume participation cap fills it
    in parts. Left working beside a new order the other way, a buy and a sell of one symbol
    would both fill bar after bar, paying costs on both sides; orders placed in the current
    bar are the strategy's explicit wish and are kept. Without a cap nothing is netted: an
    order then waits only for its symbol's next bar, where it fills beside the new one (the
    compiled driver, which runs no capped run, keeps the same rule)."""
    if broker._volume_cap is None or not broker.book:
        return False
    now = broker.i
    stale = [
        order
        for order in broker.book
        if order.sid == sid
        and order.order_type is MARKET
        and order.reason == "strategy"
        and order.is_active
        and netted_by_close(order.submit_index, now, order.remaining, direction)
    ]
    for order in stale:
        broker.cancel(order, reason)
    return bool(stale)


def check_quantity(broker: BrokerState, symbol: str, quantity: float) -> None:
    """Refuse a non-finite or zero ``quantity``, or a fractional one when fractional shares are
    off (:class:`ValueError`)."""
    if not math.isfinite(quantity) or quantity == 0:
        raise ValueError(f"order quantity must be finite and non-zero, got {quantity!r}")
    if not broker.fractional and quantity != math.floor(quantity):
        raise ValueError(
            f"order for {quantity} shares of {symbol!r}: fractional shares are off "
            "(ExecutionConfig.fractional_shares=False)"
        )


def market_order(broker: BrokerState, sid: int, symbol: str, quantity: float) -> Order:
    """A plain GTC market order of the strategy (most orders), built directly with the
    fields ``BrokerState._new_order`` would give it."""
    check_quantity(broker, symbol, quantity)
    if broker._lane is not None:
        return lane_order(broker, broker._lane, sid, quantity)
    i = broker.i
    row: int = broker.last_row.item(sid) if i >= 0 else -1
    order = plain_market_order(
        len(broker.orders), broker._names[sid], sid, quantity, i, row if row >= broker.lo else -1
    )
    broker.orders.append(order)
    pending = broker.pending
    pending[sid] = pending.item(sid) + quantity
    broker._new_orders.append(order)
    return order


def replace(
    broker: BrokerState,
    order: Order,
    *,
    quantity: float | None = None,
    limit_price: float | None = None,
    stop_price: float | None = None,
) -> Order | None:
    """Cancel a working ``order`` (reason ``replaced``) and submit a copy with the given
    changes (:func:`submit`); None if it was no longer active.

    Raises
    ------
    ValueError
        If the changed order is invalid (see :func:`submit`).
    """
    if not order.is_active:
        return None
    remaining = order.remaining if quantity is None else quantity
    broker.cancel(order, "replaced")

    def keep(new: float | None, old: float) -> float | None:
        if new is not None:
            return new
        return None if math.isnan(old) else old

    return submit(
        broker,
        order.symbol,
        remaining,
        limit_price=keep(limit_price, order.limit_price),
        stop_price=keep(stop_price, order.stop_price)
        if order.order_type is not TRAILING_STOP
        else None,
        trail_amount=None if math.isnan(order.trail_amount) else order.trail_amount,
        trail_percent=None if math.isnan(order.trail_percent) else order.trail_percent,
        tif=order.tif.value,
        take_profit=None if math.isnan(order.take_profit) else order.take_profit,
        stop_loss=None if math.isnan(order.stop_loss) else order.stop_loss,
    )
