"""Market mechanics on raw prices: corporate actions, delistings and financing.

Three settings of :class:`engine.ExecutionConfig`, all off by default (a run without them
is exactly the run it was before they existed):

- :class:`CorporateActions` (``corporate_actions=``): splits and cash dividends applied to
  the portfolio on each ex-date, for a run on **raw** (unadjusted) prices;
- :class:`Delisting` (``delisting=``): a position whose symbol's data ends, or stops for
  longer than ``gap_sessions`` sessions, is closed at its last bar (``exit_reason =
  "delisted"``);
- :class:`Financing` (``financing=``): interest on cash and the short borrow fee, accrued
  per bar.

:class:`MarketMechanics` is their run-time state; the broker of the Python driver calls it
at the bar boundary (corporate actions and financing, before the open's fills) and after
the close's fills (delistings). The ledger formulas are the core's kernels
(:mod:`engine.core.actions`, :mod:`engine.core.financing`); the compiled TopN driver
(:mod:`engine.compiled.topn`) calls the same kernels at the same point of its bar, so both
drivers give identical records; the delisting decisions are :mod:`engine.core.delisting`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.core import delisting as core_delisting
from engine.core.actions import (
    EV_AFTER,
    EV_APPLIED,
    EV_BEFORE,
    EV_CASH,
    EV_LIEU,
    EV_ORDERS,
    N_EV,
    NEVER,
    new_payment_state,
    paid_later,
    pay_due,
    split_and_dividend,
    split_order,
)
from engine.core.financing import accrue
from engine.core.layout import EVENT_NAMES, STATUS_NAMES
from engine.core.ledger import round_quantity
from engine.orders import Order, OrderStatus, OrderType

if TYPE_CHECKING:
    from engine.data import MarketData
    from engine.risk.rules.base import RiskRule

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


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


_DAY_US = 86_400_000_000

CORPORATE_ACTION_COLUMNS = ("symbol", "ex_date", "split_ratio", "dividend", "pay_date")
"""Columns of a corporate-actions table (``split_ratio``, ``dividend``, ``pay_date`` optional)."""

DAY_COUNTS = {"actual/360": 360.0, "actual/365": 365.0}
"""Day-count conventions of :class:`Financing`: elapsed calendar days over the basis."""

MAX_LISTED = 10


class CorporateActionsError(ValueError):
    """A corporate-actions table that breaks a rule; the message names the offending rows."""


def _listed(frame: pl.DataFrame, what: str) -> str:
    rows = frame.head(MAX_LISTED).to_dicts()
    shown = "; ".join(
        "row "
        + str(r["row"])
        + " ("
        + ", ".join(f"{k}={r[k]}" for k in r if k != "row" and r[k] is not None)
        + ")"
        for r in rows
    )
    more = f" and {frame.height - MAX_LISTED} more" if frame.height > MAX_LISTED else ""
    return f"{frame.height} row(s) {what}: {shown}{more}"


class CorporateActions:
    """A validated table of splits and cash dividends (one row per symbol and ex-date).

    Parameters
    ----------
    frame : pl.DataFrame
        Columns ``symbol`` (String), ``ex_date`` (Date: the first session that trades
        without the dividend / on the new share count), and at least one of
        ``split_ratio`` (Float64, new shares per old share: 7.0 for a 7:1 split, 0.05 for a
        1:20 reverse split; missing or null = 1.0) and ``dividend`` (Float64, cash per share
        in the raw prices of the session before the ex-date; missing or null = 0.0);
        optionally ``pay_date`` (Date, on or after ``ex_date``; null = paid on the ex-date).
        Other columns are refused.

    Raises
    ------
    CorporateActionsError
        A missing or unknown column, a wrong dtype, a null symbol or ex-date, a ratio ≤ 0
        or not finite, a negative or non-finite dividend, a duplicate (symbol, ex_date), or
        a pay date before its ex-date. The message names the rows (0-based ``row``).

    Notes
    -----
    A dividend and a split on the same ex-date: the dividend is paid on the shares held
    before the split (Lean's factor files state both in pre-split prices).
    Validation against prices (unknown symbol, a dividend not below the previous close) needs
    the price table: :func:`ml4t_pipeline.lib.corporate_actions.validate_against_prices`.

    Examples
    --------
    >>> import polars as pl
    >>> from datetime import date
    >>> actions = CorporateActions(pl.DataFrame({
    ...     "symbol": ["AAPL"], "ex_date": [date(2014, 6, 9)], "split_ratio": [7.0]}))
    >>> actions
    CorporateActions(1 rows, 1 symbols, 1 splits, 0 dividends)
    """

    def __init__(self, frame: pl.DataFrame) -> None:
        if not isinstance(frame, pl.DataFrame):
            raise CorporateActionsError(
                f"corporate actions must be a polars DataFrame, got {type(frame).__name__}"
            )
        unknown = [c for c in frame.columns if c not in CORPORATE_ACTION_COLUMNS]
        if unknown:
            raise CorporateActionsError(
                f"corporate actions: unknown column(s) {unknown}; "
                f"expected {list(CORPORATE_ACTION_COLUMNS)}"
            )
        missing = [c for c in ("symbol", "ex_date") if c not in frame.columns]
        if missing or not ({"split_ratio", "dividend"} & set(frame.columns)):
            raise CorporateActionsError(
                "corporate actions need columns symbol, ex_date and split_ratio and/or "
                f"dividend; got {frame.columns}"
            )
        expected = {
            "symbol": (pl.String,),
            "ex_date": (pl.Date,),
            "split_ratio": (pl.Float64, pl.Float32, pl.Int64, pl.Int32),
            "dividend": (pl.Float64, pl.Float32, pl.Int64, pl.Int32),
            "pay_date": (pl.Date,),
        }
        for name in frame.columns:
            if frame.schema[name] not in expected[name] and frame.schema[name] != pl.Null:
                raise CorporateActionsError(
                    f"corporate actions: column {name!r} has dtype {frame.schema[name]}, "
                    f"expected {expected[name][0]}"
                )
        table = frame.with_row_index("row").with_columns(
            (
                pl.col("split_ratio").cast(pl.Float64).fill_null(1.0)
                if "split_ratio" in frame.columns
                else pl.lit(1.0)
            ).alias("split_ratio"),
            (
                pl.col("dividend").cast(pl.Float64).fill_null(0.0)
                if "dividend" in frame.columns
                else pl.lit(0.0)
            ).alias("dividend"),
            (
                pl.col("pay_date").cast(pl.Date)
                if "pay_date" in frame.columns
                else pl.lit(None, dtype=pl.Date)
            ).alias("pay_date"),
        )
        key = ["row", "symbol", "ex_date"]
        problems = [
            (
                table.filter(pl.col("symbol").is_null() | pl.col("ex_date").is_null()),
                "with a null symbol or ex_date",
                key,
            ),
            (
                table.filter(~pl.col("split_ratio").is_finite() | (pl.col("split_ratio") <= 0)),
                "with a split_ratio <= 0 or not finite",
                [*key, "split_ratio"],
            ),
            (
                table.filter(~pl.col("dividend").is_finite() | (pl.col("dividend") < 0)),
                "with a negative or non-finite dividend",
                [*key, "dividend"],
            ),
            (
                table.filter(pl.struct("symbol", "ex_date").is_duplicated()),
                "with a duplicate (symbol, ex_date)",
                key,
            ),
            (
                table.filter(pl.col("pay_date") < pl.col("ex_date")),
                "with a pay_date before the ex_date",
                [*key, "pay_date"],
            ),
        ]
        for bad, what, cols in problems:
            if bad.height:
                raise CorporateActionsError("corporate actions: " + _listed(bad.select(cols), what))
        self.frame: pl.DataFrame = table.drop("row").sort("ex_date", "symbol")
        self._schedules: dict[tuple[str, ...], Any] = {}  # per run's symbol list
        """The validated table (all five columns, nulls filled), sorted by ex_date, symbol."""

    def __len__(self) -> int:
        return self.frame.height

    def __repr__(self) -> str:
        f = self.frame
        return (
            f"CorporateActions({f.height} rows, {f['symbol'].n_unique()} symbols, "
            f"{int((f['split_ratio'] != 1.0).sum())} splits, "
            f"{int((f['dividend'] > 0).sum())} dividends)"
        )


@dataclass(frozen=True)
class Delisting:
    """When a symbol counts as delisted, and at what price its position is closed.

    A symbol is delisted at a bar when its data ends there before the panel's last
    session, or when its next bar comes more than ``gap_sessions`` sessions of the panel
    later (a ticker reused by another security after a gap, as WM in Lean's data: Washington
    Mutual to 2008-09-26, Waste Management from 2009-08-05). At that bar's close, after the
    close's fills, an open position is closed at ``close × (1 + delisting_return)``
    (``exit_reason = "delisted"``), working orders for the symbol are cancelled and orders
    submitted for it on that bar, or later while it has no new bar, are rejected (reason
    ``delisted``). The rule reads the symbol's future bars: the simulation assumes the
    delisting was announced, as Zipline's ``auto_close_date`` does.

    Parameters
    ----------
    gap_sessions : int, default 20
        Missing sessions (of the panel's timestamps) after which the data is taken to belong
        to another security; >= 1.
    delisting_return : float, default 0.0
        Return from the last close to the delisting proceeds (CRSP's delisting return), in
        [-1, 10]; -1: the position is worth nothing.
    """

    gap_sessions: int = 20
    delisting_return: float = 0.0

    def __post_init__(self) -> None:
        g = self.gap_sessions
        if isinstance(g, bool) or not isinstance(g, int) or g < 1:
            raise ValueError(f"gap_sessions must be an int >= 1, got {g!r}")
        r = self.delisting_return
        if (
            isinstance(r, bool)
            or not isinstance(r, int | float)
            or not math.isfinite(r)
            or not -1.0 <= r <= 10.0
        ):
            raise ValueError(f"delisting_return must be a number in [-1, 10], got {r!r}")
        object.__setattr__(self, "delisting_return", float(r))


def _rate(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not -1.0 <= value <= 1.0
    ):
        raise ValueError(f"{name} must be an annual rate (fraction) in [-1, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Financing:
    """Interest on cash and the short borrow fee, accrued per bar (annual simple rates).

    For the interval from one bar's close to the next (``days`` = elapsed calendar time in
    days; a weekend counts its three days), on the cash and positions held over it, booked
    into the cash at the start of the later bar (formulas: :mod:`engine.core.financing`):
    interest ``cash × rate × days / basis`` (``credit_rate`` on positive cash,
    ``debit_rate`` on negative cash) and borrow fee ``Σ |short shares| × previous close ×
    borrow rate × days / basis``.

    Parameters
    ----------
    credit_rate : float, default 0.0
        Annual rate paid on positive cash, in [-1, 1].
    debit_rate : float, default 0.0
        Annual rate charged on negative cash, in [-1, 1].
    borrow_rate : float, default 0.0
        Annual borrow fee on short market value, for symbols not in ``borrow_rates``.
    borrow_rates : mapping of str to float, optional
        Per-symbol annual borrow fees (hard-to-borrow names).
    day_count : {"actual/360", "actual/365"}, default "actual/360"
        The basis (USD money-market convention: actual/360).
    """

    credit_rate: float = 0.0
    debit_rate: float = 0.0
    borrow_rate: float = 0.0
    borrow_rates: Mapping[str, float] = field(default_factory=dict)
    day_count: str = "actual/360"

    def __post_init__(self) -> None:
        for name in ("credit_rate", "debit_rate", "borrow_rate"):
            object.__setattr__(self, name, _rate(name, getattr(self, name)))
        if not isinstance(self.borrow_rates, Mapping):
            raise ValueError(f"borrow_rates must be a mapping, got {self.borrow_rates!r}")
        rates = {str(k): _rate(f"borrow_rates[{k!r}]", v) for k, v in self.borrow_rates.items()}
        object.__setattr__(self, "borrow_rates", rates)
        if self.day_count not in DAY_COUNTS:
            raise ValueError(
                f"day_count must be one of {sorted(DAY_COUNTS)}, got {self.day_count!r}"
            )

    @property
    def basis(self) -> float:
        """Days in the day-count year (360 or 365)."""
        return DAY_COUNTS[self.day_count]

    def __hash__(self) -> int:
        return hash((self.credit_rate, self.debit_rate, self.borrow_rate, self.day_count))


def delisting_rows(data: MarketData, gap_sessions: int) -> npt.NDArray[np.bool_]:
    """Rows of ``data`` at which their symbol is delisted (:class:`Delisting`;
    :func:`engine.core.delisting.delisting_rows`).

    Returns
    -------
    bool array, shape (n_rows,)
        True at a symbol's last row before the panel's last session, and at a row whose
        symbol's next row is more than ``gap_sessions`` sessions later.
    """
    return core_delisting.delisting_rows(data.offsets, data.sym_id, gap_sessions)


_EVENT_SCHEMA = {
    "timestamp": pl.Int64,
    "symbol": pl.String,
    "ex_date": pl.Date,
    "split_ratio": pl.Float64,
    "dividend": pl.Float64,
    "quantity_before": pl.Float64,
    "quantity_after": pl.Float64,
    "dividend_cash": pl.Float64,
    "cash_in_lieu": pl.Float64,
    "pay_date": pl.Date,
    "orders_adjusted": pl.Int64,
}


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
        sched = _schedule(actions, data)
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


def borrow_rates(data: MarketData, financing: Financing | None) -> FloatArray:
    """Annual borrow fee per symbol id (float64, n_symbols; 0 without financing)."""
    rates = np.zeros(data.n_symbols)
    if financing is not None:
        rates[:] = financing.borrow_rate
        index = data.symbol_index
        for symbol, rate in financing.borrow_rates.items():
            if symbol in index:
                rates[index[symbol]] = rate
    return rates


class MechanicsOutput(Protocol):
    """What :class:`engine.BacktestResult` reads of a run's market mechanics."""

    def events_frame(self) -> pl.DataFrame:
        """The ``corporate_actions`` output table (one row per action applied)."""

    def add_state_columns(self, states: pl.DataFrame) -> pl.DataFrame:
        """``states`` with the per-bar ``dividends``, ``interest`` and ``borrow_fee`` columns."""


class _Schedule(NamedTuple):
    """The actions of a table for the symbols of a run, in ex-date order."""

    ex_day: IntArray  # days since 1970-01-01
    sid: IntArray
    ratio: FloatArray
    dividend: FloatArray
    pay_day: IntArray  # -1: paid on the ex-date
    ex_date: pl.Series
    pay_date: pl.Series
    names: pl.Series  # symbol names by id


def _schedule(actions: CorporateActions | None, data: MarketData) -> _Schedule:
    names = pl.Series("symbol", [str(s) for s in data.symbols.tolist()], dtype=pl.String)
    if actions is None:
        empty_i = np.zeros(0, dtype=np.int64)
        return _Schedule(
            empty_i,
            empty_i,
            np.zeros(0),
            np.zeros(0),
            empty_i,
            pl.Series("ex_date", [], dtype=pl.Date),
            pl.Series("pay_date", [], dtype=pl.Date),
            names,
        )
    key = tuple(names.to_list())
    cached: _Schedule | None = actions._schedules.get(key)
    if cached is not None:
        return cached
    ids = pl.DataFrame({"symbol": names, "sid": np.arange(names.len(), dtype=np.int64)})
    f = actions.frame.join(ids, on="symbol", how="inner", maintain_order="left")
    sched = _Schedule(
        f["ex_date"].cast(pl.Int32).to_numpy().astype(np.int64),
        f["sid"].to_numpy().astype(np.int64),
        f["split_ratio"].to_numpy().astype(np.float64),
        f["dividend"].to_numpy().astype(np.float64),
        f["pay_date"].cast(pl.Int32).fill_null(-1).to_numpy().astype(np.int64),
        f["ex_date"],
        f["pay_date"],
        names,
    )
    if len(actions._schedules) >= 4:
        actions._schedules.clear()
    actions._schedules[key] = sched
    return sched


def events_frame(
    sched: _Schedule, stamps: IntArray, ks: IntArray, rows: FloatArray
) -> pl.DataFrame:
    """The ``corporate_actions`` output: one row per action that touched the portfolio (a
    held position or working orders): timestamp (the bar it was applied at, UTC), symbol,
    ex_date, split_ratio, dividend (per share), quantity_before / quantity_after (shares),
    dividend_cash (currency, signed: paid to longs, owed by shorts), cash_in_lieu
    (currency), pay_date, orders_adjusted.

    ``ks``: schedule rows; ``rows``: float64, (n, 5): quantity before, after, dividend
    cash, cash in lieu, orders adjusted.
    """
    index = pl.Series(ks, dtype=pl.Int64)
    return pl.DataFrame(
        {
            "timestamp": pl.Series(stamps, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "symbol": sched.names.gather(pl.Series(sched.sid[ks], dtype=pl.Int64)),
            "ex_date": sched.ex_date.gather(index),
            "split_ratio": sched.ratio[ks],
            "dividend": sched.dividend[ks],
            "quantity_before": rows[:, 0],
            "quantity_after": rows[:, 1],
            "dividend_cash": rows[:, 2],
            "cash_in_lieu": rows[:, 3],
            "pay_date": sched.pay_date.gather(index),
            "orders_adjusted": pl.Series(rows[:, 4], dtype=pl.Float64).cast(pl.Int64),
        }
    )


def add_state_columns(states: pl.DataFrame, stamps: IntArray, values: FloatArray) -> pl.DataFrame:
    """``states`` (portfolio_states) with the per-bar cash lines ``dividends``, ``interest``
    (signed) and ``borrow_fee`` (≤ 0), currency, 0 where nothing was booked; ``values``:
    float64, (n, 3), the lines at the bar closes ``stamps`` (µs, UTC; each one of the states'
    timestamps)."""
    bars = states.get_column("timestamp").to_physical().to_numpy()
    at = np.searchsorted(bars, stamps)
    lines = np.zeros((3, bars.size))
    lines[:, at] = values.T
    return states.with_columns(
        pl.Series("dividends", lines[0]),
        pl.Series("interest", lines[1]),
        pl.Series("borrow_fee", lines[2]),
    )


class CompiledMechanics(NamedTuple):
    """The market mechanics of a compiled run (:func:`compiled_mechanics`): inputs, state and
    the output buffers the driver fills (:func:`engine.core.actions.bar_actions`,
    :func:`engine.core.actions.bar_payments`, :func:`engine.core.financing.bar_financing`,
    :func:`engine.core.delisting.delisted_book_pass`).

    Inputs: ``ev_bar`` / ``ev_sid`` / ``ev_pay`` (int64) and ``ev_ratio`` / ``ev_div``
    (float64), one per scheduled action (the bar it applies at: the first bar on or after
    its ex-date; its pay day, days since 1970-01-01, -1: paid on the ex-date); ``borrow``
    (float64, per symbol, annual); ``rates`` (float64, ``M_*`` slots: credit, debit, basis,
    1.0 if financing, 1.0 if actions, 1.0 if delisting, the delisting return, the reason code
    of a delisting's closing order); ``terminal`` (bool, per data row: the symbol is delisted
    at that row, :func:`engine.core.delisting.delisting_rows`; empty without delisting).
    State: ``owed`` (float64, per action, dividend cash not yet paid), ``payment`` (float64,
    :func:`engine.core.actions.new_payment_state`), ``delisted`` (bool, per symbol).
    Outputs: ``ev_out`` (float64, (n_actions, N_EV)), ``dividends`` / ``interest`` / ``fee``
    (float64, per bar, currency).
    """

    ev_bar: IntArray
    ev_sid: IntArray
    ev_ratio: FloatArray
    ev_div: FloatArray
    ev_pay: IntArray
    borrow: FloatArray
    rates: FloatArray
    terminal: npt.NDArray[np.bool_]
    owed: FloatArray
    payment: FloatArray
    delisted: npt.NDArray[np.bool_]
    ev_out: FloatArray
    dividends: FloatArray
    interest: FloatArray
    fee: FloatArray


N_M = 8
M_CREDIT, M_DEBIT, M_BASIS, M_FINANCING, M_ACTIONS, M_DELISTING, M_DELIST_RETURN, M_REASON = range(
    N_M
)
"""Slots of :attr:`CompiledMechanics.rates`."""


def compiled_mechanics_reason(
    actions: CorporateActions | None, delisting: Delisting | None
) -> str | None:
    """Why the compiled driver cannot run these mechanics (``None``: it can). It runs every
    corporate action (with or without pay dates), delistings and financing: always ``None``
    (kept for the planner's checks, :func:`engine.compiled.plan.compiled_reason`)."""
    return None


def compiled_mechanics(
    data: MarketData,
    actions: CorporateActions | None,
    financing: Financing | None,
    delisting: Delisting | None = None,
    reason_code: int = -1,
) -> CompiledMechanics:
    """The :class:`CompiledMechanics` of a run on ``data`` (empty arrays when unset);
    ``reason_code``: the reason code of ``"delisted"`` in the run's records (the closing
    orders of delisted positions)."""
    sched = _schedule(actions, data)
    days = np.asarray(data.timestamps, dtype=np.int64) // _DAY_US
    ev_bar = np.searchsorted(days, sched.ex_day, side="left").astype(np.int64)
    n_t = data.n_timestamps
    rates = np.zeros(N_M)
    if financing is not None:
        rates[M_CREDIT] = financing.credit_rate
        rates[M_DEBIT] = financing.debit_rate
        rates[M_BASIS] = financing.basis
        rates[M_FINANCING] = 1.0
    rates[M_ACTIONS] = 1.0 if sched.sid.size else 0.0
    if delisting is not None:
        rates[M_DELISTING] = 1.0
        rates[M_DELIST_RETURN] = delisting.delisting_return
        rates[M_REASON] = reason_code
        terminal = delisting_rows(data, delisting.gap_sessions)
    else:
        terminal = np.zeros(0, dtype=np.bool_)
    return CompiledMechanics(
        ev_bar,
        sched.sid,
        sched.ratio,
        sched.dividend,
        sched.pay_day,
        borrow_rates(data, financing),
        rates,
        terminal,
        np.zeros(sched.sid.size),
        new_payment_state(),
        np.zeros(data.n_symbols, dtype=np.bool_),
        np.zeros((sched.sid.size, N_EV)),
        np.zeros(n_t),
        np.zeros(n_t),
        np.zeros(n_t),
    )


def fresh_compiled(mech: CompiledMechanics) -> CompiledMechanics:
    """``mech`` with its state and output buffers reset (for a retry of the run)."""
    return mech._replace(
        owed=np.zeros_like(mech.owed),
        payment=new_payment_state(),
        delisted=np.zeros_like(mech.delisted),
        ev_out=np.zeros_like(mech.ev_out),
        dividends=np.zeros_like(mech.dividends),
        interest=np.zeros_like(mech.interest),
        fee=np.zeros_like(mech.fee),
    )


class CompiledOutput:
    """A compiled run's market-mechanics outputs, as :class:`MechanicsOutput`."""

    def __init__(self, data: MarketData, actions: CorporateActions | None, out: CompiledMechanics):
        self._sched = _schedule(actions, data)
        self._stamps = np.asarray(data.timestamps, dtype=np.int64)
        self._out = out

    def events_frame(self) -> pl.DataFrame:
        """The ``corporate_actions`` output (:func:`events_frame`), the rows the Python
        driver records."""
        ev = self._out.ev_out
        touched = (ev[:, EV_APPLIED] != 0.0) & ((ev[:, EV_BEFORE] != 0.0) | (ev[:, EV_ORDERS] != 0))
        ks = np.flatnonzero(touched).astype(np.int64)
        rows = ev[ks][:, [EV_BEFORE, EV_AFTER, EV_CASH, EV_LIEU, EV_ORDERS]]
        return events_frame(self._sched, self._stamps[self._out.ev_bar[ks]], ks, rows)

    def add_state_columns(self, states: pl.DataFrame) -> pl.DataFrame:
        """``states`` with the per-bar cash lines (:func:`add_state_columns`)."""
        out = self._out
        active = np.flatnonzero((out.dividends != 0) | (out.interest != 0) | (out.fee != 0))
        values = np.stack([out.dividends[active], out.interest[active], out.fee[active]], axis=1)
        return add_state_columns(states, self._stamps[active], values)


def compiled_outputs(
    data: MarketData,
    actions: CorporateActions | None,
    financing: Financing | None,
    fractional: bool,
    out: CompiledMechanics,
) -> CompiledOutput:
    """The outputs of a compiled run's mechanics (:class:`CompiledOutput`)."""
    return CompiledOutput(data, actions, out)
