"""The :class:`Strategy` base class: callbacks the engine calls and helpers to trade.

A strategy overrides exactly ONE of

- ``on_timestamp_batch(timestamp, batch, context)``: called once per timestamp with every
  symbol's bar as NumPy arrays (fast; the right choice for cross-sectional strategies), or
- ``on_market_data(event)``: called once per symbol per timestamp with a :class:`MarketEvent`.

The engine refuses (``TypeError``) a strategy overriding both or neither. Callbacks run after
bar t's close (step 3 of the loop); orders placed there fill at the symbol's next open
(``fill="next_open"``) or this bar's close (``fill="close"``). Optional hooks: ``on_start``,
``on_fill(fill)``, ``on_end``.

The seeds' callback forms are accepted too (docs/reference/seeds-compatibility.md):
``on_market_data(self, event, context)`` receives the timestamp's market context as its second
argument, and an ``on_timestamp_batch`` whose second parameter is named ``events`` receives a
``list[MarketEvent]`` instead of the :class:`BarBatch`.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, overload

import polars as pl

from engine.core.ledger import zero_shares_order
from engine.data import BarBatch, FloatArray, IntArray
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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # the seeds' callback signatures (module docstring), adapted once per class
        super().__init_subclass__(**kwargs)
        per_symbol = cls.__dict__.get("on_market_data")
        if callable(per_symbol) and _positional_count(per_symbol) == 3:
            cls.on_market_data = _with_context(per_symbol)  # type: ignore[method-assign,assignment]
        batch = cls.__dict__.get("on_timestamp_batch")
        if callable(batch) and _second_parameter(batch) == "events":
            cls.on_timestamp_batch = _with_events(batch)  # type: ignore[method-assign,assignment]

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
        """The run's broker (bound only during :meth:`engine.BacktestEngine.run`).

        Raises
        ------
        RuntimeError
            Outside a run.
        """
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
        """True when a non-zero position in ``symbol`` is held."""
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

    def get_all_positions(self) -> pl.DataFrame:
        """Every open position as a polars frame, one row per symbol (the seeds' helper).

        Columns: ``symbol``, ``side`` (``long``/``short``), ``quantity`` (signed shares),
        ``avg_price`` and ``mark`` (currency per share: average entry price, latest close),
        ``entry_timestamp`` (UTC), ``entry_commission``, ``unrealized_pnl`` (currency, after
        the entry commission), ``stop_loss``, ``take_profit`` (NaN when none); the schema of
        :attr:`engine.BacktestResult.open_positions`. Empty (0 rows) when flat.
        """
        return self.broker.open_positions_frame()

    # ------------------------------------------------------------------ order helpers
    @overload
    def buy(
        self,
        symbol: str,
        quantity: float,
        *,
        percent: None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
        trail_amount: float | None = None,
        trail_percent: float | None = None,
        tif: str = "GTC",
        take_profit: float | None = None,
        stop_loss: float | None = None,
    ) -> Order: ...

    @overload
    def buy(
        self,
        symbol: str,
        quantity: None = None,
        *,
        percent: float,
        limit_price: float | None = None,
        stop_price: float | None = None,
        trail_amount: float | None = None,
        trail_percent: float | None = None,
        tif: str = "GTC",
        take_profit: float | None = None,
        stop_loss: float | None = None,
    ) -> Order | None: ...

    def buy(
        self,
        symbol: str,
        quantity: float | None = None,
        *,
        percent: float | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
        trail_amount: float | None = None,
        trail_percent: float | None = None,
        tif: str = "GTC",
        take_profit: float | None = None,
        stop_loss: float | None = None,
    ) -> Order | None:
        """Buy ``quantity`` (> 0) shares, or shares worth ``percent`` of equity.

        Give exactly one of ``quantity`` and ``percent``. ``percent`` (the seeds' form) is a
        fraction of equity in (0, 1] (0.04 = 4 %), turned into shares at the latest close as
        :meth:`buy_percent` does (rounded down to whole shares unless fractional); it returns
        ``None`` when that is 0 shares.

        The order type follows the prices given: none → market; ``limit_price`` → limit;
        ``stop_price`` → stop; both → stop-limit; ``trail_amount``/``trail_percent`` →
        trailing stop. ``take_profit``/``stop_loss`` attach bracket children (one cancels the
        other) when this order fills. ``tif`` is ``"GTC"`` or ``"DAY"``.

        Raises
        ------
        ValueError
            Both or neither of ``quantity`` and ``percent``; a non-positive or non-finite
            quantity; ``percent`` outside (0, 1]; a fractional quantity with
            ``fractional_shares=False``; inconsistent prices.
        """
        qty = self._quantity(symbol, quantity, percent, 1.0)
        if qty is None:
            return None
        return self.broker.submit(
            symbol,
            qty,
            limit_price=limit_price,
            stop_price=stop_price,
            trail_amount=trail_amount,
            trail_percent=trail_percent,
            tif=tif,
            take_profit=take_profit,
            stop_loss=stop_loss,
        )

    @overload
    def sell(
        self,
        symbol: str,
        quantity: float,
        *,
        percent: None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
        trail_amount: float | None = None,
        trail_percent: float | None = None,
        tif: str = "GTC",
        take_profit: float | None = None,
        stop_loss: float | None = None,
    ) -> Order: ...

    @overload
    def sell(
        self,
        symbol: str,
        quantity: None = None,
        *,
        percent: float,
        limit_price: float | None = None,
        stop_price: float | None = None,
        trail_amount: float | None = None,
        trail_percent: float | None = None,
        tif: str = "GTC",
        take_profit: float | None = None,
        stop_loss: float | None = None,
    ) -> Order | None: ...

    def sell(
        self,
        symbol: str,
        quantity: float | None = None,
        *,
        percent: float | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
        trail_amount: float | None = None,
        trail_percent: float | None = None,
        tif: str = "GTC",
        take_profit: float | None = None,
        stop_loss: float | None = None,
    ) -> Order | None:
        """Sell ``quantity`` (> 0) shares, or shares worth ``percent`` of equity; same
        keywords and rules as :meth:`buy`."""
        qty = self._quantity(symbol, quantity, percent, -1.0)
        if qty is None:
            return None
        return self.broker.submit(
            symbol,
            -qty,
            limit_price=limit_price,
            stop_price=stop_price,
            trail_amount=trail_amount,
            trail_percent=trail_percent,
            tif=tif,
            take_profit=take_profit,
            stop_loss=stop_loss,
        )

    def _quantity(
        self, symbol: str, quantity: float | None, percent: float | None, side: float
    ) -> float | None:
        """Shares (> 0) from exactly one of ``quantity`` / ``percent``; None for 0 shares
        (recorded as an unplaced order of ``side``, +1 buy / -1 sell)."""
        if (quantity is None) == (percent is None):
            raise ValueError(
                f"give exactly one of quantity and percent, got quantity={quantity!r}, "
                f"percent={percent!r}"
            )
        if quantity is not None:
            return _positive(quantity)
        p = float(percent)  # type: ignore[arg-type]
        if not (math.isfinite(p) and 0 < p <= 1):
            raise ValueError(f"percent must be a fraction of equity in (0, 1], got {percent!r}")
        return self._shares_worth(symbol, p * self.equity, side)

    def _shares_worth(self, symbol: str, value: float, side: float) -> float | None:
        """Whole shares (unless fractional) worth ``value`` (currency) at the latest close;
        None for 0 shares, then recording the unplaced order of ``side`` (+1 buy, -1 sell)
        when ``value`` bought more than nothing but less than one share."""
        qty = self.broker.shares_for_value(symbol, value)
        if qty > 0:
            return qty
        broker = self.broker
        sid = broker.data.resolve(symbol)
        wanted = max(value, 0.0) / float(broker.marks[sid])
        if zero_shares_order(wanted, broker.fractional):
            broker.record_unplaced(sid, side * wanted)
        return None

    def buy_percent(self, symbol: str, percent: float) -> Order | None:
        """Buy shares worth ``percent`` (fraction) of equity at the latest close (rounded down
        to whole shares unless fractional); ``None`` if that is 0 shares (then a
        ``rounds_to_zero_shares`` rejection row is recorded)."""
        qty = self._shares_worth(symbol, percent * self.equity, 1.0)
        return self.buy(symbol, qty) if qty is not None else None

    def sell_percent(self, symbol: str, percent: float) -> Order | None:
        """Sell shares worth ``percent`` (fraction) of equity at the latest close; ``None`` if
        that is 0 shares (then a ``rounds_to_zero_shares`` rejection row is recorded)."""
        qty = self._shares_worth(symbol, percent * self.equity, -1.0)
        return self.sell(symbol, qty) if qty is not None else None

    def order_target_value(self, symbol: str, value: float) -> Order | None:
        """Trade so position + working orders are worth ``value`` (signed currency) at the
        latest close. Returns the order, or ``None`` when no trade is needed. Whole shares
        unless fractional: ``ExecutionConfig.target_rounding`` says whether the target
        position (``"position"``, default) or the order size (``"order"``, as Backtrader and
        VectorBT) is rounded toward zero."""
        return self.broker.order_target_value(symbol, value)

    def order_target_percent(self, symbol: str, percent: float) -> Order | None:
        """:meth:`order_target_value` with ``value = percent × equity``."""
        return self.broker.order_target_value(symbol, percent * self.equity)

    def close_position(self, symbol: str) -> Order | None:
        """Market order that brings position + working orders to 0 (``None`` if already 0)."""
        return self.broker.close_position(symbol)

    def submit_batch(
        self, ids: IntArray | list[int], quantities: FloatArray | list[float] | float
    ) -> IntArray:
        """Market orders for many symbols in one call: one per symbol id of ``ids`` (as
        ``batch.ids`` gives them), signed shares ``quantities`` (one per id, or one number
        for all); the same orders as :meth:`buy` / :meth:`sell` of each in turn.

        Returns
        -------
        ndarray[int64]
            The order ids, in order.

        Raises
        ------
        ValueError
            A bad id or quantity (outside the universe, not finite, zero, or fractional
            while fractional shares are off); nothing is placed then.
        """
        return self.broker.submit_batch(ids, quantities)

    def close_positions(self, ids: IntArray | list[int]) -> IntArray:
        """:meth:`close_position` for each symbol id of ``ids`` in turn, in one call (no
        order where position + working orders are already 0).

        Returns
        -------
        ndarray[int64]
            The ids of the orders placed, in order.

        Raises
        ------
        ValueError
            An id outside the universe; nothing is placed then.
        """
        return self.broker.close_positions(ids)

    def reduce_position(self, symbol: str, fraction: float) -> Order | None:
        """Market order closing ``fraction`` of the position (the seeds' helper).

        Shares = ``fraction × |position|`` (rounded down to whole shares unless fractional),
        sold for a long, bought back for a short; ``fraction=1`` is :meth:`close_position`.
        Working orders are not counted. Returns ``None`` when flat or when that is 0 shares.

        Raises
        ------
        ValueError
            ``fraction`` outside (0, 1].
        """
        f = float(fraction)
        if not (math.isfinite(f) and 0 < f <= 1):
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        if f == 1.0:
            return self.close_position(symbol)
        held = self.get_position(symbol)
        qty = self.broker.round_quantity(abs(held) * f)
        if qty <= 0:
            wanted = -held * f
            if zero_shares_order(wanted, self.broker.fractional):
                self.broker.record_unplaced(self.broker.data.resolve(symbol), wanted)
            return None
        return self.broker.submit(symbol, -qty if held > 0 else qty)

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
        self, price: float, atr: float, risk_pct: float = 0.02, atr_multiple: float = 1.0
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


def _positional_count(func: Callable[..., Any]) -> int:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = inspect.signature(func).parameters.values()
    return sum(1 for p in params if p.kind in kinds)


def _second_parameter(func: Callable[..., Any]) -> str | None:
    names = list(inspect.signature(func).parameters)
    return names[2] if len(names) > 2 else None


def _with_context(func: Callable[..., Any]) -> Callable[[Strategy, MarketEvent], None]:
    """``on_market_data(self, event, context)`` (the seeds' form) called as the engine's
    ``on_market_data(self, event)``: ``context`` is ``event.context``."""

    @functools.wraps(func)
    def on_market_data(self: Strategy, event: MarketEvent) -> None:
        func(self, event, event.context)

    return on_market_data


def _with_events(
    func: Callable[..., Any],
) -> Callable[[Strategy, datetime, BarBatch, dict[str, float]], None]:
    """``on_timestamp_batch(self, timestamp, events, context)`` (the seeds' 000 §9.1 form):
    ``events`` is the batch as a ``list[MarketEvent]``."""

    @functools.wraps(func)
    def on_timestamp_batch(
        self: Strategy, timestamp: datetime, batch: BarBatch, context: dict[str, float]
    ) -> None:
        func(self, timestamp, list(batch.iter_events(context)), context)

    return on_timestamp_batch
