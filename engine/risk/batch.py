"""Vectorised hook C: all open positions of a bar as arrays, and the rules' array answers.

Rules that set ``vectorized = True`` implement :meth:`RiskRule.evaluate_batch` and are
evaluated once per bar on a :class:`PositionBatch` instead of once per position on a
:class:`RiskContext`; their answers are merged with the same conservative rules as
:func:`engine.risk.decision.merge_decisions` (exit beats hold, tighter stop wins, first
take-profit by priority wins).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from engine.data import FloatArray, IntArray, MarketData
    from engine.risk.context import PortfolioSnapshot

BoolArray = npt.NDArray[np.bool_]
ObjArray = npt.NDArray[np.object_]


class PositionBatch:
    """Every open position whose symbol has a bar now, as arrays of shape (m,).

    Fields other than ``sids``/``rows`` are gathered from the engine's arrays on first access
    (a rule that needs only ``bars_held`` pays for nothing else).

    Attributes
    ----------
    timestamp : datetime
    bar_index : int
    sids, rows : ndarray[int64]
        Symbol ids and their market-data rows at this bar.
    quantity : ndarray[float64]
        Signed shares.
    entry_price : ndarray[float64]
        Average entry prices.
    bars_held : ndarray[int64]
        The symbols' bars since entry (entry bar = 0).
    max_price, min_price : ndarray[float64]
        Highest high / lowest low since entry (this bar included).
    stop_loss, take_profit : ndarray[float64]
        Levels in force (NaN = none).
    """

    __slots__ = (
        "timestamp",
        "bar_index",
        "sids",
        "rows",
        "_data",
        "_portfolio",
        "_source",
        "_cache",
        "_long_only",
    )

    def __init__(
        self,
        *,
        data: MarketData,
        timestamp: datetime,
        bar_index: int,
        sids: IntArray,
        rows: IntArray,
        source: Mapping[str, npt.NDArray[Any]],
        portfolio: Callable[[], PortfolioSnapshot],
        long_only: bool = False,
    ) -> None:
        self._data = data
        # the run cannot hold shorts (allow_short=False): direction is known without looking
        self._long_only = long_only
        self.timestamp = timestamp
        self.bar_index = bar_index
        self.sids = sids
        self.rows = rows
        # per-symbol arrays (shape (S,)) indexed by ``sids`` on first use;
        # "entry_ordinal" gives bars_held
        self._source = source
        self._cache: dict[str, npt.NDArray[Any]] = {}
        self._portfolio: PortfolioSnapshot | Callable[[], PortfolioSnapshot] = portfolio

    def __len__(self) -> int:
        return int(self.sids.size)

    def _get(self, name: str) -> npt.NDArray[Any]:
        value = self._cache.get(name)
        if value is None:
            value = self._source[name][self.sids]
            self._cache[name] = value
        return value

    @property
    def quantity(self) -> FloatArray:
        """Signed shares held, shape (m,), float64."""
        return self._get("quantity")

    @property
    def entry_price(self) -> FloatArray:
        """Average entry price of each position, shape (m,), currency per share."""
        return self._get("entry_price")

    @property
    def max_price(self) -> FloatArray:
        """Highest price since each entry (bar highs, fill prices), shape (m,), currency/share."""
        return self._get("max_price")

    @property
    def min_price(self) -> FloatArray:
        """Lowest price since each entry (bar lows, fill prices), shape (m,), currency/share."""
        return self._get("min_price")

    @property
    def stop_loss(self) -> FloatArray:
        """Current stop-loss level of each position, shape (m,), currency per share (NaN: none)."""
        return self._get("stop_loss")

    @property
    def take_profit(self) -> FloatArray:
        """Take-profit level of each position, shape (m,), currency per share (NaN: none)."""
        return self._get("take_profit")

    @property
    def bars_held(self) -> IntArray:
        """The symbol's bars from each entry fill to now, shape (m,), int64."""
        value = self._cache.get("bars_held")
        if value is None:
            value = self._data.ordinal[self.rows] - self._get("entry_ordinal")
            self._cache["bars_held"] = value
        return value

    @property
    def portfolio(self) -> PortfolioSnapshot:
        """The portfolio now (taken on first use, then shared)."""
        from engine.risk.context import PortfolioSnapshot

        p = self._portfolio
        if not isinstance(p, PortfolioSnapshot):
            p = p()
            self._portfolio = p
        return p

    @property
    def is_long(self) -> BoolArray:
        """True for each long position, shape (m,), bool."""
        value = self._cache.get("is_long")
        if value is None:
            value = np.ones(self.sids.size, dtype=bool) if self._long_only else self.quantity > 0
            self._cache["is_long"] = value
        return value

    @property
    def all_long(self) -> bool:
        """True when every position is long (lets rules skip the short branch)."""
        return self._long_only or bool(self.is_long.all())

    @property
    def direction(self) -> FloatArray:
        """+1.0 for each long position, -1.0 for each short, shape (m,)."""
        value = self._cache.get("direction")
        if value is None:
            value = np.where(self.is_long, 1.0, -1.0)
            self._cache["direction"] = value
        return value

    @property
    def close(self) -> FloatArray:
        """This bar's close of each position's symbol, shape (m,), currency per share."""
        return self._data.close[self.rows]

    @property
    def high(self) -> FloatArray:
        """This bar's high of each position's symbol, shape (m,), currency per share."""
        return self._data.high[self.rows]

    @property
    def low(self) -> FloatArray:
        """This bar's low of each position's symbol, shape (m,), currency per share."""
        return self._data.low[self.rows]

    @property
    def mfe_pct(self) -> FloatArray:
        """Maximum favourable excursion as a fraction of the entry price (≥ 0)."""
        best = np.where(self.is_long, self.max_price, self.min_price)
        return np.maximum(0.0, (best / self.entry_price - 1.0) * self.direction)

    @property
    def unrealized_return(self) -> FloatArray:
        """``(close / entry_price - 1) × direction`` of each position, shape (m,), fraction."""
        return (self.close / self.entry_price - 1.0) * self.direction

    def column(self, name: str) -> FloatArray:
        """A signal/indicator column at the positions' rows (NaN where ``rows`` is -1)."""
        values = self._data.columns[name][self.rows]
        rows = self.rows
        return values if rows.size == 0 or rows.min() >= 0 else np.where(rows >= 0, values, np.nan)

    def has_column(self, name: str) -> bool:
        """True when the market data has a signal or indicator column ``name``."""
        return name in self._data.columns

    @property
    def column_names(self) -> list[str]:
        """The names of the market data's signal and indicator columns, sorted."""
        return sorted(self._data.columns)

    def context(self, name: str) -> FloatArray:
        """A market-wide context column at each row's timestamp (NaN where ``rows`` is -1)."""
        rows = self.rows
        index = np.searchsorted(self._data.offsets, rows, side="right") - 1
        values = self._data.context[name][np.maximum(index, 0)]
        return np.where(rows >= 0, values, np.nan)


