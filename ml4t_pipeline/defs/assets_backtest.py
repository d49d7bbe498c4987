"""Backtest assets: the engine run and its outputs (trades, portfolio states, metrics, report).

The ``backtest`` asset builds the engine's inputs from the prepared panel and context, runs
:class:`engine.BacktestEngine` with the experiment's strategy, risk rules and execution settings,
and stores every output table. The downstream assets split, check and summarise them.
"""

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

import engine
from ml4t_pipeline.config import ExperimentConfig, QuotesConfig, build_rule, resolve_data_path
from ml4t_pipeline.defs.assets_attribution import ic_horizon
from ml4t_pipeline.defs.metadata import (
    frame_metadata,
    markdown_table,
    metrics_metadata,
    pandera_descriptions,
)
from ml4t_pipeline.defs.partitions import RERUN_ON_NEW_INPUTS, experiments_partitions
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.lib import io as io_lib
from ml4t_pipeline.lib import performance, reconcile
from ml4t_pipeline.lib import report as report_lib
from ml4t_pipeline.lib.lineage import code_version, frame_content_hash
from ml4t_pipeline.lib.output_schemas import (
    FillsSchema,
    PortfolioStatesSchema,
    TradesSchema,
    validate_output,
)

GROUP = "backtest"
PRICE_COLUMNS = ["timestamp", "symbol", "open", "high", "low", "close", "volume"]
TRADES_PANEL_COLUMNS = ["timestamp", "symbol", "signal_available_at"]
"""Panel columns the ``trades`` timing check reads (projection: not the whole panel)."""
STATES_PANEL_COLUMNS = ["timestamp", "symbol", "close"]
"""Panel columns the ``portfolio_states`` equity reconciliation reads."""
_NON_VALUE_COLUMNS = {"timestamp", "symbol", "available_at", "model_trained_at"}


def value_columns(frame: pl.DataFrame) -> list[str]:
    """Numeric value columns of a signals/features/context table (keys and times excluded)."""
    return [
        name
        for name, dtype in frame.schema.items()
        if name not in _NON_VALUE_COLUMNS and dtype.is_numeric()
    ]


def _schema_check(name: str, frame: pl.DataFrame, model: Any) -> dg.AssetCheckResult:
    failures = validate_output(frame, model)
    return dg.AssetCheckResult(
        check_name=name,
        passed=failures.height == 0,
        metadata={
            "n_failures": dg.MetadataValue.int(failures.height),
            "first_failures": dg.MetadataValue.md(markdown_table(failures, 20)),
        },
    )


def preset_fields(preset: str | None) -> dict[str, Any]:
    """``engine.ExecutionConfig`` fields of a framework preset (empty for None).

    Raises
    ------
    ValueError
        An unknown preset, or an engine without presets.
    """
    if preset is None:
        return {}
    presets: dict[str, dict[str, Any]] = getattr(engine, "EXECUTION_PRESETS", {})
    if preset not in presets:
        raise ValueError(f"execution.preset {preset!r} unknown; known: {sorted(presets)}")
    return dict(presets[preset])


def _engine(cfg: ExperimentConfig, data: Any) -> engine.BacktestEngine:
    rules = [build_rule(spec) for spec in cfg.risk_rules]
    return engine.BacktestEngine(
        data,
        cfg.strategy.build(),
        risk_manager=engine.RiskManager(rules) if rules else None,
        config=cfg.execution.engine_config(),
    )


def run_experiment(
    cfg: ExperimentConfig,
    panel: pl.DataFrame,
    context: pl.DataFrame,
    signal_columns: list[str],
    indicator_columns: list[str],
    quotes: pl.DataFrame | None = None,
) -> engine.BacktestResult:
    """Run the engine for one experiment on prepared frames (no Dagster needed).

    The strategy is :meth:`StrategyConfig.build` (registry or user class), the rules
    :func:`ml4t_pipeline.config.build_rule` (``CompositeRule`` included) and the execution
    settings :meth:`ExecutionConfig.engine_config` (preset, then the explicit settings).

    Parameters
    ----------
    cfg : ExperimentConfig
    panel : pl.DataFrame
        The market panel (prices, indicators, signals), long format. ``bid``/``ask`` columns,
        if present, reach the engine (spread-aware slippage).
    context : pl.DataFrame
        ``timestamp`` plus market-wide value columns.
    signal_columns, indicator_columns : list of str
    quotes : pl.DataFrame, optional
        ``timestamp``, ``symbol``, ``bid``, ``ask`` (:func:`quotes_from_prices_file`), joined
        onto the panel with :func:`attach_quotes`.

    Raises
    ------
    ValueError
        Bad panel or quotes (the offending rows are named), or bad engine settings.
    """
    if quotes is not None:
        panel = attach_quotes(panel, quotes)
    data = engine.MarketData.from_frame(
        panel,
        signal_columns=signal_columns,
        indicator_columns=indicator_columns,
        context=context,
        context_columns=value_columns(context),
    )
    return _engine(cfg, data).run()


