"""The :class:`RiskRule` interface and the generic combinators."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from engine.risk.batch import BatchDecision, PositionBatch
from engine.risk.context import PortfolioSnapshot, RiskContext
from engine.risk.decision import OrderDecision, RiskDecision
from engine.risk.rules.aliases import COMPOSITE_MODES, RULE_PARAM_ALIASES, rename_rule_params

if TYPE_CHECKING:
    from engine.events import Fill
    from engine.orders import Order


def _accept_seeds_names(init: Callable[..., None], kind: str) -> Callable[..., None]:
    @functools.wraps(init)
    def wrapper(self: RiskRule, *args: Any, **kwargs: Any) -> None:
        kwargs = rename_rule_params(kind, kwargs, f"{kind}()")
        if kind == "CompositeRule" and len(args) >= 2 and isinstance(args[1], str):
            args = (args[0], COMPOSITE_MODES.get(args[1], args[1]), *args[2:])
        init(self, *args, **kwargs)

    return wrapper


def check_priority(priority: int) -> int:
    """``priority`` if it is an int (not a bool).

    Raises
    ------
    ValueError
        Any other type.
    """
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError(f"priority must be an int, got {priority!r}")
    return priority


class RiskRule(ABC):
    """A pluggable risk rule.

    Three optional roles, each a method; class flags tell the manager which roles a rule plays
    so rules that don't need per-bar evaluation cost nothing per bar:

    - :meth:`evaluate` (hook C, ``evaluates_positions``): called once per open position per
      bar (the symbol has a bar) with a shared :class:`RiskContext`; returns a
      :class:`RiskDecision` (hold, exit, or new stop/take-profit levels effective next bar).
      Rules with ``vectorized = True`` answer for all positions at once in
      :meth:`evaluate_batch` instead (no per-position Python work).
    - :meth:`on_entry` (via hook D, ``sets_levels_on_entry``): called after a fill that opens or
      increases a position; may set initial levels (effective from the bar after the fill).
    - :meth:`validate_order` (hook B, ``validates_orders``): pass, shrink or reject a new order.

    ``name`` (the class name by default) is what ``exit_reason`` and rejections record.
    """

    evaluates_positions: bool = True
    sets_levels_on_entry: bool = False
    validates_orders: bool = False
    vectorized: bool = False
    """True when :meth:`evaluate_batch` / :meth:`on_entry_batch` replace :meth:`evaluate` /
    :meth:`on_entry` inside the engine (they must give the same answers)."""
    observes_fills: bool = False
    """True when :meth:`on_fill` wants to see every fill (hook D)."""
    priority: int = 0
    """Set by the constructor; the class default serves subclasses whose ``__init__`` does not
    call ``super().__init__`` (the seeds' pattern 3)."""
    level_kind: ClassVar[str | None] = None
    """``"stop"`` / ``"take_profit"`` for rules that set that level (conflict warnings)."""

    def __init__(self, priority: int = 0) -> None:
        self.priority = check_priority(priority)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # the seeds' keyword names (engine.risk.rules.aliases) for the rules that have some
        super().__init_subclass__(**kwargs)
        kind = cls.__name__
        if "__init__" in cls.__dict__ and (kind in RULE_PARAM_ALIASES or kind == "CompositeRule"):
            cls.__init__ = _accept_seeds_names(cls.__init__, kind)  # type: ignore[method-assign]

    @property
    def name(self) -> str:
        """The rule's name in records and exit reasons (the class name by default)."""
        return type(self).__name__

    @abstractmethod
    def evaluate(self, context: RiskContext) -> RiskDecision:
        """Decide on one open position at the current bar's close."""

    def on_entry(self, context: RiskContext) -> RiskDecision:
        """Initial levels for a position just opened/increased (default: none)."""
        return RiskDecision.hold()

    def evaluate_batch(self, batch: PositionBatch) -> BatchDecision | None:
        """Vectorised :meth:`evaluate` for all positions of a bar (rules with
        ``vectorized = True``); must give the same answers as :meth:`evaluate`."""
        raise NotImplementedError(f"{self.name} has no vectorised evaluation")

    def on_entry_batch(self, batch: PositionBatch) -> BatchDecision | None:
        """Vectorised :meth:`on_entry` (rules with ``vectorized = True``; default: none)."""
        return None

    def on_fill(self, fill: Fill) -> None:  # noqa: B027 - optional hook
        """See a fill (hook D); called only when ``observes_fills`` is True."""

    def validate_order(self, order: Order, portfolio: PortfolioSnapshot) -> OrderDecision:
        """Verdict on a new order (default: pass)."""
        return OrderDecision.allow()

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Forget per-run state (called when a run starts)."""

    def on_split(self, sid: int, ratio: float) -> None:  # noqa: B027 - optional hook
        """A split of ``ratio`` (new shares per old share) of symbol id ``sid`` while a
        position in it is held (corporate actions on raw prices, :mod:`engine.mechanics`):
        rescale any per-position state kept in shares (× ratio) or in prices (÷ ratio). The
        engine rescales the position's own levels; default: nothing else to do."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{self.name}({params})"


class FunctionRule(RiskRule):
    """Wrap a plain function ``f(context) -> RiskDecision`` as a position rule.

    Parameters
    ----------
    func : callable
    name : str, optional
        Recorded as ``exit_reason``; default the function's ``__name__``.
    priority : int, default 0
    """

    def __init__(
        self,
        func: Callable[[RiskContext], RiskDecision],
        name: str | None = None,
        priority: int = 0,
    ) -> None:
        super().__init__(priority)
        if not callable(func):
            raise ValueError(f"func must be callable, got {func!r}")
        self.func = func
        self._name: str = name or str(getattr(func, "__name__", "FunctionRule"))

    @property
    def name(self) -> str:
        """The name given, else the function's ``__name__``."""
        return self._name

    def evaluate(self, context: RiskContext) -> RiskDecision:
        """The wrapped function's decision for ``context``."""
        return self.func(context)


class CompositeRule(RiskRule):
    """Combine position rules with OR (``mode="any"``) or AND (``mode="all"``).

    **OR** (``"any"``): the composite acts when any member would. The members' decisions are
    merged conservatively (:func:`engine.risk.decision.merge_decisions`): any exit wins, the
    tighter stop and the highest-priority take-profit are kept. Price-level members (stops,
    take-profits, trailing stops) place their levels as they would alone, checked intrabar
    from the next bar, and an exit records the member that decided (``exit_reason``).

    **AND** (``"all"``): the composite acts only when every member would, at the same bar
    close. It places no intrabar level; at each close (hook C) it asks every member:

    - a member answering with an exit acts;
    - a member answering with a stop-loss / take-profit level acts when this bar **closes**
      at or beyond that level (long: ``close <= stop`` or ``close >= take_profit``; short:
      ``close >= stop`` or ``close <= take_profit``). The close, not the bar's low or high,
      because it is the one price of the bar known to come after the others: a level that
      this bar's own high moved (a trailing stop) cannot be compared with the bar's low
      without assuming the order of events inside the bar;
    - a member answering with a hold does not act.

    When all act, the composite emits one market exit (next open, or this close with
    ``fill="close"``) named after the composite: that name is the trade's ``exit_reason``.
    The exit closes the whole position if a price-level member acted, else it is the
    members' merged exit. The decision's ``metadata`` lists ``members`` (their names) and
    ``member_reasons``; the default name lists the members too, e.g.
    ``CompositeALL(TimeBasedExit+PriceBasedStopLoss)``, so the trade records which rules held.
    Example: ``CompositeRule([TimeBasedExit(10), PriceBasedStopLoss(0.02)], mode="all")``
    exits at the first close, after 10 bars held, at or below 2 % under the entry price; a
    close 2 % under the entry before bar 10 does nothing.

    Parameters
    ----------
    rules : sequence of RiskRule
        At least one.
    mode : {"any", "all"}
    name : str, optional
        Default ``CompositeANY`` / ``CompositeALL(<member>+<member>...)``.
    priority : int, default 0

    Raises
    ------
    ValueError
        An unknown mode, no rules, or a member that is not a :class:`RiskRule`.
    """

    def __init__(
        self,
        rules: Sequence[RiskRule],
        mode: str = "any",
        name: str | None = None,
        priority: int = 0,
    ) -> None:
        super().__init__(priority)
        if mode not in ("any", "all"):
            raise ValueError(f"mode must be 'any' or 'all', got {mode!r}")
        if not rules:
            raise ValueError("CompositeRule needs at least one rule")
        for rule in rules:
            if not isinstance(rule, RiskRule):
                raise ValueError(f"CompositeRule takes RiskRule instances, got {rule!r}")
        self.rules = list(rules)
        self.mode = mode
        if name is None:
            members = "+".join(r.name for r in self.rules)
            name = "CompositeANY" if mode == "any" else f"CompositeALL({members})"
        self._name = name
        if mode == "any":
            self.evaluates_positions = any(r.evaluates_positions for r in self.rules)
            self.sets_levels_on_entry = any(r.sets_levels_on_entry for r in self.rules)
        else:  # AND: decided at each close from every member's answer; no intrabar level
            self.evaluates_positions = True
            self.sets_levels_on_entry = False

    @property
    def name(self) -> str:
        """The name given, else ``CompositeANY`` (OR) or ``CompositeALL(member+member...)``
        (AND)."""
        return self._name

    def evaluate(self, context: RiskContext) -> RiskDecision:
        """OR: the members' decisions merged conservatively; AND: one exit named after the
        composite when every member acts at this close (class docstring).
        """

        from engine.risk.decision import merge_decisions

        decisions = [r.evaluate(context)._replace(rule=r.name) for r in self.rules]
        if self.mode == "any":
            return merge_decisions(decisions, context.is_long)
        return self._all(decisions, context)

    def _all(self, decisions: list[RiskDecision], context: RiskContext) -> RiskDecision:
        """AND: one exit named after the composite when every member acts (class docstring)."""
        from engine.risk.decision import merge_decisions

        exits = []
        level_hit = False
        close = context.close
        long = context.is_long
        for d in decisions:
            if d.should_exit:
                exits.append(d)
                continue
            stop, target = d.update_stop_loss, d.update_take_profit
            hit = (stop is not None and (close <= stop if long else close >= stop)) or (
                target is not None and (close >= target if long else close <= target)
            )
            if not hit:  # a hold, or a level this close has not reached
                return RiskDecision.hold()
            level_hit = True
        metadata = {
            "members": [d.rule for d in decisions],
            "member_reasons": {d.rule: d.reason for d in decisions},
        }
        reason = "all of: " + "; ".join(
            f"{d.rule} ({d.reason})" if d.reason else d.rule for d in decisions
        )
        if level_hit or not exits:
            return RiskDecision.exit(
                reason, priority=self.priority, rule=self.name, metadata=metadata
            )
        merged = merge_decisions(exits, long)
        return RiskDecision.exit(
            reason,
            quantity=merged.exit_quantity,
            exit_type=merged.exit_type,
            priority=self.priority,
            rule=self.name,
            metadata=metadata,
        )

    def on_entry(self, context: RiskContext) -> RiskDecision:
        """OR: the members' entry levels merged conservatively; AND: no entry level (a level
        alone cannot say that every member acts).
        """

        from engine.risk.decision import merge_decisions

        if self.mode == "all":
            return RiskDecision.hold()
        return merge_decisions(
            [r.on_entry(context)._replace(rule=r.name) for r in self.rules], context.is_long
        )

    def reset(self) -> None:
        """Reset every member's state."""
        for r in self.rules:
            r.reset()
