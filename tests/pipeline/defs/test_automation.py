"""Experiments as partitions, reruns on new signal files, and the comparison table.

Two experiments read their own signal files (scores derived from the demo prices). Replacing one
file must rerun that experiment only: asserted on the Dagster instance's event log.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from ml4t_pipeline.cli import materialize_experiment
from ml4t_pipeline.definitions import build_definitions
from ml4t_pipeline.defs.io_managers import read_value
from ml4t_pipeline.defs.partitions import EXPERIMENTS
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.defs.sensors import experiment_configs_sensor, input_files_sensor
from ml4t_pipeline.lib.io import load_demo_prices
from tests.conftest import REPO_ROOT


@pytest.fixture(autouse=True, scope="module")
def _data_root_is_basetemp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The configs here name data files under pytest's temporary folders: make that the data
    root (data paths must stay inside ``ML4T_DATA_ROOT``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ML4T_DATA_ROOT", str(tmp_path_factory.getbasetemp()))
        yield


EXPERIMENT_YAML = """\
name: {name}
data:
  prices: demo
  signals:
    path: {signals}
strategy: {{type: TopN, signal: score, n: 2, rebalance_every: 5}}
risk_rules:
  - {{type: PriceBasedStopLoss, stop_pct: 0.05, priority: 100}}
execution:
  commission: {{type: Percentage, rate: 0.001}}
  initial_cash: 100000
"""


def _signals(sign: float) -> pl.DataFrame:
    prices = load_demo_prices()
    return (
        prices.sort("symbol", "timestamp")
        .with_columns(
            (sign * (pl.col("close") / pl.col("close").shift(20) - 1)).over("symbol").alias("score")
        )
        .drop_nulls("score")
        .select("timestamp", "symbol", "score")
    )


def _backtest_runs(instance: dg.DagsterInstance, key: str) -> int:
    return len(
        instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("backtest"), asset_partitions=[key]),
            limit=100,
        ).records
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("lab")
    configs, data = root / "configs", root / "data"
    configs.mkdir()
    data.mkdir()
    for name, sign in (("alpha", 1.0), ("beta", -1.0)):
        _signals(sign).write_parquet(data / f"{name}.parquet")
        (configs / f"{name}.yaml").write_text(
            EXPERIMENT_YAML.format(name=name, signals=data / f"{name}.parquet")
        )
    return {
        "root": root,
        "configs": configs,
        "data": data,
        "instance": dg.DagsterInstance.ephemeral(),
    }


def _resources(lab: dict) -> dict:
    return {"experiments": ExperimentsResource(configs_dir=str(lab["configs"]))}


def test_configs_sensor_adds_new_experiments_and_requests_runs(lab: dict) -> None:
    instance = lab["instance"]
    context = dg.build_sensor_context(instance=instance, resources=_resources(lab))
    result = experiment_configs_sensor(context)
    assert sorted(r.partition_key for r in result.run_requests) == ["alpha", "beta"]
    instance.add_dynamic_partitions(
        EXPERIMENTS, list(result.dynamic_partitions_requests[0].partition_keys)
    )
    again = experiment_configs_sensor(
        dg.build_sensor_context(instance=instance, resources=_resources(lab))
    )
    assert again.run_requests == []
    for key in ("alpha", "beta"):  # the first materialization of each new experiment
        run = materialize_experiment(lab["configs"] / f"{key}.yaml", lab["root"] / "storage",
                                     instance=instance)  # fmt: skip
        assert run.success
        assert _backtest_runs(instance, key) == 1


def test_configs_sensor_reports_removed_experiment(lab: dict, tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(lab["configs"], configs)
    (configs / "beta.yaml").unlink()
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(EXPERIMENTS, ["alpha", "beta"])
    context = dg.build_sensor_context(
        instance=instance, resources={"experiments": ExperimentsResource(configs_dir=str(configs))}
    )
    result = experiment_configs_sensor(context)
    assert result.run_requests == []
    # reported, not silently dropped: the partition and its history stay
    assert instance.get_dynamic_partitions(EXPERIMENTS) == ["alpha", "beta"]


def test_new_signal_file_reruns_only_that_experiment(lab: dict) -> None:
    instance = lab["instance"]
    defs = build_definitions(
        configs_dir=str(lab["configs"]), storage_dir=str(lab["root"] / "storage")
    )
    first = input_files_sensor(
        dg.build_sensor_context(instance=instance, resources=_resources(lab))
    )
    assert first.asset_events == []  # first sight sets the baseline
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert baseline.total_requested == 0  # everything is up to date
    cursor = first.cursor
    _signals(1.0).with_columns(pl.col("score") * 0.5 + 0.01).write_parquet(
        lab["data"] / "alpha.parquet"
    )
    second = input_files_sensor(
        dg.build_sensor_context(instance=instance, resources=_resources(lab), cursor=cursor)
    )
    assert [(e.asset_key.to_user_string(), e.partition) for e in second.asset_events] == [
        ("signals_file", "alpha")
    ]
    for event in second.asset_events:
        instance.report_runless_asset_event(event)
    evaluation = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=baseline.cursor
    )
    requested = evaluation.get_requested_partitions(dg.AssetKey("backtest"))
    assert requested == {"alpha"}
    run = materialize_experiment(lab["configs"] / "alpha.yaml", lab["root"] / "storage",
                                 instance=instance)  # fmt: skip
    assert run.success
    assert _backtest_runs(instance, "alpha") == 2
    assert _backtest_runs(instance, "beta") == 1


def test_comparison_rows_equal_each_experiment_metrics(lab: dict) -> None:
    instance = lab["instance"]
    defs = build_definitions(
        configs_dir=str(lab["configs"]), storage_dir=str(lab["root"] / "storage")
    )
    job = defs.resolve_job_def("comparison_job")
    result = job.execute_in_process(instance=instance)
    assert result.success
    table = read_value(lab["root"] / "storage" / "experiment_comparison" / "__all__")
    assert table["experiment"].to_list() == ["alpha", "beta"]
    for row in table.iter_rows(named=True):
        stored = json.loads(
            (lab["root"] / "storage" / "metrics" / f"{row['experiment']}.json").read_text()
        )
        for key in ("total_return", "sharpe", "max_drawdown", "final_equity", "total_costs"):
            assert row[key] == pytest.approx(stored[key], nan_ok=True)
        assert row["n_trades"] == stored["n_trades"]
        assert row["config_hash"] and row["code_version"] and row["run_id"]


def test_definitions_have_schedule_and_automation_sensor() -> None:
    defs = build_definitions(configs_dir=str(REPO_ROOT / "configs"))
    assert defs.resolve_schedule_def("nightly_experiments") is not None
    assert defs.resolve_sensor_def("ml4t_automation") is not None
    assert defs.resolve_sensor_def("input_files_sensor") is not None
