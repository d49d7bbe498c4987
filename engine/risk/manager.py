"""The :class:`RiskManager`: runs the rules at the engine's three hooks."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from engine.core import layout
from engine.risk.batch import BatchDecision, PositionActions, PositionBatch, as_array
from engine.risk.context import PortfolioSnapshot, RiskContext
from engine.risk.decision import (
    ExitType,
    OrderAction,
    OrderDecision,
    RiskDecision,
    merge_decisions,
)
from engine.risk.rules.base import RiskRule
from engine.risk.rules.dynamic import DynamicTrailingStop
from engine.risk.rules.exits import PriceBasedStopLoss, PriceBasedTakeProfit, TimeBasedExit

if TYPE_CHECKING:
    from engine.data import FloatArray
    from engine.events import Fill
    from engine.orders import Order

ObjArray = npt.NDArray[np.object_]


class BasicRulesKernel:
    """Compiled hook C / entry levels for the built-in fixed-percent rules on long books.

    Used by the broker instead of :meth:`RiskManager.evaluate_positions` /
    :meth:`RiskManager.entry_levels` when every position and entry rule of the manager is
    exactly a :class:`PriceBasedStopLoss`, :class:`PriceBasedTakeProfit`,
    :class:`DynamicTrailingStop` or :class:`TimeBasedExit` (order-only rules may sit beside
    them, see :meth:`RiskManager.basic_kernel`) and every position concerned is long. It
    holds the rules' parameters as arrays for the kernels of :mod:`engine.risk.kernels`, which
    compute the same numbers as the rules' ``*_batch`` methods, merged with the same
    conservative rules, in one compiled call per bar step and without any per-position object.

    Rule names travel as codes: ``names[code]`` (code 0 is ``""``, no rule).

    Parameters
    ----------
    rules : sequence of RiskRule
        The manager's rules of the four types above, in priority order.

    Raises
    ------
    ValueError
        If a rule is of another type.
    """

    def __init__(self, rules: Sequence[RiskRule]) -> None:
        self.names: list[str] = [""]
        table = np.zeros((len(rules), layout.N_RULE_FIELDS))
        for r, rule in enumerate(rules):
            row = table[r]
            row[layout.CODE] = len(self.names)
            self.names.append(rule.name)
            if isinstance(rule, PriceBasedStopLoss | PriceBasedTakeProfit):
                stop = isinstance(rule, PriceBasedStopLoss)
                row[layout.KIND] = layout.STOP_LOSS if stop else layout.TAKE_PROFIT
                row[layout.FACTOR] = rule.long_factor
            elif isinstance(rule, DynamicTrailingStop):
                row[layout.KIND] = layout.TRAILING
                row[layout.FACTOR] = rule.long_entry_factor
                row[layout.TRAIL_INITIAL] = rule.initial_trail_pct
                row[layout.TRAIL_TIGHTEN] = rule.tighten_per_bar
                row[layout.TRAIL_MIN] = rule.min_trail_pct
            elif isinstance(rule, TimeBasedExit):
                row[layout.KIND] = layout.TIME_EXIT
                row[layout.MAX_BARS] = rule.max_bars
            else:
                raise ValueError(f"{rule!r} has no compiled kernel")
        self.rules: FloatArray = table
        """The rule table of :mod:`engine.risk.kernels`, shape (m, N_RULE_FIELDS)."""
        level_kinds = (layout.STOP_LOSS, layout.TAKE_PROFIT, layout.TRAILING)
        # True when some rule sets a stop-loss or take-profit level
        self.sets_levels = bool(np.isin(table[:, layout.KIND], level_kinds).any())


def _order_rule_only(rule: RiskRule) -> bool:
    """True for a rule that acts at hook B only (no positions, entry levels or fills)."""
    return (
        rule.validates_orders
        and not rule.evaluates_positions
        and not rule.sets_levels_on_entry
        and not rule.observes_fills
    )


_PASS_ACTION = OrderAction.PASS

KERNEL_RULES = (PriceBasedStopLoss, PriceBasedTakeProfit, DynamicTrailingStop, TimeBasedExit)
"""The rule types :class:`BasicRulesKernel` runs compiled (exactly these types, not subclasses)."""


class RiskManager:
    """Apply a list of :class:`RiskRule` at the engine's hooks.

    - hook C, :meth:`check_position_exits`: after the open fills and before the strategy, each
      open position with a bar gets one :class:`RiskContext` shared by all position rules; the
      decisions are merged conservatively (:func:`engine.risk.decision.merge_decisions`).
    - hook B, :meth:`validate_order`: each new strategy order goes through the order rules in
      priority order; a reject stops the chain, a shrink passes the smaller order on.
    - hook D, :meth:`record_fill`: the fill rules see every fill; the initial levels of
      positions the fills opened or increased come from :meth:`entry_levels` (``on_entry``
      rules), once per step.

    After a run, ``context_builds`` holds the number of :class:`RiskContext` objects built and
    ``fills_seen`` the number of fills of the run (set by the engine at the end).

    Parameters
    ----------
    rules : sequence of RiskRule
        Evaluated in decreasing ``priority`` (stable for ties).

    Raises
    ------
    ValueError
        If an element is not a RiskRule.

    Warns
    -----
    UserWarning
        When two rules set the same kind of level (both stop-loss or both take-profit setters):
        they can contradict each other and the merge keeps the tighter stop / higher priority.
    """

    def __init__(self, rules: Sequence[RiskRule] = ()) -> None:
        for r in rules:
            if not isinstance(r, RiskRule):
                raise ValueError(f"RiskManager takes RiskRule instances, got {r!r}")
        self.rules: list[RiskRule] = sorted(rules, key=lambda r: -r.priority)
        self.position_rules = [r for r in self.rules if r.evaluates_positions]
        self.entry_rules = [r for r in self.rules if r.sets_levels_on_entry]
        self.order_rules = [r for r in self.rules if r.validates_orders]
        self.vector_rules = [r for r in self.position_rules if r.vectorized]
        self.fill_rules = [r for r in self.rules if r.observes_fills]
        self.scalar_rules = [r for r in self.position_rules if not r.vectorized]
        self.context_builds = 0
        self.fills_seen = 0
        self._warn_conflicts()

    def register_rule(self, rule: RiskRule) -> None:
        """Add ``rule`` (the seeds' way to build a manager: ``RiskManager()`` then one call per
        rule). Same as passing it to the constructor: rules are re-ordered by priority and the
        conflict warning is given if it applies.

        Raises
        ------
        ValueError
            If ``rule`` is not a RiskRule.
        """
        RiskManager.__init__(self, [*self.rules, rule])

    def _warn_conflicts(self) -> None:
        for kind in ("stop", "take_profit"):
            names = [r.name for r in self.rules if r.level_kind == kind]
            if len(names) > 1:
                label = "stop-loss" if kind == "stop" else "take-profit"
                warnings.warn(
                    f"rules {names} all set a {label} level; they can contradict each other and "
                    "the merge keeps the tighter stop / the higher-priority target",
                    UserWarning,
                    stacklevel=3,
                )

    def basic_kernel(self) -> BasicRulesKernel | None:
        """The compiled fast path (:mod:`engine.risk.kernels`) for the position rules, when
        every rule is exactly one of the built-in fixed-percent rules (``PriceBasedStopLoss``,
        ``PriceBasedTakeProfit``, ``DynamicTrailingStop`` with its default reference price,
        ``TimeBasedExit``; subclasses excluded) or an order rule only (hook B, e.g. the
        portfolio limits ``MaxPositionsRule``, ``MaxDrawdownRule(action="halt")``, which keep
        running at hook B), and at least one is a fixed-percent rule; else ``None``."""
        chosen = [r for r in self.rules if type(r) in KERNEL_RULES]
        if not chosen or any(
            (type(r) not in KERNEL_RULES and not _order_rule_only(r))
            or not getattr(r, "default_reference", True)
            for r in self.rules
        ):
            return None
        return BasicRulesKernel(chosen)

    @property
    def needs_position_contexts(self) -> bool:
        """True when some rule evaluates positions every bar."""
        return bool(self.position_rules)

    def reset(self) -> None:
        """Reset counters and rule state (called by the engine at the start of a run)."""
        self.context_builds = 0
        self.fills_seen = 0
        for r in self.rules:
            r.reset()

    def check_position_exits(
        self, contexts: Sequence[RiskContext]
    ) -> list[tuple[RiskContext, RiskDecision]]:
        """Hook C: evaluate every position rule on each context.

        Returns
        -------
        list of (RiskContext, RiskDecision)
            Only positions with a non-hold merged decision, in the order given. The decision's
            ``rule`` names the deciding rule.
        """
        self.context_builds += len(contexts)
        out: list[tuple[RiskContext, RiskDecision]] = []
        rules = self.position_rules
        for ctx in contexts:
            decisions = []
            for rule in rules:
                d = rule.evaluate(ctx)
                if not d.is_hold:
                    decisions.append(d._replace(rule=rule.name) if not d.rule else d)
            if decisions:
                merged = merge_decisions(decisions, ctx.is_long)
                if not merged.is_hold:
                    out.append((ctx, merged))
        return out

    def evaluate_positions(
        self,
        batch: PositionBatch,
        contexts: Callable[[], Sequence[RiskContext]],
    ) -> PositionActions:
        """Hook C as the engine runs it: vectorised rules once on ``batch``, the other position
        rules once per position on shared contexts (built only if such rules exist), all
        merged conservatively into one :class:`PositionActions`.

        ``contexts()`` must return one context per position, in ``batch`` order.
        """
        actions = self._combine(
            batch,
            [(r, r.evaluate_batch) for r in self.vector_rules],
            [(r, r.evaluate) for r in self.scalar_rules],
            contexts,
        )
        return actions

    def entry_levels(
        self,
        batch: PositionBatch,
        contexts: Callable[[], Sequence[RiskContext]],
    ) -> PositionActions:
        """Initial stop/take-profit levels for positions opened or increased by this step's
        fills (effective from the next bar).

        ``batch.rows`` are the rows known at the fill (the previous bar for open/intrabar
        fills, the fill bar for close fills; ``-1`` when there is none), so rules reading
        features see no look-ahead. Vectorised rules answer in ``on_entry_batch``, others in
        ``on_entry`` with one context per position.
        """
        return self._combine(
            batch,
            [(r, r.on_entry_batch) for r in self.entry_rules if r.vectorized],
            [(r, r.on_entry) for r in self.entry_rules if not r.vectorized],
            contexts,
            count=False,
        )

    def _combine(
        self,
        batch: PositionBatch,
        vector: Sequence[tuple[RiskRule, Callable[[PositionBatch], BatchDecision | None]]],
        scalar: Sequence[tuple[RiskRule, Callable[[RiskContext], RiskDecision]]],
        contexts: Callable[[], Sequence[RiskContext]],
        *,
        count: bool = True,
    ) -> PositionActions:
        m = len(batch)
        actions = PositionActions(m)
        is_long = batch.is_long
        for rule, method in vector:
            d = method(batch)
            if d is None:
                continue
            if d.stop_loss is not None:
                actions.add_stop(as_array(d.stop_loss, m, float), is_long, rule.name)
            if d.take_profit is not None:
                actions.add_take_profit(as_array(d.take_profit, m, float), rule.name)
            if d.exit is not None:
                mask = as_array(d.exit, m, bool)
                if mask.any():
                    qty = None if d.exit_quantity is None else as_array(d.exit_quantity, m, float)
                    actions.add_exit(mask, qty, rule.name, rule.priority)
        if not scalar:
            return actions
        ctxs = contexts()
        if count:
            self.context_builds += len(ctxs)
        stops = np.full(m, np.nan)
        stop_rules = np.full(m, "", dtype=object)
        targets = np.full(m, np.nan)
        target_rules = np.full(m, "", dtype=object)
        for k, ctx in enumerate(ctxs):
            decisions = []
            for scalar_rule, decide in scalar:
                rd = decide(ctx)
                if not rd.is_hold:
                    decisions.append(rd._replace(rule=scalar_rule.name) if not rd.rule else rd)
            if not decisions:
                continue
            merged = merge_decisions(decisions, ctx.is_long)
            if merged.update_stop_loss is not None:
                stops[k] = merged.update_stop_loss
                stop_rules[k] = str(merged.metadata.get("stop_rule", merged.rule))
            if merged.update_take_profit is not None:
                targets[k] = merged.update_take_profit
                target_rules[k] = str(merged.metadata.get("take_profit_rule", merged.rule))
            if merged.should_exit:
                if merged.exit_type is ExitType.FLATTEN_ALL:
                    actions.flatten_all = actions.flatten_all or merged.rule
                else:
                    actions.add_exit_at(k, merged.exit_quantity, merged.rule, merged.priority)
        if np.isfinite(stops).any():
            actions.add_stop(stops, is_long, stop_rules)
        if np.isfinite(targets).any():
            actions.add_take_profit(targets, target_rules)
        return actions

    def validate_order(self, order: Order, portfolio: PortfolioSnapshot) -> OrderDecision:
        """Hook B: pass, shrink or reject ``order`` (not modified here).

        A shrink must keep the order's sign and reduce its size; otherwise ``ValueError``.
        """
        quantity = original = order.quantity
        shrunk: OrderDecision | None = None
        for rule in self.order_rules:
            if quantity == original:
                d = rule.validate_order(order, portfolio)
            else:  # judged at the size the rules before it left
                order.quantity = quantity
                try:
                    d = rule.validate_order(order, portfolio)
                finally:
                    order.quantity = original
            action = d.action
            if action is _PASS_ACTION:
                continue
            if action is OrderAction.REJECT:
                return replace(d, rule=rule.name)
            q = d.quantity  # a shrink
            if q is None or q * quantity < 0 or abs(q) > abs(quantity):
                raise ValueError(
                    f"rule {rule.name} shrank order {order.order_id} from {quantity} to {q}: "
                    "a shrink must keep the sign and reduce the size"
                )
            if q == 0:
                return OrderDecision(OrderAction.REJECT, None, d.reason, rule.name)
            quantity = q
            shrunk = replace(d, rule=rule.name)
        if shrunk is not None:
            return replace(shrunk, quantity=quantity)
        return OrderDecision.allow()

    def record_fill(self, fill: Fill) -> None:
        """Hook D: tell the rules with ``on_fill`` about a fill, in fill order (the broker calls
        it only when there are such rules).

        Initial levels of positions opened or increased by fills come from
        :meth:`entry_levels`, which the engine calls once per fill step for all of them.
        """
        for rule in self.fill_rules:
            rule.on_fill(fill)

    def __repr__(self) -> str:
        return f"RiskManager({self.rules!r})"
