"""Schedules: a nightly rerun of every experiment, for users whose models update overnight."""

import dagster as dg

from ml4t_pipeline.defs.jobs import experiment_job
from ml4t_pipeline.defs.partitions import EXPERIMENTS
from ml4t_pipeline.defs.sensors import experiment_asset_keys
from ml4t_pipeline.defs.versions import experiment_run_tags


@dg.schedule(
    cron_schedule="0 6 * * 1-5",
    execution_timezone="America/New_York",
    job=experiment_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Reruns every experiment at 06:00 New York on weekdays (turn on in the UI).",
)
def nightly_experiments(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    """One run request per experiment partition, keyed by the scheduled date."""
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    selection = experiment_asset_keys(context.repository_def)  # see there: no duplicate reruns
    return [
        dg.RunRequest(
            partition_key=key,
            run_key=f"nightly-{day}-{key}",
            tags=experiment_run_tags(key, trigger="schedule"),
            asset_selection=selection,
        )
        for key in context.instance.get_dynamic_partitions(EXPERIMENTS)
    ]
