"""Sensors: experiments follow the configs folder; reruns follow new input files.

- ``experiment_configs_sensor`` adds a partition for every new experiment file (YAML or JSON) and
  launches its first run; files that disappear are reported (their history is kept, never
  silently dropped). A file whose stem is not a safe partition key (``partitions.
  check_partition_key``: e.g. ``a b.yaml``, ``.hidden.yaml``) is skipped and named in the log.
- ``input_files_sensor`` hashes each experiment's input files and, when a hash differs from the
  version the experiment's last run read (or last observed), records an observation of
  ``prices_file`` / ``signals_file`` / ... for that experiment with the new data version. The
  downstream assets' automation conditions then rematerialize exactly the affected experiment
  (declarative automation; ``ml4t_automation`` evaluates them).
- ``ml4t_automation`` is the automation-condition sensor, running by default.
- :func:`register_experiments` does what ``experiment_configs_sensor`` does without a running
  daemon (``ml4t register``).
"""

import json
import os

import dagster as dg

from ml4t_pipeline.defs.jobs import EXPERIMENT_SELECTION, experiment_job
from ml4t_pipeline.defs.partitions import EXPERIMENTS, partition_key_problem
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.defs.versions import experiment_run_tags
from ml4t_pipeline.lib.lineage import experiment_input_hashes

DATA_VERSION_TAG = "dagster/data_version"

SENSOR_INTERVAL_ENV = "ML4T_SENSOR_INTERVAL_S"


def sensor_interval_s() -> int:
    """Seconds between two evaluations of each of the three sensors: ``$ML4T_SENSOR_INTERVAL_S``
    (read when the code location loads), default 30.

    Raises
    ------
    ValueError
        If the variable is set to anything but a whole number of seconds >= 1.
    """
    raw = os.environ.get(SENSOR_INTERVAL_ENV, "30")
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"${SENSOR_INTERVAL_ENV}={raw!r}: expected whole seconds >= 1")
    return value


def experiment_asset_keys(
    repository_def: dg.RepositoryDefinition | None,
) -> list[dg.AssetKey] | None:
    """The asset keys ``experiment_job`` materializes, for a run request's ``asset_selection``.

    A run launched without an explicit asset selection records none, and Dagster's automation
    then treats every asset that run updated as updated by a run that did *not* also target its
    downstream assets (``executed_with_root_target`` reads the run's asset selection): after a
    sensor-launched ``experiment_job`` run, ``ml4t_automation`` reran ``metrics`` and then
    ``performance_report`` of the same experiment, work the run had just done. With the
    selection recorded, updates made by the run itself trigger nothing. ``None`` (no selection)
    when the repository is unknown (a sensor context built without definitions).
    """
    if repository_def is None:
        return None
    return sorted(EXPERIMENT_SELECTION.resolve(repository_def.asset_graph))


@dg.sensor(
    job=experiment_job,
    minimum_interval_seconds=sensor_interval_s(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a partition (and runs it) for every new experiment file in the configs "
    "folder; reports files that were removed instead of silently keeping them, and skips file "
    "stems that are not safe partition keys.",
)
def experiment_configs_sensor(
    context: dg.SensorEvaluationContext, experiments: ExperimentsResource
) -> dg.SensorResult:
    """Sync dynamic partitions with the configs folder and launch runs for new experiments."""
    on_disk = set()
    for key in experiments.experiment_keys():
        problem = partition_key_problem(key)
        if problem is None:
            on_disk.add(key)
        else:
            context.log.warning(
                f"experiment config {key!r} in {experiments.configs_dir} skipped: its stem is not "
                f"a safe partition key ({problem}); rename the file"
            )
    known = set(context.instance.get_dynamic_partitions(EXPERIMENTS))
    added = sorted(on_disk - known)
    removed = sorted(known - on_disk)
    if removed:
        context.log.warning(
            f"experiment configs removed from {experiments.configs_dir}: {removed}; their "
            "partitions and materializations are kept for history"
        )
    selection = experiment_asset_keys(context.repository_def) if added else None
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=key,
                run_key=f"new-{key}",
                tags=experiment_run_tags(key, trigger="new_config"),
                asset_selection=selection,
            )
            for key in added
        ],
        dynamic_partitions_requests=[
            dg.AddDynamicPartitionsRequest(partitions_def_name=EXPERIMENTS, partition_keys=added)
        ]
        if added
        else [],
    )


READ_BY: dict[str, tuple[str, str]] = {
    "prices_file": ("prices_raw", "content_hash"),
    "signals_file": ("signals", "content_hash"),
    "features_file": ("features", "content_hash"),
    "context_file": ("market_context", "source_content_hash"),
    "corporate_actions_file": ("prices", "corporate_actions_hash"),
    "membership_file": ("market_panel", "membership_hash"),
    "benchmark_file": ("metrics", "benchmark_hash"),
}
"""Input source asset -> (the asset that reads the file, the metadata key where that asset's
materialization records the content hash of the file it read)."""


