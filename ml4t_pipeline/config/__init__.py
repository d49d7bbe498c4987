"""Experiment configuration: one YAML (or JSON) file per experiment, validated by pydantic models.

An experiment file has the sections ``data``, ``strategy``, ``risk_rules``, ``execution``,
``reporting`` (after the seeds' configuration schema) and ``backtest`` (the window traded).
Unknown keys anywhere are errors, and every error message names the offending key. The same
objects can be built in Python::

    cfg = ExperimentConfig(
        name="my_test",
        data=DataConfig(prices="demo"),
        strategy={"type": "TopN", "signal": "score", "n": 2},
    )

**Data paths** (``data.prices``, ``data.signals.path``, ``data.features``,
``data.context.path``) resolve against the *data root*: the ``ML4T_DATA_ROOT`` environment
variable, or the current directory when it is unset (see :func:`resolve_data_root`). A path that
resolves outside the root (absolute, ``../``, or a symlink pointing out; symlinks are followed)
is refused with the field and the root named, unless the person running the pipeline sets
``ML4T_ALLOW_OUTSIDE_DATA_ROOT=1``. The opt-out is an environment variable on purpose: the data
root is chosen by whoever runs the pipeline, so a config file cannot widen its own access.
``prices: demo`` selects the real daily OHLCV shipped in the ``bokeh-sampledata`` package, so
the demo needs no file at all.

**Numbers** are bounded (see each model's docstring): ``inf``, ``nan``, booleans given for
numbers and values beyond the documented limits (``n: 1e18``, ``initial_cash: 1e308``) are
refused with the field path named. Integer fields accept integral floats (``25.0`` is ``25``)
and refuse fractional ones. Risk-rule, commission and slippage specs are checked the same way:
every number in them must be finite with ``|x| <= 1e12``, and the common parameters have ranges
(:data:`RULE_PARAM_LIMITS`, :data:`COST_PARAM_LIMITS`).

**Seeds' names**: the rule parameter names of the seeds' documents are accepted as aliases and
rewritten to the engine's names when the config is validated (:data:`RULE_PARAM_ALIASES`:
``sl_pct`` → ``stop_pct``, ``tp_pct`` → ``target_pct``, ``tighten_rate`` → ``tighten_per_bar``,
``max_dd_pct`` → ``max_drawdown``; a ``RegimeDependentRule`` given as ``regime_source`` /
``high_vol_threshold`` / ``rules: {high_vol, low_vol}`` becomes ``context_column`` /
``threshold`` / ``above`` / ``below``; ``CompositeRule`` modes ``AND`` / ``OR`` become ``all`` /
``any``). Giving an alias and its new name together is an error. The table is the engine's
(:mod:`engine.risk.rules.aliases`), shared with the rule constructors. The seeds' config sections
(``version``, ``data.price_data``, ``strategy.select_top``, ``performance``, ...) are translated
by :func:`from_seeds_schema` (docs/reference/seeds-compatibility.md).

**Layout**: this package re-exports every name; each concept is one submodule (they import
each other, never this ``__init__``): ``_base`` (limits, environment variables, the strict base
model, the errors), ``data`` (the ``data`` section), ``strategy``, ``specs`` (risk-rule,
commission and slippage specs: aliases and limits, :func:`build_rule`), ``execution``
(``execution``, ``reporting``, ``tracking``, ``backtest``), ``experiment``
(:class:`ExperimentConfig`, the seeds' schema, the config hash), ``loading`` (bounded file
reading, :func:`load_config`, :func:`validate_config`) and ``paths`` (the data root).
"""

from ml4t_pipeline.config._base import (
    ALLOW_OUTSIDE_ROOT_ENV,
    CONFIG_SUFFIXES,
    DATA_ROOT_ENV,
    DEMO_PRICES,
    MAX_BARS,
    MAX_CASH,
    MAX_ROWS,
    ConfigError,
    DataPathError,
)
from ml4t_pipeline.config.data import (
    ADJUSTMENTS,
    MODEL_SIGNAL_TIMING,
    SIGNAL_TIMESTAMPS,
    ContextConfig,
    CorporateActionsConfig,
    DataConfig,
    DelistingConfig,
    FileSignalsConfig,
    FinancingConfig,
    ModelSignalsConfig,
    PlausibilityConfig,
    QuotesConfig,
    UniverseConfig,
)
from ml4t_pipeline.config.execution import (
    ENGINE_SETTINGS,
    BacktestConfig,
    BenchmarkConfig,
    ExecutionConfig,
    MlflowTrackingConfig,
    ReportingConfig,
    TrackingConfig,
)
from ml4t_pipeline.config.experiment import (
    SEEDS_BENCHMARK,
    SEEDS_SCHEMA_VERSIONS,
    ExperimentConfig,
    from_seeds_schema,
)
from ml4t_pipeline.config.loading import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_NODES,
    load_config,
    read_config_file,
    validate_config,
)
from ml4t_pipeline.config.loading import (
    _check_engine_specs as _check_engine_specs,
)
from ml4t_pipeline.config.paths import (
    check_data_paths,
    confine_data_path,
    data_paths,
    outside_root_allowed,
    resolve_data_path,
    resolve_data_root,
)
from ml4t_pipeline.config.specs import (
    COMPOSITE_RULE,
    COST_PARAM_LIMITS,
    RULE_PARAM_ALIASES,
    RULE_PARAM_LIMITS,
    build_rule,
    normalize_rule_spec,
)
from ml4t_pipeline.config.strategy import (
    StrategyConfig,
    import_strategy_class,
)

__all__ = [
    "ADJUSTMENTS",
    "ALLOW_OUTSIDE_ROOT_ENV",
    "BacktestConfig",
    "BenchmarkConfig",
    "COMPOSITE_RULE",
    "CONFIG_SUFFIXES",
    "COST_PARAM_LIMITS",
    "ConfigError",
    "ContextConfig",
    "CorporateActionsConfig",
    "DATA_ROOT_ENV",
    "DEMO_PRICES",
    "DataConfig",
    "DataPathError",
    "DelistingConfig",
    "ENGINE_SETTINGS",
    "ExecutionConfig",
    "ExperimentConfig",
    "FileSignalsConfig",
    "FinancingConfig",
    "MAX_BARS",
    "MAX_CASH",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "MAX_ROWS",
    "MODEL_SIGNAL_TIMING",
    "MlflowTrackingConfig",
    "ModelSignalsConfig",
    "PlausibilityConfig",
    "QuotesConfig",
    "RULE_PARAM_ALIASES",
    "RULE_PARAM_LIMITS",
    "ReportingConfig",
    "SEEDS_BENCHMARK",
    "SEEDS_SCHEMA_VERSIONS",
    "SIGNAL_TIMESTAMPS",
    "StrategyConfig",
    "TrackingConfig",
    "UniverseConfig",
    "build_rule",
    "check_data_paths",
    "confine_data_path",
    "data_paths",
    "from_seeds_schema",
    "import_strategy_class",
    "load_config",
    "normalize_rule_spec",
    "outside_root_allowed",
    "read_config_file",
    "resolve_data_path",
    "resolve_data_root",
    "validate_config",
]
