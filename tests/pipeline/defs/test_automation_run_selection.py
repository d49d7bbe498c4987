"""Runs that the configs sensor and the nightly schedule launch record their asset selection.

Dagster's ``any_deps_updated`` ignores a parent's update only when the run that made it also
targeted the asset being evaluated (``executed_with_root_target``, read from the run's
``asset_selection``). A whole-job run without a recorded selection counts as "some other run":
measured under ``dagster dev``, a sensor-launched ``experiment_job`` run of ``demo`` was followed
by automatic reruns of ``metrics`` and then ``performance_report`` for ``demo``. Each request
now names the job's assets.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from ml4t_pipeline.definitions import build_definitions
from ml4t_pipeline.defs.partitions import EXPERIMENTS
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.defs.schedules import nightly_experiments
from ml4t_pipeline.defs.sensors import experiment_asset_keys, experiment_configs_sensor
from tests.conftest import REPO_ROOT


def _job_asset_keys(defs: dg.Definitions) -> list[dg.AssetKey]:
    return sorted(defs.resolve_job_def("experiment_job").asset_layer.executable_asset_keys)


def test_configs_sensor_run_request_selects_every_experiment_job_asset(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(REPO_ROOT / "configs" / "demo.yaml", configs)
    defs = build_definitions(configs_dir=str(configs), storage_dir=str(tmp_path / "storage"))
    # entered and exited: a context left open pins its instance as Dagster's current
    # defs-state storage, and later definition loads in this process would find it dead
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(
            instance=instance,
            resources={"experiments": ExperimentsResource(configs_dir=str(configs))},
            definitions=defs,
        ) as context,
    ):
        result = experiment_configs_sensor(context)
    (request,) = result.run_requests
    assert request.partition_key == "demo"
    assert request.asset_selection == _job_asset_keys(defs)
    names = {key.to_user_string() for key in request.asset_selection}
    assert {"prices", "signals", "backtest", "metrics", "performance_report"} <= names
    assert not names & {"experiment_comparison", "prepared_panel"}


def test_nightly_schedule_run_requests_select_every_experiment_job_asset(tmp_path: Path) -> None:
    defs = build_definitions(configs_dir=str(tmp_path), storage_dir=str(tmp_path / "storage"))
    repository = defs.get_repository_def()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(EXPERIMENTS, ["a", "b"])
        with dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 12, 7, 11, tzinfo=UTC),
            repository_def=repository,
        ) as context:
            requests = nightly_experiments(context)
    assert [r.partition_key for r in requests] == ["a", "b"]
    assert all(r.asset_selection == _job_asset_keys(defs) for r in requests)


def test_experiment_asset_keys_without_repository_is_none() -> None:
    assert experiment_asset_keys(None) is None
