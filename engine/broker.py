"""Matching and accounting: fill rules → slippage → commission; positions, cash and trades.

The :class:`Broker` owns every piece of mutable run state (cash, positions, marks, stop and
take-profit levels, working orders) in NumPy arrays indexed by symbol id. The engine's loop
(:mod:`engine.engine`) calls its step methods in the design's order; strategies reach it
through the :class:`engine.Strategy` helpers.

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

Order of one bar's events (``ExecutionConfig.bar_event_order``): ``chronological`` = market
orders at the open, then resting orders, then levels; ``stops_first`` = resting orders and
levels against the whole bar, then the market orders at the open (a look-ahead matching
Backtrader and VectorBT callbacks). See :class:`engine.ExecutionConfig` for ``exit_conflict``,
``stop_activation``, ``cash_check``, ``reentry_cooldown_bars`` and ``cash_tolerance``.

Cash: a buy is rejected with ``insufficient_cash`` when ``price × qty + commission`` exceeds the
cash by more than ``cash_tolerance``; with ``allow_short=False`` a sell beyond the position is
rejected with ``short_not_allowed``. Both are recorded, never shrunk.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.config import ExecutionConfig
from engine.core import layout
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
    round_quantity,
    short_refused,
    zero_shares_order,
)
from engine.core.matching import (
    level_exit_price,
    limit_fill_price,
    stop_fill_price,
    stop_limit_fill_price,
    trail_level,
)
from engine.costs.commission import NoCommission
from engine.costs.slippage import NoSlippage
from engine.data import BarView, FloatArray, IntArray, MarketData
from engine.events import Fill
from engine.mechanics import MarketMechanics
from engine.orders import (
    ACTIVE,
    Order,
    OrderStatus,
    OrderType,
    TimeInForce,
    plain_market_order,
)
from engine.recorder import Recorder
from engine.risk import kernels
from engine.risk.batch import PositionActions, PositionBatch
from engine.risk.context import PortfolioSnapshot, RiskContext
from engine.risk.decision import OrderAction, RiskDecision

if TYPE_CHECKING:
    from engine.risk.manager import RiskManager

EPS = 1e-9
# enum members bound once: attribute access on an Enum class is slow in the hot path
MARKET = OrderType.MARKET
LIMIT = OrderType.LIMIT
STOP = OrderType.STOP
STOP_LIMIT = OrderType.STOP_LIMIT
TRAILING_STOP = OrderType.TRAILING_STOP
SUBMITTED = OrderStatus.SUBMITTED
ACCEPTED = OrderStatus.ACCEPTED
FILLED = OrderStatus.FILLED
PARTIALLY_FILLED = OrderStatus.PARTIALLY_FILLED
REJECTED = OrderStatus.REJECTED
CANCELLED = OrderStatus.CANCELLED
EXPIRED = OrderStatus.EXPIRED
DAY = TimeInForce.DAY
_TYPE_NAMES = {t: t.value for t in OrderType}
_DAY_US = 86_400_000_000


class _OpenTrade:
    """The open part of a round trip on one symbol."""

    __slots__ = (
        "direction",
        "quantity",
        "entry_index",
        "entry_ordinal",
        "commission",
        "slippage",
        "decision_row",
        "decision_index",
    )

    def __init__(
        self,
        direction: float,
        quantity: float,
        entry_index: int,
        entry_ordinal: int,
        commission: float,
        slippage: float,
        decision_row: int,
        decision_index: int,
    ) -> None:
        self.direction = direction
        self.quantity = quantity
        self.entry_index = entry_index
        self.entry_ordinal = entry_ordinal
        self.commission = commission
        self.slippage = slippage
        self.decision_row = decision_row
        self.decision_index = decision_index


class Broker:
    """Run state and matching for one backtest run (see the module docstring)."""

    def __init__(
        self,
        data: MarketData,
        config: ExecutionConfig,
        risk_manager: RiskManager | None,
        recorder: Recorder,
        on_fill: Callable[[Fill], None] | None = None,
    ) -> None:
        n = data.n_symbols
        self.data = data
        self.config = config
        self.risk = risk_manager
        self._on_fill = on_fill
        self.recorder = recorder
        self.fractional = config.fractional_shares
        self.cash = config.initial_cash
        # per-symbol state: two matrices, one row per field (layout: engine.risk.kernels), so
        # a compiled bar step takes them as two arguments; the attributes are row views
        self.fstate: FloatArray = np.full((layout.N_FLOAT_FIELDS, n), np.nan)
        self.istate: IntArray = np.zeros((layout.N_INT_FIELDS, n), dtype=np.int64)
        self.qty: FloatArray = self.fstate[layout.QTY]
        self.qty[:] = 0.0
        self._avg: FloatArray = self.fstate[layout.AVG]
        self._avg[:] = 0.0
        self.marks: FloatArray = self.fstate[layout.MARK]
        self._stop: FloatArray = self.fstate[layout.STOP]
        self._tp: FloatArray = self.fstate[layout.TP]
        self._best: FloatArray = self.fstate[layout.BEST]
        self._worst: FloatArray = self.fstate[layout.WORST]
        self.last_row: IntArray = self.istate[layout.LAST_ROW]
        self.last_row[:] = -1
        self._level_from: IntArray = self.istate[layout.LEVEL_FROM]
        # the rules that set the levels, as codes into self._rule_names (0: none)
        self._stop_rule: IntArray = self.istate[layout.STOP_RULE]
        self._tp_rule: IntArray = self.istate[layout.TP_RULE]
        self._entry_ordinal: IntArray = self.istate[layout.ENTRY_ORDINAL]
        self._entry_pending: IntArray = self.istate[layout.ENTRY_PENDING]
        self.pending: FloatArray = np.zeros(n)
        self._exit_pending = np.zeros(n, dtype=bool)
        self.trades: dict[int, _OpenTrade] = {}
        self._realized = 0.0
        self.book: list[Order] = []
        self._new_orders: list[Order] = []
        self._accepted_this_bar: list[Order] = []
        self.orders: list[Order] = []
        self.n_fills = 0
        self._held: IntArray | None = None
        self.peak = config.initial_cash
        self.last_equity = config.initial_cash
        self.day_start = config.initial_cash
        self.day = -1
        self.fills_today = 0
        self.i = -1
        self.now: datetime = datetime.min
        self.now_us = 0
        self._closing = False
        self._levels_set = False  # no stop/take-profit level was ever set: skip step 1b
        self.lo = 0  # the current bar's data rows are lo:hi
        self.hi = 0
        self._index_lists(data)
        self._children: dict[int, list[Order]] = {}
        self._has_entry_rules = risk_manager is not None and bool(risk_manager.entry_rules)
        # compiled path for the built-in fixed-percent rules (None: the general path)
        kernel = risk_manager.basic_kernel() if risk_manager is not None else None
        self._kernel = kernel
        self._rule_names: list[str] = list(kernel.names) if kernel is not None else [""]
        self._rule_codes = {name: code for code, name in enumerate(self._rule_names)}
        if kernel is not None and kernel.sets_levels:
            self._levels_set = True
        self._kernel_exits = 0  # exits found by the compiled hook C (-1: general path)
        self._marked = -1  # index of the bar already marked with its level check
        # long-only run with the compiled rules: the entry rows are never read, and the levels
        # of an open's entries are set by the next compiled step of the same bar (deferred)
        self._entry_rows_unused = kernel is not None and not config.allow_short
        self._defer_entries = self._entry_rows_unused and config.stop_activation == "next_bar"
        self._new_entries: dict[int, int] = {}
        self._rules: FloatArray = (
            kernel.rules if kernel is not None else np.empty((0, layout.N_RULE_FIELDS))
        )
        self._risk_sees_fills = risk_manager is not None and bool(risk_manager.fill_rules)
        # skip work nobody consumes: slippage bar views, Fill objects without listeners
        self._no_slippage = type(config.slippage) is NoSlippage
        self._commission = config.commission
        self._free = type(config.commission) is NoCommission  # compute() is 0.0: not called
        self._allow_short = config.allow_short
        self._volume_cap = config.max_volume_participation
        self._fill_at_close = config.fill == "close"
        # the recorder's row buffers, appended to once per fill / closed trade
        # (fields: engine.core.records.FILL_DTYPE / TRADE_DTYPE; types and reasons as names)
        self._fill_rows = recorder.fills
        self._trade_rows = recorder.trades
        self._strategy_wants_fills = on_fill is not None
        self._wants_fill_events = self._strategy_wants_fills or (
            risk_manager is not None and bool(risk_manager.fill_rules)
        )
        # long-only runs cannot hold a short: level checks skip the side selection
        self._long_only = not config.allow_short
        # fill-semantics settings (ExecutionConfig)
        self._stops_first = config.bar_event_order == "stops_first"
        self._entry_bar = config.stop_activation == "entry_bar"
        self._stop_wins = config.exit_conflict == "stop_wins"
        self._cash_tol = config.cash_tolerance
        self._cooldown = config.reentry_cooldown_bars
        # nothing to do after a fill's accounting but bracket children (the common case)
        self._no_fill_hooks = not (
            self._cooldown or self._wants_fill_events or self._has_entry_rules
        )
        self._stopped_at: IntArray = np.full(n, -(2**62), dtype=np.int64)
        self._stopped_dir: FloatArray = np.zeros(n)
        # 1: the levels of that position are not checked now (stops_first: a queued exit)
        self._deferred: IntArray = self.istate[layout.DEFERRED]
        # sid -> direction of positions closed in the stops-first pass (None: not tracking),
        # then handed to the open's pass, which cancels their queued exits
        self._closed_now: dict[int, float] | None = None
        self._stop_closed: dict[int, float] | None = None
        # market mechanics (corporate actions, delistings, financing; engine/mechanics.py)
        self.mechanics: MarketMechanics | None = (
            MarketMechanics(
                data,
                config.corporate_actions,
                config.delisting,
                config.financing,
                config.fractional_shares,
            )
            if config.has_mechanics
            else None
        )
        self._batch_source: dict[str, npt.NDArray[Any]] = {
            "quantity": self.qty,
            "entry_price": self._avg,
            "entry_ordinal": self._entry_ordinal,
            "max_price": self._best,
            "min_price": self._worst,
            "stop_loss": self._stop,
            "take_profit": self._tp,
        }

    # ------------------------------------------------------------------ helpers
    def held(self) -> IntArray:
        """Ids of symbols with a non-zero position (cached until the next fill)."""
        if self._held is None:
            self._held = self.qty.nonzero()[0]
        return self._held

    def equity(self) -> float:
        """cash + Σ quantity × latest close (currency), summed in symbol-id order."""
        held = self.held()
        if held.size == 0:
            return self.cash
        value, _ = kernels.portfolio_value(held, self.qty, self.marks)
        return self.cash + value

    def round_quantity(self, quantity: float) -> float:
        """Round toward zero to whole shares unless fractional shares are allowed."""
        return round_quantity(quantity, self.fractional)

    def position(self, symbol: str) -> float:
        """Signed shares of ``symbol`` held (0.0 if none).

        Raises
        ------
        KeyError
            If ``symbol`` is not in the market data.
        """
        return float(self.qty[self.data.resolve(symbol)])

    def price(self, symbol: str) -> float:
        """The latest close of ``symbol`` (currency per share; NaN before its first bar).

        Raises
        ------
        KeyError
            If ``symbol`` is not in the market data.
        """
        return float(self.marks[self.data.resolve(symbol)])

    def position_value(self, symbol: str) -> float:
        """Signed shares × latest close of ``symbol`` (currency; 0.0 when flat).

        Raises
        ------
        KeyError
            If ``symbol`` is not in the market data.
        """
        sid = self.data.resolve(symbol)
        q = float(self.qty[sid])
        return q * float(self.marks[sid]) if q != 0 else 0.0

    def unrealized_pnl_pct(self, symbol: str) -> float:
        """``(close / average entry price - 1) × direction`` of the position in ``symbol``
        (fraction; 0.0 when flat).

        Raises
        ------
        KeyError
            If ``symbol`` is not in the market data.
        """
        sid = self.data.resolve(symbol)
        q = float(self.qty[sid])
        if q == 0:
            return 0.0
        return (float(self.marks[sid]) / float(self._avg[sid]) - 1.0) * math.copysign(1.0, q)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Working orders (submitted, accepted or partially filled), of ``symbol`` or of
        every symbol, in submission order.

        Raises
        ------
        KeyError
            If ``symbol`` is not in the market data.
        """
        sid = None if symbol is None else self.data.resolve(symbol)
        return [
            o
            for o in (*self.book, *self._new_orders)
            if o.is_active and (sid is None or o.sid == sid)
        ]

    def shares_for_value(self, symbol: str, value: float) -> float:
        """Shares worth ``value`` (currency; negative counts as 0) at the latest close,
        rounded toward zero to whole shares unless fractional.

        Raises
        ------
        KeyError
            If ``symbol`` is not in the market data.
        ValueError
            If the symbol has had no bar yet.
        """
        sid = self.data.resolve(symbol)
        price = float(self.marks[sid])
        if not math.isfinite(price) or price <= 0:
            raise ValueError(f"no price yet for {symbol!r}: it has not had a bar")
        return self.round_quantity(max(value, 0.0) / price)

    def snapshot(self) -> PortfolioSnapshot:
        """Portfolio figures now (positions marked at the latest closes)."""
        held = self.held()
        value, gross = (
            kernels.portfolio_value(held, self.qty, self.marks) if held.size else (0.0, 0.0)
        )
        return PortfolioSnapshot(
            timestamp=self.now,
            bar_index=self.i,
            equity=self.cash + value,
            cash=self.cash,
            positions_value=value,
            gross_exposure=gross,
            n_positions=int(held.size),
            peak_equity=self.peak,
            day_start_equity=self.day_start,
            realized_pnl=self._realized,
            trades_today=self.fills_today,
            quantities=self.qty,
            marks=self.marks,
            pending=self.pending,
        )

    def _context(
        self,
        sid: int,
        row: int,
        snapshot: PortfolioSnapshot | Callable[[], PortfolioSnapshot],
    ) -> RiskContext:
        trade = self.trades[sid]
        data = self.data
        return RiskContext(
            data=data,
            timestamp=self.now,
            bar_index=self.i,
            symbol=str(data.symbols[sid]),
            sid=sid,
            row=row,
            quantity=float(self.qty[sid]),
            entry_price=float(self._avg[sid]),
            entry_time=data.datetimes[trade.entry_index],
            bars_held=int(data.ordinal[row]) - trade.entry_ordinal if row >= 0 else 0,
            max_price=float(self._best[sid]),
            min_price=float(self._worst[sid]),
            stop_loss=float(self._stop[sid]),
            take_profit=float(self._tp[sid]),
            portfolio=snapshot,
        )

    # ------------------------------------------------------------------ chunked data
    def referenced_rows(self) -> IntArray:
        """Market-data rows the run state still points at (latest bars, decision bars of
        working orders and open trades): what a chunk boundary must carry over."""
        rows = [int(o.decision_row) for o in (*self.book, *self._new_orders) if o.is_active]
        rows.extend(t.decision_row for t in self.trades.values())
        rows.extend(self._new_entries.values())
        extra = np.asarray(rows, dtype=np.int64)
        return np.concatenate((self.last_row[self.last_row >= 0], extra[extra >= 0]))

    def rebase(self, data: MarketData, remap: IntArray | None) -> None:
        """Switch to another window of chunked market data; ``remap[old_row]`` is the row in
        ``data`` (every row from :meth:`referenced_rows` is carried); ``None``: row numbers
        are unchanged."""
        self.data = data
        self._index_lists(data)
        if remap is None:
            return
        seen = self.last_row >= 0
        self.last_row[seen] = remap[self.last_row[seen]]
        for order in (*self.book, *self._new_orders):
            if order.is_active and order.decision_row >= 0:
                order.decision_row = int(remap[order.decision_row])
        for trade in self.trades.values():
            if trade.decision_row >= 0:
                trade.decision_row = int(remap[trade.decision_row])
        self._new_entries = {
            sid: int(remap[row]) if row >= 0 else row for sid, row in self._new_entries.items()
        }

    def _index_lists(self, data: MarketData) -> None:
        """Per-timestamp values as Python lists (no NumPy scalar conversion per bar)."""
        self._offsets: list[int] = data.offsets.tolist()
        self._stamps: list[int] = data.timestamps.tolist()
        self._datetimes: list[datetime] = data.datetimes
        self._names: list[str] = [str(name) for name in data.symbols.tolist()]
        self._symbol_index: dict[str, int] = data.symbol_index

    # ------------------------------------------------------------------ bar steps
    def _row(self, sid: int) -> int:
        """Row of symbol ``sid`` at the current bar, ``-1`` if it has no bar now."""
        r: int = self.last_row.item(sid)
        return r if r >= self.lo else -1

    def _rows_now(self, sids: IntArray) -> IntArray:
        r = self.last_row[sids]
        return np.where(r >= self.lo, r, -1)

    def begin_bar(self, index: int) -> None:
        """Start timestamp ``index``: its data rows, latest rows per symbol, clock and day
        (a new UTC day resets the day-start equity and the day's fill count)."""
        self.i = index
        offsets = self._offsets
        lo = offsets[index]
        self.lo = lo
        hi = offsets[index + 1]
        self.hi = hi
        kernels.set_last_rows(lo, hi, self.data.sym_id, self.last_row)
        self.now = self._datetimes[index]
        now_us = self._stamps[index]
        self.now_us = now_us
        day = now_us // _DAY_US
        if day != self.day:
            self.day_start = self.last_equity
            self.day = day
            self.fills_today = 0
        if self.mechanics is not None:
            self.mechanics.begin_bar(self)

    def fill_pending_at_open(self, select: Callable[[Order], bool] | None = None) -> None:
        """Step 1a: working orders against this bar (submission order).

        ``select``: only orders for which it is true are matched now; the others stay in the
        book in their place (used by the ``stops_first`` bar event order).
        """
        if not self.book:
            return
        book = self.book
        kept: list[Order] = []
        self.book = kept  # bracket children spawned by this step's fills are appended too
        open_ = self.data.open
        last_row = self.last_row
        lo = self.lo
        uncapped = self._volume_cap is None
        closed_now = self._stop_closed
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
                and order.quantity * closed_now[sid] < 0
                and self.qty[sid] == 0
            ):
                # exit_conflict="stop_wins": the level exit of this bar took precedence
                self._finish(order, CANCELLED, "position_closed_by_stop", "cancelled")
                continue
            row: int = last_row.item(sid)
            if row < lo:  # no bar for the symbol now
                kept.append(order)
                continue
            if kind is not MARKET:
                self._match(order, row)
            elif uncapped:
                # _fill_order without a volume cap: the whole remainder at the open
                remaining = order.quantity - order.filled
                if remaining != 0:
                    self._execute(order, remaining, open_.item(row), row)
            else:
                self._fill_order(order, row, open_.item(row))
            if order.status in ACTIVE:
                if order.tif is DAY:
                    self._finish(order, EXPIRED, "day_order_not_filled", "expired")
                else:
                    kept.append(order)
        if self._new_entries:
            self.flush_entries()

    def _match(self, order: Order, row: int) -> None:
        data = self.data
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
            order.stop_price = _trail_level(order)
            raw = stop_fill_price(buy, order.stop_price, o, h, lo)
            if math.isnan(raw):
                # ratchet with this bar's extreme, effective from the next bar
                if buy:
                    order.trail_extreme = min(order.trail_extreme, lo)
                else:
                    order.trail_extreme = max(order.trail_extreme, h)
                order.stop_price = _trail_level(order)
        if not math.isnan(raw):
            self._fill_order(order, row, raw)

    def _fill_order(self, order: Order, row: int, raw: float) -> None:
        remaining = order.quantity - order.filled
        cap = self._volume_cap
        if cap is not None and order.reason != "end_of_data":
            most = cap * float(self.data.volume[row])
            if not self.fractional:
                most = math.floor(most + EPS)
            q = math.copysign(min(abs(remaining), most), remaining)
        else:
            q = remaining
        if q == 0:
            return
        self._execute(order, q, raw, row)

    def chronological_step(self) -> None:
        """Step 1 under ``bar_event_order="chronological"``: the market orders at the open (in
        submission order), then resting orders against the bar (in submission order; a gap
        fills them at the open price), then position levels."""
        book = self.book
        if book:
            mixed = False
            for order in book:
                if order.order_type is not MARKET:
                    mixed = True
                    break
            if mixed:
                now = self.i
                self.fill_pending_at_open(lambda order: order.order_type is MARKET)
                # not the bracket children spawned by this bar's fills: they start next bar
                self.fill_pending_at_open(
                    lambda order: order.order_type is not MARKET and order.submit_index < now
                )
            else:
                self.fill_pending_at_open()
        if self._kernel is None:
            self.check_levels()
            return
        # compiled rules: the level check and, when it touches nothing, the bar's marks and
        # hook C in one call (update_marks then has nothing left to do)
        held = self.held()
        if held.size == 0:
            return
        data = self.data
        n = kernels.check_mark_bar_basic_rules(
            self.lo, self.hi, self.i,
            data.sym_id, data.close, data.high, data.low, data.ordinal,
            held, self.fstate, self.istate, self._rules,
        )  # fmt: skip
        if n > 0:
            self._fill_level_hits(n)
        else:
            self._kernel_exits = -1 - n
            self._marked = self.i

    def stops_first_step(self) -> None:
        """Step 1 under ``bar_event_order="stops_first"`` (see :class:`ExecutionConfig`).

        Resting orders, then position levels, against the whole bar; then the market orders at
        the open; then, if anything was left for later (bracket children and levels of positions
        whose queued exit did not fill, ``entry_bar`` levels of the open's entries), those.
        """
        deferred = self._deferred
        held_exits: list[int] = []
        if self.book and not self._stop_wins:
            # exit_conflict="open_sell_wins": a queued market exit suspends the levels
            qty = self.qty
            for order in self.book:
                if order.order_type is MARKET and order.is_active:
                    sid = order.sid
                    if order.quantity * qty[sid] < 0 and self.last_row[sid] >= self.lo:
                        deferred[sid] = 1
                        held_exits.append(sid)
        skipped: set[int] = set()
        self._closed_now = {}
        try:
            if self.book:

                def resting(order: Order) -> bool:
                    if order.order_type is MARKET:
                        return False
                    if order.parent_id >= 0 and deferred[order.sid]:
                        skipped.add(order.order_id)
                        return False
                    return True

                self.fill_pending_at_open(resting)
            self.check_levels()  # not the deferred positions
            self._stop_closed = self._closed_now
            self._closed_now = None
            if self.book:
                self.fill_pending_at_open(lambda order: order.order_type is MARKET)
            if skipped and self.book:
                # suspended bracket children of positions whose queued exit did not fill
                self.fill_pending_at_open(lambda order: order.order_id in skipped)
        finally:
            self._closed_now = None
            self._stop_closed = None
            if held_exits:
                deferred[held_exits] = 0
        if held_exits or self._entry_bar:
            self.check_levels()

    def check_levels(self) -> None:
        """Step 1b: stop-loss / take-profit levels of open positions against this bar (not
        those of positions marked in ``_deferred``)."""
        if not self._levels_set:
            return
        held = self.held()
        if held.size == 0:
            return
        data = self.data
        n = kernels.level_hits(
            held,
            self.lo,
            self.i,
            data.low,
            data.high,
            self.fstate,
            self.istate,
            self._rules,
        )
        if n:
            self._fill_level_hits(n)

    def _fill_level_hits(self, n: int) -> None:
        """Exit the ``n`` positions whose levels the compiled check found touched (ids, stop
        or target, level in the kernel's output buffers), in that order."""
        data = self.data
        sids = self.istate[layout.OUT_SID, :n].tolist()
        stops = self.istate[layout.OUT_CODE, :n].tolist()
        levels = self.fstate[layout.OUT_LEVEL, :n].tolist()
        for sid, stop_hit, level in zip(sids, stops, levels, strict=True):
            pos = float(self.qty[sid])
            if pos == 0:
                continue
            row = int(self.last_row[sid])
            o = float(data.open[row])
            is_long = pos > 0
            if stop_hit:
                kind, reason = STOP, self._rule_names[self._stop_rule[sid]] or "stop_loss"
            else:
                kind, reason = LIMIT, self._rule_names[self._tp_rule[sid]] or "take_profit"
            raw = level_exit_price(is_long, bool(stop_hit), level, o)
            order = self._new_order(
                sid,
                -pos,
                order_type=kind,
                reason=reason,
                submit_index=max(self.i - 1, 0),
                decision_row=int(data.prev_row[row]),
                stop_price=level if kind is STOP else math.nan,
                limit_price=level if kind is LIMIT else math.nan,
            )
            order.transition(ACCEPTED)
            self._execute(order, order.quantity, raw, row)
            if kind is STOP and self._cooldown and self.qty[sid] == 0:
                self._stopped_at[sid] = self.i
                self._stopped_dir[sid] = 1.0 if is_long else -1.0

    def update_marks(self) -> bool:
        """Step 2 prelude: marks <- this bar's closes; MFE/MAE extremes <- highs/lows. With the
        compiled rules, also hook C for them (trailing levels, time exits).

        Returns True when hook C is done (compiled rules); False when the engine runs it (no
        compiled rules, or a short position has a bar now).
        """
        data = self.data
        if self._kernel is None:
            kernels.mark_bar(
                self.lo, self.hi, data.sym_id, data.close, data.high, data.low,
                self.held(), self.fstate, self.istate,
            )  # fmt: skip
            return False
        if self._marked == self.i:
            n = self._kernel_exits  # marked with the level check (chronological_step)
        else:
            n = kernels.mark_bar_basic_rules(
                self.lo, self.hi, self.i,
                data.sym_id, data.close, data.high, data.low, data.ordinal,
                self.held(), self.fstate, self.istate, self._rules,
            )  # fmt: skip
        if n < 0:
            return False
        if n:
            sids = self.istate[layout.OUT_SID, :n].tolist()
            codes = self.istate[layout.OUT_CODE, :n].tolist()
            names = self._rule_names
            for sid, code in zip(sids, codes, strict=True):
                self._risk_exit(sid, None, names[code], int(self.last_row[sid]))
        return True

    def _held_with_bar(self, held: IntArray) -> tuple[IntArray, IntArray]:
        """The held symbol ids that have a bar now, and their data rows."""
        rows = self._rows_now(held)
        ok = rows >= 0
        return held[ok], rows[ok]

    def position_batch(
        self,
    ) -> tuple[PositionBatch, Callable[[], list[RiskContext]]] | None:
        """Hook C input: open positions whose symbol has a bar now, as arrays, plus a factory
        of per-position contexts (same order) sharing one lazily built portfolio snapshot."""
        held = self.held()
        if held.size == 0:
            return None
        sids, rows = self._held_with_bar(held)
        if sids.size == 0:
            return None
        return self._batch_and_contexts(sids, rows)

    def _batch_and_contexts(
        self, sids: IntArray, rows: IntArray
    ) -> tuple[PositionBatch, Callable[[], list[RiskContext]]]:
        """The positions ``sids`` (data rows ``rows``) as a batch, and a lazy builder of their
        per-position contexts; both share one portfolio snapshot, taken on first use."""
        shared: list[PortfolioSnapshot] = []

        def snapshot() -> PortfolioSnapshot:
            if not shared:
                shared.append(self.snapshot())
            return shared[0]

        batch = PositionBatch(
            data=self.data,
            timestamp=self.now,
            bar_index=self.i,
            sids=sids,
            rows=rows,
            source=self._batch_source,
            portfolio=snapshot,
            long_only=self._long_only,
        )

        def contexts() -> list[RiskContext]:
            return [
                self._context(sid, row, snapshot)
                for sid, row in zip(sids.tolist(), rows.tolist(), strict=True)
            ]

        return batch, contexts

    def flush_entries(self) -> None:
        """Initial stop/take-profit levels for the positions this step's fills opened or
        increased (active from the next bar), all at once."""
        entries = self._new_entries
        if not entries or self.risk is None:
            return
        self._new_entries = {}
        sids = np.fromiter(entries, dtype=np.int64, count=len(entries))
        # stop_activation="entry_bar": levels of step-1 fills are live on this bar already
        active_from = self.i if self._entry_bar and not self._closing else self.i + 1
        kernel = self._kernel
        if kernel is not None and kernels.entry_levels(
            sids, self.fstate, self.istate, active_from, self._rules
        ):
            return
        rows = np.fromiter(entries.values(), dtype=np.int64, count=len(entries))
        open_ = self.qty[sids] != 0
        if not open_.all():
            sids, rows = sids[open_], rows[open_]
            if sids.size == 0:
                return
        batch, contexts = self._batch_and_contexts(sids, rows)

        actions = self.risk.entry_levels(batch, contexts)
        if actions.any:
            self.apply_actions(batch, actions, active_from=active_from)

    def apply_actions(
        self, batch: PositionBatch, actions: PositionActions, active_from: int | None = None
    ) -> None:
        """Hook C output: level updates (effective next bar unless ``active_from`` says
        otherwise) and exit orders."""
        sids = batch.sids
        nxt = self.i + 1 if active_from is None else active_from
        for values, rule_names, levels, level_rules in (
            (actions.stop_loss, actions.stop_rule, self._stop, self._stop_rule),
            (actions.take_profit, actions.tp_rule, self._tp, self._tp_rule),
        ):
            if values is None or rule_names is None:
                continue
            codes = np.fromiter(
                (self._rule_code(name) for name in rule_names.tolist()),
                dtype=np.int64,
                count=rule_names.size,
            )
            mask = np.isfinite(values)
            self._levels_set = True
            if mask.all():
                levels[sids] = values
                level_rules[sids] = codes
                self._level_from[sids] = nxt
            elif mask.any():
                target = sids[mask]
                levels[target] = values[mask]
                level_rules[target] = codes[mask]
                self._level_from[target] = nxt
        if actions.flatten_all:
            for sid in self.held().tolist():
                self._risk_exit(sid, None, actions.flatten_all, int(self.last_row[sid]))
        exit_ = actions.exit
        if exit_ is None or actions.exit_quantity is None or actions.exit_rule is None:
            return
        for k in np.flatnonzero(exit_).tolist():
            qty = float(actions.exit_quantity[k])
            self._risk_exit(
                int(sids[k]),
                None if math.isnan(qty) else qty,
                str(actions.exit_rule[k]),
                int(batch.rows[k]),
            )

    def _rule_code(self, name: str) -> int:
        """Code of the rule ``name`` in ``_rule_names`` (added on first use)."""
        code = self._rule_codes.get(name)
        if code is None:
            code = self._rule_codes[name] = len(self._rule_names)
            self._rule_names.append(name)
        return code

    def _set_levels(self, sid: int, d: RiskDecision, active_from: int) -> None:
        if d.update_stop_loss is not None or d.update_take_profit is not None:
            self._levels_set = True
        if d.update_stop_loss is not None:
            self._stop[sid] = d.update_stop_loss
            self._stop_rule[sid] = self._rule_code(str(d.metadata.get("stop_rule", d.rule)))
            self._level_from[sid] = max(self._level_from[sid], active_from)
        if d.update_take_profit is not None:
            self._tp[sid] = d.update_take_profit
            self._tp_rule[sid] = self._rule_code(str(d.metadata.get("take_profit_rule", d.rule)))
            self._level_from[sid] = max(self._level_from[sid], active_from)

    def _risk_exit(self, sid: int, quantity: float | None, rule: str, row: int) -> None:
        if self._exit_pending[sid]:
            return
        pos = float(self.qty[sid])
        if pos == 0:
            return
        wanted = abs(pos) if quantity is None else min(abs(quantity), abs(pos))
        size = self.round_quantity(wanted)
        if size <= 0:
            if zero_shares_order(wanted, self.fractional):
                self.recorder.unplaced(self.i, sid, -math.copysign(wanted, pos), rule)
            return
        order = self._new_order(
            sid,
            -math.copysign(size, pos),
            reason=rule,
            submit_index=self.i,
            decision_row=row,
        )
        order.transition(ACCEPTED)
        self._exit_pending[sid] = True
        self.book.append(order)
        self._accepted_this_bar.append(order)

    def validate_new_orders(self) -> None:
        """Step 4 (hook B): pass, shrink or reject the strategy's new orders."""
        if not self._new_orders:
            return
        orders = self._new_orders
        self._new_orders = []
        if self._cooldown:
            self._apply_cooldown(orders)
        risk = self.risk
        if risk is None or not risk.order_rules:
            book = self.book
            accepted = self._accepted_this_bar
            for order in orders:
                if order.status is SUBMITTED:
                    order.transition(ACCEPTED)
                    book.append(order)
                    accepted.append(order)
            return
        # while validating, `pending` holds only orders already accepted: take the new ones out
        # so each order is judged against the portfolio plus the orders accepted before it
        pending = self.pending
        for order in orders:
            if order.status is SUBMITTED and order.order_type is MARKET:
                pending[order.sid] -= order.quantity
        snapshot = self.snapshot()
        for order in orders:
            if order.status is not SUBMITTED:
                continue
            verdict = risk.validate_order(order, snapshot)
            if verdict.action is OrderAction.SHRINK and verdict.quantity is not None:
                new_q = self.round_quantity(verdict.quantity)
                if new_q == 0:
                    self._finish(
                        order, REJECTED, verdict.reason, "rejected", verdict.rule, release=False
                    )
                    continue
                self.recorder.rejection(
                    self.i, order, "shrunk", verdict.reason, verdict.rule, order.quantity
                )
                order.quantity = new_q
            elif verdict.action is OrderAction.REJECT:
                self._finish(
                    order, REJECTED, verdict.reason, "rejected", verdict.rule, release=False
                )
                continue
            if order.order_type is MARKET:
                pending[order.sid] += order.quantity
            order.transition(ACCEPTED)
            self.book.append(order)
            self._accepted_this_bar.append(order)

    def _apply_cooldown(self, orders: list[Order]) -> None:
        """``reentry_cooldown_bars``: reject re-entries decided too soon after a stop exit."""
        last = self.i - self._cooldown
        for order in orders:
            sid = order.sid
            if (
                order.status is SUBMITTED
                and self._stopped_at[sid] > last
                and order.quantity * self._stopped_dir[sid] > 0
            ):
                self._finish(order, REJECTED, "reentry_cooldown", "rejected")

    def check_submission_cash(self) -> None:
        """``cash_check="submission"``: pseudo-execute this bar's accepted orders at their
        creation prices against the cash now; reject those that would overdraw it."""
        accepted = self._accepted_this_bar
        if not accepted:
            return
        data = self.data
        commission = copy.copy(self.config.commission)  # stateful models must not advance
        allow_short = self.config.allow_short
        cash = self.cash
        longs: dict[int, float] = {}
        for order in accepted:
            if not order.is_active:
                continue
            sid = order.sid
            q = order.remaining
            kind = order.order_type
            if kind is MARKET:
                row = order.decision_row
                price = float(data.close[row]) if row >= 0 else float(self.marks[sid])
            elif kind is LIMIT:
                price = order.limit_price
            else:  # stop, stop-limit (its trigger), trailing (its current stop)
                price = order.stop_price
            if not math.isfinite(price):
                continue
            if q < 0 and not allow_short:
                held = longs.get(sid, max(float(self.qty[sid]), 0.0))
                q = -min(-q, held)
                longs[sid] = held + q
                if q == 0:
                    continue
            elif q > 0:
                longs[sid] = longs.get(sid, max(float(self.qty[sid]), 0.0)) + q
            cost = q * price + commission.compute(q, price, self.now_us)
            if cost > 0 and cash - cost < -self._cash_tol:
                if q > 0:
                    longs[sid] -= q
                self._finish(order, REJECTED, "insufficient_cash_at_submission", "rejected")
                continue
            cash -= cost

    def fill_at_close(self) -> None:
        """Step 5: with ``fill="close"``, this bar's market orders fill at its close."""
        accepted = self._accepted_this_bar
        if not accepted:
            return
        self._accepted_this_bar = []
        if not self._fill_at_close:
            return
        data = self.data
        self._closing = True
        try:
            for order in accepted:
                if not order.is_active or order.order_type is not MARKET:
                    continue
                row = self._row(order.sid)
                if row >= 0:
                    self._fill_order(order, row, float(data.close[row]))
                    if order.is_active and order.tif is DAY:
                        self._finish(order, EXPIRED, "day_order_not_filled", "expired")
            self.flush_entries()
        finally:
            self._closing = False
        self.book = [o for o in self.book if o.is_active]

    def close_all(self, reason: str) -> None:
        """Close every open position at its latest close (used for ``close_at_end``)."""
        self._closing = True
        try:
            for sid in self.held().tolist():
                pos = float(self.qty[sid])
                if pos == 0:
                    continue
                row = int(self.last_row[sid])
                order = self._new_order(
                    sid, -pos, reason=reason, submit_index=self.i, decision_row=row
                )
                order.transition(ACCEPTED)
                self._execute(order, -pos, float(self.marks[sid]), row)
        finally:
            self._closing = False

    def close_at(self, sid: int, pos: float, price: float, row: int, reason: str) -> None:
        """Close the ``pos`` shares of ``sid`` at ``price`` on data row ``row`` (an order
        tagged ``reason``; used for delistings)."""
        self._closing = True
        try:
            order = self._new_order(sid, -pos, reason=reason, submit_index=self.i, decision_row=row)
            order.transition(ACCEPTED)
            self._execute(order, -pos, price, row)
        finally:
            self._closing = False

    def record_state(self) -> None:
        """Step 6: mark to market at the close and append the portfolio state."""
        held = self.held()
        value, gross = (
            kernels.portfolio_value(held, self.qty, self.marks) if held.size else (0.0, 0.0)
        )
        equity = self.cash + value
        if self.mechanics is not None:
            equity += self.mechanics.receivable
        self.recorder.state(self.i, equity, self.cash, value, gross, int(held.size))
        self.last_equity = equity
        if equity > self.peak:
            self.peak = equity

    def open_positions_frame(self) -> pl.DataFrame:
        """Positions still open (see :class:`engine.BacktestResult.open_positions`)."""
        rows = []
        for sid in sorted(self.trades):
            trade = self.trades[sid]
            q = float(self.qty[sid])
            avg = float(self._avg[sid])
            mark = float(self.marks[sid])
            rows.append(
                (
                    str(self.data.symbols[sid]),
                    "long" if q > 0 else "short",
                    q,
                    avg,
                    mark,
                    int(self.data.timestamps[trade.entry_index]),
                    trade.commission,
                    (mark - avg) * q - trade.commission,
                    float(self._stop[sid]),
                    float(self._tp[sid]),
                )
            )
        schema = {
            "symbol": pl.String,
            "side": pl.String,
            "quantity": pl.Float64,
            "avg_price": pl.Float64,
            "mark": pl.Float64,
            "entry_timestamp": pl.Int64,
            "entry_commission": pl.Float64,
            "unrealized_pnl": pl.Float64,
            "stop_loss": pl.Float64,
            "take_profit": pl.Float64,
        }
        frame = pl.DataFrame(rows, schema=schema, orient="row")
        return frame.with_columns(pl.col("entry_timestamp").cast(pl.Datetime("us", "UTC")))

    # ------------------------------------------------------------------ orders
    def _new_order(
        self,
        sid: int,
        quantity: float,
        *,
        order_type: OrderType = MARKET,
        reason: str = "strategy",
        submit_index: int = -1,
        decision_row: int = -1,
        limit_price: float = math.nan,
        stop_price: float = math.nan,
        trail_amount: float = math.nan,
        trail_percent: float = math.nan,
        tif: TimeInForce = TimeInForce.GTC,
        take_profit: float = math.nan,
        stop_loss: float = math.nan,
        parent_id: int = -1,
    ) -> Order:
        order = Order(
            len(self.orders),
            self._names[sid],
            sid,
            quantity,
            order_type=order_type,
            limit_price=limit_price,
            stop_price=stop_price,
            trail_amount=trail_amount,
            trail_percent=trail_percent,
            tif=tif,
            reason=reason,
            submit_index=submit_index,
            decision_row=decision_row,
            take_profit=take_profit,
            stop_loss=stop_loss,
            parent_id=parent_id,
        )
        self.orders.append(order)
        if order_type is MARKET:
            pending = self.pending
            pending[sid] = pending.item(sid) + quantity
        return order

    def submit(
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
        """A strategy order (signed quantity); validated at step 4 of the current bar."""
        sid = self._symbol_index.get(symbol)
        if sid is None:
            sid = self.data.resolve(symbol)  # raises KeyError
        if (
            limit_price is None
            and stop_price is None
            and trail_amount is None
            and trail_percent is None
            and take_profit is None
            and stop_loss is None
            and tif == "GTC"
        ):
            return self._market_order(sid, symbol, quantity)
        self._check_quantity(symbol, quantity)
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
        decision_row = self._row(sid) if self.i >= 0 else -1
        order = self._new_order(
            sid,
            quantity,
            order_type=kind,
            submit_index=self.i,
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
            mark = float(self.marks[sid])
            if not math.isfinite(mark):
                raise ValueError(f"trailing stop on {symbol!r} before its first bar")
            order.trail_extreme = mark
            order.stop_price = _trail_level(order)
        self._new_orders.append(order)
        return order

    def order_target_value(self, symbol: str, value: float) -> Order | None:
        """A market order taking position + working market orders of ``symbol`` to
        ``value`` (signed currency) at the latest close; None when no trade is needed.

        A target that rounds to zero shares from a flat book (``0 < |value / price| < 1``
        whole share) places no order and records a ``rounds_to_zero_shares`` rejection row
        (:meth:`record_unplaced`).

        Raises
        ------
        KeyError
            If ``symbol`` is unknown.
        ValueError
            If the symbol has had no bar yet.
        """
        sid = self.data.resolve(symbol)
        price = float(self.marks[sid])
        if not math.isfinite(price) or price <= 0:
            raise ValueError(f"no price yet for {symbol!r}: it has not had a bar")
        wanted = value / price
        target = self.round_quantity(wanted)
        current = float(self.qty[sid] + self.pending[sid])
        delta = self.round_quantity(target - current)
        if abs(delta) >= EPS and self._net_working(sid, delta, "netted_by_new_order"):
            current = float(self.qty[sid] + self.pending[sid])
            delta = self.round_quantity(target - current)
        if abs(delta) < EPS:
            if current == 0.0 and zero_shares_order(wanted, self.fractional):
                self.record_unplaced(sid, wanted)
            return None
        return self.submit(symbol, delta)

    def record_unplaced(self, sid: int, quantity: float) -> None:
        """Record that the strategy's market order for ``quantity`` shares (signed, before
        rounding) of symbol id ``sid`` was not placed because it rounds to zero shares: a
        rejection row at the current bar with ``order_id`` -1 and reason
        ``rounds_to_zero_shares`` (the compiled driver writes the same row)."""
        self.recorder.unplaced(self.i, sid, quantity)

    def close_position(self, symbol: str) -> Order | None:
        """Close the position: under a volume participation cap the symbol's working market
        orders of earlier bars are cancelled first (``netted_by_close_position``); then one
        market order takes the position plus the pending orders to zero."""
        sid = self._symbol_index.get(symbol)
        if sid is None:
            sid = self.data.resolve(symbol)  # raises KeyError
        if self._volume_cap is not None:
            self._net_working(sid, 0.0, "netted_by_close_position")
        current: float = self.qty.item(sid) + self.pending.item(sid)
        if abs(current) < EPS:
            return None
        return self._market_order(sid, symbol, -current)

    def _net_working(self, sid: int, direction: float, reason: str) -> bool:
        """Cancel the working market orders of ``sid`` placed by the strategy on earlier bars
        that go against ``direction`` (every one when ``direction`` is 0); True if any was.

        A market order stays working across bars only when a volume participation cap fills it
        in parts. Left working beside a new order the other way, a buy and a sell of one symbol
        would both fill bar after bar, paying costs on both sides; orders placed in the current
        bar are the strategy's explicit wish and are kept. Without a cap nothing is netted: an
        order then waits only for its symbol's next bar, where it fills beside the new one (the
        compiled driver, which runs no capped run, keeps the same rule)."""
        if self._volume_cap is None or not self.book:
            return False
        now = self.i
        stale = [
            order
            for order in self.book
            if order.sid == sid
            and order.order_type is MARKET
            and order.reason == "strategy"
            and order.submit_index < now
            and order.is_active
            and (direction == 0.0 or order.remaining * direction < 0)
        ]
        for order in stale:
            self.cancel(order, reason)
        return bool(stale)

    def _check_quantity(self, symbol: str, quantity: float) -> None:
        if not math.isfinite(quantity) or quantity == 0:
            raise ValueError(f"order quantity must be finite and non-zero, got {quantity!r}")
        if not self.fractional and quantity != math.floor(quantity):
            raise ValueError(
                f"order for {quantity} shares of {symbol!r}: fractional shares are off "
                "(ExecutionConfig.fractional_shares=False)"
            )

    def _market_order(self, sid: int, symbol: str, quantity: float) -> Order:
        """A plain GTC market order of the strategy (most orders), built directly with the
        fields :meth:`_new_order` would give it."""
        self._check_quantity(symbol, quantity)
        i = self.i
        row: int = self.last_row.item(sid) if i >= 0 else -1
        order = plain_market_order(
            len(self.orders), self._names[sid], sid, quantity, i, row if row >= self.lo else -1
        )
        self.orders.append(order)
        pending = self.pending
        pending[sid] = pending.item(sid) + quantity
        self._new_orders.append(order)
        return order

    def cancel(self, order: Order, reason: str) -> bool:
        """Cancel a working ``order`` for ``reason`` (recorded in the rejections); False if
        it was no longer active."""
        if not order.is_active:
            return False
        self._finish(order, CANCELLED, reason, "cancelled")
        return True

    def replace(
        self,
        order: Order,
        *,
        quantity: float | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
    ) -> Order | None:
        """Cancel a working ``order`` (reason ``replaced``) and submit a copy with the given
        changes (:meth:`submit`); None if it was no longer active.

        Raises
        ------
        ValueError
            If the changed order is invalid (see :meth:`submit`).
        """
        if not order.is_active:
            return None
        remaining = order.remaining if quantity is None else quantity
        self.cancel(order, "replaced")

        def keep(new: float | None, old: float) -> float | None:
            if new is not None:
                return new
            return None if math.isnan(old) else old

        return self.submit(
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

    def end_order(self, order: Order, status: OrderStatus, reason: str, event: str) -> None:
        """Move ``order`` to the terminal ``status`` (cancelled, rejected, expired), release
        its pending quantity and record ``reason`` with the rejection ``event`` row. Used by
        the market mechanics (:mod:`engine.mechanics`) for delisted symbols.

        Raises
        ------
        RuntimeError
            If the order may not move to ``status`` (the core's transition matrix,
            :data:`engine.orders.TRANSITIONS`).
        """
        self._finish(order, status, reason, event)

    def positions_changed(self) -> None:
        """Forget the cached ids of held symbols (after quantities changed outside a fill,
        e.g. a split)."""
        self._held = None

    def _finish(
        self,
        order: Order,
        status: OrderStatus,
        reason: str,
        event: str,
        rule: str = "",
        *,
        release: bool = True,
    ) -> None:
        """Move an order to a terminal status, release its pending quantity, record why."""
        remaining = order.remaining
        order.transition(status, reason)
        if release and order.order_type is MARKET:
            self.pending[order.sid] -= remaining
        if order.reason != "strategy":
            self._exit_pending[order.sid] = False
        self.recorder.rejection(self.i, order, event, reason, rule, remaining)

    # ------------------------------------------------------------------ execution
    def _execute(self, order: Order, q: float, raw: float, row: int) -> Fill | None:
        """Fill ``q`` shares of ``order`` at raw price ``raw`` on market-data row ``row``."""
        # hot path (one call per fill): state read as Python scalars (``.item``), each array
        # element read once; the arithmetic is the same float64 arithmetic as on NumPy scalars
        sid = order.sid
        kind = order.order_type
        kname = _TYPE_NAMES[kind]
        if self._no_slippage:
            price = raw
        else:
            price = self.config.slippage.fill_price(raw, q, BarView(self.data, row), kname)
        pos: float = self.qty.item(sid)
        if short_refused(q, pos, self._allow_short):
            self._finish(order, REJECTED, "short_not_allowed", "rejected")
            return None
        commission = 0.0 if self._free else self._commission.compute(q, price, self.now_us)
        if cash_refused(q, price, commission, self.cash, self._cash_tol):
            self._finish(order, REJECTED, "insufficient_cash", "rejected")
            return None
        cost, slip = fill_amounts(q, raw, price, commission)
        self.cash -= cost
        fill_id = self.n_fills
        self.n_fills = fill_id + 1
        self.fills_today += 1
        i = self.i
        reason = order.reason
        self._fill_rows.append(
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
            pending = self.pending
            pending[sid] = pending.item(sid) - q
        done = order_done(order.quantity, filled)
        order.transition(FILLED if done else PARTIALLY_FILLED)
        if done and reason != "strategy":
            self._exit_pending[sid] = False
        if order.oco_id >= 0:
            sibling = self.orders[order.oco_id]
            if sibling.is_active:
                if done:
                    self.cancel(sibling, "oco_sibling_filled")
                else:
                    sibling.quantity -= q
        marks = self.marks
        if math.isnan(marks.item(sid)):
            marks[sid] = price
        step, new = position_step(pos, q)
        if step == P_OPEN:  # opening from flat (most fills): no _apply_position call
            self._open_trade(sid, q, price, commission, slip, order, row)
            self.qty[sid] = new
            increased = True
        else:
            increased = self._apply_position(
                sid, pos, q, step, new, price, commission, slip, order, row
            )
        self._held = None
        if self._no_fill_hooks:  # no cooldown, fill listeners or entry rules to serve
            if done and (math.isfinite(order.take_profit) or math.isfinite(order.stop_loss)):
                self._spawn_bracket(order)
            return None
        if self._cooldown and reason == "bracket_stop_loss" and self.qty.item(sid) == 0:
            self._stopped_at[sid] = i
            self._stopped_dir[sid] = -1.0 if q > 0 else 1.0

        fill: Fill | None = None
        if self._wants_fill_events:
            fill = Fill(
                fill_id,
                order.order_id,
                self.now,
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
        if increased and self._has_entry_rules:
            # initial levels are set for all new entries of this step at once
            # (flush_entries); remember what was known at the fill (the compiled rules of a
            # long-only run read no row: -1). Entries at the open of a long-only run with
            # compiled rules: the next compiled step of this bar sets them.
            if self._defer_entries and not self._closing:
                self._entry_pending[sid] = 1
            elif self._entry_rows_unused:
                self._new_entries[sid] = -1
            else:
                self._new_entries[sid] = row if self._closing else int(self.data.prev_row[row])
        if fill is not None and self._risk_sees_fills and self.risk is not None:
            self.risk.record_fill(fill)
        if done and (math.isfinite(order.take_profit) or math.isfinite(order.stop_loss)):
            self._spawn_bracket(order)
        if fill is not None and self._on_fill is not None:
            self._on_fill(fill)
        return fill

    def _spawn_bracket(self, parent: Order) -> None:
        sid = parent.sid
        qty = -parent.filled
        children: list[Order] = []
        if math.isfinite(parent.take_profit):
            children.append(
                self._new_order(
                    sid,
                    qty,
                    order_type=LIMIT,
                    reason="bracket_take_profit",
                    submit_index=self.i,
                    decision_row=parent.decision_row,
                    limit_price=parent.take_profit,
                    parent_id=parent.order_id,
                )
            )
        if math.isfinite(parent.stop_loss):
            children.append(
                self._new_order(
                    sid,
                    qty,
                    order_type=STOP,
                    reason="bracket_stop_loss",
                    submit_index=self.i,
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
            self.book.append(child)
        self._children.setdefault(sid, []).extend(children)

    def _apply_position(
        self,
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
        trade = self.trades[sid]
        best_arr = self._best
        worst_arr = self._worst
        if step == P_ADD:
            self._avg[sid] = added_average(self._avg.item(sid), pos, price, q)
            trade.quantity += abs(q)
            trade.commission += commission
            trade.slippage += slip
            best_arr[sid] = max(best_arr.item(sid), price)
            worst_arr[sid] = min(worst_arr.item(sid), price)
            self.qty[sid] = new
            return True
        entry: float = self._avg.item(sid)
        closing, part_comm, part_slip, exit_comm, exit_slip, pnl = closed_part(
            pos,
            q,
            price,
            commission,
            slip,
            entry,
            trade.direction,
            trade.commission,
            trade.slippage,
        )
        trade.commission -= part_comm
        trade.slippage -= part_slip
        best: float = max(best_arr.item(sid), price)
        worst: float = min(worst_arr.item(sid), price)
        self._trade_rows.append(
            (
                sid,
                trade.direction,
                trade.entry_index,
                self.i,
                entry,
                price,
                closing,
                part_comm,
                exit_comm,
                part_slip,
                exit_slip,
                order.reason,
                self.data.ordinal.item(row) - trade.entry_ordinal,
                best,
                worst,
                trade.decision_row,
                trade.decision_index,
                order.decision_row,
                order.submit_index,
                self._stop.item(sid),
                self._tp.item(sid),
                closing < abs(pos) - EPS,
            )
        )
        self._realized += pnl
        trade.quantity -= closing
        self.qty[sid] = new
        if step == P_CLOSE:
            self._close_trade(sid)
            return False
        if step == P_FLIP:  # through zero: the rest opens a new trade
            self._close_trade(sid)
            rest_q, rest_comm, rest_slip = flip_rest(q, closing, commission, slip)
            self._open_trade(sid, rest_q, price, rest_comm, rest_slip, order, row)
            return True
        return False

    def _open_trade(
        self,
        sid: int,
        q: float,
        price: float,
        commission: float,
        slip: float,
        order: Order,
        row: int,
    ) -> None:
        ordinal: int = self.data.ordinal.item(row)
        self._entry_ordinal[sid] = ordinal
        self.trades[sid] = _OpenTrade(
            math.copysign(1.0, q),
            abs(q),
            self.i,
            ordinal,
            commission,
            slip,
            order.decision_row,
            order.submit_index,
        )
        self._avg[sid] = price
        self._best[sid] = price
        self._worst[sid] = price
        self._stop[sid] = math.nan
        self._tp[sid] = math.nan
        self._stop_rule[sid] = 0
        self._tp_rule[sid] = 0

    def _close_trade(self, sid: int) -> None:
        if self._closed_now is not None:
            self._closed_now[sid] = self.trades[sid].direction
        del self.trades[sid]
        self._avg[sid] = 0.0
        self._stop[sid] = math.nan
        self._tp[sid] = math.nan
        self._best[sid] = math.nan
        self._worst[sid] = math.nan
        children = self._children.pop(sid, None) if self._children else None
        if children:
            for child in children:
                if child.is_active:
                    self.cancel(child, "position_closed")


def _trail_level(order: Order) -> float:
    return trail_level(
        order.quantity > 0, order.trail_extreme, order.trail_amount, order.trail_percent
    )