@dataclass(frozen=True, slots=True)
class BatchDecision:
    """A vectorised rule's answer; arrays of shape (m,), ``None`` = no opinion.

    Attributes
    ----------
    exit : ndarray[bool] or None
        Positions to close with a market order.
    exit_quantity : ndarray[float64] or None
        Shares to close for partial exits (NaN = the whole position).
    stop_loss, take_profit : ndarray[float64] or None
        New levels (NaN = unchanged), effective from the next bar.
    """

    exit: BoolArray | None = None
    exit_quantity: FloatArray | None = None
    stop_loss: FloatArray | None = None
    take_profit: FloatArray | None = None


class PositionActions:
    """The merged hook-C result for a :class:`PositionBatch` (what the engine applies).

    Arrays of shape (m,), allocated only when some rule uses them (``None`` otherwise):
    ``stop_loss``/``take_profit`` (NaN = unchanged) with ``stop_rule``/``tp_rule`` naming the
    rules that set them; ``exit`` mask with ``exit_rule``, ``exit_quantity`` (NaN = whole) and
    ``exit_priority``. ``flatten_all`` names a rule that asked to close every position.
    """

    __slots__ = (
        "m",
        "stop_loss",
        "stop_rule",
        "take_profit",
        "tp_rule",
        "exit",
        "exit_rule",
        "exit_quantity",
        "exit_priority",
        "flatten_all",
    )

    def __init__(self, m: int) -> None:
        self.m = m
        self.stop_loss: FloatArray | None = None
        self.stop_rule: ObjArray | None = None
        self.take_profit: FloatArray | None = None
        self.tp_rule: ObjArray | None = None
        self.exit: BoolArray | None = None
        self.exit_rule: ObjArray | None = None
        self.exit_quantity: FloatArray | None = None
        self.exit_priority: IntArray | None = None
        self.flatten_all = ""

    def add_stop(self, values: FloatArray, is_long: BoolArray, rule: str | ObjArray) -> None:
        """Keep the tighter stop (higher for longs, lower for shorts); earlier rules win ties.

        ``rule`` names the setter: one name, or one per position.
        """
        current = self.stop_loss
        if current is None or self.stop_rule is None:
            self.stop_loss = np.array(values, dtype=np.float64)
            self.stop_rule = (
                np.full(self.m, rule, dtype=object) if isinstance(rule, str) else rule.copy()
            )
            return
        # comparisons with NaN are False (no warning): a NaN value never wins
        if is_long.all():
            tighter = values > current
        else:
            tighter = np.where(is_long, values > current, values < current)
        better = tighter | (np.isnan(current) & np.isfinite(values))
        if not better.any():
            return
        current[better] = values[better]
        self.stop_rule[better] = rule if isinstance(rule, str) else rule[better]

    def add_take_profit(self, values: FloatArray, rule: str | ObjArray) -> None:
        """Keep the first take-profit in priority order."""
        if self.take_profit is None or self.tp_rule is None:
            self.take_profit = np.array(values, dtype=np.float64)
            self.tp_rule = (
                np.full(self.m, rule, dtype=object) if isinstance(rule, str) else rule.copy()
            )
            return
        take = np.isfinite(values) & np.isnan(self.take_profit)
        self.take_profit[take] = values[take]
        self.tp_rule[take] = rule if isinstance(rule, str) else rule[take]

    def add_exit(
        self, mask: BoolArray, quantity: FloatArray | None, rule: str, priority: int
    ) -> None:
        """An exit beats a hold; a whole exit beats a partial; then higher priority."""
        m = self.m
        if (
            self.exit is None
            or self.exit_rule is None
            or self.exit_quantity is None
            or self.exit_priority is None
        ):
            self.exit = np.zeros(m, dtype=bool)
            self.exit_rule = np.full(m, "", dtype=object)
            self.exit_quantity = np.full(m, np.nan)
            self.exit_priority = np.zeros(m, dtype=np.int64)
        qty = quantity if quantity is not None else np.full(m, np.nan)
        whole_new = np.isnan(qty)
        whole_old = np.isnan(self.exit_quantity)
        replace = mask & (
            ~self.exit
            | (whole_new & ~whole_old)
            | ((whole_new == whole_old) & (priority > self.exit_priority))
        )
        self.exit[replace] = True
        self.exit_rule[replace] = rule
        self.exit_quantity[replace] = qty[replace]
        self.exit_priority[replace] = priority

    def add_exit_at(self, k: int, quantity: float | None, rule: str, priority: int) -> None:
        """:meth:`add_exit` for position ``k`` alone: ``quantity`` shares (None: the whole
        position) by ``rule`` at ``priority``."""
        mask = np.zeros(self.m, dtype=bool)
        mask[k] = True
        qty = np.full(self.m, np.nan if quantity is None else float(quantity))
        self.add_exit(mask, qty, rule, priority)

    @property
    def any(self) -> bool:
        """True when the actions change anything (levels, exits or a flatten-all)."""
        return bool(
            self.stop_loss is not None
            or self.take_profit is not None
            or (self.exit is not None and self.exit.any())
            or self.flatten_all
        )


def as_array(value: Any, m: int, dtype: type) -> npt.NDArray[Any]:
    """Broadcast a rule's scalar or array answer to shape (m,)."""
    if isinstance(value, np.ndarray) and value.shape == (m,) and value.dtype == dtype:
        return value
    return np.broadcast_to(np.asarray(value, dtype=dtype), (m,))
