"""The job executor follows ML4T_EXECUTOR; the deploy/ configs validate against it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ml4t_pipeline.defs.executors import (
    EXECUTOR_NAMES,
    ExecutorSelectionError,
    experiment_executor,
    max_concurrent_from_env,
)
from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
OPTIONAL_MODULE = {"k8s": "dagster_k8s", "celery": "dagster_celery"}
VALIDATE_TIMEOUT_S = 180


def _job_with(executor: dg.ExecutorDefinition) -> dg.JobDefinition:
    @dg.op
    def step() -> int:
        return 1

    @dg.job(executor_def=executor)
    def probe() -> None:
        step()

    return probe


def _skip_if_missing(name: str) -> None:
    if name in OPTIONAL_MODULE:
        pytest.importorskip(OPTIONAL_MODULE[name], reason=f"{name} executor package missing")


@pytest.fixture(scope="module")
def validate_runs() -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """``dagster definitions validate`` once per executor name (and a bogus one), in parallel."""
    names = [*EXECUTOR_NAMES, "bogus"]
    procs = {}
    for name in names:
        env = os.environ | {"ML4T_EXECUTOR": name, "ML4T_MAX_CONCURRENT": "2"}
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    results = {}
    try:
        for name, proc in procs.items():
            out, _ = proc.communicate(timeout=VALIDATE_TIMEOUT_S)
            results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
        yield results
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("name", EXECUTOR_NAMES)
def test_executors_definitions_validate_with_each_executor_succeeds(
    name: str, validate_runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    _skip_if_missing(name)
    result = validate_runs[name]
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Validation successful" in result.stdout


def test_executors_definitions_validate_unknown_name_fails_naming_choices(
    validate_runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    result = validate_runs["bogus"]
    assert result.returncode != 0
    assert "ML4T_EXECUTOR='bogus' is not a known executor" in result.stdout
    assert "multiprocess, in_process, k8s, celery" in result.stdout


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "multiprocess"),
        ({"ML4T_EXECUTOR": ""}, "multiprocess"),
        ({"ML4T_EXECUTOR": "multiprocess"}, "multiprocess"),
        ({"ML4T_EXECUTOR": " In_Process "}, "in_process"),
        ({"ML4T_EXECUTOR": "k8s"}, "k8s"),
        ({"ML4T_EXECUTOR": "celery"}, "celery"),
    ],
)
def test_experiment_executor_env_name_selects_executor(env: dict[str, str], expected: str) -> None:
    _skip_if_missing(expected)
    assert experiment_executor(env).name == expected


def test_experiment_executor_unknown_name_raises_with_choices() -> None:
    with pytest.raises(ExecutorSelectionError, match=r"'dask' is not a known executor.*celery"):
        experiment_executor({"ML4T_EXECUTOR": "dask"})


def test_experiment_executor_missing_package_raises_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "dagster_k8s", None)  # import now raises ImportError
    with pytest.raises(ExecutorSelectionError, match=r"needs the 'dagster-k8s' package.*pip"):
        experiment_executor({"ML4T_EXECUTOR": "k8s"})


def test_experiment_executor_max_concurrent_sets_overridable_default() -> None:
    job = _job_with(experiment_executor({"ML4T_MAX_CONCURRENT": "3"}))
    default = dg.validate_run_config(job, {})["execution"]["multiprocess"]
    assert default["max_concurrent"] == 3
    override = {"execution": {"config": {"max_concurrent": 1}}}
    assert dg.validate_run_config(job, override)["execution"]["multiprocess"]["max_concurrent"] == 1


def test_experiment_executor_max_concurrent_unset_uses_cpu_count_default() -> None:
    job = _job_with(experiment_executor({"ML4T_MAX_CONCURRENT": ""}))
    assert dg.validate_run_config(job, {})["execution"]["multiprocess"]["max_concurrent"] is None


@pytest.mark.parametrize("raw", ["0", "-2", "two", "1.5"])
def test_max_concurrent_from_env_not_positive_int_raises_quoting_value(raw: str) -> None:
    with pytest.raises(ExecutorSelectionError, match=f"ML4T_MAX_CONCURRENT='{raw}'"):
        max_concurrent_from_env({"ML4T_MAX_CONCURRENT": raw})


@pytest.mark.parametrize("name", ["k8s", "celery"])
def test_deploy_run_config_validates_against_cluster_executor(name: str) -> None:
    _skip_if_missing(name)
    run_config = yaml.safe_load((DEPLOY / name / "run_config.yaml").read_text())
    job = _job_with(experiment_executor({"ML4T_EXECUTOR": name}))
    given = run_config["execution"]["config"]
    resolved = dg.validate_run_config(job, run_config)["execution"][name]
    assert set(given) <= set(resolved)  # every key accepted by the executor's schema
    scalars = {k: v for k, v in given.items() if not isinstance(v, dict | list)}
    assert {key: resolved[key] for key in scalars} == scalars


def test_deploy_dagster_yaml_loads_queued_run_coordinator(tmp_path: Path) -> None:
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        assert coordinator.get_run_queue_config().max_concurrent_runs == 2
