"""Orders and their status machine.

An order's status only changes through :meth:`Order.transition`, which consults the single
transition table :data:`TRANSITIONS` (built from the status matrix of :mod:`engine.core.layout`,
which the compiled driver checks too); an illegal change raises ``RuntimeError`` (an engine
bug, never user input).

Life cycle::

    submitted ─► accepted ─► partially_filled ─► filled
        │            │  └──────────┬──────────────┘
        └► rejected  └► cancelled / expired / rejected

- ``submitted``: created by a strategy or a risk rule during a bar, not yet validated.
- ``accepted``: passed risk validation (hook B); working in the book.
- ``rejected``: refused by a risk rule (hook B) or at fill time (``insufficient_cash``,
  ``short_not_allowed``, ...); the reason is recorded.
- ``cancelled``: cancelled by the strategy, by a one-cancels-other sibling, or replaced.
- ``expired``: a ``DAY`` order not filled on the first bar it could trade.
"""

from __future__ import annotations

import math
from enum import StrEnum

from engine.core import layout


class OrderType(StrEnum):
    """How an order's fill price is found (see :mod:`engine.broker.passes`)."""

    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"
    TRAILING_STOP = "trailing_stop"


class TimeInForce(StrEnum):
    """``GTC``: works until filled or cancelled. ``DAY``: expires after the first bar on which
    the symbol has data and the order could have traded (the next bar for daily data)."""

    GTC = "GTC"
    DAY = "DAY"


class OrderStatus(StrEnum):
    """Where an order is in its life cycle (module docstring; codes in
    :mod:`engine.core.layout`)."""

    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"


_S = OrderStatus


def _transition_table() -> dict[OrderStatus, frozenset[OrderStatus]]:
    """:data:`engine.core.layout.TRANSITIONS` (the one matrix both drivers check) as a dict."""
    names = layout.STATUS_NAMES
    return {
        _S(names[a]): frozenset(_S(names[b]) for b in range(layout.N_STATUSES) if allowed[b])
        for a, allowed in enumerate(layout.TRANSITIONS.tolist())
    }


TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = _transition_table()
"""The legal status changes: ``status -> statuses it may move to`` (built from
:data:`engine.core.layout.TRANSITIONS`)."""

ACTIVE = frozenset({_S.SUBMITTED, _S.ACCEPTED, _S.PARTIALLY_FILLED})
_SUBMITTED = _S.SUBMITTED  # bound once: attribute access on an Enum class is slow per order


