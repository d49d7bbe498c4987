"""Risk-rule, commission and slippage specs: the seeds' parameter aliases and numeric limits."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from engine.risk.rules import aliases
from ml4t_pipeline.config._base import MAX_BARS, MAX_CASH

if TYPE_CHECKING:
    import engine as engine_mod

# name: (low, high, low_inclusive, high_inclusive, integer)
_Limit = tuple[float, float, bool, bool, bool]
_FRACTION: _Limit = (0.0, 1.0, False, False, False)
_FRACTION0: _Limit = (0.0, 1.0, True, False, False)

RULE_PARAM_LIMITS: dict[str, _Limit] = {
    "stop_pct": _FRACTION,
    "target_pct": _FRACTION,
    "initial_trail_pct": _FRACTION,
    "min_trail_pct": _FRACTION,
    "tighten_per_bar": _FRACTION0,
    "trigger_pct": _FRACTION,
    "offset_pct": _FRACTION0,
    "max_loss_pct": _FRACTION,
    "max_drawdown": _FRACTION,
    "max_pct": _FRACTION,
    "max_bars": (1, MAX_BARS, True, True, True),
    "resume_after_bars": (1, MAX_BARS, True, True, True),
    "max_positions": (1, MAX_BARS, True, True, True),
    "max_leverage": (0.0, 100.0, False, True, False),
    "atr_multiplier": (0.0, 100.0, False, True, False),
    "priority": (-MAX_BARS, MAX_BARS, True, True, True),
    "minutes_before": (0, 1440, True, False, True),
}
"""Ranges of the common risk-rule parameters (any rule, nested rules included)."""

COST_PARAM_LIMITS: dict[str, _Limit] = {
    "rate": (0.0, 0.1, True, True, False),
    "pct": (0.0, 0.1, True, True, False),
    "bps": (0.0, 1000.0, True, True, False),
    "cost": (0.0, 1e6, True, True, False),
    "minimum": (0.0, 1e6, True, True, False),
    "maximum_pct": (0.0, 0.1, True, True, False),
    "spread_fraction": (0.0, 1.0, True, True, False),
    "fallback_pct": (0.0, 0.1, True, True, False),
    "coefficient": (0.0, 100.0, True, True, False),
    "max_impact": (0.0, 1.0, False, False, False),
    "window": (1.0, float(MAX_BARS), True, True, True),
    "min_periods": (1.0, float(MAX_BARS), True, True, True),
    "volume_window": (1.0, float(MAX_BARS), True, True, True),
}
"""Ranges of commission and slippage parameters: rates and percentages at most 10 %, a
per-share/per-trade cost at most 1e6 currency, basis points at most 1,000, bar counts
(``window``, ``min_periods``, ``volume_window``) whole numbers from 1 to 10,000."""

RULE_PARAM_ALIASES = aliases.RULE_PARAM_ALIASES
"""Seeds' parameter names accepted per rule type, and the engine name each becomes (the
engine's table, :mod:`engine.risk.rules.aliases`, shared with the rule constructors)."""

COMPOSITE_RULE = "CompositeRule"


def _fmt_limit(limit: _Limit) -> str:
    lo, hi, lo_in, hi_in, integer = limit
    kind = "an integer" if integer else "a number"
    return f"{kind} in {'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"


def _check_numbers(value: Any, where: str, limits: Mapping[str, _Limit]) -> None:
    """Every number in ``value`` finite with ``|x| <= MAX_CASH``; named keys within ``limits``."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{where}.{key}"
            limit = limits.get(str(key))
            if limit is not None and not isinstance(item, Mapping | list):
                _check_limit(item, path, limit)
            _check_numbers(item, path, limits)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_numbers(item, f"{where}[{i}]", limits)
    elif (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (not math.isfinite(value) or abs(value) > MAX_CASH)
    ):
        raise ValueError(f"{where}: {value!r} is not a finite number with |x| <= {MAX_CASH:g}")


def _check_limit(value: Any, where: str, limit: _Limit) -> None:
    lo, hi, lo_in, hi_in, integer = limit
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and integer and isinstance(value, float):
        ok = value.is_integer()
    if ok:
        x = float(value)
        ok = math.isfinite(x) and (x >= lo if lo_in else x > lo) and (x <= hi if hi_in else x < hi)
    if not ok:
        raise ValueError(f"{where} must be {_fmt_limit(limit)}, got {value!r}")


def normalize_rule_spec(spec: Any, where: str) -> dict[str, Any]:
    """A risk-rule spec with the seeds' aliases rewritten to the engine's names, checked.

    Parameters
    ----------
    spec : mapping
        ``{type: <rule name>, **params}``; ``RegimeDependentRule`` ``above``/``below`` and
        ``CompositeRule`` ``rules`` may hold nested specs (normalised too).
    where : str
        The spec's location for messages, e.g. ``risk_rules[0]``.

    Returns
    -------
    dict
        The spec with engine parameter names.

    Raises
    ------
    ValueError
        No ``type``; an alias given together with its new name; a non-finite or out-of-range
        number (named by its path, e.g. ``risk_rules[0].stop_pct``).
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a mapping with a 'type' key, got {spec!r}")
    if "type" not in spec:
        raise ValueError(f"{where} has no 'type' (got keys {sorted(spec)})")
    kind = str(spec["type"])
    out = aliases.rename_rule_params(kind, spec, where)
    for key in ("above", "below"):
        if kind == "RegimeDependentRule" and isinstance(out.get(key), Mapping):
            out[key] = normalize_rule_spec(out[key], f"{where}.{key}")
    if kind == COMPOSITE_RULE:
        rules = out.get("rules")
        if not isinstance(rules, list) or not rules:
            raise ValueError(f"{where}.rules must be a non-empty list of rule specs")
        out["rules"] = [normalize_rule_spec(r, f"{where}.rules[{i}]") for i, r in enumerate(rules)]
    flat = {k: v for k, v in out.items() if k not in ("above", "below", "rules")}
    _check_numbers(flat, where, RULE_PARAM_LIMITS)
    return out


def build_rule(spec: Mapping[str, Any]) -> engine_mod.RiskRule:
    """Build a risk rule from a (normalised) spec, ``CompositeRule`` and nesting included.

    ``engine.build_rule`` knows the registry rules; a ``CompositeRule`` (``rules``: a list of
    specs, ``mode``: ``any``/``all``, optional ``name``/``priority``) and the nested rules of a
    ``RegimeDependentRule`` are built here, so composites may nest anywhere.

    Raises
    ------
    ValueError
        Unknown rule type or bad parameters (the engine's message).
    """
    import engine

    spec = dict(spec)
    if spec.get("type") == COMPOSITE_RULE:
        params = {k: v for k, v in spec.items() if k not in ("type", "rules")}
        rules = [build_rule(r) for r in spec.get("rules", [])]
        try:
            return engine.CompositeRule(rules, **params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad parameters for risk rule 'CompositeRule': {exc}") from exc
    for key in ("above", "below"):
        if isinstance(spec.get(key), Mapping):
            spec[key] = build_rule(spec[key])
    return engine.build_rule(spec)


def _cost_spec(kind: str) -> Callable[[Any], Any]:
    def check(spec: Any) -> Any:
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise ValueError(f"execution.{kind} must be a mapping with a 'type' key, got {spec!r}")
        _check_numbers(spec, f"execution.{kind}", COST_PARAM_LIMITS)
        return dict(spec)

    return check
