"""Backtest assets: the engine run and its outputs (trades, portfolio states, metrics, report).

The ``backtest`` asset builds the engine's inputs from the prepared panel and context, runs
:class:`engine.BacktestEngine` with the experiment's strategy, risk rules and execution settings,
and stores every output table. The downstream assets split, check and summarise them.

``trades`` and ``portfolio_states`` compute their blocking checks before they yield their value
and pass the verdict to the IO manager (``checks_verdict_metadata``): a table that fails one is
kept as a rejected candidate and the last table that passed stays current.
"""

import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from ml4t_pipeline.config import ExperimentConfig, resolve_data_path
from ml4t_pipeline.defs.assets_data import skipped_check
from ml4t_pipeline.defs.io_managers import default_storage_dir
from ml4t_pipeline.defs.metadata import (
    frame_metadata,
    metrics_metadata,
    metrics_table,
    pandera_descriptions,
    table_value,
)
from ml4t_pipeline.defs.partitions import (
    RERUN_ON_NEW_INPUTS,
    experiment_check_spec,
    experiments_partitions,
)
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.defs.storage_metadata import asset_checks_verdict
from ml4t_pipeline.defs.versions import module_code_version
from ml4t_pipeline.lib import attribution as attribution_lib
from ml4t_pipeline.lib import reconcile
from ml4t_pipeline.lib import report as report_lib
from ml4t_pipeline.lib import tracking as tracking_lib
from ml4t_pipeline.lib import universe as universe_lib
from ml4t_pipeline.lib.comparison import LINEAGE_FIELDS
from ml4t_pipeline.lib.experiment import (
    PRICE_COLUMNS,
    MonthlyPanel,
    configured_benchmark,
    experiment_metrics,
    experiment_quotes,
    restrict_to_window,
    run_experiment,
    run_experiment_streamed,
    value_columns,
)
from ml4t_pipeline.lib.html_markdown import html_to_markdown
from ml4t_pipeline.lib.lineage import benchmark_content_hash, code_version, frame_content_hash
from ml4t_pipeline.lib.memory import release_free_memory
from ml4t_pipeline.lib.output_schemas import (
    FillsSchema,
    PortfolioStatesSchema,
    TradesSchema,
    validate_output,
)
from ml4t_pipeline.lib.performance import missing_benchmark_bars, strategy_returns
from ml4t_pipeline.lib.universe import IN_UNIVERSE

GROUP = "backtest"
TRADES_PANEL_COLUMNS = ["timestamp", "symbol", "signal_available_at"]
"""Panel columns the ``trades`` timing check reads (projection: not the whole panel)."""
STATES_PANEL_COLUMNS = ["timestamp", "symbol", "close"]
"""Panel columns the ``portfolio_states`` equity reconciliation reads."""
BENCHMARK_PRICE_COLUMNS = ["timestamp", "symbol", "close"]
"""Prices columns the equal-weight benchmark of ``metrics`` and ``performance_report`` reads
(:func:`~ml4t_pipeline.lib.performance.equal_weight_benchmark`)."""


def _schema_check(name: str, frame: pl.DataFrame, model: Any) -> dg.AssetCheckResult:
    failures = validate_output(frame, model)
    return dg.AssetCheckResult(
        check_name=name,
        passed=failures.height == 0,
        metadata={
            "n_failures": dg.MetadataValue.int(failures.height),
            "first_failures": table_value(failures, 20),
        },
    )


