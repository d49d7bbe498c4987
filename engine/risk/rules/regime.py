"""Rules that depend on market context or on the time of day."""

from __future__ import annotations

import math
from datetime import time
from zoneinfo import ZoneInfo

from engine.core.rules import regime_above
from engine.risk.context import RiskContext
from engine.risk.decision import RiskDecision
from engine.risk.rules.base import RiskRule


class RegimeDependentRule(RiskRule):
    """Pick one of two rules by a market-context value (e.g. VIX above a threshold).

    ``value = context.market_features[context_column]`` (the value at the evaluated bar; for
    entry levels, the last bar before the fill); ``above`` applies when ``value > threshold``,
    otherwise ``below`` (also when the value is NaN). Either may be ``None`` (no action in that
    regime; :func:`engine.core.rules.regime_above`, the compiled driver's test too). Decisions
    keep the chosen rule's name as ``exit_reason``.

    Parameters
    ----------
    context_column : str
    threshold : float
    above, below : RiskRule or None
    priority : int, default 0
    """

    def __init__(
        self,
        context_column: str,
        threshold: float,
        above: RiskRule | None = None,
        below: RiskRule | None = None,
        priority: int = 0,
    ) -> None:
        super().__init__(priority)
        for name, rule in (("above", above), ("below", below)):
            if rule is not None and not isinstance(rule, RiskRule):
                raise ValueError(f"{name} must be a RiskRule (or a rule spec), got {rule!r}")
        if above is None and below is None:
            raise ValueError("RegimeDependentRule needs at least one of above/below")
        threshold = float(threshold)
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold!r}")
        self.context_column = context_column
        self.threshold = threshold
        self.above = above
        self.below = below
        children = [r for r in (above, below) if r is not None]
        self.evaluates_positions = any(r.evaluates_positions for r in children)
        self.sets_levels_on_entry = any(r.sets_levels_on_entry for r in children)

    def choose(self, context: RiskContext) -> RiskRule | None:
        """The member for the current regime: ``above`` when the context column's value is
        above ``threshold``, else ``below`` (None when that side has no rule).

        Raises
        ------
        ValueError
            The market data has no ``context_column``.
        """
        market = context.market_features
        if self.context_column not in market:
            raise ValueError(
                f"RegimeDependentRule needs context column {self.context_column!r}; the market "
                f"data has {sorted(market)}"
            )
        above = regime_above(market[self.context_column], self.threshold)
        return self.above if above else self.below

    def evaluate(self, context: RiskContext) -> RiskDecision:
        """The chosen member's decision, named after it (a hold when it evaluates no positions)."""
        rule = self.choose(context)
        if rule is None or not rule.evaluates_positions:
            return RiskDecision.hold()
        return _named(rule.evaluate(context), rule)

    def on_entry(self, context: RiskContext) -> RiskDecision:
        """The chosen member's entry levels, named after it (a hold when it sets none)."""
        rule = self.choose(context)
        if rule is None or not rule.sets_levels_on_entry:
            return RiskDecision.hold()
        return _named(rule.on_entry(context), rule)

    def reset(self) -> None:
        """Reset both members' state."""
        for rule in (self.above, self.below):
            if rule is not None:
                rule.reset()


def _named(decision: RiskDecision, rule: RiskRule) -> RiskDecision:
    if decision.is_hold or decision.rule:
        return decision
    return decision._replace(rule=rule.name)


class SessionEndExit(RiskRule):
    """Intraday: exit every position on the session's last bar(s).

    Triggers on a bar whose close time, in ``timezone``, is at or after
    ``session_close − minutes_before``. The exit is a market order: with ``fill="close"`` it
    fills at that bar's close (flat over the session end); with ``fill="next_open"`` at the
    next bar's open. Not meant for daily bars (every daily bar closes at the session end).

    Parameters
    ----------
    session_close : str, default "16:00"
        Local ``HH:MM``.
    timezone : str, default "America/New_York"
    minutes_before : int, default 0
    priority : int, default 150
    """

    def __init__(
        self,
        session_close: str = "16:00",
        timezone: str = "America/New_York",
        minutes_before: int = 0,
        priority: int = 150,
    ) -> None:
        super().__init__(priority)
        try:
            hours, minutes = (int(p) for p in session_close.split(":"))
            close = time(hours, minutes)
        except (ValueError, TypeError):
            raise ValueError(f"session_close must be 'HH:MM', got {session_close!r}") from None
        if isinstance(minutes_before, bool) or not isinstance(minutes_before, int):
            raise ValueError(f"minutes_before must be an int, got {minutes_before!r}")
        if not 0 <= minutes_before < 24 * 60:
            raise ValueError(f"minutes_before must be in [0, 1440), got {minutes_before!r}")
        try:
            self._zone = ZoneInfo(timezone)
        except Exception:
            raise ValueError(f"unknown timezone {timezone!r}") from None
        self.session_close = session_close
        self.timezone = timezone
        self.minutes_before = minutes_before
        total = close.hour * 60 + close.minute - minutes_before
        self._cutoff = max(total, 0)

    def evaluate(self, context: RiskContext) -> RiskDecision:
        """Exit (market order) on a bar stamped ``minutes_before`` or less before the session's
        close in ``timezone``.
        """
        local = context.timestamp.astimezone(self._zone)
        if local.hour * 60 + local.minute >= self._cutoff:
            return RiskDecision.exit(
                f"session end {self.session_close} {self.timezone}",
                priority=self.priority,
                rule=self.name,
            )
        return RiskDecision.hold()
