"""The market mechanics of the Python driver: :class:`MarketMechanics`, the run-time state
its broker calls at the bar boundary (corporate actions, dividend payments, financing) and
after the close's fills (delistings), through the :class:`Broker` protocol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.core import delisting as core_delisting
from engine.core.actions import (
    NEVER,
    paid_later,
    pay_due,
    split_and_dividend,
    split_order,
)
from engine.core.financing import accrue
from engine.core.layout import EVENT_NAMES, STATUS_NAMES
from engine.core.ledger import round_quantity
from engine.mechanics.delisting import Delisting, delisting_rows
from engine.mechanics.financing import Financing, borrow_rates
from engine.mechanics.outputs import add_state_columns, events_frame
from engine.mechanics.table import CorporateActions, schedule
from engine.orders import Order, OrderStatus, OrderType

if TYPE_CHECKING:
    from engine.data import MarketData
    from engine.risk.rules.base import RiskRule

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_DAY_US = 86_400_000_000


class _HeldTrade(Protocol):
    """The open trade of a symbol as the mechanics see it: its size in shares (≥ 0)."""

    quantity: float


class Broker(Protocol):
    """What the market mechanics read and change of the Python driver's broker
    (:class:`engine.broker.Broker` has these members; a protocol, so this module does not
    import the broker that imports it).

    Per-symbol arrays have shape (n_symbols,): ``qty`` signed shares, ``marks`` the last
    close (currency per share), ``pending`` signed shares of working market orders,
    ``last_row`` the symbol's last data row (-1 before its first bar); ``fstate`` the core's
    float state matrix (:mod:`engine.core.layout`). ``cash`` is in currency; ``i`` the
    timestamp index, ``lo:hi`` the current bar's data rows, ``now_us`` its close (UTC µs).
    """

    cash: float
    book: list[Order]

    @property
    def data(self) -> MarketData:
        """The market data of the run."""

    @property
    def fstate(self) -> FloatArray:
        """The core's float state matrix, shape (N_FLOAT_FIELDS, n_symbols)."""

    @property
    def qty(self) -> FloatArray:
        """Signed shares held per symbol, shape (n_symbols,)."""

    @property
    def marks(self) -> FloatArray:
        """Last close per symbol, currency per share, shape (n_symbols,)."""

    @property
    def pending(self) -> FloatArray:
        """Signed shares of working market orders per symbol, shape (n_symbols,)."""

    @property
    def last_row(self) -> IntArray:
        """Each symbol's last data row (-1 before its first bar), shape (n_symbols,)."""

    @property
    def trades(self) -> Mapping[int, _HeldTrade]:
        """The open trade of each held symbol id."""

    @property
    def i(self) -> int:
        """The current timestamp index."""

    @property
    def lo(self) -> int:
        """First data row of the current bar."""

    @property
    def hi(self) -> int:
        """One past the last data row of the current bar."""

    @property
    def now_us(self) -> int:
        """The current bar's close, microseconds since the epoch (UTC)."""

    def held(self) -> IntArray:
        """Ids of the symbols with a position."""
        ...

    def close_at(self, sid: int, pos: float, price: float, row: int, reason: str) -> None:
        """Close ``pos`` shares of ``sid`` at ``price`` on data row ``row``."""
        ...

    def end_order(self, order: Order, status: OrderStatus, reason: str, event: str) -> None:
        """Move ``order`` to a terminal ``status`` and record ``reason``."""
        ...

    def positions_changed(self) -> None:
        """Forget what the broker cached about the held positions."""
        ...


