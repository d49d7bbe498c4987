"""One experiment (:class:`ExperimentConfig`): its sections, the seeds' schema translation and
the config hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator, model_validator

from ml4t_pipeline.config._base import _Strict
from ml4t_pipeline.config.data import DataConfig, ModelSignalsConfig, PlausibilityConfig
from ml4t_pipeline.config.execution import (
    ENGINE_SETTINGS,
    BacktestConfig,
    ExecutionConfig,
    ReportingConfig,
    TrackingConfig,
)
from ml4t_pipeline.config.specs import normalize_rule_spec
from ml4t_pipeline.config.strategy import _TOPN_DEFAULTS, StrategyConfig
from ml4t_pipeline.lib.calendars import DEFAULT_CALENDAR

# Fields added after the first config schema: left out of the hash while at their default, so
# the config hash (a lineage key) of an existing experiment file does not change.
_HASH_NEUTRAL_DEFAULTS: dict[tuple[str, ...], Any] = {
    ("data", "stream"): "whole",
    ("data", "quotes"): None,
    ("data", "signal_timestamps"): "bar_close",
    ("data", "calendar"): DEFAULT_CALENDAR,
    ("data", "plausibility"): PlausibilityConfig().model_dump(mode="json"),
    ("strategy", "class"): None,
    ("strategy", "params"): {},
    ("backtest", "start"): None,
    ("backtest", "end"): None,
    **{("execution", name): None for name in ENGINE_SETTINGS},
    ("data", "adjustment"): "raw",
    ("data", "corporate_actions"): None,
    ("data", "delisting"): None,
    ("execution", "financing"): None,
}


SEEDS_SCHEMA_VERSIONS = ("1.0", "1")
"""``version`` values of the seeds' configuration schema (000 §5.5) accepted (and dropped)."""
SEEDS_BENCHMARK = "equal_weight"
"""The one ``performance.benchmark`` accepted: the report's equal-weight universe benchmark."""


def from_seeds_schema(raw: Any) -> Any:
    """Rewrite the seeds' configuration sections (000 §5.5) into this schema; refuse the rest.

    ``version`` (``"1.0"``) is dropped; ``data.price_data`` → ``data.prices``; ``data.signals``
    given as a path string → ``{path: ...}``; ``data.features: {provider: precomputed, path}``
    → the path (``provider: computed`` → ``computed``); ``strategy`` with ``type: batch_mode``,
    ``select_top``, ``selection_metric``, ``universe_size``, ``position_sizing`` → ``TopN``
    with ``n``, ``signal``, ``weight`` (``pct_per_position``); ``performance`` → ``reporting``
    (``risk_free_rate``; ``benchmark`` only ``equal_weight``). Each refusal names the key and
    this schema's equivalent. A config without seeds keys is returned unchanged.

    ``universe_size`` describes the scored universe; the universe traded is the prices'
    symbols (or ``data.symbols``, which must then have that many).
    """
    if not isinstance(raw, Mapping):
        return raw
    out = dict(raw)
    if "version" in out:
        version = str(out.pop("version"))
        if version not in SEEDS_SCHEMA_VERSIONS:
            raise ValueError(f"version: {version!r}; the seeds' schema version is '1.0'")
    data = out.get("data")
    if isinstance(data, Mapping):
        data = dict(data)
        if "price_data" in data:
            if "prices" in data:
                raise ValueError("data: give 'prices' only ('price_data' is its seeds' name)")
            data["prices"] = data.pop("price_data")
        if isinstance(data.get("signals"), str):
            data["signals"] = {"path": data["signals"]}
        features = data.get("features")
        if isinstance(features, Mapping):
            provider = features.get("provider", "precomputed")
            extra = sorted(set(features) - {"provider", "path"})
            if extra or provider not in ("precomputed", "computed"):
                raise ValueError(
                    f"data.features: {dict(features)!r}; write 'computed' or a features file "
                    "path (seeds' form: {provider: precomputed, path: ...}); a callable "
                    "provider is Python-only (engine.CallableFeatureProvider)"
                )
            if provider == "computed":
                data["features"] = "computed"
            elif "path" not in features:
                raise ValueError("data.features: provider 'precomputed' needs a 'path'")
            else:
                data["features"] = features["path"]
        out["data"] = data
    strategy = out.get("strategy")
    seeds_strategy = ("select_top", "selection_metric", "universe_size", "position_sizing")
    if isinstance(strategy, Mapping) and (
        strategy.get("type") == "batch_mode" or any(k in strategy for k in seeds_strategy)
    ):
        out["strategy"] = _seeds_strategy(dict(strategy), out.get("data"))
    if "performance" in out:
        if "reporting" in out:
            raise ValueError("give 'reporting' only ('performance' is its seeds' name)")
        performance = dict(out.pop("performance") or {})
        benchmark = performance.pop("benchmark", SEEDS_BENCHMARK)
        if benchmark != SEEDS_BENCHMARK:
            raise ValueError(
                f"performance.benchmark: {benchmark!r}; the report compares with the "
                f"equal-weight universe of the prices (write '{SEEDS_BENCHMARK}'); a single "
                "symbol's buy-and-hold is not a benchmark this pipeline builds"
            )
        out["reporting"] = performance
    return out


