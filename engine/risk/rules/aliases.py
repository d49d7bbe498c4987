"""The seeds' parameter names of the built-in rules: one table for Python and YAML.

The seeds' documents (000 §5.5 and §9, 003 §2.4) name some rule parameters differently from
the engine. Both the rule constructors (``PriceBasedStopLoss(sl_pct=0.03)``) and the
pipeline's config loader (``risk_rules: [{type: PriceBasedStopLoss, sl_pct: 0.03}]``) rewrite
them with :func:`rename_rule_params`, from the tables below; nothing else holds a copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RULE_PARAM_ALIASES: dict[str, dict[str, str]] = {
    "PriceBasedStopLoss": {"sl_pct": "stop_pct"},
    "PriceBasedTakeProfit": {"tp_pct": "target_pct"},
    "DynamicTrailingStop": {"tighten_rate": "tighten_per_bar"},
    "MaxDrawdownRule": {"max_dd_pct": "max_drawdown"},
    "RegimeDependentRule": {"regime_source": "context_column", "high_vol_threshold": "threshold"},
}
"""Seeds' parameter name → engine name, per rule class name."""

REGIME_RULE_KEYS: dict[str, str] = {"high_vol": "above", "low_vol": "below"}
"""Keys of the seeds' ``RegimeDependentRule(rules={...})`` → the engine's parameters."""

COMPOSITE_MODES: dict[str, str] = {"AND": "all", "OR": "any", "and": "all", "or": "any"}
"""The seeds' ``CompositeRule`` modes → the engine's."""


def rename_rule_params(kind: str, params: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``params`` of rule class ``kind`` with the seeds' names rewritten to the engine's.

    Handles the renames of :data:`RULE_PARAM_ALIASES`, a ``RegimeDependentRule``'s
    ``rules={"high_vol": ..., "low_vol": ...}`` (→ ``above`` / ``below``) and a
    ``CompositeRule``'s ``mode="AND"|"OR"`` (→ ``all`` / ``any``). Nested rules are left as
    given.

    Parameters
    ----------
    kind : str
        The rule's class name (its registry name).
    params : mapping
        Keyword arguments (or a config spec's parameters).
    where : str
        Where the parameters come from, for messages (``PriceBasedStopLoss()``,
        ``risk_rules[0]``).

    Returns
    -------
    dict
        The parameters under the engine's names.

    Raises
    ------
    ValueError
        A seeds' name given together with its engine name, or a regime ``rules`` mapping with
        keys other than ``high_vol`` / ``low_vol``.
    """
    out = dict(params)
    for old, new in RULE_PARAM_ALIASES.get(kind, {}).items():
        if old in out:
            if new in out:
                raise ValueError(f"{where}: give {new!r} only ({old!r} is its seeds' name)")
            out[new] = out.pop(old)
    if kind == "RegimeDependentRule" and "rules" in out:
        regimes = out.pop("rules")
        if not isinstance(regimes, Mapping) or set(regimes) - set(REGIME_RULE_KEYS):
            raise ValueError(
                f"{where}.rules must map high_vol/low_vol to rules (seeds' form; the "
                f"engine's names are 'above'/'below'), got {regimes!r}"
            )
        for old, new in REGIME_RULE_KEYS.items():
            if old in regimes:
                if new in out:
                    raise ValueError(f"{where}: give {new!r} or rules.{old}, not both")
                out[new] = regimes[old]
    if kind == "CompositeRule" and isinstance(out.get("mode"), str):
        out["mode"] = COMPOSITE_MODES.get(out["mode"], out["mode"])
    return out
