"""Sensors: keep the experiment partitions in sync with the configs folder."""

import dagster as dg

from ml4t_pipeline.defs.jobs import experiment_job
from ml4t_pipeline.defs.partitions import EXPERIMENTS
from ml4t_pipeline.defs.resources import ExperimentsResource


@dg.sensor(
    job=experiment_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a partition (and runs it) for every new experiment YAML in the configs "
    "folder; reports files that were removed instead of silently keeping them.",
)
def experiment_configs_sensor(
    context: dg.SensorEvaluationContext, experiments: ExperimentsResource
) -> dg.SensorResult:
    """Sync dynamic partitions with ``configs/*.yaml`` and launch runs for new experiments."""
    on_disk = set(experiments.experiment_keys())
    known = set(context.instance.get_dynamic_partitions(EXPERIMENTS))
    added = sorted(on_disk - known)
    removed = sorted(known - on_disk)
    if removed:
        context.log.warning(
            f"experiment configs removed from {experiments.configs_dir}: {removed}; their "
            "partitions and materializations are kept for history"
        )
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=key, run_key=f"new-{key}") for key in added],
        dynamic_partitions_requests=[
            dg.AddDynamicPartitionsRequest(partitions_def_name=EXPERIMENTS, partition_keys=added)
        ]
        if added
        else [],
    )