def _seeds_strategy(strategy: dict[str, Any], data: Any) -> dict[str, Any]:
    kind = strategy.pop("type", "batch_mode")
    if kind not in ("batch_mode", "TopN"):
        raise ValueError(
            f"strategy.type: {kind!r} with the seeds' top-N keys; the seeds' 'batch_mode' "
            "top-N is 'TopN' here"
        )
    renames = {"select_top": "n", "selection_metric": "signal"}
    for old, new in renames.items():
        if old in strategy:
            if new in strategy:
                raise ValueError(f"strategy: give {new!r} only ({old!r} is its seeds' name)")
            strategy[new] = strategy.pop(old)
    size = strategy.pop("universe_size", None)
    symbols = data.get("symbols") if isinstance(data, Mapping) else None
    if size is not None and symbols is not None and len(symbols) != size:
        raise ValueError(
            f"strategy.universe_size: {size!r} but data.symbols lists {len(symbols)} symbols"
        )
    sizing = strategy.pop("position_sizing", None)
    if sizing is not None:
        sizing = dict(sizing)
        method = sizing.pop("method", "equal_weight")
        if method != "equal_weight":
            raise ValueError(
                f"strategy.position_sizing.method: {method!r}; TopN sizes equal weights "
                "(a user strategy class sizes otherwise: strategy.class)"
            )
        n = strategy.get("n", _TOPN_DEFAULTS["n"])
        most = sizing.pop("max_positions", n)
        if most != n:
            raise ValueError(
                f"strategy.position_sizing.max_positions: {most!r} differs from select_top "
                f"{n!r}; TopN holds select_top positions (cap them with a MaxPositionsRule)"
            )
        if "pct_per_position" in sizing:
            strategy["weight"] = sizing.pop("pct_per_position")
        if sizing:
            raise ValueError(f"strategy.position_sizing: unknown keys {sorted(sizing)}")
    return {"type": "TopN", **strategy}


class ExperimentConfig(_Strict):
    """One experiment: the whole YAML/JSON file.

    ``risk_rules`` is a list of rule specs ``{type: <rule>, priority: ..., **params}``: any
    ``engine.RULE_REGISTRY`` rule, or ``CompositeRule`` (``rules: [specs]``, ``mode: any|all``);
    the seeds' parameter names are rewritten to the engine's (:data:`RULE_PARAM_ALIASES`) and
    every number is checked (:data:`RULE_PARAM_LIMITS`). ``backtest`` is the window the engine
    trades (:class:`BacktestConfig`; default: all the data).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    strategy: StrategyConfig = Field(default_factory=lambda: StrategyConfig.model_validate({}))
    risk_rules: list[dict[str, Any]] = Field(default_factory=list)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    reporting: ReportingConfig = Field(default_factory=ReportingConfig)
    backtest: BacktestConfig = Field(default_factory=BacktestConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="before")
    @classmethod
    def _seeds_sections(cls, raw: Any) -> Any:
        return from_seeds_schema(raw)

    @field_validator("risk_rules", mode="before")
    @classmethod
    def _normalize_rules(cls, rules: Any) -> Any:
        if not isinstance(rules, list):
            return rules
        return [normalize_rule_spec(rule, f"risk_rules[{i}]") for i, rule in enumerate(rules)]

    def config_hash(self) -> str:
        """Return a short SHA-256 of the canonical JSON of this config (lineage key)."""
        dumped = self.model_dump(mode="json", exclude={"tracking"})
        for (section, key), default in _HASH_NEUTRAL_DEFAULTS.items():
            if dumped[section].get(key) == default:
                dumped[section].pop(key, None)
        bench = dumped["reporting"].get("benchmark")
        if bench and bench.get("corporate_actions") is None:  # a key added later
            bench.pop("corporate_actions", None)
        if not dumped["backtest"]:  # a section added later: absent while empty
            dumped.pop("backtest")
        canonical = json.dumps(dumped, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def ic_horizon(self) -> int:
        """Forward-return horizon (bars) of the information coefficient: the model's training
        horizon (``data.signals.horizon``), else 1 bar."""
        signals = self.data.signals
        return signals.horizon if isinstance(signals, ModelSignalsConfig) else 1
