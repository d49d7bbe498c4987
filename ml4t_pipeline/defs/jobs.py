"""Jobs: one job materializes the whole graph for one experiment partition."""

from __future__ import annotations

import dagster as dg

experiment_job = dg.define_asset_job(
    "experiment_job",
    selection=dg.AssetSelection.all(),
    description="Prepare data, run the backtest and build the report for one experiment.",
)
