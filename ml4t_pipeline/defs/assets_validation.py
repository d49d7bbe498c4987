"""Cross-framework validation assets: VectorBT and Backtrader run the experiment's strategy.

The frameworks run what they can express of the experiment — top-N by the strategy's signal,
rebalanced every bar, equal weight, a fixed-percent stop-loss, percentage commission, next-open
fills — on the symbols with a bar at every timestamp (rectangular matrices). Our engine runs the
same specification on the same universe, and ``cross_framework_validation`` compares the three
fill for fill. Parts of the experiment a framework cannot express are listed on every
materialization, never silently dropped. These assets need the ``validation`` extra and are
materialized on request (job ``validation_job`` or ``ml4t run --validate``), not automatically:
Backtrader alone takes about a minute on the S&P file.

The experiment's parts are also mapped onto the parity catalogue
(:mod:`ml4t_pipeline.lib.crossval.scenarios`, table in ``docs/reference/parity.md``):
``cross_framework_validation`` reports which catalogue scenario's semantics this comparison
ran (``topn_stop``, plus ``commission_percent`` when the experiment pays a percentage
commission) and, for every other feature of the experiment, the scenario that checks it and
whether each framework's own API can express it.
"""

from typing import Any

import dagster as dg
import polars as pl

from ml4t_pipeline.config import ExperimentConfig
from ml4t_pipeline.defs.metadata import table_value
from ml4t_pipeline.defs.partitions import experiment_check_spec, experiments_partitions
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.lib.crossval.compare import FrameworkRun, compare_runs, run_ml4t
from ml4t_pipeline.lib.crossval.reference import ReferenceSpec, inputs_from_panel
from ml4t_pipeline.lib.crossval.scenarios import experiment_features, feature_coverage
from ml4t_pipeline.lib.experiment import restrict_to_window

GROUP = "validation"


def reference_spec(cfg: ExperimentConfig) -> tuple[ReferenceSpec, list[str]]:
    """The framework-expressible part of an experiment, and what could not be expressed.

    Returns the :class:`ReferenceSpec` (n, weight, stop, commission, cash) and a list of
    human-readable notes naming each config part the frameworks do not run.
    """
    notes: list[str] = []
    strategy = cfg.strategy
    if strategy.type != "TopN":
        raise ValueError(f"cross-framework validation supports strategy TopN, not {strategy.type}")
    if strategy.rebalance_every != 1:
        notes.append(f"strategy.rebalance_every={strategy.rebalance_every} (frameworks: every bar)")
    stop_pct = None
    for rule in cfg.risk_rules:
        if rule["type"] == "PriceBasedStopLoss" and stop_pct is None:
            stop_pct = float(rule["stop_pct"])
        else:
            notes.append(f"risk rule {rule['type']} (not expressed)")
    if stop_pct is None:
        raise ValueError("cross-framework validation needs a PriceBasedStopLoss rule")
    commission = cfg.execution.commission
    rate = 0.0
    if commission.get("type") in ("Percentage", "PercentageCommission"):
        rate = float(commission.get("rate", 0.0))
    elif commission.get("type") not in ("None", "NoCommission"):
        notes.append(f"commission {commission} (frameworks: none)")
    if cfg.execution.slippage.get("type") not in ("None", "NoSlippage"):
        notes.append(f"slippage {cfg.execution.slippage} (not expressed)")
    if cfg.execution.fill != "next_open":
        notes.append(f"execution.fill={cfg.execution.fill} (frameworks: next_open)")
    if cfg.execution.fractional_shares or cfg.execution.allow_short:
        notes.append("fractional shares / shorting (frameworks: whole shares, long only)")
    spec = ReferenceSpec(
        n=strategy.n,
        weight=strategy.weight or 1.0 / strategy.n,
        stop_pct=stop_pct,
        commission_rate=rate,
        initial_cash=cfg.execution.initial_cash,
    )
    return spec, notes