class MarketMechanics:
    """Run-time state of the market mechanics of one run (built by the broker).

    Parameters
    ----------
    data : MarketData
        The run's first window (symbol ids are the panel's).
    actions, delisting, financing : the :class:`engine.ExecutionConfig` settings (or None).
    fractional : bool
        ``fractional_shares``: False turns the fraction of a share a split leaves into cash
        at the split-adjusted previous close (cash in lieu).
    rules : sequence of RiskRule, optional
        The run's risk rules; each split of a held position calls their
        :meth:`engine.risk.rules.base.RiskRule.on_split` (``PartialProfitTaking`` rescales
        the position's starting size).
    """

    def __init__(
        self,
        data: MarketData,
        actions: CorporateActions | None,
        delisting: Delisting | None,
        financing: Financing | None,
        fractional: bool,
        rules: Sequence[RiskRule] = (),
    ) -> None:
        self.delisting = delisting
        self._rules = tuple(rules)  # told of each split of a held position (on_split)
        self.financing = financing
        self.fractional = fractional
        self.receivable = 0.0
        """Dividends past their ex-date not yet paid (currency; in equity, not in cash)."""
        self._events: list[tuple[Any, ...]] = []
        self._bar_cash: dict[int, list[float]] = {}  # bar stamp -> [dividends, interest, fee]
        # the schedule: symbols of the table that are in the run, by ex-date
        sched = schedule(actions, data)
        self._ex_day = sched.ex_day
        self._sid = sched.sid
        self._ratio = sched.ratio
        self._dividend = sched.dividend
        self._sched = sched
        self._names = sched.names
        self._next = 0
        self._owed = np.zeros(sched.sid.size)  # dividend owed per action until its pay date
        self._pay_lo = 0  # first action that may still be owed
        self._next_pay = NEVER  # earliest pay day still owed
        n = data.n_symbols
        self._borrow = borrow_rates(data, financing)
        self._prev_us: int | None = None
        self._terminal = (
            delisting_rows(data, delisting.gap_sessions) if delisting is not None else None
        )
        self._delisted = np.zeros(n, dtype=np.bool_)

    # ------------------------------------------------------------------ bar boundary
    def _book(self, stamp: int, slot: int, amount: float) -> None:
        cells = self._bar_cash.get(stamp)
        if cells is None:
            cells = [0.0, 0.0, 0.0]
            self._bar_cash[stamp] = cells
        cells[slot] += amount

    def begin_bar(self, broker: Broker) -> None:
        """At bar ``broker.i``'s start, before its open: financing for the interval since the
        previous bar, then the corporate actions whose ex-date has come, then dividends
        whose pay date has come."""
        now = broker.now_us
        fin = self.financing
        if fin is not None and self._prev_us is not None:
            days = (now - self._prev_us) / _DAY_US
            held = broker.held()
            interest, fee = accrue(
                held,
                broker.qty,
                broker.marks,
                self._borrow,
                broker.cash,
                days,
                fin.credit_rate,
                fin.debit_rate,
                fin.basis,
            )
            if interest != 0.0 or fee != 0.0:
                broker.cash += interest - fee
                self._book(now, 1, interest)
                self._book(now, 2, -fee)
        self._prev_us = now
        today = now // _DAY_US
        k = self._next
        ex_day = self._ex_day
        if k < ex_day.size and ex_day[k] <= today:
            end = int(np.searchsorted(ex_day, today, side="right"))
            self._apply(broker, k, end, today)
            self._next = end
        if self._next_pay <= today:
            due, self._pay_lo, self._next_pay = pay_due(
                today, self._pay_lo, self._next, self._sched.pay_day, self._owed
            )
            self.receivable -= due
            broker.cash += due

    def _apply(self, broker: Broker, lo: int, hi: int, today: int) -> None:
        now = broker.now_us
        for k in range(lo, hi):
            sid = int(self._sid[k])
            ratio = float(self._ratio[k])
            before, after, amount, lieu = split_and_dividend(
                sid,
                ratio,
                float(self._dividend[k]),
                self.fractional,
                broker.fstate,
                broker.pending,
            )
            broker.cash += lieu
            n_orders = 0
            if ratio != 1.0:
                if before != 0.0:
                    trade = broker.trades.get(sid)
                    if trade is not None:
                        trade.quantity = abs(after)
                    broker.positions_changed()
                    for rule in self._rules:
                        rule.on_split(sid, ratio)
                n_orders = self._split_orders(broker, sid, ratio)
            if amount != 0.0:
                pay_day = int(self._sched.pay_day[k])
                if paid_later(pay_day, today):
                    self._owed[k] = amount
                    self.receivable += amount
                    self._pay_lo = min(self._pay_lo, k)
                    self._next_pay = min(self._next_pay, pay_day)
                else:
                    broker.cash += amount
                self._book(now, 0, amount)
            if before != 0.0 or n_orders:
                self._events.append((now, k, before, after, amount, lieu, n_orders))

    def _split_orders(self, broker: Broker, sid: int, ratio: float) -> int:
        """Working orders of ``sid``: shares split (:func:`engine.core.actions.split_order`;
        the rounding of a market order's remaining shares goes into ``pending``), prices ÷
        ratio."""
        n = 0
        fractional = self.fractional
        for order in broker.book:
            if order.sid != sid or not order.is_active:
                continue
            n += 1
            rest, filled = split_order(order.quantity, order.filled, ratio)
            if not fractional:
                whole = round_quantity(rest, False)
                if order.order_type is OrderType.MARKET:
                    broker.pending[sid] += whole - rest
                rest = whole
            order.quantity = filled + rest
            order.filled = filled
            for name in ("limit_price", "stop_price", "trail_amount", "trail_extreme"):
                value = getattr(order, name)
                if value is not None:
                    setattr(order, name, value / ratio)
            for name in ("take_profit", "stop_loss"):
                value = getattr(order, name)
                if value is not None:
                    setattr(order, name, value / ratio)
        return n

    # ------------------------------------------------------------------ delistings
    def end_of_bar(self, broker: Broker) -> None:
        """After the close's fills: close positions of symbols delisted at this bar, cancel
        their working orders, reject orders for symbols delisted earlier (no bar since)."""
        terminal = self._terminal
        dl = self.delisting
        if terminal is None or dl is None:
            return
        lo, hi = broker.lo, broker.hi
        sids_now = np.asarray(broker.data.sym_id[lo:hi], dtype=np.int64)
        ending_now = terminal[lo:hi]
        # a new bar ends an earlier delisting; a terminal one starts one
        self._delisted[sids_now] = ending_now
        if broker.book:
            delisted = self._delisted
            i = broker.i
            for order in list(broker.book):
                if order.is_active and delisted[order.sid]:
                    status, event = core_delisting.delisted_order_fate(order.submit_index, i)
                    broker.end_order(
                        order, OrderStatus(STATUS_NAMES[status]), "delisted", EVENT_NAMES[event]
                    )
            broker.book = [o for o in broker.book if o.is_active]
        if not ending_now.any():
            return
        ret = dl.delisting_return
        for sid in sids_now[ending_now].tolist():
            pos = float(broker.qty[sid])
            if pos == 0.0:
                continue
            row = int(broker.last_row[sid])
            price = core_delisting.delisting_price(float(broker.marks[sid]), ret)
            broker.close_at(sid, pos, price, row, "delisted")

    # ------------------------------------------------------------------ outputs
    def events_frame(self) -> pl.DataFrame:
        """The ``corporate_actions`` output (:func:`events_frame`)."""
        rows = np.asarray([e[2:] for e in self._events], dtype=np.float64).reshape(-1, 5)
        stamps = np.asarray([e[0] for e in self._events], dtype=np.int64)
        ks = np.asarray([e[1] for e in self._events], dtype=np.int64)
        return events_frame(self._sched, stamps, ks, rows)

    def add_state_columns(self, states: pl.DataFrame) -> pl.DataFrame:
        """``states`` with the per-bar cash lines (:func:`add_state_columns`)."""
        cells = self._bar_cash
        stamps = np.asarray(list(cells), dtype=np.int64)
        values = np.asarray(list(cells.values()), dtype=np.float64).reshape(-1, 3)
        return add_state_columns(states, stamps, values)
