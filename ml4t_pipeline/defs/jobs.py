"""Jobs: one job materializes the whole graph for one experiment partition."""

from __future__ import annotations

import dagster as dg

from ml4t_pipeline.defs.partitions import experiments_partitions

experiment_job = dg.define_asset_job(
    "experiment_job",
    selection=dg.AssetSelection.all(),
    partitions_def=experiments_partitions,
    description="Prepare data, run the backtest and build the report for one experiment.",
)
