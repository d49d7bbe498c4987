"""The cross-experiment comparison: one row per experiment, with lineage, and a joint plot."""

from typing import Any

import dagster as dg
import polars as pl

from ml4t_pipeline.defs.metadata import frame_metadata, table_value
from ml4t_pipeline.defs.partitions import EXPERIMENTS, RERUN_ON_NEW_INPUTS
from ml4t_pipeline.lib import comparison
from ml4t_pipeline.lib import report as report_lib


def experiment_lineage(instance: dg.DagsterInstance, key: str) -> dict[str, Any]:
    """Config hash, code version, input versions and run id of an experiment's latest backtest."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("backtest"), asset_partitions=[key]), limit=1
    ).records
    if not records:
        return {}
    event = records[0].event_log_entry
    materialization = event.asset_materialization
    meta = materialization.metadata if materialization else {}
    out = {k: getattr(v, "value", v) for k, v in meta.items() if k in comparison.LINEAGE_FIELDS}
    out["run_id"] = event.run_id
    return out


@dg.asset(
    group_name="comparison",
    kinds={"polars"},
    automation_condition=RERUN_ON_NEW_INPUTS,
    ins={
        "metrics": dg.AssetIn(partition_mapping=dg.AllPartitionMapping()),
        "portfolio_states": dg.AssetIn(partition_mapping=dg.AllPartitionMapping()),
    },
)
def experiment_comparison(
    context: dg.AssetExecutionContext,
    metrics: dict[str, dict[str, Any]],
    portfolio_states: dict[str, pl.DataFrame],
) -> dg.Output[pl.DataFrame]:
    """One row per experiment: total return, CAGR, Sharpe, Sortino, max drawdown, trades,
    turnover, costs, with its config hash, code version, input data versions and run id."""
    lineage = {key: experiment_lineage(context.instance, key) for key in metrics}
    table = comparison.comparison_table(metrics, lineage)
    known = set(context.instance.get_dynamic_partitions(EXPERIMENTS))
    missing = sorted(known - set(metrics))
    png = comparison.equity_curves_png(portfolio_states, title="Equity of every experiment")
    meta = frame_metadata(table) | {
        "comparison": table_value(table, 50),
        "equity_curves": dg.MetadataValue.md(report_lib.png_markdown(png)),
        "experiments_not_materialized": dg.MetadataValue.json(missing),
    }
    return dg.Output(table, metadata=meta)