def _offenders_check(name: str, offenders: pl.DataFrame, label: str) -> dg.AssetCheckResult:
    """A check that passes when ``offenders`` is empty; its count and first 20 rows as metadata."""
    return dg.AssetCheckResult(
        check_name=name,
        passed=offenders.height == 0,
        metadata={
            "n_violations": dg.MetadataValue.int(offenders.height),
            label: table_value(offenders, 20),
        },
    )


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"numpy"},
    automation_condition=RERUN_ON_NEW_INPUTS,
    ins={
        "market_panel": dg.AssetIn(metadata={"lazy": True}),
        # only the column names are read (the panel holds the values): a scan, not 64 MB of rows
        "features": dg.AssetIn(metadata={"lazy": True}),
    },
)
def backtest(
    context: dg.AssetExecutionContext,
    experiments: ExperimentsResource,
    market_panel: pl.LazyFrame,
    market_context: pl.DataFrame,
    signals: pl.DataFrame,
    features: pl.LazyFrame,
) -> dg.Output[dict[str, pl.DataFrame]]:
    """Run the event-driven engine; store its trades, portfolio states, fills and rejections.

    The panel arrives as a lazy scan of its stored months: ``data.stream: whole`` (default)
    collects it, ``data.stream: monthly`` hands it to the engine one month at a time
    (:class:`MonthlyPanel`). ``data.quotes`` adds the prices file's bid/ask to every bar.
    """
    cfg = experiments.load(context.partition_key)
    quotes = experiment_quotes(cfg, experiments.root())
    indicators = value_columns(features.head(0).collect())
    if cfg.data.universe is not None:  # the in_universe flag, for on_exit_universe rules
        indicators = [*indicators, IN_UNIVERSE]
    columns = (value_columns(signals), indicators)
    if cfg.data.stream == "monthly":
        chunks = MonthlyPanel(market_panel, quotes)
        result = run_experiment_streamed(cfg, chunks, market_context, *columns)
        prices_version, bar_events = chunks.prices_version(), chunks.bar_events
    else:
        panel = market_panel.collect()
        result = run_experiment(
            cfg, panel, market_context, *columns, quotes=quotes, data_root=experiments.root()
        )
        prices_version = frame_content_hash(panel.select(PRICE_COLUMNS))
        bar_events = panel.height
    release_free_memory()  # the engine run's arrays (~100 MB on the S&P file)
    tables = {
        "trades": result.trades,
        "portfolio_states": result.portfolio_states,
        "fills": result.fills,
        "rejections": result.rejections,
    }
    if cfg.data.corporate_actions is not None and cfg.data.adjustment == "raw":
        # the events the engine applied on raw prices
        tables["corporate_actions"] = result.corporate_actions
    meta: dict[str, Any] = {
        "config_hash": dg.MetadataValue.text(cfg.config_hash()),
        "code_version": dg.MetadataValue.text(code_version()),
        "signals_version": dg.MetadataValue.text(frame_content_hash(signals)),
        "prices_version": dg.MetadataValue.text(prices_version),
        "n_fills": dg.MetadataValue.int(result.fills.height),
        "n_trades": dg.MetadataValue.int(result.trades.height),
        "n_rejections": dg.MetadataValue.int(result.rejections.height),
        "bar_events": dg.MetadataValue.int(bar_events),
        "stream": dg.MetadataValue.text(cfg.data.stream),
    }
    return dg.Output(tables, metadata=meta)


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"polars"},
    automation_condition=RERUN_ON_NEW_INPUTS,
    check_specs=[
        experiment_check_spec(
            "trades_entered_after_signal_available",
            asset="trades",
            blocking=True,
            description="Every trade's entry fill and decision bar are at or after the "
            "available_at of the signal the strategy acted on.",
        ),
        experiment_check_spec(
            "entries_inside_universe",
            asset="trades",
            blocking=True,
            description="With data.universe: every trade's entry was decided on a bar where "
            "its symbol was an index member (looked up again in the membership table by the "
            "decision bar's New York date); offending trades are named. Skipped without it.",
        ),
        experiment_check_spec(
            "trades_match_schema",
            asset="trades",
            blocking=True,
            description="Trades pass TradesSchema: unique ids, positive prices and quantities, "
            "non-negative costs, exit at or after entry after decision.",
        ),
    ],
    ins={"market_panel": dg.AssetIn(metadata={"columns": TRADES_PANEL_COLUMNS})},
)
def trades(
    context: dg.AssetExecutionContext,
    experiments: ExperimentsResource,
    backtest: dict[str, pl.DataFrame],
    market_panel: pl.DataFrame,
    signals: pl.DataFrame,
) -> Iterator[Any]:
    """One row per round trip (entry/exit time and price, costs, exit_reason, P&L, MFE/MAE).

    The check looks up the availability of the column the strategy ranks by: a model score's
    ``available_at``, or, for an indicator computed from prices (e.g. ``ret_20``), the close
    of its own bar.
    """
    cfg = experiments.load(context.partition_key)
    frame = backtest["trades"]
    lookup = market_panel
    if cfg.strategy.signal not in value_columns(signals):
        lookup = market_panel.with_columns(pl.col("timestamp").alias("signal_available_at"))
    late = reconcile.entries_before_signal_available(frame, lookup)
    lineage = {
        "config_hash": dg.MetadataValue.text(cfg.config_hash()),
        "signals_version": dg.MetadataValue.text(frame_content_hash(signals)),
        "code_version": dg.MetadataValue.text(code_version()),
    }
    results = [
        _schema_check("trades_match_schema", frame, TradesSchema),
        _offenders_check("trades_entered_after_signal_available", late, "first_offending_rows"),
        _universe_check(cfg, frame, experiments.root()),
    ]
    meta = frame_metadata(frame, pandera_descriptions(TradesSchema)) | lineage
    yield dg.Output(frame, metadata=meta | asset_checks_verdict(context, results))
    yield from results


