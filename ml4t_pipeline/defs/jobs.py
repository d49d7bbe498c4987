"""Jobs: one job materializes the whole graph for one experiment partition."""

from __future__ import annotations

import dagster as dg

from ml4t_pipeline.defs.executors import experiment_executor

EXPERIMENT_SELECTION = (
    dg.AssetSelection.all()
    - dg.AssetSelection.assets("experiment_comparison", "prepared_panel")
    - dg.AssetSelection.groups("validation", "sweeps")
)
"""The assets of one experiment run: data preparation, backtest, attribution, report."""

experiment_job = dg.define_asset_job(
    "experiment_job",
    selection=EXPERIMENT_SELECTION,
    description="Prepare data, run the backtest and build the report for one experiment.",
    executor_def=experiment_executor(),
)

validated_experiment_job = dg.define_asset_job(
    "validated_experiment_job",
    selection=EXPERIMENT_SELECTION | dg.AssetSelection.groups("validation"),
    description="experiment_job plus the cross-framework validation assets (VectorBT, "
    "Backtrader): what `ml4t run --validate` runs.",
    executor_def=experiment_executor(),
)

prepared_panel_job = dg.define_asset_job(
    "prepared_panel_job",
    selection=dg.AssetSelection.assets("prepared_panel"),
    description="Rebuild one month of one experiment's prepared panel (experiment × month).",
)

comparison_job = dg.define_asset_job(
    "comparison_job",
    selection=dg.AssetSelection.assets("experiment_comparison"),
    description="Rebuild the table comparing every experiment's latest metrics and lineage.",
)

validation_job = dg.define_asset_job(
    "validation_job",
    selection=dg.AssetSelection.groups("validation"),
    description="Run the experiment through VectorBT and Backtrader and compare fill for fill "
    "(needs the validation extra; about a minute for Backtrader on the S&P file).",
)
