"""Volatility-scaled, trailing, break-even and partial-profit rules."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

from engine.core.rules import (
    atr_level,
    atr_levels,
    breakeven_stop,
    breakeven_stops,
    partial_take,
)
from engine.data import FloatArray, IntArray
from engine.risk.batch import BatchDecision, PositionBatch
from engine.risk.context import RiskContext
from engine.risk.decision import RiskDecision
from engine.risk.rules.base import RiskRule

TRAIL_REFERENCES = ("high", "close")
"""Values of :class:`DynamicTrailingStop`'s ``trail_on``."""


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _fraction(name: str, value: float, *, allow_zero: bool = False) -> float:
    value = float(value)
    low_ok = value >= 0 if allow_zero else value > 0
    if not math.isfinite(value) or not low_ok or value >= 1:
        bounds = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must be a fraction in {bounds}, got {value!r}")
    return value


def _feature(context: RiskContext, column: str, rule: str) -> float:
    features = context.features
    if column not in features:
        raise ValueError(
            f"{rule} needs the column {column!r}, which is not a signal/indicator column of the "
            f"market data (have {sorted(features)})"
        )
    return features[column]


def _batch_feature(batch: PositionBatch, column: str, rule: str) -> FloatArray:
    if not batch.has_column(column):
        raise ValueError(
            f"{rule} needs the column {column!r}, which is not a signal/indicator column of the "
            f"market data (have {batch.column_names})"
        )
    return batch.column(column)


class _AtrLevelRule(RiskRule):
    """A level ``side × k`` ATRs from the entry price, set at the entry fill (no evaluation).

    ``side`` is −1 for a stop-loss (below a long's entry) and +1 for a take-profit; a short
    mirrors it through ``direction`` (:func:`engine.core.rules.atr_level`). ATR comes from
    ``atr_column`` on the last bar completed before the fill; an ATR that is not finite and
    positive sets no level.
    """

    evaluates_positions = False
    sets_levels_on_entry = True
    vectorized = True
    side: float

    def __init__(self, atr_multiplier: float, atr_column: str, priority: int) -> None:
        super().__init__(priority)
        self.atr_multiplier = _positive("atr_multiplier", atr_multiplier)
        self.atr_column = atr_column

    def on_entry(self, context: RiskContext) -> RiskDecision:
        atr = _feature(context, self.atr_column, self.name)
        level = atr_level(
            context.entry_price, context.direction, self.side, self.atr_multiplier, atr
        )
        if math.isnan(level):
            return RiskDecision.hold()
        if self.level_kind == "stop":
            return RiskDecision.adjust(stop_loss=level, priority=self.priority, rule=self.name)
        return RiskDecision.adjust(take_profit=level, priority=self.priority, rule=self.name)

    def on_entry_batch(self, batch: PositionBatch) -> BatchDecision | None:
        atr = _batch_feature(batch, self.atr_column, self.name)
        levels = atr_levels(
            batch.entry_price, batch.direction, self.side, self.atr_multiplier,
            np.ascontiguousarray(atr, dtype=np.float64),
        )  # fmt: skip
        if self.level_kind == "stop":
            return BatchDecision(stop_loss=levels)
        return BatchDecision(take_profit=levels)

    def evaluate(self, context: RiskContext) -> RiskDecision:
        return RiskDecision.hold()


class VolatilityScaledStopLoss(_AtrLevelRule):
    """Stop-loss ``atr_multiplier`` ATRs from the entry price.

    Level: long ``entry_price − k × ATR``; short ``entry_price + k × ATR``, with ATR read from
    ``atr_column`` on the last bar completed before the entry fill (no look-ahead). Set at the
    entry fill, checked intrabar from the next bar. A NaN ATR sets no level.

    Parameters
    ----------
    atr_multiplier : float, default 2.0
        ``k`` > 0.
    atr_column : str, default "atr_14"
        Indicator column with the ATR in currency per share.
    priority : int, default 100
    """

    level_kind = "stop"
    side = -1.0

    def __init__(
        self, atr_multiplier: float = 2.0, atr_column: str = "atr_14", priority: int = 100
    ) -> None:
        super().__init__(atr_multiplier, atr_column, priority)


