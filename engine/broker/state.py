"""The broker's run state: cash, positions, marks, levels, orders and the run's clock.

:class:`BrokerState` holds every piece of mutable run state of the Python driver in NumPy
arrays indexed by symbol id (rows of the core's state matrices, :mod:`engine.core.layout`) and
a few Python containers, plus the primitives every part of the broker uses (a new order, an
order's end, the portfolio snapshot). The other modules of :mod:`engine.broker` are plain
functions over it; their private members (``_name``) are shared within this package only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from engine.broker.lane_rows import OrderLog
from engine.config import ExecutionConfig
from engine.core import layout
from engine.core.ledger import round_quantity
from engine.core.matching import trail_level
from engine.costs.commission import NoCommission
from engine.costs.slippage import NoSlippage
from engine.data import FloatArray, IntArray, MarketData
from engine.events import Fill
from engine.mechanics import MarketMechanics
from engine.orders import Order, OrderStatus, OrderType, TimeInForce
from engine.recorder import Recorder
from engine.risk import kernels
from engine.risk.context import PortfolioSnapshot

if TYPE_CHECKING:
    from engine.broker.lane_rows import OrderRows
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
TYPE_NAMES = {t: t.value for t in OrderType}


class OpenTrade:
    """The open part of the round trip on symbol ``sid``: a view of its fields in the
    broker's trade matrices (rows of :mod:`engine.core.layout`'s ``aux_i`` / ``aux_f``, the
    layout the core ledger books into).

    ``direction`` is +1.0 (long) or -1.0 (short); ``quantity`` the open shares (unsigned);
    ``entry_index`` the timestamp index and ``entry_ordinal`` the symbol's bar ordinal of the
    entry; ``commission`` and ``slippage`` the entry costs (currency) not yet attributed to a
    closed part; ``decision_row`` / ``decision_index`` the data row and timestamp index at
    which the entry was decided (-1: none). Assigning ``quantity`` writes the matrix (a
    split rescales the open shares).
    """

    __slots__ = ("_state", "sid")

    def __init__(self, state: BrokerState, sid: int) -> None:
        self._state = state
        self.sid = sid

    @property
    def direction(self) -> float:
        """+1.0 long, -1.0 short."""
        return float(self._state._aux_f[layout.B_DIR, self.sid])

    @property
    def quantity(self) -> float:
        """Open shares (unsigned)."""
        return float(self._state._aux_f[layout.B_QTY, self.sid])

    @quantity.setter
    def quantity(self, value: float) -> None:
        self._state._aux_f[layout.B_QTY, self.sid] = value

    @property
    def commission(self) -> float:
        """Entry commission of the open part (currency)."""
        return float(self._state._aux_f[layout.B_COMM, self.sid])

    @property
    def slippage(self) -> float:
        """Entry slippage of the open part (currency)."""
        return float(self._state._aux_f[layout.B_SLIP, self.sid])

    @property
    def entry_index(self) -> int:
        """Timestamp index of the entry."""
        return int(self._state._aux_i[layout.A_ENTRY_INDEX, self.sid])

    @property
    def entry_ordinal(self) -> int:
        """The symbol's bar ordinal at the entry."""
        return int(self._state._entry_ordinal[self.sid])

    @property
    def decision_row(self) -> int:
        """Data row at which the entry was decided (-1: none)."""
        return int(self._state._aux_i[layout.A_DROW, self.sid])

    @property
    def decision_index(self) -> int:
        """Timestamp index at which the entry was decided (-1: none)."""
        return int(self._state._aux_i[layout.A_DIDX, self.sid])