class Order:
    """A request to trade ``quantity`` shares of one symbol.

    Attributes
    ----------
    order_id : int
        Sequential id within the run.
    symbol : str
    sid : int
        Symbol id in the :class:`engine.MarketData`.
    quantity : float
        Signed shares requested: positive buys, negative sells.
    filled : float
        Signed shares filled so far.
    order_type : OrderType
    limit_price, stop_price : float
        Currency per share; NaN when not used by the order type.
    trail_amount, trail_percent : float
        Trailing-stop distance in currency or as a fraction; NaN when not used.
    tif : TimeInForce
    status : OrderStatus
    reason : str
        Who wanted it: ``"strategy"``, a risk rule's name, or ``"end_of_data"``.
    status_reason : str
        Why it was rejected/cancelled/expired (``""`` otherwise).
    submit_index : int
        Index of the bar during which it was submitted (the decision bar).
    decision_row : int
        Market-data row of the symbol at the decision bar, ``-1`` if the symbol had no bar then.
    take_profit, stop_loss : float
        Bracket children to attach when this entry fills (NaN = none).
    parent_id : int
        Order id of the bracket entry this order protects (``-1`` if none).
    oco_id : int
        Id of the sibling cancelled when this order fills (``-1`` if none).
    """

    __slots__ = (
        "order_id",
        "symbol",
        "sid",
        "quantity",
        "filled",
        "order_type",
        "limit_price",
        "stop_price",
        "trail_amount",
        "trail_percent",
        "trail_extreme",
        "triggered",
        "tif",
        "status",
        "reason",
        "status_reason",
        "submit_index",
        "decision_row",
        "take_profit",
        "stop_loss",
        "parent_id",
        "oco_id",
        "bars_eligible",
    )

    def __init__(
        self,
        order_id: int,
        symbol: str,
        sid: int,
        quantity: float,
        *,
        order_type: OrderType = OrderType.MARKET,
        limit_price: float = math.nan,
        stop_price: float = math.nan,
        trail_amount: float = math.nan,
        trail_percent: float = math.nan,
        tif: TimeInForce = TimeInForce.GTC,
        reason: str = "strategy",
        submit_index: int = -1,
        decision_row: int = -1,
        take_profit: float = math.nan,
        stop_loss: float = math.nan,
        parent_id: int = -1,
    ) -> None:
        self.order_id = order_id
        self.symbol = symbol
        self.sid = sid
        self.quantity = quantity
        self.filled = 0.0
        self.order_type = order_type
        self.limit_price = limit_price
        self.stop_price = stop_price
        self.trail_amount = trail_amount
        self.trail_percent = trail_percent
        self.trail_extreme = math.nan
        self.triggered = False
        self.tif = tif
        self.status = _SUBMITTED
        self.reason = reason
        self.status_reason = ""
        self.submit_index = submit_index
        self.decision_row = decision_row
        self.take_profit = take_profit
        self.stop_loss = stop_loss
        self.parent_id = parent_id
        self.oco_id = -1
        self.bars_eligible = 0

    @property
    def remaining(self) -> float:
        """Signed shares still to fill."""
        return self.quantity - self.filled

    @property
    def is_buy(self) -> bool:
        """True for a buy (positive quantity)."""
        return self.quantity > 0

    @property
    def is_active(self) -> bool:
        """True while the order may still fill."""
        return self.status in ACTIVE

    def transition(self, new: OrderStatus, reason: str = "") -> None:
        """Move to status ``new``; raises ``RuntimeError`` if the table forbids it."""
        if new not in TRANSITIONS[self.status]:
            raise RuntimeError(
                f"order {self.order_id}: illegal status change {self.status} -> {new}"
            )
        self.status = new
        if reason:
            self.status_reason = reason

    def __repr__(self) -> str:
        extra = ""
        if not math.isnan(self.limit_price):
            extra += f", limit={self.limit_price}"
        if not math.isnan(self.stop_price):
            extra += f", stop={self.stop_price}"
        return (
            f"Order(#{self.order_id}, {self.symbol!r}, qty={self.quantity}, "
            f"{self.order_type.value}{extra}, {self.status.value}, reason={self.reason!r})"
        )


_MARKET = OrderType.MARKET
_GTC = TimeInForce.GTC
_new_object = object.__new__


def plain_market_order(
    order_id: int, symbol: str, sid: int, quantity: float, submit_index: int, decision_row: int
) -> Order:
    """A GTC market order of the strategy, ``submitted``: the same fields as
    ``Order(order_id, symbol, sid, quantity, submit_index=..., decision_row=...)``.

    The broker's hot path for plain orders: positional arguments and no keyword matching
    against ``Order.__init__``'s seventeen parameters (about half the cost per order).
    ``tests/engine/test_orders.py`` checks that both give the same order.
    """
    order: Order = _new_object(Order)
    order.order_id = order_id
    order.symbol = symbol
    order.sid = sid
    order.quantity = quantity
    order.filled = 0.0
    order.order_type = _MARKET
    order.limit_price = math.nan
    order.stop_price = math.nan
    order.trail_amount = math.nan
    order.trail_percent = math.nan
    order.trail_extreme = math.nan
    order.triggered = False
    order.tif = _GTC
    order.status = _SUBMITTED
    order.reason = "strategy"
    order.status_reason = ""
    order.submit_index = submit_index
    order.decision_row = decision_row
    order.take_profit = math.nan
    order.stop_loss = math.nan
    order.parent_id = -1
    order.oco_id = -1
    order.bars_eligible = 0
    return order