def catalogue_scenarios(cfg: ExperimentConfig) -> tuple[list[str], list[dict[str, Any]]]:
    """The catalogue scenarios this comparison runs, and the coverage of every feature.

    Returns
    -------
    (list of str, list of dict)
        The scenario names whose semantics the three runs of this asset exercise (``topn_stop``
        and, with a percentage commission, ``commission_percent``), and
        :func:`~ml4t_pipeline.lib.crossval.scenarios.feature_coverage` of the experiment's
        features, each row with ``run_here`` (bool) added.
    """
    execution = cfg.execution
    features = experiment_features(
        strategy=cfg.strategy.type,
        rules=[str(rule["type"]) for rule in cfg.risk_rules],
        commission=execution.commission.get("type"),
        slippage=execution.slippage.get("type"),
        fill=execution.fill,
        allow_short=execution.allow_short,
        volume_cap=execution.max_volume_participation is not None,
    )
    run_here = ["topn_stop"]
    if execution.commission.get("type") in ("Percentage", "PercentageCommission"):
        run_here.append("commission_percent")
    coverage = feature_coverage(features)
    for row in coverage:
        row["run_here"] = row["scenario"] in run_here or row["feature"] == "stop_loss"
    return run_here, coverage


def _run_tables(run: FrameworkRun) -> dict[str, pl.DataFrame]:
    summary = pl.DataFrame(
        {
            "framework": [run.framework],
            "n_fills": [run.n_fills],
            "n_closed_trades": [run.n_closed_trades],
            "final_equity": [run.final_equity],
            "n_rejected": [run.n_rejected],
            "run_seconds": [run.run_seconds],
        }
    )
    return {"fills": run.fills, "summary": summary}


def _as_run(framework: str, tables: dict[str, pl.DataFrame]) -> FrameworkRun:
    row = tables["summary"].row(0, named=True)
    return FrameworkRun(
        framework=framework,
        fills=tables["fills"],
        final_equity=float(row["final_equity"]),
        n_closed_trades=int(row["n_closed_trades"]),
        run_seconds=float(row["run_seconds"]),
        n_rejected=int(row["n_rejected"]),
    )


def _framework_asset(framework: str) -> Any:
    @dg.asset(
        name=f"{framework}_backtest",
        partitions_def=experiments_partitions,
        group_name=GROUP,
        kinds={framework, "polars"},
        description=f"The experiment's strategy run through {framework} on the symbols with a "
        "complete history (needs the `validation` extra).",
    )
    def _asset(
        context: dg.AssetExecutionContext,
        experiments: ExperimentsResource,
        market_panel: pl.DataFrame,
    ) -> dg.Output[dict[str, pl.DataFrame]]:
        cfg = experiments.load(context.partition_key)
        spec, notes = reference_spec(cfg)
        inputs, excluded = inputs_from_panel(
            restrict_to_window(market_panel, cfg), cfg.strategy.signal
        )
        if framework == "vectorbt":
            from ml4t_pipeline.lib.crossval.vectorbt_run import run_vectorbt

            run = run_vectorbt(inputs, spec)
        else:
            from ml4t_pipeline.lib.crossval.backtrader_run import run_backtrader

            run = run_backtrader(inputs, spec)
        meta = {
            "n_fills": dg.MetadataValue.int(run.n_fills),
            "n_closed_trades": dg.MetadataValue.int(run.n_closed_trades),
            "final_equity": dg.MetadataValue.float(run.final_equity),
            "run_seconds": dg.MetadataValue.float(run.run_seconds),
            "universe": dg.MetadataValue.int(len(inputs.symbols)),
            "symbols_without_complete_history": dg.MetadataValue.json(excluded),
            "not_expressed": dg.MetadataValue.json(notes),
        }
        return dg.Output(_run_tables(run), metadata=meta)

    return _asset