class VolatilityScaledTakeProfit(_AtrLevelRule):
    """Take-profit ``atr_multiplier`` ATRs from the entry price (mirror of the stop).

    Level: long ``entry_price + k × ATR``; short ``entry_price − k × ATR``.

    Parameters
    ----------
    atr_multiplier : float, default 3.0
    atr_column : str, default "atr_14"
    priority : int, default 80
    """

    level_kind = "take_profit"
    side = 1.0

    def __init__(
        self, atr_multiplier: float = 3.0, atr_column: str = "atr_14", priority: int = 80
    ) -> None:
        super().__init__(atr_multiplier, atr_column, priority)


class DynamicTrailingStop(RiskRule):
    """Trailing stop whose distance tightens by a fixed rate per bar held.

    ``trail = max(min_trail_pct, initial_trail_pct − tighten_per_bar × bars_held)``;
    long level ``max_price × (1 − trail)`` (``max_price``: highest high since entry, this bar
    included), short level ``min_price × (1 + trail)``. The level only ratchets toward the price
    (never loosens) and is effective from the next bar. At the entry fill the level is
    ``entry_price × (1 ∓ initial_trail_pct)``.

    Two settings choose the reference price the level trails, to reproduce another
    framework's trailing stop (both need ``tighten_per_bar=0``: those trails are constant, and
    the level is then ``max(level, reference × (1 − trail))`` after each bar, for a long):

    - ``trail_on="close"`` (Backtrader's ``StopTrail``, which calls ``trailadjust(close)``
      after each bar and starts from the close of the fill bar): the reference is each bar's
      close, from the first close at or after the entry fill. A fill at the close sets the
      level at ``close × (1 ∓ trail)`` of that bar; a fill at the open (or intrabar) sets no
      level until the entry bar's close (the fill price is not a close), so under
      ``stop_activation="entry_bar"`` such a position has no trailing level on its entry bar.
    - ``include_entry_bar=False`` (VectorBT ``from_signals`` with ``sl_trail``, whose
      high-water mark starts at the entry fill and takes the highs of the bars after the entry
      bar only): the entry bar's high (low for a short), after a fill at its open, does not
      move the level; the level from the fill price stands until the next bar's close. A fill
      at the close is unaffected (the entry bar's high came before it).

    Parameters
    ----------
    initial_trail_pct : float, default 0.05
        Fraction in (0, 1).
    tighten_per_bar : float, default 0.0
        Fraction subtracted from the trail per bar held, ``>= 0``.
    min_trail_pct : float, optional
        Floor of the trail. Default: ``tighten_per_bar`` when that is > 0 (the trail tightens
        until it is one step wide: the seeds' ``tighten_rate`` with no floor), else
        ``initial_trail_pct``.
    priority : int, default 95
    trail_on : {"high", "close"}, default "high"
        Reference price: ``"high"`` the bar's high (low for a short) and the entry fill price;
        ``"close"`` the bar's close only (above).
    include_entry_bar : bool, default True
        False: the entry bar's reference price does not count (above). Needs
        ``trail_on="high"``.

    Raises
    ------
    ValueError
        A parameter outside its range, an unknown ``trail_on``, a non-bool
        ``include_entry_bar``, ``trail_on="close"`` with ``include_entry_bar=False`` (no level
        at all on the bar after an open fill), or a non-default reference with
        ``tighten_per_bar > 0``.
    """

    sets_levels_on_entry = True
    level_kind = "stop"
    vectorized = True

    def __init__(
        self,
        initial_trail_pct: float = 0.05,
        tighten_per_bar: float = 0.0,
        min_trail_pct: float | None = None,
        priority: int = 95,
        trail_on: str = "high",
        include_entry_bar: bool = True,
    ) -> None:
        super().__init__(priority)
        self.initial_trail_pct = _fraction("initial_trail_pct", initial_trail_pct)
        self.tighten_per_bar = _fraction("tighten_per_bar", tighten_per_bar, allow_zero=True)
        step = self.tighten_per_bar
        default_floor = min(step, self.initial_trail_pct) if step > 0 else self.initial_trail_pct
        floor = default_floor if min_trail_pct is None else min_trail_pct
        self.min_trail_pct = _fraction("min_trail_pct", floor)
        if self.min_trail_pct > self.initial_trail_pct:
            raise ValueError(
                f"min_trail_pct {self.min_trail_pct} exceeds initial_trail_pct "
                f"{self.initial_trail_pct}"
            )
        if trail_on not in TRAIL_REFERENCES:
            raise ValueError(f"trail_on must be one of {TRAIL_REFERENCES}, got {trail_on!r}")
        if not isinstance(include_entry_bar, bool):
            raise ValueError(f"include_entry_bar must be a bool, got {include_entry_bar!r}")
        self.trail_on = trail_on
        self.include_entry_bar = include_entry_bar
        if trail_on == "close" and not include_entry_bar:
            raise ValueError(
                "include_entry_bar=False needs trail_on='high': trailing on closes without the "
                "entry bar's close would leave no level on the bar after an entry at the open"
            )
        if not self.default_reference and self.tighten_per_bar > 0:
            raise ValueError(
                "trail_on='close' / include_entry_bar=False need tighten_per_bar=0 (the "
                "Backtrader and VectorBT trails they reproduce are constant)"
            )

    @property
    def default_reference(self) -> bool:
        """True for the default reference (highs from the entry fill on, the entry bar
        included); the compiled kernels run only this one."""
        return self.trail_on == "high" and self.include_entry_bar

    def trail(self, bars_held: int) -> float:
        """The trail fraction after ``bars_held`` bars."""
        return max(self.min_trail_pct, self.initial_trail_pct - self.tighten_per_bar * bars_held)

    def on_entry(self, context: RiskContext) -> RiskDecision:
        """Set the first trailing level, ``entry_price × (1 − initial_trail_pct × direction)``
        (``trail_on="close"``: from the close of the fill bar for a fill at the close, no level
        for a fill before the entry bar's close)."""
        if self.trail_on == "close":
            if context.row < 0 or context.bars_held < 0:
                return RiskDecision.hold()  # filled before the entry bar's close
            return self._ratchet(context, context.close)
        level = context.entry_price * (1.0 - context.direction * self.initial_trail_pct)
        return RiskDecision.adjust(stop_loss=level, priority=self.priority, rule=self.name)

    def _ratchet(self, context: RiskContext, reference: float) -> RiskDecision:
        """``reference × (1 ∓ trail)``, never looser than the stop in force."""
        level = self._level(reference, context.direction)
        current = context.stop_loss
        if math.isfinite(current):
            level = max(level, current) if context.is_long else min(level, current)
        if math.isnan(level):
            return RiskDecision.hold()
        return RiskDecision.adjust(stop_loss=level, priority=self.priority, rule=self.name)

    @property
    def long_entry_factor(self) -> float:
        """``1 - initial_trail_pct``: the long entry level is ``entry_price * factor``."""
        return 1.0 - self.initial_trail_pct

    def on_entry_batch(self, batch: PositionBatch) -> BatchDecision | None:
        """The batch form of :meth:`on_entry`, shape (m,)."""
        if self.trail_on == "close":
            # the known rows are the fill bar's for a fill at the close, the previous bar's
            # (bars_held -1) or none (-1) for a fill at the open: no close since the fill yet
            known = (batch.rows >= 0) & (batch.bars_held >= 0)
            if not known.any():
                return None
            return self._ratchet_batch(batch, np.where(known, batch.close, np.nan))
        if batch.all_long:
            return BatchDecision(stop_loss=batch.entry_price * self.long_entry_factor)
        level = batch.entry_price * (1.0 - batch.direction * self.initial_trail_pct)
        return BatchDecision(stop_loss=level)

    def evaluate(self, context: RiskContext) -> RiskDecision:
        """Move the stop to the trail below the best price since entry (above it for a short),
        never loosening it.
        """
        if not self.default_reference:
            if context.bars_held == 0 and not self.include_entry_bar:
                return RiskDecision.hold()
            if self.trail_on == "close":
                return self._ratchet(context, context.close)
            return self._ratchet(context, context.high if context.is_long else context.low)
        trail = self.trail(context.bars_held)
        current = context.stop_loss
        if context.is_long:
            level = context.max_price * (1.0 - trail)
            if math.isfinite(current):
                level = max(level, current)
        else:
            level = context.min_price * (1.0 + trail)
            if math.isfinite(current):
                level = min(level, current)
        return RiskDecision.adjust(stop_loss=level, priority=self.priority, rule=self.name)

    @property
    def uses_bars_held(self) -> bool:
        """True when the trail depends on ``bars_held`` (``tighten_per_bar > 0``)."""
        return self.tighten_per_bar != 0.0

    def _trail_batch(self, bars_held: IntArray | None) -> float | FloatArray:
        if bars_held is None or not self.uses_bars_held:
            return self.initial_trail_pct
        trail: FloatArray = np.maximum(
            self.min_trail_pct, self.initial_trail_pct - self.tighten_per_bar * bars_held
        )
        return trail

    def long_levels(
        self, max_price: FloatArray, current: FloatArray, bars_held: IntArray | None
    ) -> FloatArray:
        """Ratcheted long levels ``fmax(max_price * (1 - trail), current)``, shape (m,).

        ``bars_held`` may be ``None`` when :attr:`uses_bars_held` is False. ``fmax`` ignores
        a NaN current stop (none set yet).
        """
        level: FloatArray = np.fmax(max_price * (1.0 - self._trail_batch(bars_held)), current)
        return level

    def _level(self, reference: Any, direction: Any) -> Any:
        """The level ``trail`` from ``reference`` (scalars or arrays). ``trail_on="close"``
        uses Backtrader's arithmetic, ``close − close × trail`` (a long), which can differ from
        ``close × (1 − trail)`` in the last bit: enough to decide a bar whose low equals it."""
        trail = self.initial_trail_pct
        if self.trail_on == "close":
            return reference - direction * (reference * trail)
        return reference * (1.0 - direction * trail)

    def _ratchet_batch(self, batch: PositionBatch, reference: FloatArray) -> BatchDecision:
        """The batch form of :meth:`_ratchet` (NaN reference: no update), shape (m,)."""
        current = batch.stop_loss
        if batch.all_long:
            level = np.fmax(self._level(reference, 1.0), current)
        else:
            level = self._level(reference, batch.direction)
            level = np.where(batch.is_long, np.fmax(level, current), np.fmin(level, current))
        # no reference (the entry bar left out, no close yet): no answer, as the scalar hold
        return BatchDecision(stop_loss=np.where(np.isnan(reference), np.nan, level))

    def evaluate_batch(self, batch: PositionBatch) -> BatchDecision | None:
        """The batch form of :meth:`evaluate`: the ratcheted levels, shape (m,)."""
        if not self.default_reference:
            if self.trail_on == "close":
                reference = batch.close
            else:
                reference = np.where(batch.is_long, batch.high, batch.low)
            if not self.include_entry_bar:
                reference = np.where(batch.bars_held == 0, np.nan, reference)
            return self._ratchet_batch(batch, reference)
        bars_held = batch.bars_held if self.uses_bars_held else None
        current = batch.stop_loss
        if batch.all_long:
            return BatchDecision(stop_loss=self.long_levels(batch.max_price, current, bars_held))
        trail = self._trail_batch(bars_held)
        long = batch.is_long
        level = np.where(long, batch.max_price * (1.0 - trail), batch.min_price * (1.0 + trail))
        level = np.where(long, np.fmax(level, current), np.fmin(level, current))
        return BatchDecision(stop_loss=level)


