"""Build pluggable pieces from config dicts: ``{type: <registry name>, **params}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from engine.costs import COMMISSION_REGISTRY, SLIPPAGE_REGISTRY
from engine.costs.commission import CommissionModel
from engine.costs.slippage import SlippageModel
from engine.risk.rules import RULE_REGISTRY
from engine.risk.rules.base import RiskRule
from engine.strategies import STRATEGY_REGISTRY
from engine.strategy import Strategy

T = TypeVar("T")


def _is_spec(value: object) -> bool:
    return isinstance(value, Mapping) and "type" in value


def _build(
    registry: Mapping[str, type[T]],
    spec: Mapping[str, Any],
    kind: str,
    nested: Mapping[str, Any] | None = None,
) -> T:
    if not isinstance(spec, Mapping):
        raise ValueError(f"{kind} spec must be a mapping with a 'type' key, got {spec!r}")
    if "type" not in spec:
        raise ValueError(f"{kind} spec {dict(spec)!r} has no 'type' key")
    name = spec["type"]
    if name not in registry:
        raise ValueError(f"unknown {kind} type {name!r}; known: {sorted(registry)}")
    params = {k: v for k, v in spec.items() if k != "type"}
    if nested is not None:
        params = {k: _resolve(v, nested) for k, v in params.items()}
    cls = registry[name]
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for {kind} {name!r}: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"bad parameters for {kind} {name!r}: {exc}") from exc


def _resolve(value: Any, nested: Mapping[str, Any]) -> Any:
    builder = nested.get("builder")
    if _is_spec(value) and builder is not None:
        return builder(value)
    if isinstance(value, list) and value and all(_is_spec(v) for v in value) and builder:
        return [builder(v) for v in value]
    mapping_of_specs = isinstance(value, Mapping) and bool(value)
    if mapping_of_specs and all(_is_spec(v) for v in value.values()) and builder is not None:
        return {k: builder(v) for k, v in value.items()}
    return value


def build_rule(spec: Mapping[str, Any]) -> RiskRule:
    """A risk rule from ``{type: <RULE_REGISTRY name>, **params}`` (nested rule specs, e.g. a
    ``RegimeDependentRule``'s rules, are built too). Raises ``ValueError`` on an unknown type
    or bad parameters."""
    return _build(RULE_REGISTRY, spec, "risk rule", {"builder": build_rule})


def build_commission(spec: Mapping[str, Any]) -> CommissionModel:
    """A commission model from ``{type: <COMMISSION_REGISTRY name>, **params}``."""
    return _build(COMMISSION_REGISTRY, spec, "commission")


def build_slippage(spec: Mapping[str, Any]) -> SlippageModel:
    """A slippage model from ``{type: <SLIPPAGE_REGISTRY name>, **params}`` (nested model specs
    of ``OrderTypeDependent`` are built too)."""
    return _build(SLIPPAGE_REGISTRY, spec, "slippage", {"builder": build_slippage})


def build_strategy(spec: Mapping[str, Any]) -> Strategy:
    """A strategy from ``{type: <STRATEGY_REGISTRY name>, **params}``."""
    return _build(STRATEGY_REGISTRY, spec, "strategy")