def version_read(instance: dg.DagsterInstance, source: str, key: str) -> str | None:
    """The content hash of ``source``'s file as the experiment's latest run read it.

    Read from the latest materialization of the asset that reads the file (:data:`READ_BY`) in
    partition ``key``; ``None`` when that asset was never materialized for the experiment (its
    first run has not read the file yet) or its materialization records no hash (made by code
    older than that metadata).
    """
    asset, field = READ_BY[source]
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    value = records[0].asset_materialization.metadata.get(field)
    return str(value.value) if isinstance(value, dg.TextMetadataValue) else None


@dg.sensor(
    minimum_interval_seconds=sensor_interval_s(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Observes the content hash of every experiment's input files and records a new "
    "data version when one differs from the version the experiment's last run read, so "
    "automation reruns exactly that experiment.",
)
def input_files_sensor(
    context: dg.SensorEvaluationContext, experiments: ExperimentsResource
) -> dg.SensorResult:
    """Record observations of input files whose content differs from what the runs read.

    The cursor holds, per experiment and input, the last version known to the pipeline: the one
    last observed, or, the first time an input is seen, the one its reading asset recorded on
    its latest materialization (:func:`version_read`). A file changed between the experiment's
    run and the sensor's first look at it is therefore observed (and rerun). An input whose
    reading asset was never materialized takes its current version as the baseline (the
    experiment's first run, launched by ``experiment_configs_sensor``, reads the file as it is
    now; a later change is observed, so a first run that failed on a bad file reruns when the
    file is fixed). An experiment whose
    config or input cannot be read this tick keeps its previous cursor entry, so a later tick
    compares against it instead of starting over.
    """
    seen: dict[str, dict[str, str]] = json.loads(context.cursor) if context.cursor else {}
    events: list[dg.AssetObservation] = []
    current: dict[str, dict[str, str]] = {}
    for key in context.instance.get_dynamic_partitions(EXPERIMENTS):
        known = seen.get(key, {})
        try:
            hashes = experiment_input_hashes(experiments.load(key), experiments.root())
        except (FileNotFoundError, ValueError) as exc:
            context.log.warning(f"experiment {key}: inputs not readable: {exc}")
            if key in seen:
                current[key] = known
            continue
        current[key] = {}
        for asset, version in hashes.items():
            # baseline: last observed, else what the latest run read, else (never read by a
            # run yet: the first run reads the file as it is now) the current version
            previous = known.get(asset) or version_read(context.instance, asset, key) or version
            current[key][asset] = version
            if previous != version:
                events.append(
                    dg.AssetObservation(
                        asset_key=asset,
                        partition=key,
                        tags={DATA_VERSION_TAG: version},
                        metadata={"content_hash": version, "previous": previous},
                    )
                )
    return dg.SensorResult(asset_events=events, cursor=json.dumps(current, sort_keys=True))


ml4t_automation = dg.AutomationConditionSensorDefinition(
    "ml4t_automation",
    target=dg.AssetSelection.all(include_sources=True),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=sensor_interval_s(),
    run_tags={"ml4t/trigger": "automation"},
    description="Evaluates the assets' automation conditions (eager reruns on new inputs).",
)


def register_experiments(
    instance: dg.DagsterInstance, configs_dir: str, keys: list[str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """Add experiment partitions for config files, as ``experiment_configs_sensor`` does.

    Parameters
    ----------
    instance : dg.DagsterInstance
        The instance whose dynamic partitions are updated.
    configs_dir : str
        Folder of experiment files (``.yaml``, ``.yml``, ``.json``).
    keys : list of str, optional
        Only these stems (default: every file in ``configs_dir``).

    Returns
    -------
    (added, refused)
        Keys newly added (already known ones are left as they are), and ``{key: reason}`` for
        unsafe stems or keys without a config file (not added).
    """
    resource = ExperimentsResource(configs_dir=configs_dir)
    on_disk = resource.experiment_keys()
    wanted = on_disk if keys is None else keys
    refused: dict[str, str] = {}
    ok: list[str] = []
    for key in wanted:
        problem = partition_key_problem(key)
        if problem is not None:
            refused[key] = f"not a safe partition key ({problem})"
        elif key not in on_disk:
            refused[key] = f"no {key}.yaml, {key}.yml or {key}.json in {configs_dir}"
        else:
            ok.append(key)
    added = [k for k in ok if not instance.has_dynamic_partition(EXPERIMENTS, k)]
    if added:
        instance.add_dynamic_partitions(EXPERIMENTS, added)
    return added, refused