vectorbt_backtest = _framework_asset("vectorbt")
backtrader_backtest = _framework_asset("backtrader")


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"polars"},
    check_specs=[
        experiment_check_spec(
            "engine_matches_frameworks",
            asset="cross_framework_validation",
            description="Our engine's fills equal VectorBT's and Backtrader's: ERROR on any "
            "fill difference or an equity gap above $0.01 when the experiment declares matched "
            "settings (execution.preset); WARN otherwise.",
        )
    ],
)
def cross_framework_validation(
    context: dg.AssetExecutionContext,
    experiments: ExperimentsResource,
    market_panel: pl.DataFrame,
    vectorbt_backtest: dict[str, pl.DataFrame],
    backtrader_backtest: dict[str, pl.DataFrame],
) -> Any:
    """Fill-level comparison of our engine with VectorBT and Backtrader on the same spec."""
    cfg = experiments.load(context.partition_key)
    spec, notes = reference_spec(cfg)
    inputs, _ = inputs_from_panel(restrict_to_window(market_panel, cfg), cfg.strategy.signal)
    ours = run_ml4t(inputs, spec, **engine_settings(cfg))
    theirs = [_as_run("vectorbt", vectorbt_backtest), _as_run("backtrader", backtrader_backtest)]
    rows, differences, summaries = [], [], []
    for other in theirs:
        cmp = compare_runs(ours, other, price_tol=1e-6)
        fills = cmp.fills
        rows.append(
            {
                "framework": other.framework,
                "n_fills_ours": ours.n_fills,
                "n_fills_theirs": other.n_fills,
                "matched": fills.n_matched,
                "missing": fills.n_missing,
                "extra": fills.n_extra,
                "mismatched": fills.n_mismatched,
                "max_price_diff": fills.max_price_diff,
                "trades_ours": ours.n_closed_trades,
                "trades_theirs": other.n_closed_trades,
                "final_equity_ours": ours.final_equity,
                "final_equity_theirs": other.final_equity,
                "equity_gap": cmp.equity_gap,
            }
        )
        first = fills.first_difference()
        if first.height:
            differences.append(first.with_columns(pl.lit(other.framework).alias("framework")))
        summaries.append(cmp.summary_markdown())
    table = pl.DataFrame(rows).with_columns(pl.lit("topn_stop").alias("scenario"))
    run_here, coverage = catalogue_scenarios(cfg)
    matched_settings = cfg.execution.preset is not None and not notes
    worst_gap = float(table["equity_gap"].abs().max())  # type: ignore[arg-type]
    fill_diffs = int((table["missing"] + table["extra"] + table["mismatched"]).sum())
    agree = fill_diffs == 0 and worst_gap <= 0.01
    yield dg.Output(
        {"summary": table},
        metadata={
            "comparison": table_value(table),
            "summary": dg.MetadataValue.md("\n\n".join(summaries)),
            "not_expressed": dg.MetadataValue.json(notes),
            "preset": dg.MetadataValue.text(str(cfg.execution.preset)),
            "scenarios_matched": dg.MetadataValue.json(run_here if agree else []),
            "scenarios_run": dg.MetadataValue.json(run_here),
            "catalogue_coverage": table_value(pl.DataFrame(coverage)),
        },
    )
    yield dg.AssetCheckResult(
        check_name="engine_matches_frameworks",
        passed=agree,
        severity=dg.AssetCheckSeverity.ERROR if matched_settings else dg.AssetCheckSeverity.WARN,
        metadata={
            "fill_differences": dg.MetadataValue.int(fill_diffs),
            "max_equity_gap": dg.MetadataValue.float(worst_gap),
            "settings_declared_matched": dg.MetadataValue.bool(matched_settings),
        },
    )


def engine_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """Extra ``engine.ExecutionConfig`` fields the experiment's preset selects."""
    from ml4t_pipeline.lib.experiment import preset_fields

    return preset_fields(cfg.execution.preset)