def month_starts(panel: pl.LazyFrame) -> list[datetime]:
    """First instants (UTC) of the calendar months that hold a bar of ``panel``, in order."""
    months = (
        panel.select(pl.col("timestamp").dt.truncate("1mo").unique().sort()).collect().to_series()
    )
    return list(months.to_list())


def _next_month(start: datetime) -> datetime:
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


class MonthlyPanel:
    """The prepared panel as monthly chunks for :class:`engine.ChunkedMarketData`.

    Each iteration collects one month of ``panel`` (``timestamp`` in ``[start, next month)``,
    UTC) at a time, so only one month's rows are in memory; ``quotes`` are attached per month.
    While iterating it counts the bars and hashes each month's price columns.

    Parameters
    ----------
    panel : pl.LazyFrame
        The market panel (for instance the stored monthly hive table, scanned lazily).
    quotes : pl.DataFrame, optional
        See :func:`attach_quotes`.
    """

    def __init__(self, panel: pl.LazyFrame, quotes: pl.DataFrame | None = None) -> None:
        self.panel = panel
        self.quotes = quotes
        self.months = month_starts(panel)
        self.bar_events = 0
        self.month_hashes: list[str] = []

    def symbols(self) -> list[str]:
        """Every symbol of the panel, sorted (the engine's fixed universe)."""
        names = self.panel.select(pl.col("symbol").cast(pl.String).unique().sort()).collect()
        return list(names.to_series().to_list())

    def __iter__(self) -> Iterator[pl.DataFrame]:
        self.bar_events, self.month_hashes = 0, []
        for start in self.months:
            ts = pl.col("timestamp")
            chunk = self.panel.filter((ts >= start) & (ts < _next_month(start))).collect()
            chunk = chunk.sort("timestamp", "symbol", maintain_order=True)
            if self.quotes is not None:
                chunk = attach_quotes(chunk, self.quotes)
            self.bar_events += chunk.height
            self.month_hashes.append(frame_content_hash(chunk.select(PRICE_COLUMNS)))
            yield chunk

    def prices_version(self) -> str:
        """SHA-256 (16 hex digits) of the month hashes of the price columns, once iterated."""
        return hashlib.sha256("".join(self.month_hashes).encode()).hexdigest()[:16]


def run_experiment_streamed(
    cfg: ExperimentConfig,
    panel: MonthlyPanel,
    context: pl.DataFrame,
    signal_columns: list[str],
    indicator_columns: list[str],
) -> engine.BacktestResult:
    """:func:`run_experiment` over monthly chunks (``data.stream: monthly``), same results.

    The engine builds one month's arrays at a time (:class:`engine.ChunkedMarketData`); the
    result frames are the same as a run over the whole panel.
    """
    data = engine.ChunkedMarketData(
        panel,
        symbols=panel.symbols(),
        signal_columns=signal_columns,
        indicator_columns=indicator_columns,
        context=context,
        context_columns=value_columns(context),
    )
    return _engine(cfg, data).run()


QUOTE_KEY = ["timestamp", "symbol"]


def quotes_from_prices_file(
    path: Path, quotes: QuotesConfig, bar_length: str | None = None
) -> pl.DataFrame:
    """The bid/ask columns of a prices file, stamped exactly as its prices are.

    The two columns are read with the keys and passed through
    :func:`ml4t_pipeline.lib.io.to_prices_contract` in the place of the OHLCV columns (bid as
    open/high/low, ask as close), so their timestamps get the same conversion (daily date →
    16:00 New York close; intraday bar start + ``bar_length``) and the same refusals.

    Returns
    -------
    pl.DataFrame
        ``timestamp`` (``Datetime[us, UTC]``), ``symbol`` (String), ``bid``, ``ask`` (Float64),
        one row per row of the file, sorted by (timestamp, symbol).

    Raises
    ------
    ValueError
        The columns are missing or not numeric, or the timestamps are refused (as for prices).
    """
    raw = io_lib.read_table(path, columns=[*QUOTE_KEY, quotes.bid, quotes.ask])
    stand_in = raw.select(
        *QUOTE_KEY,
        *[pl.col(quotes.bid).alias(c) for c in ("open", "high", "low")],
        pl.col(quotes.ask).alias("close"),
        pl.lit(0.0).alias("volume"),
    )
    stamped = io_lib.to_prices_contract(
        stand_in, bar_length, source=f"data.quotes ({quotes.bid}/{quotes.ask}) in {path}"
    )
    return stamped.select(*QUOTE_KEY, pl.col("open").alias("bid"), pl.col("close").alias("ask"))


