"""Executing one experiment's job in-process: the Dagster side of ``ml4t run`` and of a sweep's
data preparation.

:func:`execute_experiment` runs a job of the code location (``experiment_job`` or
``validated_experiment_job`` from :func:`ml4t_pipeline.definitions.build_definitions`; the
``sweep_results`` asset passes its own code location's ``experiment_job``) for one experiment
file, with that file's folder as configs folder and a given storage folder: the resources are
handed to the job's ``execute_in_process``, so the graph itself is the one the Definitions hold.
It also tags the run (experiment, trigger, code version, config hash, host and process) and,
on a persistent instance, marks this host's runs whose process is gone as failed
(:func:`mark_stale_runs`). :func:`failure_text` and :func:`failure_trace` put a failed run
into words.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from ml4t_pipeline.config import ExperimentConfig
from ml4t_pipeline.defs.io_managers import Ml4tIOManager, release_handed
from ml4t_pipeline.defs.metadata import table_text
from ml4t_pipeline.defs.partitions import EXPERIMENTS, check_config_stem
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.defs.versions import experiment_run_tags
from ml4t_pipeline.lib import output as output_lib
from ml4t_pipeline.lib.keys import check_partition_key

__all__ = [
    "DATA_ASSETS",
    "HOST_TAG",
    "PROCESS_TAG",
    "execute_experiment",
    "failed_checks",
    "failure_text",
    "failure_trace",
    "mark_stale_runs",
    "process_gone",
    "process_identity",
]

DATA_ASSETS = ("prices_raw", "prices", "prices_quarantine", "features", "market_context",
               "signals", "market_panel")  # fmt: skip
"""The data-preparation assets (what ``ml4t validate`` materializes)."""
HOST_TAG = "ml4t/host"
"""Run tag: the host name of the process that ran it (stale-run detection)."""
PROCESS_TAG = "ml4t/process"
"""Run tag: ``host|boot id|pid|start ticks`` of the process that ran it, so a later run can tell
whether that process is gone (the start ticks tell a reused pid apart)."""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """Start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), or ''."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""  # field 22 of stat(5); 3 is fields[0]


def process_identity(pid: int | None = None) -> str:
    """``host|boot id|pid|start ticks`` of a process (default: this one), the ``ml4t/process``
    run tag."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}|{_boot_id()}|{pid}|{_start_ticks(pid)}"


def process_gone(identity: str) -> bool:
    """Whether the process an ``ml4t/process`` tag names has ended.

    False (not known to be gone) for a process on another host or a malformed tag. A process is
    gone when the machine rebooted since (another boot id), no process has its pid, or the pid
    now belongs to a process started at another time (a reused pid).
    """
    parts = identity.split("|")
    if len(parts) != 4 or not parts[2].isdigit():
        return False
    host, boot, pid_text, ticks = parts
    if host != socket.gethostname():
        return False
    if boot and _boot_id() and boot != _boot_id():
        return True
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    now = _start_ticks(pid)
    return bool(ticks and now and ticks != now)


STALE_STATUSES = (
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


def mark_stale_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark this host's ``ml4t`` runs whose process is gone as failed; return their run ids.

    An in-process run killed mid-way (``kill -9``, a crash, a full machine) never reports its
    end, so the instance shows it ``STARTED`` for ever and nothing tells it from a live run. Runs
    tagged ``ml4t/host`` with this host, still not started, starting or started, whose
    ``ml4t/process`` (:func:`process_gone`) has ended are reported failed through
    ``DagsterInstance.report_run_failed`` (a ``RUN_FAILURE`` event with the reason), as
    Dagster's run monitoring does for runs whose worker died. Called by
    :func:`materialize_experiment` before each run on a persistent instance.
    """
    host = socket.gethostname()
    stale = []
    runs = instance.get_runs(
        filters=dg.RunsFilter(statuses=list(STALE_STATUSES), tags={HOST_TAG: host})
    )
    for run in runs:
        identity = run.tags.get(PROCESS_TAG, "")
        if not process_gone(identity):
            continue
        pid = identity.split("|")[2]
        instance.report_run_failed(
            run,
            message=f"marked failed by ml4t: the process that ran it (pid {pid} on {host}) "
            "ended without reporting the run's end (killed or crashed)",
        )
        stale.append(run.run_id)
    return stale


def _metadata_text(value: Any) -> Any:
    """A metadata value as plain data; tables (offending rows) as markdown text."""
    if isinstance(value, dg.TableMetadataValue):
        return table_text(value)
    return getattr(value, "value", value)


def failed_checks(result: dg.ExecuteInProcessResult) -> list[dict[str, Any]]:
    """Every failed asset check in a run, with its metadata rendered as text."""
    out = []
    for event in result.get_asset_check_evaluations():
        if event.passed:
            continue
        out.append(
            {
                "asset": event.asset_key.to_user_string(),
                "check": event.check_name,
                "metadata": {k: _metadata_text(v) for k, v in event.metadata.items()},
            }
        )
    return out


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """The failed checks (with their offending rows) and failed steps of a run, as text."""
    lines = []
    for check in failed_checks(result):
        lines.append(f"FAILED check {check['asset']}:{check['check']}")
        for name, value in check["metadata"].items():
            text = value if isinstance(value, str) else output_lib.dumps_strict(value, indent=None)
            lines.append(f"  {name}:\n    " + str(text).replace("\n", "\n    "))
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            err = event.step_failure_data.error
            cause = err.cause or err
            lines.append(f"FAILED step {event.step_key}: {cause.message.strip()}")
    return "\n".join(lines)


