"""Immutable event records: market events for per-symbol strategies, and fills.

Both use ``__slots__``; fields are set once in the constructor and never changed by the engine.
"""

from __future__ import annotations

from datetime import datetime


class MarketEvent:
    """One symbol's bar, as handed to :meth:`engine.Strategy.on_market_data`.

    Built only for strategies that override ``on_market_data`` (batch strategies never pay for
    these objects).

    Attributes
    ----------
    timestamp : datetime
        Bar close, tz-aware UTC.
    symbol : str
    open, high, low, close : float
        Prices in currency per share.
    volume : float
        Shares traded in the bar.
    signals : dict[str, float]
        The panel's signal columns for this row (NaN where null).
    indicators : dict[str, float]
        The panel's indicator columns for this row (NaN where null).
    context : dict[str, float]
        Market-wide values at this timestamp (NaN where missing). The same dict object is shared
        by every event of the timestamp: treat it as read-only.
    """

    __slots__ = (
        "timestamp",
        "symbol",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "signals",
        "indicators",
        "context",
    )

    def __init__(
        self,
        timestamp: datetime,
        symbol: str,
        open: float,  # noqa: A002 - the bar's field name
        high: float,
        low: float,
        close: float,
        volume: float,
        signals: dict[str, float],
        indicators: dict[str, float],
        context: dict[str, float],
    ) -> None:
        self.timestamp = timestamp
        self.symbol = symbol
        self.open = open
        self.high = high
        self.low = low
        self.close = close
        self.volume = volume
        self.signals = signals
        self.indicators = indicators
        self.context = context

    @property
    def asset_id(self) -> str:
        """The seeds' name of :attr:`symbol`."""
        return self.symbol

    def __repr__(self) -> str:
        return (
            f"MarketEvent({self.timestamp.isoformat()}, {self.symbol!r}, o={self.open}, "
            f"h={self.high}, l={self.low}, c={self.close}, v={self.volume})"
        )


class Fill:
    """One execution of (part of) an order.

    Attributes
    ----------
    fill_id : int
        Sequential id within the run, starting at 0.
    order_id : int
        Id of the order that was (partly) filled.
    timestamp : datetime
        Close time (UTC) of the bar on which the fill happened.
    symbol : str
    quantity : float
        Signed shares: positive for a buy, negative for a sell.
    price_before_slippage : float
        Raw price chosen by the fill rule (open, close or triggered level), within [low, high].
    price : float
        Price after slippage, the one cash moves at.
    commission : float
        Currency, ``>= 0``.
    slippage : float
        Currency cost of slippage, ``(price - price_before_slippage) * quantity`` (``>= 0`` for
        the built-in models).
    order_type : str
        ``"market"``, ``"limit"``, ``"stop"``, ``"stop_limit"`` or ``"trailing_stop"``.
    reason : str
        Why the order existed: ``"strategy"``, a risk rule's name, or ``"end_of_data"``.
    bar_index : int
        Index of the fill's timestamp in the run (0-based).
    """

    __slots__ = (
        "fill_id",
        "order_id",
        "timestamp",
        "symbol",
        "quantity",
        "price_before_slippage",
        "price",
        "commission",
        "slippage",
        "order_type",
        "reason",
        "bar_index",
    )

    def __init__(
        self,
        fill_id: int,
        order_id: int,
        timestamp: datetime,
        symbol: str,
        quantity: float,
        price_before_slippage: float,
        price: float,
        commission: float,
        slippage: float,
        order_type: str,
        reason: str,
        bar_index: int,
    ) -> None:
        self.fill_id = fill_id
        self.order_id = order_id
        self.timestamp = timestamp
        self.symbol = symbol
        self.quantity = quantity
        self.price_before_slippage = price_before_slippage
        self.price = price
        self.commission = commission
        self.slippage = slippage
        self.order_type = order_type
        self.reason = reason
        self.bar_index = bar_index

    @property
    def side(self) -> str:
        """``"buy"`` or ``"sell"``."""
        return "buy" if self.quantity > 0 else "sell"

    def __repr__(self) -> str:
        return (
            f"Fill(#{self.fill_id}, order={self.order_id}, {self.timestamp.isoformat()}, "
            f"{self.symbol!r}, qty={self.quantity}, price={self.price}, "
            f"commission={self.commission}, reason={self.reason!r})"
        )