def _universe_check(cfg: ExperimentConfig, trades: pl.DataFrame, root: Any) -> dg.AssetCheckResult:
    spec = cfg.data.universe
    if spec is None:
        return skipped_check("entries_inside_universe", "no data.universe configured")
    membership = universe_lib.load_membership(
        resolve_data_path(spec.membership, data_root=root, field="data.universe.membership"),
        spec.renames,
    )
    outside = universe_lib.entries_outside_universe(trades, membership)
    return _offenders_check("entries_inside_universe", outside, "first_offending_rows")


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"polars"},
    automation_condition=RERUN_ON_NEW_INPUTS,
    check_specs=[
        experiment_check_spec(
            "equity_equals_cash_plus_marked_positions",
            asset="portfolio_states",
            blocking=True,
            description="At every bar, equity = cash + Σ quantity × close, with positions "
            "rebuilt independently from the fills and closes taken from the panel.",
        ),
        experiment_check_spec(
            "portfolio_states_match_schema",
            asset="portfolio_states",
            blocking=True,
            description="Portfolio states pass PortfolioStatesSchema (one row per bar, "
            "drawdown ≤ 0, equity = cash + positions value).",
        ),
        experiment_check_spec(
            "fills_match_schema",
            asset="portfolio_states",
            blocking=True,
            description="The fills the states were rebuilt from pass FillsSchema (signed "
            "quantities, positive prices, non-negative commission and slippage).",
        ),
    ],
    ins={"market_panel": dg.AssetIn(metadata={"columns": STATES_PANEL_COLUMNS})},
)
def portfolio_states(
    context: dg.AssetExecutionContext,
    experiments: ExperimentsResource,
    backtest: dict[str, pl.DataFrame],
    market_panel: pl.DataFrame,
) -> Iterator[Any]:
    """One row per bar: equity, cash, positions value, leverage, positions, return, drawdown."""
    cfg = experiments.load(context.partition_key)
    frame = backtest["portfolio_states"]
    panel = restrict_to_window(market_panel, cfg)  # the engine ran the window's bars only
    bad = reconcile.equity_mismatches(
        frame,
        backtest["fills"],
        panel,
        initial_cash=cfg.execution.initial_cash,
        corporate_actions=backtest.get("corporate_actions"),
    )
    results = [
        _schema_check("portfolio_states_match_schema", frame, PortfolioStatesSchema),
        _schema_check("fills_match_schema", backtest["fills"], FillsSchema),
        _offenders_check("equity_equals_cash_plus_marked_positions", bad, "first_offending_bars"),
    ]
    meta = frame_metadata(frame, pandera_descriptions(PortfolioStatesSchema))
    yield dg.Output(frame, metadata=meta | asset_checks_verdict(context, results))
    yield from results


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"python"},
    deps=["benchmark_file"],
    automation_condition=RERUN_ON_NEW_INPUTS,
    ins={"prices": dg.AssetIn(metadata={"columns": BENCHMARK_PRICE_COLUMNS})},
)
def metrics(
    context: dg.AssetExecutionContext,
    experiments: ExperimentsResource,
    portfolio_states: pl.DataFrame,
    trades: pl.DataFrame,
    backtest: dict[str, pl.DataFrame],
    prices: pl.DataFrame,
) -> dg.Output[dict[str, Any]]:
    """Headline metrics (total return, CAGR, Sharpe, Sortino, max drawdown, win rate, trades,
    turnover, costs). Formulas: :func:`engine.compute_metrics`; costs are sums over the fills
    in currency units."""
    cfg = experiments.load(context.partition_key)
    bench = configured_benchmark(cfg)
    values = experiment_metrics(cfg, portfolio_states, trades, backtest["fills"], prices, bench)
    # the report's figure (no title: the partition names the experiment), drawn once per run
    png = report_lib.equity_drawdown_png(portfolio_states, title="")
    meta = metrics_metadata(values) | {
        "metrics": metrics_table(values),
        "config_hash": dg.MetadataValue.text(cfg.config_hash()),
        "code_version": dg.MetadataValue.text(code_version()),
        "equity_curve": dg.MetadataValue.md(report_lib.png_markdown(png)),
    }
    if cfg.reporting.benchmark is not None and bench is not None:
        missing = missing_benchmark_bars(
            strategy_returns(portfolio_states, cfg.execution.initial_cash), bench
        )
        meta["benchmark_hash"] = dg.MetadataValue.text(
            benchmark_content_hash(cfg, experiments.root())
        )
        meta["benchmark"] = dg.MetadataValue.text(
            f"{cfg.reporting.benchmark.symbol} ({cfg.reporting.benchmark.path}); "
            f"{missing.height} portfolio bars without a benchmark bar (left out, not filled)"
        )
        if missing.height:
            meta["benchmark_missing_bars_first"] = dg.MetadataValue.text(
                ", ".join(str(t) for t in missing["timestamp"].head(20).to_list())
            )
    return dg.Output(values, metadata=meta)