class BreakEvenRule(RiskRule):
    """Move the stop to (about) the entry price once the trade has run far enough.

    When the maximum favourable excursion since entry (from bar highs for longs, lows for
    shorts) reaches ``trigger_pct`` of the entry price, the stop becomes
    ``entry_price × (1 + direction × offset_pct)``, effective from the next bar.

    Parameters
    ----------
    trigger_pct : float, default 0.02
        Fraction in (0, 1).
    offset_pct : float, default 0.0
        Fraction in [0, 1): lock in this much profit above entry.
    priority : int, default 85
    """

    level_kind = "stop"
    vectorized = True

    def __init__(
        self, trigger_pct: float = 0.02, offset_pct: float = 0.0, priority: int = 85
    ) -> None:
        super().__init__(priority)
        self.trigger_pct = _fraction("trigger_pct", trigger_pct)
        self.offset_pct = _fraction("offset_pct", offset_pct, allow_zero=True)

    def evaluate(self, context: RiskContext) -> RiskDecision:
        """Move the stop to the break-even level once the trade has run ``trigger_pct``
        (:func:`engine.core.rules.breakeven_stop`, the compiled driver's formula too).
        """
        best = context.max_price if context.is_long else context.min_price
        level = breakeven_stop(
            context.direction, context.entry_price, best, self.trigger_pct, self.offset_pct
        )
        if math.isnan(level):
            return RiskDecision.hold()
        return RiskDecision.adjust(stop_loss=level, priority=self.priority, rule=self.name)

    def evaluate_batch(self, batch: PositionBatch) -> BatchDecision | None:
        """The batch form of :meth:`evaluate` (the same core formula), shape (m,)."""
        best = np.where(batch.is_long, batch.max_price, batch.min_price)
        levels = breakeven_stops(
            batch.direction, batch.entry_price, best, self.trigger_pct, self.offset_pct
        )
        if np.isnan(levels).all():
            return None
        return BatchDecision(stop_loss=levels)