def attach_quotes(panel: pl.DataFrame, quotes: pl.DataFrame) -> pl.DataFrame:
    """Join ``bid``/``ask`` onto every bar of ``panel`` (exact (timestamp, symbol) match).

    Raises
    ------
    ValueError
        ``panel`` already has ``bid``/``ask``; duplicated quote keys; or bars whose quote is
        missing, not finite, non-positive or crossed (``ask < bid``): the count and the first
        rows are named. Nothing is filled or estimated.
    """
    clash = [c for c in ("bid", "ask") if c in panel.columns]
    if clash:
        raise ValueError(f"data.quotes: the panel already has columns {clash}")
    dup = quotes.filter(pl.struct(QUOTE_KEY).is_duplicated())
    if dup.height:
        raise ValueError(
            f"data.quotes: {dup.height} quote rows share a (timestamp, symbol): "
            f"{dup.head(5).to_dicts()}"
        )
    keyed = quotes.with_columns(pl.col("symbol").cast(pl.String))
    joined = (
        panel.with_columns(pl.col("symbol").cast(pl.String).alias("_symbol"))
        .join(
            keyed.rename({"symbol": "_symbol"}),
            on=["timestamp", "_symbol"],
            how="left",
            maintain_order="left",
        )
        .drop("_symbol")
    )
    bid, ask = pl.col("bid"), pl.col("ask")
    valid = (bid.is_finite() & ask.is_finite() & (bid > 0) & (ask >= bid)).fill_null(False)
    bad = joined.filter(~valid)
    if bad.height:
        raise ValueError(
            f"data.quotes: {bad.height} bars have no valid quote (bid and ask finite, ask >= "
            f"bid > 0); the engine would otherwise estimate the spread silently. First rows: "
            f"{bad.select(*QUOTE_KEY, 'bid', 'ask').head(5).to_dicts()}"
        )
    return joined


