"""The Dagster code location: one ``Definitions`` object (``dagster dev`` reads workspace.yaml)."""

from __future__ import annotations

import dagster as dg

from ml4t_pipeline.defs import (
    assets_attribution,
    assets_backtest,
    assets_comparison,
    assets_data,
    assets_monthly,
    assets_sweep,
    assets_validation,
    sources,
)
from ml4t_pipeline.defs.executors import experiment_executor
from ml4t_pipeline.defs.freshness import with_freshness
from ml4t_pipeline.defs.io_managers import Ml4tIOManager, default_storage_dir
from ml4t_pipeline.defs.jobs import (
    comparison_job,
    experiment_job,
    prepared_panel_job,
    validated_experiment_job,
    validation_job,
)
from ml4t_pipeline.defs.resources import ExperimentsResource, default_configs_dir
from ml4t_pipeline.defs.schedules import nightly_experiments
from ml4t_pipeline.defs.sensors import (
    experiment_configs_sensor,
    input_files_sensor,
    ml4t_automation,
)
from ml4t_pipeline.defs.versions import versioned_assets

ASSET_MODULES = (
    sources,
    assets_data,
    assets_backtest,
    assets_attribution,
    assets_comparison,
    assets_monthly,
    assets_validation,
    assets_sweep,
)


def build_definitions(
    *,
    configs_dir: str | None = None,
    storage_dir: str | None = None,
    published_dir: str | None = None,
) -> dg.Definitions:
    """Build the code location's definitions.

    ``dagster dev`` loads :data:`defs`; ``ml4t run`` (:func:`ml4t_pipeline.runner.
    materialize_experiment`) builds its own with the run's folders and executes its
    ``experiment_job`` (``validated_experiment_job`` with ``--validate``).

    Parameters
    ----------
    configs_dir : str, optional
        Folder of experiment YAML files (default: ``$ML4T_CONFIGS_DIR`` or ``./configs``).
    storage_dir : str, optional
        Where asset values are stored (default: ``$ML4T_STORAGE_DIR`` or ``./.ml4t_storage``).
    published_dir : str, optional
        Where ``storage_dir`` is moved after the run (the IO manager records that path).

    ``signals`` and ``performance_report`` carry a freshness policy
    (:mod:`ml4t_pipeline.defs.freshness`).
    """
    return dg.Definitions(
        assets=with_freshness(versioned_assets(ASSET_MODULES)),
        jobs=[
            experiment_job,
            validated_experiment_job,
            comparison_job,
            validation_job,
            prepared_panel_job,
        ],
        sensors=[
            experiment_configs_sensor,
            input_files_sensor,
            ml4t_automation,
            assets_sweep.sweep_files_sensor,
        ],
        schedules=[nightly_experiments],
        # automatic reruns run as Dagster's implicit asset job: same executor as experiment_job
        executor=experiment_executor(),
        resources={
            "experiments": ExperimentsResource(configs_dir=configs_dir or default_configs_dir()),
            "io_manager": Ml4tIOManager(
                base_dir=storage_dir or default_storage_dir(), published_dir=published_dir
            ),
        },
    )


defs = build_definitions()
