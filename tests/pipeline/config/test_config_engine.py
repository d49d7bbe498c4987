"""Experiment settings reach the engine: fill settings, rules (aliases, CompositeRule), a user
strategy class, bounded numbers and the model-signal timing rule (issues 14 and 16)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

import engine
from engine.data import BarBatch
from ml4t_pipeline.config import (
    ENGINE_SETTINGS,
    ConfigError,
    ExperimentConfig,
    build_rule,
    load_config,
)
from ml4t_pipeline.lib.experiment import run_experiment

THIS_MODULE = __name__


class BuyOnceStrategy(engine.Strategy):
    """Buy ``quantity`` shares of ``symbol`` on the first bar (a user strategy for the tests)."""

    def __init__(self, symbol: str, quantity: int) -> None:
        self.symbol = symbol
        self.quantity = quantity
        self.done = False

    def on_start(self) -> None:
        self.done = False

    def on_timestamp_batch(
        self, timestamp: datetime, batch: BarBatch, context: dict[str, float]
    ) -> None:
        if not self.done:
            self.buy(self.symbol, self.quantity)
            self.done = True


class NotAStrategy:
    """Has the right name shape but does not subclass engine.Strategy."""


def _cfg(**sections: Any) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"name": "t", **sections})


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# a small hand-built panel: one symbol, five daily bars, open = close = 10, volume 2,000;
# the first two bars dip to 9.0 (through a 5 % stop at 9.5), later ones only to 9.9


def _panel(bid_ask: tuple[float, float] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    ts = [datetime(2024, 1, 1, 21, tzinfo=UTC) + timedelta(days=i) for i in range(5)]
    panel = pl.DataFrame(
        {
            "timestamp": ts,
            "symbol": ["AAA"] * 5,
            "open": [10.0] * 5,
            "high": [10.5] * 5,
            "low": [9.0, 9.0, 9.9, 9.9, 9.9],
            "close": [10.0] * 5,
            "volume": [2000.0] * 5,
            "score": [1.0] * 5,
        }
    ).with_columns(pl.col("timestamp").dt.cast_time_unit("us"))
    if bid_ask is not None:
        panel = panel.with_columns(bid=pl.lit(bid_ask[0]), ask=pl.lit(bid_ask[1]))
    context = panel.select("timestamp")
    return panel, context


def _run(**execution: Any) -> engine.BacktestResult:
    cfg = _cfg(
        strategy={"n": 1},
        risk_rules=[{"type": "PriceBasedStopLoss", "stop_pct": 0.05}],
        execution={"initial_cash": 10_000, **execution},
    )
    panel, context = _panel()
    return run_experiment(cfg, panel, context, ["score"], [])


def _fills(result: engine.BacktestResult) -> list[tuple[int, float, float]]:
    """(day of month, quantity, price) of every fill."""
    return [
        (row["timestamp"].day, row["quantity"], row["price"])
        for row in result.fills.select("timestamp", "quantity", "price").to_dicts()
    ]


# ---------------------------------------------------------------------------------------------
# fill settings


SETTINGS: list[tuple[str, Any]] = [
    ("max_volume_participation", 0.25),
    ("close_at_end", True),
    ("bar_event_order", "stops_first"),
    ("stop_activation", "entry_bar"),
    ("cash_check", "submission"),
    ("reentry_cooldown_bars", 3),
    ("cash_tolerance", 0.5),
]


@pytest.mark.parametrize(("name", "value"), SETTINGS, ids=[s[0] for s in SETTINGS])
def test_execution_engine_config_setting_reaches_engine(name: str, value: Any) -> None:
    built = _cfg(execution={name: value}).execution.engine_config()
    assert getattr(built, name) == value
    default = engine.ExecutionConfig()
    others = [s for s in ENGINE_SETTINGS if s != name]
    assert all(getattr(built, s) == getattr(default, s) for s in others)


def test_execution_engine_config_exit_conflict_needs_stops_first(tmp_path: Path) -> None:
    built = _cfg(
        execution={"bar_event_order": "stops_first", "exit_conflict": "stop_wins"}
    ).execution.engine_config()
    assert (built.bar_event_order, built.exit_conflict) == ("stops_first", "stop_wins")
    path = _write(tmp_path, "execution:\n  exit_conflict: stop_wins\n")
    with pytest.raises(ConfigError, match=r"execution: .*stop_wins.*stops_first"):
        load_config(path)


def test_execution_engine_config_explicit_setting_overrides_preset() -> None:
    built = _cfg(execution={"preset": "backtrader", "cash_tolerance": 0.5}).execution
    cfg = built.engine_config()
    assert cfg.cash_tolerance == 0.5
    assert cfg.bar_event_order == engine.EXECUTION_PRESETS["backtrader"]["bar_event_order"]


def test_execution_engine_config_defaults_equal_engine_defaults() -> None:
    built = ExperimentConfig(name="t").execution.engine_config()
    default = engine.ExecutionConfig()
    assert all(getattr(built, s) == getattr(default, s) for s in ENGINE_SETTINGS)


def test_run_experiment_default_fills_whole_order_and_keeps_position_open() -> None:
    result = _run()
    # weight 1/n = 1: floor(10,000 / 10) shares at the second bar's open; never stopped
    # (the 5 % stop is checked from the bar after the entry, whose low is 9.9 > 9.5)
    assert _fills(result) == [(2, 1000.0, 10.0)]
    assert result.trades.height == 0


def test_run_experiment_close_at_end_closes_at_last_close() -> None:
    result = _run(close_at_end=True)
    assert _fills(result) == [(2, 1000.0, 10.0), (5, -1000.0, 10.0)]
    assert result.trades["exit_reason"].to_list() == ["end_of_data"]


def test_run_experiment_volume_participation_caps_each_bar() -> None:
    result = _run(max_volume_participation=0.1)
    # 10 % of 2,000 shares per bar; the rest keeps working on the following bars
    assert _fills(result) == [(d, 200.0, 10.0) for d in (2, 3, 4, 5)]


def test_run_experiment_stop_activation_entry_bar_stops_on_entry_bar() -> None:
    result = _run(stop_activation="entry_bar")
    # entry at 10 on day 2, whose low 9.0 touches the stop 9.5: out at 9.5 the same bar;
    # the strategy buys again at day 3's open with the remaining 9,500 cash
    assert _fills(result) == [(2, 1000.0, 10.0), (2, -1000.0, 9.5), (3, 950.0, 10.0)]
    assert result.trades["exit_reason"].to_list() == ["PriceBasedStopLoss"]


def test_run_experiment_reentry_cooldown_delays_reentry() -> None:
    result = _run(stop_activation="entry_bar", reentry_cooldown_bars=1)
    # the re-entry decided at day 2's close (the stop bar) is refused; day 3's fills at day 4
    assert _fills(result) == [(2, 1000.0, 10.0), (2, -1000.0, 9.5), (4, 950.0, 10.0)]
    assert "reentry_cooldown" in result.rejections["reason"].to_list()


def test_run_experiment_spread_aware_slippage_uses_panel_bid_ask() -> None:
    cfg = _cfg(
        strategy={"n": 1, "weight": 0.5},
        execution={
            "initial_cash": 10_000,
            "slippage": {"type": "SpreadAware", "spread_fraction": 0.5},
        },
    )
    panel, context = _panel(bid_ask=(9.9, 10.1))
    result = run_experiment(cfg, panel, context, ["score"], [])
    # floor(0.5 × 10,000 / 10) = 500 shares; half the quoted spread 0.2 on top of the open 10
    assert _fills(result) == [(2, 500.0, pytest.approx(10.1))]
    assert result.fills["slippage"].to_list() == [pytest.approx(500 * 0.1)]


def test_load_config_slippage_windows_reach_the_engine(tmp_path: Path) -> None:
    text = (
        "execution:\n"
        "  slippage:\n"
        "    type: OrderTypeDependent\n"
        "    models: {market: {type: SpreadAware, spread_fraction: 0.5, window: 10}}\n"
        "    default: {type: VolumeAware, volume: completed, volume_window: 20}\n"
    )
    built = load_config(_write(tmp_path, text)).execution.engine_config().slippage
    assert isinstance(built, engine.OrderTypeDependentSlippage)
    spread, volume = built.models["market"], built.default
    assert isinstance(spread, engine.SpreadAwareSlippage) and spread.window == 10
    assert isinstance(volume, engine.VolumeAwareSlippage)
    assert (volume.volume, volume.volume_window) == ("completed", 20)
    assert built.history_bars == 20  # what a monthly stream carries across boundaries


# ---------------------------------------------------------------------------------------------
# rules: aliases, CompositeRule, limits

ALIASES = [
    ("PriceBasedStopLoss", {"sl_pct": 0.03}, "stop_pct", 0.03),
    ("PriceBasedTakeProfit", {"tp_pct": 0.05}, "target_pct", 0.05),
    ("DynamicTrailingStop", {"tighten_rate": 0.001}, "tighten_per_bar", 0.001),
    ("MaxDrawdownRule", {"max_dd_pct": 0.1}, "max_drawdown", 0.1),
]


@pytest.mark.parametrize(("kind", "given", "name", "value"), ALIASES, ids=[a[0] for a in ALIASES])
def test_risk_rules_seed_alias_becomes_engine_name(
    kind: str, given: dict[str, float], name: str, value: float
) -> None:
    cfg = _cfg(risk_rules=[{"type": kind, **given}])
    assert cfg.risk_rules[0] == {"type": kind, name: value}
    assert getattr(build_rule(cfg.risk_rules[0]), name) == value


@pytest.mark.parametrize(("kind", "given", "name", "value"), ALIASES, ids=[a[0] for a in ALIASES])
def test_risk_rules_alias_and_new_name_together_suggests_new_name(
    kind: str, given: dict[str, float], name: str, value: float
) -> None:
    with pytest.raises(ValueError, match=rf"risk_rules\[0\]: give '{name}' only"):
        _cfg(risk_rules=[{"type": kind, **given, name: value}])


def test_risk_rules_seed_regime_rule_maps_to_above_below() -> None:
    seed = {
        "type": "RegimeDependentRule",
        "regime_source": "vix",
        "high_vol_threshold": 25,
        "rules": {
            "high_vol": {"type": "VolatilityScaledStopLoss", "atr_multiplier": 1.5},
            "low_vol": {"type": "VolatilityScaledStopLoss", "atr_multiplier": 2.5},
        },
    }
    spec = _cfg(risk_rules=[seed]).risk_rules[0]
    assert spec["context_column"] == "vix" and spec["threshold"] == 25
    rule = build_rule(spec)
    assert isinstance(rule, engine.RegimeDependentRule)
    assert isinstance(rule.above, engine.VolatilityScaledStopLoss)
    assert isinstance(rule.below, engine.VolatilityScaledStopLoss)
    assert (rule.above.atr_multiplier, rule.below.atr_multiplier) == (1.5, 2.5)


def test_risk_rules_regime_rules_unknown_regime_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"risk_rules\[0\]\.rules must map high_vol/low_vol"):
        _cfg(
            risk_rules=[
                {
                    "type": "RegimeDependentRule",
                    "context_column": "vix",
                    "threshold": 25,
                    "rules": {"medium": {"type": "TimeBasedExit", "max_bars": 3}},
                }
            ]
        )


def test_risk_rules_composite_seed_modes_build_engine_composite() -> None:
    spec = {
        "type": "CompositeRule",
        "mode": "AND",
        "rules": [
            {"type": "TimeBasedExit", "max_bars": 20},
            {"type": "PriceBasedStopLoss", "sl_pct": 0.03},
        ],
    }
    rule = build_rule(_cfg(risk_rules=[spec]).risk_rules[0])
    assert isinstance(rule, engine.CompositeRule) and rule.mode == "all"
    assert [type(r).__name__ for r in rule.rules] == ["TimeBasedExit", "PriceBasedStopLoss"]
    assert rule.rules[1].stop_pct == 0.03


def test_risk_rules_composite_nested_in_regime_rule_builds() -> None:
    inner = {"type": "CompositeRule", "rules": [{"type": "TimeBasedExit", "max_bars": 2}]}
    spec = {"type": "RegimeDependentRule", "context_column": "vix", "threshold": 20}
    rule = build_rule(_cfg(risk_rules=[{**spec, "above": inner}]).risk_rules[0])
    assert isinstance(rule, engine.RegimeDependentRule)
    assert isinstance(rule.above, engine.CompositeRule)


def test_run_experiment_composite_time_exit_exits_after_max_bars() -> None:
    composite = {
        "type": "CompositeRule",
        "mode": "any",
        "rules": [{"type": "TimeBasedExit", "max_bars": 2}],
    }
    cfg = _cfg(strategy={"n": 1, "rebalance_every": 10}, risk_rules=[composite])
    cfg = cfg.model_copy(update={"execution": _cfg(execution={"initial_cash": 10_000}).execution})
    panel, context = _panel()
    result = run_experiment(cfg, panel, context, ["score"], [])
    # bought at day 2's open; held 2 bars at day 4's close; sold at day 5's open
    assert _fills(result) == [(2, 1000.0, 10.0), (5, -1000.0, 10.0)]
    assert result.trades["bars_held"].to_list() == [3]


def test_load_config_composite_with_bad_member_names_it(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "risk_rules:\n  - type: CompositeRule\n    rules:\n      - {type: NoSuchRule}\n",
    )
    with pytest.raises(ConfigError, match=r"risk_rules\[0\].*NoSuchRule"):
        load_config(path)


# ---------------------------------------------------------------------------------------------
# absurd numbers are refused with the field path (issue 14, point 5)

ABSURD = [
    ({"strategy": {"n": 1e18}}, r"strategy\.n"),
    ({"strategy": {"n": 10_001}}, r"strategy\.n"),
    ({"strategy": {"n": 2.5}}, r"strategy\.n"),
    ({"strategy": {"n": True}}, r"strategy\.n"),
    ({"strategy": {"rebalance_every": 1e30}}, r"strategy\.rebalance_every"),
    ({"strategy": {"weight": math.nan}}, r"strategy\.weight"),
    ({"execution": {"initial_cash": 1e308}}, r"execution\.initial_cash"),
    ({"execution": {"initial_cash": math.inf}}, r"execution\.initial_cash"),
    ({"execution": {"initial_cash": "1e308"}}, r"execution\.initial_cash"),
    ({"execution": {"max_volume_participation": 1.5}}, r"execution\.max_volume_participation"),
    ({"execution": {"reentry_cooldown_bars": 1e18}}, r"execution\.reentry_cooldown_bars"),
    ({"execution": {"cash_tolerance": math.inf}}, r"execution\.cash_tolerance"),
    (
        {"execution": {"commission": {"type": "Percentage", "rate": math.nan}}},
        r"execution\.commission\.rate",
    ),
    (
        {"execution": {"commission": {"type": "Percentage", "rate": 0.5}}},
        r"execution\.commission\.rate",
    ),
    (
        {"execution": {"commission": {"type": "PerShare", "cost": 1e30}}},
        r"execution\.commission\.cost",
    ),
    (
        {"execution": {"slippage": {"type": "FixedBps", "bps": math.inf}}},
        r"execution\.slippage\.bps",
    ),
    (
        {"execution": {"slippage": {"type": "SpreadAware", "window": 0}}},
        r"execution\.slippage\.window",
    ),
    (
        {"execution": {"slippage": {"type": "SpreadAware", "min_periods": 2.5}}},
        r"execution\.slippage\.min_periods",
    ),
    (
        {"execution": {"slippage": {"type": "VolumeAware", "volume_window": 1e18}}},
        r"execution\.slippage\.volume_window",
    ),
    (
        {"execution": {"commission": {"type": "Tiered", "tiers": [[0, 0.001], [1e308, 0.0]]}}},
        r"execution\.commission\.tiers\[1\]\[0\]",
    ),
    ({"risk_rules": [{"type": "PriceBasedStopLoss", "stop_pct": math.inf}]}, r"\.stop_pct"),
    ({"risk_rules": [{"type": "TimeBasedExit", "max_bars": 1e18}]}, r"risk_rules\[0\]\.max_bars"),
    ({"risk_rules": [{"type": "TimeBasedExit", "max_bars": 10_001}]}, r"\[0\]\.max_bars"),
    ({"risk_rules": [{"type": "MaxLeverageRule", "max_leverage": 1e30}]}, r"\.max_leverage"),
    (
        {"risk_rules": [{"type": "RegimeDependentRule", "context_column": "vix",
                         "threshold": math.nan, "below": {"type": "TimeBasedExit",
                                                          "max_bars": 3}}]},
        r"risk_rules\[0\]\.threshold",
    ),  # fmt: skip
    (
        {"risk_rules": [{"type": "CompositeRule",
                         "rules": [{"type": "TimeBasedExit", "max_bars": 1e30}]}]},
        r"risk_rules\[0\]\.rules\[0\]\.max_bars",
    ),  # fmt: skip
    ({"reporting": {"periods_per_year": 1e18}}, r"reporting\.periods_per_year"),
    ({"reporting": {"risk_free_rate": math.inf}}, r"reporting\.risk_free_rate"),
    ({"data": {"signals": {"horizon": 1e18}}}, r"data\.signals\..*horizon"),
    ({"data": {"signals": {"alpha": math.inf}}}, r"data\.signals\..*alpha"),
    ({"data": {"max_fill_bars": 1e18}}, r"data\.max_fill_bars"),
    ({"strategy": {"class": f"{THIS_MODULE}.BuyOnceStrategy",
                   "params": {"symbol": "AAA", "quantity": math.inf}}}, r"strategy\.params"),
]  # fmt: skip


@pytest.mark.parametrize(("sections", "where"), ABSURD, ids=[a[1] for a in ABSURD])
def test_load_config_absurd_number_is_refused_naming_field(
    tmp_path: Path, sections: dict[str, Any], where: str
) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(sections))  # inf / nan become YAML's .inf / .nan
    with pytest.raises(ConfigError, match=where):
        load_config(path)


@pytest.mark.parametrize(("sections", "where"), ABSURD, ids=[a[1] for a in ABSURD])
def test_experiment_config_absurd_number_is_refused_in_python(
    sections: dict[str, Any], where: str
) -> None:
    with pytest.raises(ValueError, match=where):
        _cfg(**sections)


def test_yaml_absurd_numbers_are_refused(tmp_path: Path) -> None:
    for text, where in [
        ("strategy: {n: 1e18}\n", r"strategy\.n"),
        ("strategy: {rebalance_every: 1.0e+30}\n", r"strategy\.rebalance_every"),
        ("execution: {initial_cash: .inf}\n", r"execution\.initial_cash"),
        ("execution: {initial_cash: 1e308}\n", r"execution\.initial_cash"),
        ("risk_rules: [{type: PriceBasedStopLoss, stop_pct: .nan}]\n", r"\.stop_pct"),
    ]:
        with pytest.raises(ConfigError, match=where):
            load_config(_write(tmp_path, text))


def test_strategy_integral_float_is_read_as_int() -> None:
    cfg = _cfg(strategy={"n": 25.0, "rebalance_every": 5.0})
    assert (cfg.strategy.n, cfg.strategy.rebalance_every) == (25, 5)
    assert isinstance(cfg.strategy.n, int)


# ---------------------------------------------------------------------------------------------
# a user strategy class by import path


def test_strategy_class_import_path_builds_and_runs() -> None:
    cfg = _cfg(
        strategy={
            "class": f"{THIS_MODULE}.BuyOnceStrategy",
            "params": {"symbol": "AAA", "quantity": 7},
        },
        execution={"initial_cash": 10_000},
    )
    strategy = cfg.strategy.build()
    assert isinstance(strategy, BuyOnceStrategy) and strategy.quantity == 7
    panel, context = _panel()
    result = run_experiment(cfg, panel, context, ["score"], [])
    assert _fills(result) == [(2, 7.0, 10.0)]


def test_strategy_class_colon_form_and_yaml_key(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f"strategy:\n  class: '{THIS_MODULE}:BuyOnceStrategy'\n"
        "  params: {symbol: AAA, quantity: 3}\n",
    )
    cfg = load_config(path)
    assert cfg.strategy.class_ == f"{THIS_MODULE}:BuyOnceStrategy"
    assert cfg.model_dump(mode="json")["strategy"]["class"] == cfg.strategy.class_
    # the dump validates again (the Python API writes configs built in code as YAML)
    assert ExperimentConfig.model_validate(cfg.model_dump(mode="json")) == cfg


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (f"{THIS_MODULE}.NotAStrategy", "not a subclass of engine.Strategy"),
        (f"{THIS_MODULE}.NoSuchClass", "has no 'NoSuchClass'"),
        ("no_such_package_xyz.Strategy", "cannot import 'no_such_package_xyz'"),
        ("math.pi", "not a subclass of engine.Strategy"),
    ],
)
def test_strategy_class_bad_import_path_is_refused(tmp_path: Path, path: str, message: str) -> None:
    cfg_path = _write(tmp_path, f"strategy:\n  class: {path}\n")
    with pytest.raises(ConfigError, match=rf"strategy: .*{message}"):
        load_config(cfg_path)


def test_strategy_class_with_topn_fields_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\['n'\] apply to the built-in TopN"):
        _cfg(strategy={"class": f"{THIS_MODULE}.BuyOnceStrategy", "n": 3})
    with pytest.raises(ValueError, match="params is only for a user strategy class"):
        _cfg(strategy={"params": {"x": 1}})


def test_strategy_class_bad_params_are_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f"strategy:\n  class: {THIS_MODULE}.BuyOnceStrategy\n  params: {{symbol: AAA}}\n",
    )
    with pytest.raises(ConfigError, match="refused params"):
        load_config(path)


# ---------------------------------------------------------------------------------------------
# signal_available_at with the built-in model (issue 14, point 6)


@pytest.mark.parametrize("mode", ["market_open", "next_day"])
def test_data_signal_timing_with_model_signals_is_refused(mode: str) -> None:
    with pytest.raises(ValueError, match=f"signal_available_at={mode!r} applies to signal files"):
        _cfg(data={"signal_available_at": mode})


@pytest.mark.parametrize("mode", ["market_close", "available_at"])
def test_data_signal_timing_consistent_with_model_is_accepted(mode: str) -> None:
    assert _cfg(data={"signal_available_at": mode}).data.signal_available_at == mode


def test_data_signal_timing_with_signal_file_is_accepted() -> None:
    cfg = _cfg(data={"signal_available_at": "next_day", "signals": {"path": "s.parquet"}})
    assert cfg.data.signal_available_at == "next_day"


# ---------------------------------------------------------------------------------------------
# lineage: existing configs keep their hash


def test_config_hash_new_settings_at_default_leave_hash_unchanged() -> None:
    plain = _cfg(strategy={"n": 3})
    explicit_defaults = _cfg(
        strategy={"n": 3, "params": {}}, execution={"close_at_end": None}, data={"stream": "whole"}
    )
    changed = _cfg(strategy={"n": 3}, execution={"close_at_end": True})
    assert plain.config_hash() == explicit_defaults.config_hash()
    assert plain.config_hash() != changed.config_hash()


SEED_RISK_RULES = """\
risk_rules:
  - type: VolatilityScaledStopLoss
    atr_multiplier: 2.0
    priority: 100

  - type: DynamicTrailingStop
    initial_trail_pct: 0.05
    tighten_rate: 0.001  # 0.1% per bar
    priority: 100

  - type: TimeBasedExit
    max_bars: 60
    priority: 90

  - type: RegimeDependentRule
    regime_source: vix
    high_vol_threshold: 25
    rules:
      high_vol:
        type: VolatilityScaledStopLoss
        atr_multiplier: 1.5  # Tighter in high vol
      low_vol:
        type: VolatilityScaledStopLoss
        atr_multiplier: 2.5  # Wider in low vol

execution:
  commission:
    type: PerShare
    cost: 0.005
  slippage:
    type: SpreadAware
    spread_fraction: 0.5
"""


def test_load_config_seed_risk_rules_block_validates(tmp_path: Path) -> None:
    """The risk_rules and execution block of the seeds' top-25 YAML example, verbatim."""
    cfg = load_config(_write(tmp_path, SEED_RISK_RULES))
    rules = [build_rule(spec) for spec in cfg.risk_rules]
    assert [r.name for r in rules] == [
        "VolatilityScaledStopLoss",
        "DynamicTrailingStop",
        "TimeBasedExit",
        "RegimeDependentRule",
    ]
    assert rules[1].tighten_per_bar == 0.001
    assert rules[3].context_column == "vix" and rules[3].threshold == 25.0
    built = cfg.execution.engine_config()
    assert isinstance(built.slippage, engine.SpreadAwareSlippage)
    assert built.slippage.spread_fraction == 0.5
