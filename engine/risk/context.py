"""Snapshots handed to risk rules: :class:`PortfolioSnapshot` and :class:`RiskContext`.

A :class:`RiskContext` is built once per (position, bar) and shared by every rule; costly
fields (``features``, ``market_features``, P&L figures) are computed on first access. Values
are those known at the bar's close, never later.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from engine.risk import kernels

if TYPE_CHECKING:
    from engine.data import FloatArray, MarketData


class PortfolioSnapshot:
    """Portfolio-wide figures at one moment of a bar (shared by all rules of that moment).

    Attributes
    ----------
    timestamp : datetime
        Close of the current bar (UTC).
    bar_index : int
    equity, cash, positions_value, gross_exposure : float
        Currency; positions marked at the latest close of each symbol.
    n_positions : int
    peak_equity : float
        Highest end-of-bar equity so far (the initial cash before the first bar).
    day_start_equity : float
        Equity at the close of the previous UTC calendar day's last bar (initial cash at first).
    realized_pnl : float
        Σ ``pnl_net`` of closed trades so far (currency).
    trades_today : int
        Fills so far in the current UTC calendar day.

    ``position``, ``mark``, ``pending_quantity`` read live engine arrays (read-only).
    """

    __slots__ = (
        "timestamp",
        "bar_index",
        "equity",
        "cash",
        "positions_value",
        "gross_exposure",
        "n_positions",
        "peak_equity",
        "day_start_equity",
        "realized_pnl",
        "trades_today",
        "_quantities",
        "_marks",
        "_pending",
    )

    def __init__(
        self,
        *,
        timestamp: datetime,
        bar_index: int,
        equity: float,
        cash: float,
        positions_value: float,
        gross_exposure: float,
        n_positions: int,
        peak_equity: float,
        day_start_equity: float,
        realized_pnl: float,
        trades_today: int,
        quantities: FloatArray,
        marks: FloatArray,
        pending: FloatArray,
    ) -> None:
        self.timestamp = timestamp
        self.bar_index = bar_index
        self.equity = equity
        self.cash = cash
        self.positions_value = positions_value
        self.gross_exposure = gross_exposure
        self.n_positions = n_positions
        self.peak_equity = peak_equity
        self.day_start_equity = day_start_equity
        self.realized_pnl = realized_pnl
        self.trades_today = trades_today
        self._quantities = quantities
        self._marks = marks
        self._pending = pending

    @property
    def gross_leverage(self) -> float:
        """Σ|quantity × mark| / equity (inf for equity <= 0 with positions)."""
        return _ratio(self.gross_exposure, self.equity)

    @property
    def net_leverage(self) -> float:
        """Σ quantity × mark / equity."""
        return _ratio(self.positions_value, self.equity)

    @property
    def drawdown(self) -> float:
        """equity / peak_equity − 1 (≤ 0)."""
        return self.equity / self.peak_equity - 1.0 if self.peak_equity > 0 else 0.0

    @property
    def daily_pnl(self) -> float:
        """equity − day_start_equity (currency)."""
        return self.equity - self.day_start_equity

    def position(self, sid: int) -> float:
        """Signed shares held of symbol id ``sid``."""
        return float(self._quantities[sid])

    def mark(self, sid: int) -> float:
        """Latest close of symbol id ``sid`` (NaN before its first bar)."""
        return float(self._marks[sid])

    def exposure(self, sid: int) -> float:
        """Signed shares of symbol id ``sid`` held plus those of its accepted, unfilled market
        orders (:meth:`position` + :meth:`pending_quantity`)."""
        return float(self._quantities[sid] + self._pending[sid])

    def pending_quantity(self, sid: int) -> float:
        """Signed shares of accepted, unfilled market orders of symbol id ``sid``."""
        return float(self._pending[sid])

    def projected_positions(self) -> int:
        """Symbols whose position + accepted working market orders is non-zero."""
        return int(kernels.count_projected(self._quantities, self._pending, 1e-9))

    def projected_gross_exposure(self) -> float:
        """Σ |position + accepted working market orders| × mark (currency)."""
        exposure = np.abs(self._quantities + self._pending) * self._marks
        return float(np.nansum(exposure))


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return 0.0 if num == 0 else math.inf


class RiskContext:
    """Immutable view of one open position at one bar, shared by all rules.

    Attributes
    ----------
    timestamp : datetime
        Close of the bar being evaluated (UTC).
    bar_index : int
    symbol : str
    sid : int
    row : int
        Market-data row whose values the context shows: the current bar in hook C; for the
        entry context passed to ``on_entry`` it is the last bar completed before the fill (the
        fill bar itself for a fill at the close), ``-1`` if there is none.
    quantity : float
        Signed shares (positive long).
    entry_price : float
        Average entry price of the position (currency per share, after slippage).
    entry_time : datetime
    bars_held : int
        The symbol's bars since the entry bar (entry bar = 0).
    max_price, min_price : float
        Highest high / lowest low seen while held (and the entry price).
    stop_loss, take_profit : float
        Levels in force (NaN if none).
    portfolio : PortfolioSnapshot
        Built on first access when the engine passes a factory.
    """

    __slots__ = (
        "timestamp",
        "bar_index",
        "symbol",
        "sid",
        "row",
        "quantity",
        "entry_price",
        "entry_time",
        "bars_held",
        "max_price",
        "min_price",
        "stop_loss",
        "take_profit",
        "_portfolio",
        "_data",
        "_features",
        "_market",
    )

    def __init__(
        self,
        *,
        data: MarketData,
        timestamp: datetime,
        bar_index: int,
        symbol: str,
        sid: int,
        row: int,
        quantity: float,
        entry_price: float,
        entry_time: datetime,
        bars_held: int,
        max_price: float,
        min_price: float,
        stop_loss: float,
        take_profit: float,
        portfolio: PortfolioSnapshot | Callable[[], PortfolioSnapshot],
    ) -> None:
        self._data = data
        self.timestamp = timestamp
        self.bar_index = bar_index
        self.symbol = symbol
        self.sid = sid
        self.row = row
        self.quantity = quantity
        self.entry_price = entry_price
        self.entry_time = entry_time
        self.bars_held = bars_held
        self.max_price = max_price
        self.min_price = min_price
        self.stop_loss = stop_loss
        self.take_profit = take_profit
        self._portfolio = portfolio
        self._features: dict[str, float] | None = None
        self._market: dict[str, float] | None = None

    @property
    def portfolio(self) -> PortfolioSnapshot:
        """Portfolio figures at this moment (shared by every context of the bar)."""
        p = self._portfolio
        if not isinstance(p, PortfolioSnapshot):
            p = p()
            self._portfolio = p
        return p

    def _price(self, arr: FloatArray) -> float:
        return float(arr[self.row]) if self.row >= 0 else math.nan

    @property
    def open(self) -> float:
        """The current bar's open, currency per share (NaN before the first bar)."""
        return self._price(self._data.open)

    @property
    def high(self) -> float:
        """The current bar's high, currency per share (NaN before the first bar)."""
        return self._price(self._data.high)

    @property
    def low(self) -> float:
        """The current bar's low, currency per share (NaN before the first bar)."""
        return self._price(self._data.low)

    @property
    def close(self) -> float:
        """The current bar's close, currency per share (NaN before the first bar)."""
        return self._price(self._data.close)

    @property
    def volume(self) -> float:
        """The current bar's volume, shares (NaN before the first bar)."""
        return self._price(self._data.volume)

    @property
    def bid(self) -> float:
        """The bid at the current bar's close, NaN when the panel has no ``bid`` column."""
        col = self._data.columns.get("bid")
        return self._price(col) if col is not None else math.nan

    @property
    def ask(self) -> float:
        """The ask at the current bar's close, NaN when the panel has no ``ask`` column."""
        col = self._data.columns.get("ask")
        return self._price(col) if col is not None else math.nan

    @property
    def is_long(self) -> bool:
        """Whether the position is long (quantity > 0)."""
        return self.quantity > 0

    @property
    def side(self) -> str:
        """``"long"`` or ``"short"``."""
        return "long" if self.quantity > 0 else "short"

    @property
    def direction(self) -> float:
        """+1.0 for a long, −1.0 for a short."""
        return 1.0 if self.quantity > 0 else -1.0

    @property
    def unrealized_pnl(self) -> float:
        """(close − entry_price) × quantity, currency, before commissions."""
        return (self.close - self.entry_price) * self.quantity

    @property
    def unrealized_return(self) -> float:
        """(close / entry_price − 1) × direction, fraction."""
        return (self.close / self.entry_price - 1.0) * self.direction

    @property
    def mfe(self) -> float:
        """Maximum favourable excursion, currency (≥ 0), from bar highs/lows while held."""
        best = self.max_price if self.quantity > 0 else self.min_price
        return max(0.0, (best - self.entry_price) * self.quantity)

    @property
    def mae(self) -> float:
        """Maximum adverse excursion, currency (≤ 0), from bar highs/lows while held."""
        worst = self.min_price if self.quantity > 0 else self.max_price
        return min(0.0, (worst - self.entry_price) * self.quantity)

    @property
    def mfe_pct(self) -> float:
        """MFE as a fraction of the entry notional."""
        return self.mfe / abs(self.entry_price * self.quantity)

    @property
    def mae_pct(self) -> float:
        """MAE as a fraction of the entry notional (≤ 0)."""
        return self.mae / abs(self.entry_price * self.quantity)

    # portfolio shortcuts (issue 5's field list)
    @property
    def equity(self) -> float:
        """Portfolio equity at the current close, currency."""
        return self.portfolio.equity

    @property
    def cash(self) -> float:
        """Portfolio cash, currency."""
        return self.portfolio.cash

    @property
    def leverage(self) -> float:
        """Gross leverage, Σ|quantity × mark| / equity (a multiple)."""
        return self.portfolio.gross_leverage

    @property
    def peak_equity(self) -> float:
        """Highest equity seen so far, currency."""
        return self.portfolio.peak_equity

    @property
    def drawdown(self) -> float:
        """equity / peak_equity − 1, a fraction ≤ 0."""
        return self.portfolio.drawdown

    @property
    def realized_pnl(self) -> float:
        """Realized P&L of the closed trades so far, currency, after commissions."""
        return self.portfolio.realized_pnl

    @property
    def daily_pnl(self) -> float:
        """equity − the equity at the previous UTC day's last close, currency."""
        return self.portfolio.daily_pnl

    @property
    def trades_today(self) -> int:
        """Fills so far in the current UTC calendar day, a count."""
        return self.portfolio.trades_today

    # the seeds' names (003 §2.3, 000 §5.4; docs/reference/seeds-compatibility.md)
    @property
    def asset_id(self) -> str:
        """:attr:`symbol`."""
        return self.symbol

    @property
    def market_price(self) -> float:
        """:attr:`close` of the evaluated bar."""
        return self.close

    @property
    def position_quantity(self) -> float:
        """:attr:`quantity`."""
        return self.quantity

    @property
    def entry_bars_ago(self) -> int:
        """:attr:`bars_held`."""
        return self.bars_held

    @property
    def max_favorable_excursion(self) -> float:
        """:attr:`mfe`."""
        return self.mfe

    @property
    def max_adverse_excursion(self) -> float:
        """:attr:`mae`."""
        return self.mae

    @property
    def portfolio_equity(self) -> float:
        """:attr:`equity`."""
        return self.equity

    @property
    def portfolio_cash(self) -> float:
        """:attr:`cash`."""
        return self.cash

    @property
    def current_leverage(self) -> float:
        """:attr:`leverage` (gross)."""
        return self.leverage

    @property
    def bid_price(self) -> float:
        """:attr:`bid`."""
        return self.bid

    @property
    def ask_price(self) -> float:
        """:attr:`ask`."""
        return self.ask

    @property
    def features(self) -> dict[str, float]:
        """The row's indicator and signal columns (NaN where null or no row)."""
        if self._features is None:
            cols = self._data.columns
            if self.row >= 0:
                self._features = {c: float(a[self.row]) for c, a in cols.items()}
            else:
                self._features = {c: math.nan for c in cols}
        return self._features

    @property
    def market_features(self) -> dict[str, float]:
        """Market-wide context values at the row's timestamp (NaN where missing)."""
        if self._market is None:
            if self.row >= 0:
                index = int(np.searchsorted(self._data.offsets, self.row, side="right")) - 1
                self._market = self._data.context_at(index)
            else:
                self._market = {c: math.nan for c in self._data.context}
        return self._market

    def __repr__(self) -> str:
        return (
            f"RiskContext({self.timestamp.isoformat()}, {self.symbol!r}, qty={self.quantity}, "
            f"entry={self.entry_price}, bars_held={self.bars_held}, stop={self.stop_loss}, "
            f"tp={self.take_profit})"
        )
