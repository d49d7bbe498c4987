"""What a risk rule decides: :class:`RiskDecision` for positions, :class:`OrderDecision` for orders.

Merging (:func:`merge_decisions`) is conservative: an exit beats a hold; among exits
``flatten_all`` beats ``immediate`` beats ``partial``, then the higher priority wins, then the
larger exit quantity; the tighter stop-loss wins (higher for a long, lower for a short); the
take-profit of the highest-priority rule that sets one wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

_NO_METADATA: Mapping[str, Any] = MappingProxyType({})


class ExitType(StrEnum):
    """How a rule exits: ``none``, ``immediate`` (the whole position), ``partial``
    (``exit_quantity`` of it) or ``flatten_all`` (every position, a portfolio rule)."""

    NONE = "none"
    IMMEDIATE = "immediate"
    PARTIAL = "partial"
    FLATTEN_ALL = "flatten_all"


_EXIT_RANK = {ExitType.NONE: 0, ExitType.PARTIAL: 1, ExitType.IMMEDIATE: 2, ExitType.FLATTEN_ALL: 3}


class RiskDecision(NamedTuple):
    """A rule's verdict on one position at one bar (an immutable named tuple).

    Attributes
    ----------
    should_exit : bool
        True to close (part of) the position with a market order this bar.
    exit_type : ExitType
        ``immediate`` (whole position), ``partial`` (``exit_quantity`` shares) or
        ``flatten_all`` (every open position); ``none`` for holds/adjusts.
    exit_quantity : float or None
        Shares to close (positive) for partial exits; ``None`` means the whole position.
    update_stop_loss, update_take_profit : float or None
        New price levels (currency per share) checked intrabar from the next bar on.
    reason : str
        Free text for humans.
    priority : int
        Priority of the deciding rule (higher wins ties).
    rule : str
        Name of the deciding rule (becomes ``exit_reason`` on the trade); set by the manager.
    metadata : mapping
        Anything the rule wants to record.
    """

    should_exit: bool = False
    exit_type: ExitType = ExitType.NONE
    exit_quantity: float | None = None
    update_stop_loss: float | None = None
    update_take_profit: float | None = None
    reason: str = ""
    priority: int = 0
    rule: str = ""
    metadata: Mapping[str, Any] = _NO_METADATA

    @staticmethod
    def hold() -> RiskDecision:
        """No action (a shared instance)."""
        return _HOLD

    @staticmethod
    def exit(
        reason: str = "",
        *,
        quantity: float | None = None,
        exit_type: ExitType | str | None = None,
        priority: int = 0,
        rule: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> RiskDecision:
        """Close the position (or ``quantity`` shares of it) with a market order.

        ``exit_type`` defaults to ``partial`` when ``quantity`` is given, else ``immediate``.
        Raises ``ValueError`` for a non-positive ``quantity``.
        """
        if quantity is not None and not quantity > 0:
            raise ValueError(f"exit quantity must be > 0 shares, got {quantity!r}")
        kind = (
            ExitType(exit_type)
            if exit_type is not None
            else (ExitType.PARTIAL if quantity is not None else ExitType.IMMEDIATE)
        )
        return RiskDecision(
            should_exit=True,
            exit_type=kind,
            exit_quantity=quantity,
            reason=reason,
            priority=priority,
            rule=rule,
            metadata=dict(metadata) if metadata else _NO_METADATA,
        )

    @staticmethod
    def adjust(
        *,
        stop_loss: float | None = None,
        take_profit: float | None = None,
        reason: str = "",
        priority: int = 0,
        rule: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> RiskDecision:
        """Set new stop-loss / take-profit levels (effective from the next bar)."""
        return RiskDecision(
            update_stop_loss=stop_loss,
            update_take_profit=take_profit,
            reason=reason,
            priority=priority,
            rule=rule,
            metadata=dict(metadata) if metadata else _NO_METADATA,
        )

    @property
    def is_hold(self) -> bool:
        """True when the decision neither exits nor moves a level (nothing to do)."""
        return (
            not self.should_exit
            and self.update_stop_loss is None
            and self.update_take_profit is None
        )


_HOLD = RiskDecision()


def merge_decisions(decisions: Sequence[RiskDecision], is_long: bool) -> RiskDecision:
    """Combine several rules' decisions on one position conservatively (see module docstring).

    The merged decision's ``rule``/``reason``/``priority`` are those of the deciding exit (or,
    without an exit, of the rule that set the stop). ``stop_rule``/``take_profit_rule`` of the
    winning levels are kept in ``metadata`` so the engine can name the rule when a level fires.
    """
    active = [d for d in decisions if not d.is_hold]
    if not active:
        return _HOLD
    if len(active) == 1:
        # a lone decision: its own rule set any levels (readers default to ``rule``)
        return active[0]
    exits = [d for d in active if d.should_exit]
    stop_d: RiskDecision | None = None
    for d in active:
        if d.update_stop_loss is None:
            continue
        if stop_d is None or stop_d.update_stop_loss is None:
            stop_d = d
            continue
        tighter = (
            d.update_stop_loss > stop_d.update_stop_loss
            if is_long
            else d.update_stop_loss < stop_d.update_stop_loss
        )
        if tighter:
            stop_d = d
    tp_candidates = [d for d in active if d.update_take_profit is not None]
    tp_d = max(tp_candidates, key=lambda d: d.priority) if tp_candidates else None
    meta: dict[str, Any] = {}
    if stop_d is not None:
        meta["stop_rule"] = stop_d.rule
    if tp_d is not None:
        meta["take_profit_rule"] = tp_d.rule
    stop = stop_d.update_stop_loss if stop_d is not None else None
    tp = tp_d.update_take_profit if tp_d is not None else None
    if exits:
        best = max(
            exits,
            key=lambda d: (
                _EXIT_RANK[d.exit_type],
                d.priority,
                d.exit_quantity if d.exit_quantity is not None else float("inf"),
            ),
        )
        return best._replace(
            update_stop_loss=stop,
            update_take_profit=tp,
            metadata={**best.metadata, **meta},
        )
    lead = stop_d if stop_d is not None else tp_d
    assert lead is not None
    return RiskDecision(
        update_stop_loss=stop,
        update_take_profit=tp,
        reason=lead.reason,
        priority=lead.priority,
        rule=lead.rule,
        metadata=meta,
    )


class OrderAction(StrEnum):
    """A hook-B verdict on a new order: ``pass``, ``shrink`` or ``reject``."""

    PASS = "pass"
    SHRINK = "shrink"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class OrderDecision:
    """A rule's verdict on a new order (hook B).

    Attributes
    ----------
    action : OrderAction
        ``pass``, ``shrink`` (to ``quantity``) or ``reject``.
    quantity : float or None
        For ``shrink``: the new signed quantity, same sign as the order and smaller in size.
    reason : str
        Why (recorded with the rejection / shrink).
    rule : str
        Name of the deciding rule; set by the manager.
    """

    action: OrderAction = OrderAction.PASS
    quantity: float | None = None
    reason: str = ""
    rule: str = ""

    @staticmethod
    def allow() -> OrderDecision:
        """Let the order pass unchanged."""
        return _PASS

    @staticmethod
    def shrink(quantity: float, reason: str) -> OrderDecision:
        """Shrink the order to ``quantity`` signed shares (same sign, smaller size)."""
        return OrderDecision(OrderAction.SHRINK, quantity, reason)

    @staticmethod
    def reject(reason: str) -> OrderDecision:
        """Reject the order; ``reason`` is recorded with the rejection row."""
        return OrderDecision(OrderAction.REJECT, None, reason)


_PASS = OrderDecision()