def failure_trace(result: dg.ExecuteInProcessResult) -> str:
    """Every failed step's full error with its Python stack traces (causes included), as text.

    What Dagster's console log prints on a failure; ``ml4t`` shows it with ``--verbose`` and
    keeps it in the failure log (:func:`error_log_path`).
    """
    parts = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            error = event.step_failure_data.error.to_string().rstrip()
            parts.append(f"--- step {event.step_key} failed ---\n{error}")
    return "\n\n".join(parts)


def _instance() -> dg.DagsterInstance:
    # imported here: Dagster's storage modules (SQLAlchemy, Alembic) only for a run
    from ml4t_pipeline.defs.instance import run_instance

    return run_instance()


def execute_experiment(
    job: dg.JobDefinition,
    config_path: Path | ExperimentConfig,
    storage_dir: Path,
    *,
    selection: Sequence[str] | None = None,
    instance: dg.DagsterInstance | None = None,
    published_dir: Path | None = None,
    tags: dict[str, str] | None = None,
    trigger: str = "python",
    config_hash: str | None = None,
) -> dg.ExecuteInProcessResult:
    """Execute ``job`` (or its assets ``selection``) for one experiment in-process.

    ``config_path`` is the experiment's file, or its validated config object (the Python API's
    configs built in code): that is handed to the run as it is (its partition key is its
    ``name``), no file is written.

    ``job`` is a job of the code location (``experiment_job``, ``validated_experiment_job``):
    the graph is the one the Definitions hold; only the resources are this run's. The
    experiment's partition key is the file stem; its folder becomes the configs folder
    (:class:`~ml4t_pipeline.defs.resources.ExperimentsResource`). Values are stored under
    ``storage_dir`` by :class:`~ml4t_pipeline.defs.io_managers.Ml4tIOManager`.
    With ``DAGSTER_HOME`` set the run is recorded in that instance, otherwise in an ephemeral one
    (:func:`~ml4t_pipeline.defs.instance.ephemeral_instance`);
    on a persistent instance this host's runs whose process is gone are marked failed first
    (:func:`mark_stale_runs`), and the run is tagged with this process (``ml4t/host``,
    ``ml4t/process``). ``published_dir``: the folder ``storage_dir`` is moved to after the run;
    the paths recorded in the run's metadata name it instead of ``storage_dir``. The run is also
    tagged with :func:`~ml4t_pipeline.defs.versions.experiment_run_tags` (experiment,
    ``trigger``, code version, ``config_hash``) and ``tags``. Dagster's console log is silenced
    (``CRITICAL``): the caller reports failures (:func:`failure_text`, :func:`failure_trace`).
    Outputs are not kept in memory once stored (``Ml4tIOManager.release_outputs``): the
    result's events and metadata are there, ``output_for_node`` is not. Stored tables are
    handed to the run's data-preparation steps (:data:`DATA_ASSETS`) in memory
    (``Ml4tIOManager.hand_off_to``: the frame a read would give, without reading the files
    again) and dropped once the last of them loaded it, or when the run ends.

    Raises
    ------
    ml4t_pipeline.defs.partitions.UnsafePartitionKeyError
        The file stem is not a safe partition key; nothing is registered.
    """
    if isinstance(config_path, ExperimentConfig):
        key = check_partition_key(config_path.name, what="experiment name")
        experiments = ExperimentsResource(
            configs_dir=".", inline={key: config_path.model_dump_json(by_alias=True)}
        )
    else:
        key = check_config_stem(config_path)
        experiments = ExperimentsResource(configs_dir=str(config_path.parent.resolve()))
    instance = instance or _instance()
    if not instance.is_ephemeral:
        mark_stale_runs(instance)
    if not instance.has_dynamic_partition(EXPERIMENTS, key):
        instance.add_dynamic_partitions(EXPERIMENTS, [key])
    if selection:
        # a subset job first: execute_in_process(asset_selection=...) refuses run resources
        job = job.get_subset(asset_selection={dg.AssetKey(name) for name in selection})
    base_dir = str(storage_dir.resolve())
    try:
        return job.execute_in_process(
            partition_key=key,
            resources={
                "experiments": experiments,
                "io_manager": Ml4tIOManager(
                    base_dir=base_dir,
                    published_dir=None if published_dir is None else str(published_dir.resolve()),
                    hand_off_to=list(DATA_ASSETS),
                    release_outputs=True,
                ),
            },
            instance=instance,
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            tags=experiment_run_tags(key, trigger=trigger, config_hash=config_hash)
            | {HOST_TAG: socket.gethostname(), PROCESS_TAG: process_identity()}
            | dict(tags or {}),
            raise_on_error=False,
        )
    finally:
        release_handed(base_dir)