class OpenTrades(Mapping[int, OpenTrade]):
    """The open round trips by symbol id (a read-only mapping of :class:`OpenTrade` views
    over the broker's trade matrices; a trade is open where ``aux_i[A_OPEN]`` is 1),
    iterated by increasing symbol id."""

    __slots__ = ("_state",)

    def __init__(self, state: BrokerState) -> None:
        self._state = state

    def sids(self) -> IntArray:
        """Ids of the symbols with an open trade, increasing."""
        return np.flatnonzero(self._state._aux_i[layout.A_OPEN])

    def __getitem__(self, sid: int) -> OpenTrade:
        if not self._state._aux_i[layout.A_OPEN, sid]:
            raise KeyError(sid)
        return OpenTrade(self._state, sid)

    def __len__(self) -> int:
        return int(np.count_nonzero(self._state._aux_i[layout.A_OPEN]))

    def __bool__(self) -> bool:
        return bool(self._state._aux_i[layout.A_OPEN].any())

    def __iter__(self) -> Iterator[int]:
        return iter(self.sids().tolist())


class BrokerState:
    """Run state of one backtest run of the Python driver (see the module docstring)."""

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
        self._config = config
        self._risk = risk_manager
        self._on_fill = on_fill
        self._recorder = recorder
        self.fractional = config.fractional_shares
        self.cash = config.initial_cash
        # per-symbol state: two matrices, one row per field (layout: engine.risk.kernels), so
        # a compiled bar step takes them as two arguments; the attributes are row views
        self.fstate: FloatArray = np.full((layout.N_FLOAT_FIELDS, n), np.nan)
        self._istate: IntArray = np.zeros((layout.N_INT_FIELDS, n), dtype=np.int64)
        self.qty: FloatArray = self.fstate[layout.QTY]
        self.qty[:] = 0.0
        self._avg: FloatArray = self.fstate[layout.AVG]
        self._avg[:] = 0.0
        self.marks: FloatArray = self.fstate[layout.MARK]
        self._stop: FloatArray = self.fstate[layout.STOP]
        self._tp: FloatArray = self.fstate[layout.TP]
        self._best: FloatArray = self.fstate[layout.BEST]
        self._worst: FloatArray = self.fstate[layout.WORST]
        self.last_row: IntArray = self._istate[layout.LAST_ROW]
        self.last_row[:] = -1
        self._level_from: IntArray = self._istate[layout.LEVEL_FROM]
        # the rules that set the levels, as codes into self._rule_names (0: none)
        self._stop_rule: IntArray = self._istate[layout.STOP_RULE]
        self._tp_rule: IntArray = self._istate[layout.TP_RULE]
        self._entry_ordinal: IntArray = self._istate[layout.ENTRY_ORDINAL]
        self._entry_pending: IntArray = self._istate[layout.ENTRY_PENDING]
        self.pending: FloatArray = np.zeros(n)
        # open trades: the core's trade matrices (layout A_* / B_* rows, as the compiled
        # driver keeps them), so the core ledger can book fills into them
        self._aux_i: IntArray = np.zeros((layout.N_A, n), dtype=np.int64)
        self._aux_f: FloatArray = np.zeros((layout.N_B, n))
        self._exit_pending: IntArray = self._aux_i[layout.A_EXIT_PENDING]  # 1: exit queued
        self.trades = OpenTrades(self)
        self._realized = 0.0
        self.book: list[Order] = []
        self._new_orders: list[Order] = []
        self._accepted_this_bar: list[Order] = []
        self.orders = OrderLog()  # every order by id (engine.broker.lane_rows)
        self.n_fills = 0
        self._held: IntArray | None = None
        self._peak = config.initial_cash
        self._last_equity = config.initial_cash
        self._day_start = config.initial_cash
        self._day = -1
        self._fills_today = 0
        self.i = -1
        self._now: datetime = datetime.min
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
        self._deferred: IntArray = self._istate[layout.DEFERRED]
        # sid -> direction of positions closed in the stops-first pass (None: not tracking),
        # then handed to the open's pass, which cancels their queued exits
        self._closed_now: dict[int, float] | None = None
        self._stop_closed: dict[int, float] | None = None
        # market mechanics (corporate actions, delistings, financing; engine/mechanics/)
        self.mechanics: MarketMechanics | None = (
            MarketMechanics(
                data,
                config.corporate_actions,
                config.delisting,
                config.financing,
                config.fractional_shares,
                risk_manager.rules if risk_manager is not None else (),
            )
            if config.has_mechanics
            else None
        )
        # the market-order lane (engine.broker.lane): plain market orders as core order rows;
        # Broker.__init__ opens it when the run's settings allow
        self._lane: OrderRows | None = None
        self._batch_source: dict[str, npt.NDArray[Any]] = {
            "quantity": self.qty,
            "entry_price": self._avg,
            "entry_ordinal": self._entry_ordinal,
            "max_price": self._best,
            "min_price": self._worst,
            "stop_loss": self._stop,
            "take_profit": self._tp,
        }

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

    def snapshot(self) -> PortfolioSnapshot:
        """Portfolio figures now (positions marked at the latest closes)."""
        held = self.held()
        value, gross = (
            kernels.portfolio_value(held, self.qty, self.marks) if held.size else (0.0, 0.0)
        )
        return PortfolioSnapshot(
            timestamp=self._now,
            bar_index=self.i,
            equity=self.cash + value,
            cash=self.cash,
            positions_value=value,
            gross_exposure=gross,
            n_positions=int(held.size),
            peak_equity=self._peak,
            day_start_equity=self._day_start,
            realized_pnl=self._realized,
            trades_today=self._fills_today,
            quantities=self.qty,
            marks=self.marks,
            pending=self.pending,
        )

    def _index_lists(self, data: MarketData) -> None:
        """Per-timestamp values as Python lists (no NumPy scalar conversion per bar); at a
        chunk boundary only the new window's values past the last window's are converted
        (:func:`_int_list`)."""
        listed: dict[str, tuple[IntArray, list[int]]] = getattr(self, "_listed", {})
        self._offsets: list[int] = _int_list(data.offsets, listed.get("offsets"))
        self._stamps: list[int] = _int_list(data.timestamps, listed.get("timestamps"))
        self._listed = {
            "offsets": (data.offsets, self._offsets),
            "timestamps": (data.timestamps, self._stamps),
        }
        self._datetimes: list[datetime] = data.datetimes
        self._names: list[str] = [str(name) for name in data.symbols.tolist()]
        self._symbol_index: dict[str, int] = data.symbol_index

    def _row(self, sid: int) -> int:
        """Row of symbol ``sid`` at the current bar, ``-1`` if it has no bar now."""
        r: int = self.last_row.item(sid)
        return r if r >= self.lo else -1

    def _rows_now(self, sids: IntArray) -> IntArray:
        # rows of the symbols ``sids`` at the current bar, -1 where they have no bar now
        r = self.last_row[sids]
        return np.where(r >= self.lo, r, -1)

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

    def cancel(self, order: Order, reason: str) -> bool:
        """Cancel a working ``order`` for ``reason`` (recorded in the rejections); False if
        it was no longer active."""
        if not order.is_active:
            return False
        self._finish(order, CANCELLED, reason, "cancelled")
        return True

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
            self._exit_pending[order.sid] = 0
        self._recorder.rejection(self.i, order, event, reason, rule, remaining)


def trail_stop_level(order: Order) -> float:
    """The current stop price of the trailing stop ``order`` (from its best price so far)."""
    return trail_level(
        order.quantity > 0, order.trail_extreme, order.trail_amount, order.trail_percent
    )


def _int_list(values: IntArray, last: tuple[IntArray, list[int]] | None) -> list[int]:
    """``values.tolist()``, reusing ``last = (array, its list)`` when ``values`` is that
    array or starts with all its values (a chunk's window after the rows carried over: its
    timestamps and offsets extend the carried window's), so a long chunked run does not
    convert every earlier timestamp again at each boundary."""
    if last is not None:
        before, listed = last
        if before is values:
            return listed
        n = before.size
        if values.size >= n and np.array_equal(values[:n], before):
            tail: list[int] = values[n:].tolist()
            return listed + tail
    out: list[int] = values.tolist()
    return out
