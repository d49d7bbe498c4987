"""A changed prices file reruns everything downstream of it, and nothing runs on a mix.

The experiment reads its prices from a file and computes its features, market context and
model scores. Those three assets also depend on observable input files (``features_file``,
``context_file``, ``signals_file``) that this experiment does not have, so those sources are
never observed for it. The automation must still rerun them when the prices change (issue 26:
they used to stay stale while ``market_panel`` and ``backtest`` reran on a mix of new prices and
features computed from the old ones).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from ml4t_pipeline.definitions import build_definitions
from ml4t_pipeline.defs.io_managers import read_value
from ml4t_pipeline.defs.partitions import EXPERIMENTS
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.defs.sensors import input_files_sensor
from ml4t_pipeline.lib.io import load_demo_prices
from ml4t_pipeline.runner import materialize_experiment
from tests.pipeline.helpers import assert_panel_from_prices

CONFIG = """\
name: gamma
data:
  prices: {prices}
  signals: {{model: ridge, horizon: 5, min_train_periods: 252}}
  features: computed
  context: {{source: market}}
  signal_available_at: market_close
  max_fill_bars: 0
strategy: {{type: TopN, signal: score, n: 2, rebalance_every: 5}}
execution:
  commission: {{type: Percentage, rate: 0.001}}
  initial_cash: 100000
"""

DOWNSTREAM_OF_PRICES = (
    "prices_raw",
    "prices",
    "features",
    "market_context",
    "signals",
    "market_panel",
    "backtest",
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("prices_change")
    configs, data = root / "configs", root / "data"
    configs.mkdir()
    data.mkdir()
    # two years of the demo's real bars keep the model's walk-forward short
    prices = (
        load_demo_prices()
        .filter(pl.col("timestamp").dt.year().is_between(2010, 2012))
        .with_columns(pl.col("timestamp").dt.convert_time_zone("America/New_York").dt.date())
    )
    prices.write_parquet(data / "prices.parquet")
    (configs / "gamma.yaml").write_text(CONFIG.format(prices=data / "prices.parquet"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ML4T_DATA_ROOT", str(root))
        yield {
            "root": root,
            "configs": configs,
            "data": data,
            "prices": prices,
            "instance": dg.DagsterInstance.ephemeral(),
        }


def _resources(lab: dict) -> dict:
    return {"experiments": ExperimentsResource(configs_dir=str(lab["configs"]))}


def _requested(evaluation: dg.EvaluateAutomationConditionsResult) -> dict[str, set[str]]:
    out = {}
    for name in DOWNSTREAM_OF_PRICES:
        out[name] = set(evaluation.get_requested_partitions(dg.AssetKey(name)))
    return out


def test_changed_prices_file_reruns_features_context_and_signals(lab: dict) -> None:
    instance, storage = lab["instance"], lab["root"] / "storage"
    config = lab["configs"] / "gamma.yaml"
    assert materialize_experiment(config, storage, instance=instance).success
    defs = build_definitions(configs_dir=str(lab["configs"]), storage_dir=str(storage))
    first = input_files_sensor(
        dg.build_sensor_context(instance=instance, resources=_resources(lab))
    )
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert baseline.total_requested == 0  # up to date after the first run

    # the vendor restates the prices: every price of the last year 3 % higher
    restated = lab["prices"].with_columns(
        pl.when(pl.col("timestamp").dt.year() == 2012)
        .then(pl.col(c) * 1.03)
        .otherwise(pl.col(c))
        .alias(c)
        for c in ("open", "high", "low", "close")
    )
    restated.write_parquet(lab["data"] / "prices.parquet")
    second = input_files_sensor(
        dg.build_sensor_context(instance=instance, resources=_resources(lab), cursor=first.cursor)
    )
    assert [(e.asset_key.to_user_string(), e.partition) for e in second.asset_events] == [
        ("prices_file", "gamma")
    ]
    for event in second.asset_events:
        instance.report_runless_asset_event(event)
    evaluation = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=baseline.cursor
    )
    requested = _requested(evaluation)
    assert requested == {name: {"gamma"} for name in DOWNSTREAM_OF_PRICES}

    # the daemon's run: exactly the requested assets, then no value is computed from old prices
    selection = [*DOWNSTREAM_OF_PRICES, "prices_quarantine"]  # a multi-asset runs whole
    assert materialize_experiment(config, storage, instance=instance, selection=selection).success
    # the panel's closes and sma_20 are the NEW file's
    assert_panel_from_prices(read_value(Path(storage) / "market_panel" / "gamma"), restated)


def test_new_experiment_partition_is_left_to_the_configs_sensor(lab: dict) -> None:
    """A newly added experiment gets its first run from ``experiment_configs_sensor`` only:
    the automation requests nothing for it (plain ``eager`` requested every asset of the new
    partition as "newly missing", duplicating the sensor's run)."""
    instance = lab["instance"]
    defs = build_definitions(
        configs_dir=str(lab["configs"]), storage_dir=str(lab["root"] / "storage")
    )
    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    (lab["configs"] / "delta.yaml").write_text(
        CONFIG.format(prices=lab["data"] / "prices.parquet").replace("gamma", "delta")
    )
    instance.add_dynamic_partitions(EXPERIMENTS, ["delta"])
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    assert after.total_requested == 0


def test_automatic_runs_use_the_configured_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML4T_EXECUTOR", "in_process")
    defs = build_definitions()
    implicit = defs.resolve_implicit_global_asset_job_def()
    assert implicit.executor_def.name == "in_process"  # not Dagster's multiprocess default