def experiment_metrics(
    cfg: ExperimentConfig,
    portfolio_states: pl.DataFrame,
    trades: pl.DataFrame,
    fills: pl.DataFrame,
    prices: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """Every headline metric (:func:`ml4t_pipeline.lib.performance.compute_performance`).

    The engine's metrics, costs from the fills (currency), and, when ``prices`` are given, the
    comparison with the equal-weight universe as benchmark (alpha, beta, information ratio).
    """
    benchmark = performance.equal_weight_benchmark(prices) if prices is not None else None
    values: dict[str, Any] = performance.compute_performance(
        portfolio_states,
        trades,
        fills=fills,
        benchmark=benchmark,
        periods_per_year=cfg.reporting.periods_per_year,
        risk_free_rate=cfg.reporting.risk_free_rate,
        initial_cash=cfg.execution.initial_cash,
    )
    return {k: (v if isinstance(v, int) else float(v)) for k, v in values.items()}


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"numpy"},
    automation_condition=RERUN_ON_NEW_INPUTS,
    ins={"market_panel": dg.AssetIn(metadata={"lazy": True})},
)
def backtest(
    context: dg.AssetExecutionContext,
    experiments: ExperimentsResource,
    market_panel: pl.LazyFrame,
    market_context: pl.DataFrame,
    signals: pl.DataFrame,
    features: pl.DataFrame,
) -> dg.Output[dict[str, pl.DataFrame]]:
    """Run the event-driven engine; store its trades, portfolio states, fills and rejections.

    The panel arrives as a lazy scan of its stored months: ``data.stream: whole`` (default)
    collects it, ``data.stream: monthly`` hands it to the engine one month at a time
    (:class:`MonthlyPanel`). ``data.quotes`` adds the prices file's bid/ask to every bar.
    """
    cfg = experiments.load(context.partition_key)
    quotes = None
    if cfg.data.quotes is not None:
        path = resolve_data_path(cfg.data.prices, data_root=experiments.root(), field="data.prices")
        quotes = quotes_from_prices_file(path, cfg.data.quotes, cfg.data.bar_length)
    columns = (value_columns(signals), value_columns(features))
    if cfg.data.stream == "monthly":
        chunks = MonthlyPanel(market_panel, quotes)
        result = run_experiment_streamed(cfg, chunks, market_context, *columns)
        prices_version, bar_events = chunks.prices_version(), chunks.bar_events
    else:
        panel = market_panel.collect()
        result = run_experiment(cfg, panel, market_context, *columns, quotes=quotes)
        prices_version = frame_content_hash(panel.select(PRICE_COLUMNS))
        bar_events = panel.height
    tables = {
        "trades": result.trades,
        "portfolio_states": result.portfolio_states,
        "fills": result.fills,
        "rejections": result.rejections,
    }
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
        dg.AssetCheckSpec(
            "trades_entered_after_signal_available",
            asset="trades",
            blocking=True,
            description="Every trade's entry fill and decision bar are at or after the "
            "available_at of the signal the strategy acted on.",
        ),
        dg.AssetCheckSpec(
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
    yield dg.Output(
        frame, metadata=frame_metadata(frame, pandera_descriptions(TradesSchema)) | lineage
    )
    yield _schema_check("trades_match_schema", frame, TradesSchema)
    yield dg.AssetCheckResult(
        check_name="trades_entered_after_signal_available",
        passed=late.height == 0,
        metadata={
            "n_violations": dg.MetadataValue.int(late.height),
            "first_offending_rows": dg.MetadataValue.md(markdown_table(late, 20)),
        },
    )


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"polars"},
    automation_condition=RERUN_ON_NEW_INPUTS,
    check_specs=[
        dg.AssetCheckSpec(
            "equity_equals_cash_plus_marked_positions",
            asset="portfolio_states",
            blocking=True,
            description="At every bar, equity = cash + Σ quantity × close, with positions "
            "rebuilt independently from the fills and closes taken from the panel.",
        ),
        dg.AssetCheckSpec(
            "portfolio_states_match_schema",
            asset="portfolio_states",
            blocking=True,
            description="Portfolio states pass PortfolioStatesSchema (one row per bar, "
            "drawdown ≤ 0, equity = cash + positions value).",
        ),
        dg.AssetCheckSpec(
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
    bad = reconcile.equity_mismatches(
        frame, backtest["fills"], market_panel, initial_cash=cfg.execution.initial_cash
    )
    descriptions = pandera_descriptions(PortfolioStatesSchema)
    yield dg.Output(frame, metadata=frame_metadata(frame, descriptions))
    yield _schema_check("portfolio_states_match_schema", frame, PortfolioStatesSchema)
    yield _schema_check("fills_match_schema", backtest["fills"], FillsSchema)
    yield dg.AssetCheckResult(
        check_name="equity_equals_cash_plus_marked_positions",
        passed=bad.height == 0,
        metadata={
            "n_violations": dg.MetadataValue.int(bad.height),
            "first_offending_bars": dg.MetadataValue.md(markdown_table(bad, 20)),
        },
    )


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"python"},
    automation_condition=RERUN_ON_NEW_INPUTS,
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
    values = experiment_metrics(cfg, portfolio_states, trades, backtest["fills"], prices)
    png = report_lib.equity_drawdown_png(portfolio_states, title=cfg.name)
    meta = metrics_metadata(values) | {
        "config_hash": dg.MetadataValue.text(cfg.config_hash()),
        "code_version": dg.MetadataValue.text(code_version()),
        "equity_curve": dg.MetadataValue.md(report_lib.png_markdown(png)),
    }
    return dg.Output(values, metadata=meta)


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"html"},
    automation_condition=RERUN_ON_NEW_INPUTS,
)
def performance_report(
    context: dg.AssetExecutionContext,
    experiments: ExperimentsResource,
    metrics: dict[str, Any],
    portfolio_states: pl.DataFrame,
    trades: pl.DataFrame,
    signals: pl.DataFrame,
    prices: pl.DataFrame,
    backtest: dict[str, pl.DataFrame],
) -> dg.Output[str]:
    """Self-contained HTML report: lineage, headline metrics, equity against the equal-weight
    benchmark, drawdown, monthly returns, rolling Sharpe, attribution tables, P&L by exit
    reason, MFE/MAE and signal deciles (``ml4t_pipeline.lib.report``)."""
    cfg = experiments.load(context.partition_key)
    lineage = {
        "experiment": cfg.name,
        "config_hash": cfg.config_hash(),
        "config_file": str(experiments.config_path(context.partition_key)),
        "signals_version": frame_content_hash(signals),
        "code_version": code_version(),
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    analysis = report_lib.analyse_run(
        portfolio_states,
        trades,
        fills=backtest["fills"],
        signals=signals,
        prices=prices,
        periods_per_year=cfg.reporting.periods_per_year,
        risk_free_rate=cfg.reporting.risk_free_rate,
        initial_cash=cfg.execution.initial_cash,
        signal=cfg.strategy.signal if cfg.strategy.signal in value_columns(signals) else "score",
        horizon=ic_horizon(cfg),
    )
    html = report_lib.render_report_html(
        title=cfg.reporting.title or f"ml4t experiment: {cfg.name}",
        metrics=metrics,
        portfolio_states=portfolio_states,
        trades=trades,
        lineage=lineage,
        analysis=analysis,
    )
    png = report_lib.equity_drawdown_png(portfolio_states, title=cfg.name)
    meta = metrics_metadata(metrics) | {
        "equity_and_drawdown": dg.MetadataValue.md(report_lib.png_markdown(png)),
        "lineage": dg.MetadataValue.json(lineage),
    }
    return dg.Output(html, metadata=meta)
