"""The :class:`RiskManager`: runs the rules at the engine's three hooks."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from engine.risk.batch import PositionActions, PositionBatch, as_array
from engine.risk.context import PortfolioSnapshot, RiskContext
from engine.risk.decision import (
    ExitType,
    OrderAction,
    OrderDecision,
    RiskDecision,
    merge_decisions,
)
from engine.risk.rules.base import RiskRule

if TYPE_CHECKING:
    from engine.events import Fill
    from engine.orders import Order


class RiskManager:
    """Apply a list of :class:`RiskRule` at the engine's hooks.

    - hook C, :meth:`check_position_exits`: after the open fills and before the strategy, each
      open position with a bar gets one :class:`RiskContext` shared by all position rules; the
      decisions are merged conservatively (:func:`engine.risk.decision.merge_decisions`).
    - hook B, :meth:`validate_order`: each new strategy order goes through the order rules in
      priority order; a reject stops the chain, a shrink passes the smaller order on.
    - hook D, :meth:`record_fill`: sees every fill; for fills that open or increase a position,
      returns the merged initial levels of the ``on_entry`` rules.

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
        self.scalar_rules = [r for r in self.position_rules if not r.vectorized]
        self.context_builds = 0
        self.fills_seen = 0
        self._warn_conflicts()

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
        m = len(batch)
        actions = PositionActions(m)
        is_long = batch.is_long
        for rule in self.vector_rules:
            d = rule.evaluate_batch(batch)
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
        if not self.scalar_rules:
            return actions
        ctxs = contexts()
        self.context_builds += len(ctxs)
        rules = self.scalar_rules
        for k, ctx in enumerate(ctxs):
            decisions = []
            for rule in rules:
                rd = rule.evaluate(ctx)
                if not rd.is_hold:
                    decisions.append(rd._replace(rule=rule.name) if not rd.rule else rd)
            if not decisions:
                continue
            merged = merge_decisions(decisions, ctx.is_long)
            if merged.update_stop_loss is not None:
                rule_name = str(merged.metadata.get("stop_rule", merged.rule))
                actions.add_stop_at(k, merged.update_stop_loss, ctx.is_long, rule_name)
            if merged.update_take_profit is not None:
                rule_name = str(merged.metadata.get("take_profit_rule", merged.rule))
                actions.add_take_profit_at(k, merged.update_take_profit, rule_name)
            if merged.should_exit:
                if merged.exit_type is ExitType.FLATTEN_ALL:
                    actions.flatten_all = actions.flatten_all or merged.rule
                else:
                    actions.add_exit_at(k, merged.exit_quantity, merged.rule, merged.priority)
        return actions

    def validate_order(self, order: Order, portfolio: PortfolioSnapshot) -> OrderDecision:
        """Hook B: pass, shrink or reject ``order`` (not modified here).

        A shrink must keep the order's sign and reduce its size; otherwise ``ValueError``.
        """
        quantity = order.quantity
        shrunk: OrderDecision | None = None
        for rule in self.order_rules:
            original = order.quantity
            order.quantity = quantity
            try:
                d = rule.validate_order(order, portfolio)
            finally:
                order.quantity = original
            if d.action is OrderAction.REJECT:
                return replace(d, rule=rule.name)
            if d.action is OrderAction.SHRINK:
                q = d.quantity
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

    def record_fill(self, fill: Fill, context: RiskContext | None, increased: bool) -> RiskDecision:
        """Hook D: see a fill; return initial levels when it opened or increased a position.

        Parameters
        ----------
        fill : Fill
        context : RiskContext or None
            The position after a fill that opened or increased it, when some rule sets levels
            on entry (the engine skips building it otherwise); ``None`` otherwise.
        increased : bool
            True when the fill opened or increased the position.
        """
        self.fills_seen += 1
        if context is None or not increased or not self.entry_rules:
            return RiskDecision.hold()
        decisions = []
        for rule in self.entry_rules:
            d = rule.on_entry(context)
            if not d.is_hold:
                decisions.append(d._replace(rule=rule.name) if not d.rule else d)
        if len(decisions) == 1:
            return decisions[0]
        return merge_decisions(decisions, context.is_long)

    def __repr__(self) -> str:
        return f"RiskManager({self.rules!r})"
