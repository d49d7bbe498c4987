"""Position exit rules: fixed stops/targets and time exits."""

from __future__ import annotations

import math

from engine.risk.batch import BatchDecision, PositionBatch
from engine.risk.context import RiskContext
from engine.risk.decision import RiskDecision
from engine.risk.rules.base import RiskRule


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a fraction in (0, 1), got {value!r}")
    return value


class PriceBasedStopLoss(RiskRule):
    """Fixed-percent stop-loss from the entry price, checked intrabar by the engine.

    Level: long ``entry_price * (1 - stop_pct)``; short ``entry_price * (1 + stop_pct)``, where
    ``entry_price`` is the position's average fill price after slippage. Set when the entry fill
    happens and active from the next bar: the bar's low (high for shorts) touching the level
    triggers an exit at the level, or at the open if the bar opens beyond it (gap).

    Parameters
    ----------
    stop_pct : float
        Fraction in (0, 1), e.g. 0.05 for 5 %.
    priority : int, default 100
    """

    evaluates_positions = False
    sets_levels_on_entry = True
    level_kind = "stop"
    vectorized = True

    def __init__(self, stop_pct: float, priority: int = 100) -> None:
        super().__init__(priority)
        self.stop_pct = _check_fraction("stop_pct", stop_pct)

    def level(self, context: RiskContext) -> float:
        """The stop level of the position, currency per share:
        ``entry_price × (1 − stop_pct × direction)``."""
        return context.entry_price * (1.0 - self.stop_pct * context.direction)

    def on_entry(self, context: RiskContext) -> RiskDecision:
        """Set the stop at :meth:`level` when the position opens (active from the next bar)."""
        return RiskDecision.adjust(
            stop_loss=self.level(context), priority=self.priority, rule=self.name
        )

    def evaluate(self, context: RiskContext) -> RiskDecision:
        """Keep the stop at :meth:`level` (the engine checks it intrabar; no exit decided here)."""
        return RiskDecision.adjust(
            stop_loss=self.level(context), priority=self.priority, rule=self.name
        )

    @property
    def long_factor(self) -> float:
        """``1 - stop_pct``: the long level is ``entry_price * long_factor``."""
        return 1.0 - self.stop_pct

    def on_entry_batch(self, batch: PositionBatch) -> BatchDecision | None:
        """The entry stops of a batch of new positions, shape (m,) (the :meth:`level` formula)."""
        if batch.all_long:  # same numbers: stop_pct * 1.0 == stop_pct
            return BatchDecision(stop_loss=batch.entry_price * self.long_factor)
        return BatchDecision(stop_loss=batch.entry_price * (1.0 - self.stop_pct * batch.direction))


class PriceBasedTakeProfit(RiskRule):
    """Fixed-percent take-profit from the entry price, checked intrabar by the engine.

    Level: long ``entry_price * (1 + target_pct)``; short ``entry_price * (1 - target_pct)``.
    Triggers when the bar's high (low for shorts) reaches it; fills at the level, or at the open
    if the bar opens beyond it. If the same bar also touches the stop-loss, the stop wins.

    Parameters
    ----------
    target_pct : float
        Fraction in (0, 1).
    priority : int, default 80
    """

    evaluates_positions = False
    sets_levels_on_entry = True
    level_kind = "take_profit"
    vectorized = True

    def __init__(self, target_pct: float, priority: int = 80) -> None:
        super().__init__(priority)
        self.target_pct = _check_fraction("target_pct", target_pct)

    def level(self, context: RiskContext) -> float:
        """The target level of the position, currency per share:
        ``entry_price × (1 + target_pct × direction)``."""
        return context.entry_price * (1.0 + self.target_pct * context.direction)

    def on_entry(self, context: RiskContext) -> RiskDecision:
        """Set the take-profit at :meth:`level` when the position opens (active from the
        next bar)."""
        return RiskDecision.adjust(
            take_profit=self.level(context), priority=self.priority, rule=self.name
        )

    def evaluate(self, context: RiskContext) -> RiskDecision:
        """Keep the take-profit at :meth:`level` (the engine checks it intrabar)."""
        return RiskDecision.adjust(
            take_profit=self.level(context), priority=self.priority, rule=self.name
        )

    @property
    def long_factor(self) -> float:
        """``1 + target_pct``: the long level is ``entry_price * long_factor``."""
        return 1.0 + self.target_pct

    def on_entry_batch(self, batch: PositionBatch) -> BatchDecision | None:
        """The entry targets of a batch of new positions, shape (m,) (the :meth:`level` formula)."""
        if batch.all_long:
            level = batch.entry_price * self.long_factor
        else:
            level = batch.entry_price * (1.0 + self.target_pct * batch.direction)
        return BatchDecision(take_profit=level)


class TimeBasedExit(RiskRule):
    """Exit after holding ``max_bars`` bars.

    At the close of the first bar where ``bars_held >= max_bars`` (``bars_held`` counts the
    symbol's bars since the entry bar, entry bar = 0) the rule emits a market exit, which fills
    at the next bar's open (``fill="next_open"``) or this bar's close (``fill="close"``).

    Parameters
    ----------
    max_bars : int
        ``>= 1``.
    priority : int, default 90
    """

    vectorized = True

    def __init__(self, max_bars: int, priority: int = 90) -> None:
        super().__init__(priority)
        if isinstance(max_bars, bool) or not isinstance(max_bars, int) or max_bars < 1:
            raise ValueError(f"max_bars must be an int >= 1, got {max_bars!r}")
        self.max_bars = max_bars

    def evaluate(self, context: RiskContext) -> RiskDecision:
        """Exit (market order, reason ``held N bars >= max_bars``) once
        ``bars_held >= max_bars``."""
        if context.bars_held >= self.max_bars:
            return RiskDecision.exit(
                f"held {context.bars_held} bars >= {self.max_bars}",
                priority=self.priority,
                rule=self.name,
            )
        return RiskDecision.hold()

    def evaluate_batch(self, batch: PositionBatch) -> BatchDecision | None:
        """The batch form of :meth:`evaluate`: an exit mask, shape (m,), or None when no
        position is due."""
        due = batch.bars_held >= self.max_bars
        return BatchDecision(exit=due) if due.any() else None