class PartialProfitTaking(RiskRule):
    """Take profit in slices as the close-to-entry return reaches given levels.

    For each ``(return_pct, fraction)`` level, the first bar whose close gives an unrealized
    return ``(close / entry − 1) × direction >= return_pct`` emits a market exit of
    ``fraction × the position's size when first seen`` shares (rounded down to whole shares by
    the engine unless fractional). Levels reached on the same bar add up. Each level fires once
    per position.

    Parameters
    ----------
    levels : sequence of (return_pct, fraction)
        Increasing return levels (> 0) with fractions in (0, 1] summing to at most 1.
    priority : int, default 70
    """

    def __init__(self, levels: Sequence[Sequence[float]], priority: int = 70) -> None:
        super().__init__(priority)
        parsed: list[tuple[float, float]] = []
        for level in levels:
            if len(level) != 2:
                raise ValueError(f"each level must be (return_pct, fraction), got {level!r}")
            ret = _positive("return_pct", level[0])
            frac = float(level[1])
            if not (math.isfinite(frac) and 0 < frac <= 1):
                raise ValueError(f"fraction must be in (0, 1], got {level[1]!r}")
            parsed.append((ret, frac))
        if not parsed:
            raise ValueError("PartialProfitTaking needs at least one level")
        if any(b[0] <= a[0] for a, b in zip(parsed, parsed[1:], strict=False)):
            raise ValueError(f"return levels must increase, got {levels!r}")
        if sum(f for _, f in parsed) > 1 + 1e-12:
            raise ValueError(f"fractions sum to more than 1: {levels!r}")
        self.levels = parsed
        self._table: FloatArray = np.asarray(parsed, dtype=np.float64).reshape(-1, 2)
        # per trade (symbol id, entry time): shares when first seen, the levels used (bit j:
        # level j; a Python int, so any number of levels)
        self._state: dict[tuple[int, datetime], tuple[float, int]] = {}

    @property
    def level_table(self) -> FloatArray:
        """The levels as float64, shape (k, 2), rows ``(return_pct, fraction)``."""
        return self._table

    def reset(self) -> None:
        """Forget the levels taken so far (a new run)."""
        self._state = {}

    def on_split(self, sid: int, ratio: float) -> None:
        """The position's size when first seen, in post-split shares (× ``ratio``), so each
        slice stays ``fraction`` of the position (the compiled driver does the same in
        :func:`engine.core.actions.bar_actions`)."""
        for key, (original, done) in self._state.items():
            if key[0] == sid:
                self._state[key] = (original * ratio, done)

    def evaluate(self, context: RiskContext) -> RiskDecision:
        """Sell the slice of the position's starting size owed by the levels reached and not yet
        taken (:func:`engine.core.rules.partial_take`, the compiled driver's formula too).
        """
        key = (context.sid, context.entry_time)
        held = abs(context.quantity)
        original, done = self._state.get(key, (held, 0))
        size, done = partial_take(
            self._table, done, context.direction, context.entry_price, context.close,
            original, held,
        )  # fmt: skip
        self._state[key] = (original, done)
        if size <= 0:
            return RiskDecision.hold()
        return RiskDecision.exit(
            f"return {context.unrealized_return:.4f} reached a profit-taking level",
            quantity=float(size),
            priority=self.priority,
            rule=self.name,
        )
