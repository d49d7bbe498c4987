"""The :class:`Strategy` base class: callbacks the engine calls and helpers to trade.

A strategy overrides exactly ONE of

- ``on_timestamp_batch(timestamp, batch, context)``: called once per timestamp with every
  symbol's bar as NumPy arrays (fast; the right choice for cross-sectional strategies), or
- ``on_market_data(event)``: called once per symbol per timestamp with a :class:`MarketEvent`.

The engine refuses (``TypeError``) a strategy overriding both or neither. Callbacks run after
bar t's close (step 3 of the loop); orders placed there fill at the symbol's next open
(``fill="next_open"``) or this bar's close (``fill="close"``). Optional hooks: ``on_start``,
``on_fill(fill)``, ``on_end``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from engine.data import BarBatch
from engine.events import Fill, MarketEvent
from engine.orders import Order

if TYPE_CHECKING:
    from engine.broker import Broker


class Strategy:
    """Base class of strategies. Subclass it and override one bar callback (module docstring).

    The helpers below may only be called while a run is in progress (from the callbacks);
    they raise ``RuntimeError`` otherwise. Symbols are names (``str``) as in the panel;
    an unknown symbol raises ``KeyError``.
    """

    _broker: Broker | None = None

    # ------------------------------------------------------------------ callbacks
    def on_start(self) -> None:
        """Called once before the first bar. Reset per-run state here."""

    def on_timestamp_batch(
        self, timestamp: datetime, batch: BarBatch, context: dict[str, float]
    ) -> None:
        """All symbols' bars at ``timestamp`` (bar close, UTC); ``context`` = market values."""
        raise NotImplementedError

    def on_market_data(self, event: MarketEvent) -> None:
        """One symbol's bar."""
        raise NotImplementedError

    def on_fill(self, fill: Fill) -> None:
        """Called after every fill (including risk exits), in fill order."""

    def on_end(self) -> None:
        """Called once after the last bar."""

    # ------------------------------------------------------------------ binding
    @property
    def broker(self) -> Broker:
        if self._broker is None:
            raise RuntimeError("strategy helpers can only be used during BacktestEngine.run()")
        return self._broker

    @staticmethod
    def iter_events(
        batch: BarBatch, context: dict[str, float] | None = None
    ) -> Iterator[MarketEvent]:
        """Yield one :class:`MarketEvent` per symbol of ``batch``."""
        return batch.iter_events(context)

    # ------------------------------------------------------------------ state helpers
    @property
    def cash(self) -> float:
        """Cash in currency."""
        return self.broker.cash

    @property
    def equity(self) -> float:
        """cash + Σ quantity × latest close (currency), as of the current bar's close."""
        return self.broker.equity()

    def get_position(self, symbol: str) -> float:
        """Signed shares held (0.0 if none)."""
        return self.broker.position(symbol)

    def has_position(self, symbol: str) -> bool:
        return self.broker.position(symbol) != 0.0

    def get_position_value(self, symbol: str) -> float:
        """Signed quantity × latest close (currency)."""
        return self.broker.position_value(symbol)

    def get_unrealized_pnl_pct(self, symbol: str) -> float:
        """(latest close / average entry price − 1) × direction; 0.0 when flat."""
        return self.broker.unrealized_pnl_pct(symbol)

    def get_price(self, symbol: str) -> float:
        """Latest close of ``symbol`` (NaN before its first bar)."""
        return self.broker.price(symbol)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Working orders (all symbols, or one)."""
        return self.broker.open_orders(symbol)

    # ------------------------------------------------------------------ order helpers
    def buy(
        self,
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
        """Buy ``quantity`` (> 0) shares.

        The order type follows the prices given: none → market; ``limit_price`` → limit;
        ``stop_price`` → stop; both → stop-limit; ``trail_amount``/``trail_percent`` →
        trailing stop. ``take_profit``/``stop_loss`` attach bracket children (one cancels the
        other) when this order fills. ``tif`` is ``"GTC"`` or ``"DAY"``.

        Raises
        ------
        ValueError
            Non-positive or non-finite quantity; a fractional quantity with
            ``fractional_shares=False``; inconsistent prices.
        """
        return self.broker.submit(
            symbol,
            _positive(quantity),
            limit_price=limit_price,
            stop_price=stop_price,
            trail_amount=trail_amount,
            trail_percent=trail_percent,
            tif=tif,
            take_profit=take_profit,
            stop_loss=stop_loss,
        )

    def sell(
        self,
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
        """Sell ``quantity`` (> 0) shares; same keywords as :meth:`buy`."""
        return self.broker.submit(
            symbol,
            -_positive(quantity),
            limit_price=limit_price,
            stop_price=stop_price,
            trail_amount=trail_amount,
            trail_percent=trail_percent,
            tif=tif,
            take_profit=take_profit,
            stop_loss=stop_loss,
        )

    def buy_percent(self, symbol: str, percent: float) -> Order | None:
        """Buy shares worth ``percent`` (fraction) of equity at the latest close (rounded down
        to whole shares unless fractional); ``None`` if that is 0 shares."""
        qty = self.broker.shares_for_value(symbol, percent * self.equity)
        return self.buy(symbol, qty) if qty > 0 else None

    def sell_percent(self, symbol: str, percent: float) -> Order | None:
        """Sell shares worth ``percent`` (fraction) of equity at the latest close."""
        qty = self.broker.shares_for_value(symbol, percent * self.equity)
        return self.sell(symbol, qty) if qty > 0 else None

    def order_target_value(self, symbol: str, value: float) -> Order | None:
        """Trade so position + working orders are worth ``value`` (signed currency) at the
        latest close. Returns the order, or ``None`` when no trade is needed."""
        return self.broker.order_target_value(symbol, value)

    def order_target_percent(self, symbol: str, percent: float) -> Order | None:
        """:meth:`order_target_value` with ``value = percent × equity``."""
        return self.broker.order_target_value(symbol, percent * self.equity)

    def close_position(self, symbol: str) -> Order | None:
        """Market order that brings position + working orders to 0 (``None`` if already 0)."""
        return self.broker.close_position(symbol)

    def cancel_order(self, order: Order) -> bool:
        """Cancel a working order; returns False if it was no longer active."""
        return self.broker.cancel(order, "cancelled_by_strategy")

    def replace_order(
        self,
        order: Order,
        *,
        quantity: float | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
    ) -> Order | None:
        """Cancel ``order`` and submit a copy with the given changes (``None`` if inactive)."""
        return self.broker.replace(
            order, quantity=quantity, limit_price=limit_price, stop_price=stop_price
        )

    def calculate_position_size(
        self, price: float, atr: float, risk_pct: float, atr_multiple: float = 1.0
    ) -> float:
        """Shares such that a move of ``atr_multiple × atr`` loses ``risk_pct`` of equity.

        ``size = risk_pct × equity / (atr_multiple × atr)``, capped at ``equity / price`` and
        rounded down to whole shares unless fractional. 0.0 for a non-finite or non-positive
        ``atr`` or ``price``.
        """
        if not (math.isfinite(price) and math.isfinite(atr)) or price <= 0 or atr <= 0:
            return 0.0
        equity = self.equity
        size = min(risk_pct * equity / (atr_multiple * atr), equity / price)
        return self.broker.round_quantity(max(size, 0.0))


def _positive(quantity: float) -> float:
    q = float(quantity)
    if not math.isfinite(q) or q <= 0:
        raise ValueError(f"quantity must be a finite number > 0, got {quantity!r}")
    return q
