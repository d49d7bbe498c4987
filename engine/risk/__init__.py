"""Risk management: contexts, decisions, rules and the manager wired into the engine's hooks."""

from __future__ import annotations

from engine.risk.context import PortfolioSnapshot, RiskContext
from engine.risk.decision import ExitType, OrderAction, OrderDecision, RiskDecision
from engine.risk.manager import RiskManager
from engine.risk.rules import RULE_REGISTRY, RiskRule

__all__ = [
    "RULE_REGISTRY",
    "ExitType",
    "OrderAction",
    "OrderDecision",
    "PortfolioSnapshot",
    "RiskContext",
    "RiskDecision",
    "RiskManager",
    "RiskRule",
]