def _backtest_lineage(context: dg.AssetExecutionContext) -> dict[str, str]:
    """The lineage the ``backtest`` value of this partition was recorded with (prices and
    signals versions...; :data:`~ml4t_pipeline.lib.comparison.LINEAGE_FIELDS`), as text."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("backtest"), asset_partitions=[context.partition_key]
        ),
        limit=1,
    ).records
    if not records or records[0].asset_materialization is None:
        return {}
    metadata = records[0].asset_materialization.metadata
    return {
        name: str(getattr(metadata[name], "value", metadata[name]))
        for name in LINEAGE_FIELDS
        if name in metadata
    }


REPORT_BASE_URL_ENV = "ML4T_REPORT_BASE_URL"
"""Environment variable: the URL under which something serves ``<storage>/performance_report/``
(e.g. ``python -m http.server``); when set, each report materialization links its HTML file."""


def report_url(base_url: str, partition_key: str) -> str:
    """The URL of experiment ``partition_key``'s report file under ``base_url`` (the served
    ``performance_report`` folder, which holds ``<experiment>.html``)."""
    return f"{base_url.rstrip('/')}/{partition_key}.html"


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"html"},
    automation_condition=RERUN_ON_NEW_INPUTS,
    ins={
        "prices": dg.AssetIn(metadata={"columns": BENCHMARK_PRICE_COLUMNS}),
        # a scan: read only for the lineage when the backtest's record has none (the
        # attribution assets computed what else the report would need the signals for)
        "signals": dg.AssetIn(metadata={"lazy": True}),
    },
)
def performance_report(
    context: dg.AssetExecutionContext,
    experiments: ExperimentsResource,
    metrics: dict[str, Any],
    portfolio_states: pl.DataFrame,
    trades: pl.DataFrame,
    signals: pl.LazyFrame,
    prices: pl.DataFrame,
    backtest: dict[str, pl.DataFrame],
    attribution_by_exit_reason: pl.DataFrame,
    attribution_by_signal: dict[str, pl.DataFrame],
    attribution_by_regime: pl.DataFrame,
    cost_attribution: pl.DataFrame,
) -> dg.Output[str]:
    """Self-contained HTML report: lineage, headline metrics, equity against the equal-weight
    benchmark, drawdown, monthly returns, rolling Sharpe, attribution tables, P&L by exit
    reason, MFE/MAE and signal deciles (:func:`ml4t_pipeline.lib.report.build_report`, with
    the experiment's :func:`~ml4t_pipeline.lib.report.report_settings` and the attribution
    assets' tables: attribution is computed once per run). ``ml4t run`` publishes this HTML as
    ``report.html``.

    In the Dagster UI the materialization's ``report`` entry is the whole report as Markdown
    (:func:`~ml4t_pipeline.lib.html_markdown.html_to_markdown`: tables, plots as images), opened
    with "[Show Markdown]"; ``path`` is the stored HTML file, and ``report_url`` links it when
    ``$ML4T_REPORT_BASE_URL`` names a server of the ``performance_report`` folder (a browser
    refuses to open a ``file://`` link from the UI's page)."""
    cfg = experiments.load(context.partition_key)
    lineage = {
        "experiment": cfg.name,
        "config_file": experiments.source(context.partition_key),
    }
    lineage |= _backtest_lineage(context) or {
        "config_hash": cfg.config_hash(),
        "signals_version": frame_content_hash(signals.collect()),
        "code_version": code_version(),
    }
    lineage["run_id"] = context.run.run_id
    lineage["generated_at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    attribution = attribution_lib.from_tables(
        trades,
        by_exit_reason=attribution_by_exit_reason,
        cost_attribution=cost_attribution,
        by_signal=attribution_by_signal,
        by_regime=attribution_by_regime,
    )
    attribution_lib.add_mechanics(attribution, portfolio_states, backtest.get("corporate_actions"))
    html, _ = report_lib.build_report(
        portfolio_states,
        trades,
        metrics=metrics,
        lineage=lineage,
        fills=backtest["fills"],
        prices=prices,
        attribution=attribution,
        **report_lib.report_settings(cfg),
    )
    meta = metrics_metadata(metrics) | {
        "report": dg.MetadataValue.md(html_to_markdown(html)),
        "lineage": dg.MetadataValue.json(lineage),
    }
    if base_url := os.environ.get(REPORT_BASE_URL_ENV, "").strip():
        meta["report_url"] = dg.MetadataValue.url(report_url(base_url, context.partition_key))
    if cfg.tracking.mlflow is not None:
        meta |= _track_in_mlflow(context, cfg, metrics, html, trades, lineage)
    return dg.Output(html, metadata=meta)


def _track_in_mlflow(
    context: dg.AssetExecutionContext,
    cfg: ExperimentConfig,
    metrics: dict[str, Any],
    html: str,
    trades: pl.DataFrame,
    lineage: dict[str, Any],
) -> dict[str, Any]:
    """Log the backtest to MLflow (``tracking.mlflow``); the run's ids as metadata."""
    settings = cfg.tracking.mlflow
    assert settings is not None
    uri = settings.uri or tracking_lib.default_tracking_uri(default_storage_dir())
    key = context.partition_key
    with tempfile.TemporaryDirectory(prefix="ml4t_mlflow_") as tmp:
        report, trades_file = Path(tmp) / "report.html", Path(tmp) / "trades.parquet"
        report.write_text(html, encoding="utf-8")
        trades.write_parquet(trades_file)
        tracked = tracking_lib.log_backtest(
            tracking_uri=uri,
            experiment=settings.experiment or cfg.name,
            run_name=f"{key} {context.run.run_id[:8]}",
            params=cfg.model_dump(mode="json", exclude={"tracking"}),
            metrics=metrics,
            artifacts=[report, trades_file],
            tags={
                "dagster.run_id": context.run.run_id,
                "dagster.partition": key,
                "ml4t.config_hash": str(lineage["config_hash"]),
                "ml4t.code_version": module_code_version("ml4t_pipeline.defs.assets_backtest"),
                "ml4t.git_commit": str(lineage["code_version"]),
                "ml4t.signals_version": str(lineage["signals_version"]),
            },
        )
    context.log.info(f"logged to MLflow: run {tracked.run_id} in {uri}")
    return {
        "mlflow_run_id": dg.MetadataValue.text(tracked.run_id),
        "mlflow_experiment_id": dg.MetadataValue.text(tracked.experiment_id),
        "mlflow_tracking_uri": dg.MetadataValue.text(uri),
        "mlflow_artifacts": dg.MetadataValue.text(tracked.artifact_uri),
    }
