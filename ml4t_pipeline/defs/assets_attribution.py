"""Attribution assets: where a run's net P&L came from — exit rule, signal, regime and costs.

Each asset reads the closed trades (and what else it needs), calls one function of
:mod:`ml4t_pipeline.lib.attribution`, and reports its table as Markdown, the reconciliation line
(the parts sum to the total net P&L of the closed trades) and, where there is one, a plot. The
blocking check ``<asset>_reconciles`` fails when the parts do not add up.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from ml4t_pipeline.defs.metadata import frame_metadata, table_value
from ml4t_pipeline.defs.partitions import (
    RERUN_ON_NEW_INPUTS,
    experiment_check_spec,
    experiments_partitions,
)
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.lib import attribution as attribution_lib
from ml4t_pipeline.lib import plots
from ml4t_pipeline.lib.report import png_markdown

GROUP = "attribution"
_TABLE_ROWS = 30


def _reconciles_spec(asset: str) -> dg.AssetCheckSpec:
    return experiment_check_spec(
        f"{asset}_reconciles",
        asset=asset,
        blocking=True,
        description="The table's parts hold every closed trade and their net P&L sums to the "
        "total net P&L of the closed trades (to 1e-6 relative).",
    )


def _table_metadata(table: pl.DataFrame, result: attribution_lib.Reconciliation) -> dict[str, Any]:
    return frame_metadata(table) | {
        "table": table_value(table, _TABLE_ROWS),
        "reconciliation": dg.MetadataValue.text(attribution_lib.reconciliation_line(result)),
        "total_pnl_net": dg.MetadataValue.float(result.total),
    }


def _check(asset: str, result: attribution_lib.Reconciliation) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=f"{asset}_reconciles",
        asset_key=asset,
        passed=result.ok,
        metadata={
            "parts": dg.MetadataValue.float(result.parts),
            "total": dg.MetadataValue.float(result.total),
            "difference": dg.MetadataValue.float(result.difference),
            "n_parts_trades": dg.MetadataValue.int(result.n_parts_trades),
            "n_trades": dg.MetadataValue.int(result.n_trades),
        },
    )


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"polars"},
    automation_condition=RERUN_ON_NEW_INPUTS,
    check_specs=[_reconciles_spec("attribution_by_exit_reason")],
)
def attribution_by_exit_reason(trades: pl.DataFrame) -> Iterator[Any]:
    """Trades, win rate, mean and total net P&L, holding period and MFE/MAE per exit reason
    (``strategy`` or the risk rule's name), with a TOTAL row."""
    table = attribution_lib.by_exit_reason(trades)
    result = attribution_lib.reconcile(table, trades, "by_exit_reason")
    png = plots.pnl_by_exit_reason_png(table)
    meta = _table_metadata(table, result) | {
        "pnl_by_exit_reason": dg.MetadataValue.md(png_markdown(png, "P&L by exit reason")),
    }
    if trades.height:
        meta["mfe_mae"] = dg.MetadataValue.md(
            png_markdown(plots.mfe_mae_scatter_png(trades), "MFE vs MAE")
        )
    yield dg.Output(table, metadata=meta)
    yield _check("attribution_by_exit_reason", result)


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"polars"},
    automation_condition=RERUN_ON_NEW_INPUTS,
    check_specs=[_reconciles_spec("attribution_by_signal")],
    ins={
        # a scan: one indicator column is read, and only when the strategy ranks by an indicator
        "features": dg.AssetIn(metadata={"lazy": True}),
        # the forward returns need the close only
        "prices": dg.AssetIn(metadata={"columns": ["timestamp", "symbol", "close"]}),
    },
)
def attribution_by_signal(
    context: dg.AssetExecutionContext,
    experiments: ExperimentsResource,
    trades: pl.DataFrame,
    signals: pl.DataFrame,
    prices: pl.DataFrame,
    features: pl.LazyFrame,
) -> Iterator[Any]:
    """P&L and hit rate by decile of the entry signal, and the information coefficient (Spearman
    rank correlation of the score with the realised forward return) per period, with its mean
    and t-statistic. Stored as a folder: ``deciles``, ``information_coefficient``,
    ``ic_summary`` (one row)."""
    cfg = experiments.load(context.partition_key)
    signal = cfg.strategy.signal
    horizon = cfg.ic_horizon()
    if signal not in signals.columns:
        # the strategy ranks by an indicator (e.g. ret_20): known at its own bar's close
        signals = (
            features.select(
                "timestamp", "symbol", signal, pl.col("timestamp").alias("available_at")
            )
            .drop_nulls(signal)
            .collect()
        )
    deciles = attribution_lib.by_signal_decile(trades, f"entry_{signal}")
    result = attribution_lib.reconcile(deciles, trades, "by_signal_decile")
    ic = attribution_lib.information_coefficient(
        attribution_lib.forward_returns(signals, prices, signal=signal, horizon=horizon)
    )
    summary = attribution_lib.ic_summary(ic, horizon)
    value = {
        "deciles": deciles,
        "information_coefficient": ic,
        "ic_summary": pl.DataFrame([summary]),
    }
    meta = _table_metadata(deciles, result) | {
        "signal_deciles": dg.MetadataValue.md(
            png_markdown(plots.signal_decile_png(deciles), "signal deciles")
        ),
        **{
            name: dg.MetadataValue.float(float(v))
            for name, v in summary.items()
            if isinstance(v, float)
        },
        "ic_n_periods": dg.MetadataValue.int(int(summary["n_periods"])),
        "ic_horizon_bars": dg.MetadataValue.int(horizon),
    }
    yield dg.Output(value, metadata=meta)
    yield _check("attribution_by_signal", result)


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"polars"},
    automation_condition=RERUN_ON_NEW_INPUTS,
    check_specs=[_reconciles_spec("attribution_by_regime")],
)
def attribution_by_regime(
    context: dg.AssetExecutionContext,
    experiments: ExperimentsResource,
    trades: pl.DataFrame,
    portfolio_states: pl.DataFrame,
) -> Iterator[Any]:
    """Net P&L and portfolio return by tercile of a market-context variable at entry (``regime``,
    ``vix`` or ``market_vol_20``, the first the run has), with a TOTAL row."""
    cfg = experiments.load(context.partition_key)
    column = attribution_lib.default_regime_column(trades)
    if column is None:
        raise ValueError(
            "no context column for regimes: trades need one of "
            f"{[f'entry_{c}' for c in attribution_lib.REGIME_PREFERENCE]}; "
            f"they have {[c for c in trades.columns if c.startswith('entry_')]}"
        )
    states = portfolio_states if column in portfolio_states.columns else None
    table = attribution_lib.by_regime(
        trades,
        column,
        portfolio_states=states,
        periods_per_year=cfg.reporting.periods_per_year,
    )
    result = attribution_lib.reconcile(table, trades, "by_regime")
    meta = _table_metadata(table, result) | {"regime_column": dg.MetadataValue.text(column)}
    yield dg.Output(table, metadata=meta)
    yield _check("attribution_by_regime", result)


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"polars"},
    automation_condition=RERUN_ON_NEW_INPUTS,
    check_specs=[_reconciles_spec("cost_attribution")],
)
def cost_attribution(trades: pl.DataFrame) -> Iterator[Any]:
    """P&L before costs, slippage, gross P&L, commission and net P&L of the closed trades, per
    exit month and in total."""
    table = attribution_lib.cost_attribution(trades)
    result = attribution_lib.reconcile(table, trades, "cost_attribution")
    total = table.filter(pl.col("month") == attribution_lib.TOTAL).row(0, named=True)
    meta = _table_metadata(table, result) | {
        "pnl_before_costs": dg.MetadataValue.float(float(total["pnl_before_costs"])),
        "commission": dg.MetadataValue.float(float(total["commission"])),
        "slippage": dg.MetadataValue.float(float(total["slippage"])),
    }
    yield dg.Output(table, metadata=meta)
    yield _check("cost_attribution", result)
