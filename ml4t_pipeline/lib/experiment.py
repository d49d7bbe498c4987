"""One experiment's engine run on prepared frames, with no Dagster in sight.

The ``backtest`` asset, ``ml4t run`` (through :mod:`ml4t_pipeline.runner`) and every sweep trial
(:mod:`ml4t_pipeline.lib.sweep.runner`) run the engine through these functions. The module imports
only the engine, polars and the config, so a sweep worker (a Ray actor, a spawned process) starts
without loading Dagster: about 2 s less start-up per worker here.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

import engine
import engine.data
import engine.mechanics
from ml4t_pipeline.config import ExperimentConfig, QuotesConfig, build_rule, resolve_data_path
from ml4t_pipeline.lib import io as io_lib
from ml4t_pipeline.lib import performance
from ml4t_pipeline.lib.calendars import session_end_rule
from ml4t_pipeline.lib.lineage import frame_content_hash

PRICE_COLUMNS = ["timestamp", "symbol", "open", "high", "low", "close", "volume"]
_NON_VALUE_COLUMNS = {"timestamp", "symbol", "available_at", "model_trained_at"}


def value_columns(frame: pl.DataFrame) -> list[str]:
    """Numeric value columns of a signals/features/context table (keys and times excluded)."""
    return [
        name
        for name, dtype in frame.schema.items()
        if name not in _NON_VALUE_COLUMNS and dtype.is_numeric()
    ]


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


def engine_settings(
    cfg: ExperimentConfig, data_root: str | Path | None = None
) -> engine.ExecutionConfig:
    """The engine's execution settings of ``cfg``: :meth:`ExecutionConfig.engine_config`
    plus the market mechanics of the ``data`` section: under ``data.adjustment: raw`` the
    corporate-actions table (applied by the engine on each ex-date; the adjusted modes
    adjust the prices instead, in the ``prices`` asset) and ``data.delisting``."""
    settings = cfg.execution.engine_config()
    section = cfg.data.corporate_actions
    actions = None
    if section is not None and cfg.data.adjustment == "raw":
        from ml4t_pipeline.lib.corporate_actions import load_actions

        path = resolve_data_path(
            section.path, data_root=data_root, field="data.corporate_actions.path"
        )
        actions = engine.mechanics.CorporateActions(load_actions(path, section.format)[0])
    delisting = cfg.data.delisting.engine() if cfg.data.delisting is not None else None
    if actions is None and delisting is None:
        return settings
    return dataclasses.replace(settings, corporate_actions=actions, delisting=delisting)


def build_engine(
    cfg: ExperimentConfig, data: Any, data_root: str | Path | None = None
) -> engine.BacktestEngine:
    """The engine for ``cfg`` on ``data`` (:class:`engine.MarketData` or a chunked panel).

    Strategy from :meth:`StrategyConfig.build`, rules from :func:`build_rule` (a
    ``SessionEndExit`` without ``session_close`` from ``data.calendar``:
    :func:`~ml4t_pipeline.lib.calendars.session_end_rule`; plus
    :class:`~ml4t_pipeline.lib.universe.ExitOutsideUniverse` under
    ``data.universe.on_exit_universe: close_next_open``; no risk manager when there are none),
    execution settings from :meth:`ExecutionConfig.engine_config`; with
    a ``backtest`` window, the data restricted to it (``data.between(start, end)``: the
    prepared columns keep their full-history values).

    Raises
    ------
    ValueError
        Bad strategy parameters, rule settings or execution settings; a window with no bar.
    """
    if cfg.backtest.is_set:
        data = data.between(**cfg.backtest.window())
    rules = [
        session_end_rule(spec, cfg.data.calendar) or build_rule(spec) for spec in cfg.risk_rules
    ]
    if cfg.data.universe is not None and cfg.data.universe.on_exit_universe == "close_next_open":
        from ml4t_pipeline.lib.universe import ExitOutsideUniverse

        rules.append(ExitOutsideUniverse())
    return engine.BacktestEngine(
        data,
        cfg.strategy.build(),
        risk_manager=engine.RiskManager(rules) if rules else None,
        config=engine_settings(cfg, data_root),
    )


def restrict_to_window(frame: pl.DataFrame, cfg: ExperimentConfig) -> pl.DataFrame:
    """The rows of ``frame`` (a ``timestamp`` column, UTC) in the experiment's backtest window,
    with the bounds of :meth:`engine.MarketData.between`; ``frame`` itself without a window.

    For the checks and reports that compare the engine's outputs with prepared tables (the
    engine ran only the window's bars).
    """
    if not cfg.backtest.is_set:
        return frame
    first, last = engine.data.window_bounds(cfg.backtest.start, cfg.backtest.end)
    stamp = pl.col("timestamp").dt.epoch("us")
    return frame.filter((stamp >= first) & (stamp <= last))


def run_experiment(
    cfg: ExperimentConfig,
    panel: pl.DataFrame,
    context: pl.DataFrame,
    signal_columns: list[str],
    indicator_columns: list[str],
    quotes: pl.DataFrame | None = None,
    data_root: str | Path | None = None,
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
    data_root : str or Path, optional
        Where ``data.corporate_actions.path`` resolves (default ``$ML4T_DATA_ROOT``).

    Raises
    ------
    ValueError
        Bad panel or quotes (the offending rows are named), or bad engine settings.
    """
    if quotes is not None:
        panel = attach_quotes(panel, quotes)
    data = market_data(panel, context, signal_columns, indicator_columns)
    return build_engine(cfg, data, data_root).run()


def market_data(
    panel: pl.DataFrame,
    context: pl.DataFrame,
    signal_columns: list[str],
    indicator_columns: list[str],
) -> engine.MarketData:
    """The engine's arrays of a prepared panel and context (:meth:`engine.MarketData.from_frame`).

    The engine only reads them, so one :class:`engine.MarketData` serves any number of runs on
    the same data (the sweep runner builds it once per worker and data set).

    Raises
    ------
    ValueError
        As :meth:`engine.MarketData.from_frame` (bad panel or context, rows named).
    """
    return engine.MarketData.from_frame(
        panel,
        signal_columns=signal_columns,
        indicator_columns=indicator_columns,
        context=context,
        context_columns=value_columns(context),
    )


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
    result frames are the same as a run over the whole panel. Each month boundary carries the
    completed bars the slippage model reads (``SlippageModel.history_bars``, e.g. 21 for
    ``SpreadAware`` with its default 20-pair window).
    """
    history = cfg.execution.engine_config().slippage.history_bars
    data = engine.ChunkedMarketData(
        panel,
        symbols=panel.symbols(),
        signal_columns=signal_columns,
        indicator_columns=indicator_columns,
        context=context,
        context_columns=value_columns(context),
        history_bars=max(2, history),
    )
    return build_engine(cfg, data).run()


QUOTE_KEY = ["timestamp", "symbol"]


def quotes_from_prices_file(
    path: Path, quotes: QuotesConfig, bar_length: str | None = None, calendar: str = "XNYS"
) -> pl.DataFrame:
    """The bid/ask columns of a prices file, stamped exactly as its prices are.

    The two columns are read with the keys and passed through
    :func:`ml4t_pipeline.lib.io.to_prices_contract` in the place of the OHLCV columns (bid as
    open/high/low, ask as close), so their timestamps get the same conversion (daily date →
    its session's close on ``calendar``; intraday bar start + ``bar_length``) and the same
    refusals.

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
        stand_in,
        bar_length,
        source=f"data.quotes ({quotes.bid}/{quotes.ask}) in {path}",
        calendar=calendar,
    )
    return stamped.select(*QUOTE_KEY, pl.col("open").alias("bid"), pl.col("close").alias("ask"))


def experiment_quotes(
    cfg: ExperimentConfig, data_root: str | Path | None = None
) -> pl.DataFrame | None:
    """The bid/ask of ``cfg.data.quotes`` from its prices file, or None when none are configured.

    ``data.prices`` is resolved against ``data_root`` (:func:`resolve_data_path`) and read with
    :func:`quotes_from_prices_file`.

    Raises
    ------
    DataPathError, FileNotFoundError, ValueError
        As :func:`resolve_data_path` and :func:`quotes_from_prices_file`.
    """
    if cfg.data.quotes is None:
        return None
    path = resolve_data_path(cfg.data.prices, data_root=data_root, field="data.prices")
    return quotes_from_prices_file(path, cfg.data.quotes, cfg.data.bar_length, cfg.data.calendar)


def attach_quotes(panel: pl.DataFrame, quotes: pl.DataFrame) -> pl.DataFrame:
    """Join ``bid``/``ask`` onto every bar of ``panel`` (exact (timestamp, symbol) match).

    A quote stamped at a bar's close is attached to that bar. It prices only fills at or
    after its timestamp: ``SpreadAwareSlippage`` prices a fill at the open (or inside) bar t
    with the quote of the symbol's previous bar (t-1's close, the last quote before the open)
    and only a fill at bar t's close with bar t's own quote.

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


def configured_benchmark(cfg: ExperimentConfig) -> pl.DataFrame | None:
    """``reporting.benchmark``'s bar returns
    (:func:`ml4t_pipeline.lib.benchmark.load_benchmark_returns`), or None when not configured.
    The path resolves under the data root like ``data.prices``."""
    spec = cfg.reporting.benchmark
    if spec is None:
        return None
    path = resolve_data_path(spec.path, field="reporting.benchmark.path")
    actions: tuple[str, str, int] | None = None
    if spec.corporate_actions is not None:
        table = resolve_data_path(
            spec.corporate_actions.path, field="reporting.benchmark.corporate_actions.path"
        )
        actions = (str(table), spec.corporate_actions.format, table.stat().st_mtime_ns)
    # Cached per file version: a sweep's trials share one read.
    return _benchmark_returns(
        str(path),
        path.stat().st_mtime_ns,
        spec.symbol,
        cfg.data.bar_length,
        cfg.data.calendar,
        actions,
    )


@functools.lru_cache(maxsize=4)
def _benchmark_returns(
    path: str,
    mtime_ns: int,
    symbol: str,
    bar_length: str | None,
    calendar: str,
    actions: tuple[str, str, int] | None,
) -> pl.DataFrame:
    from ml4t_pipeline.lib.benchmark import load_benchmark_returns

    return load_benchmark_returns(
        path,
        symbol,
        bar_length,
        calendar=calendar,
        corporate_actions=None if actions is None else (actions[0], actions[1]),
    )


def experiment_metrics(
    cfg: ExperimentConfig,
    portfolio_states: pl.DataFrame,
    trades: pl.DataFrame,
    fills: pl.DataFrame,
    prices: pl.DataFrame | None = None,
    benchmark: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """Every headline metric (:func:`ml4t_pipeline.lib.performance.compute_performance`).

    The engine's metrics, costs from the fills (currency), and, when ``prices`` are given, the
    comparison with the equal-weight universe as benchmark (alpha, beta, information ratio).
    With ``reporting.benchmark`` configured the ``bench_*`` keys compare with it
    (:func:`ml4t_pipeline.lib.performance.benchmark_comparison`); ``benchmark`` passes its
    returns when already loaded (default: :func:`configured_benchmark`).
    """
    equal_weight = performance.equal_weight_benchmark(prices) if prices is not None else None
    values: dict[str, Any] = performance.compute_performance(
        portfolio_states,
        trades,
        fills=fills,
        benchmark=equal_weight,
        periods_per_year=cfg.reporting.periods_per_year,
        risk_free_rate=cfg.reporting.risk_free_rate,
        initial_cash=cfg.execution.initial_cash,
    )
    if cfg.reporting.benchmark is not None:
        if benchmark is None:
            benchmark = configured_benchmark(cfg)
        returns = performance.strategy_returns(portfolio_states, cfg.execution.initial_cash)
        values.update(
            performance.benchmark_comparison(
                returns,
                benchmark,
                cfg.reporting.periods_per_year,
                cfg.reporting.risk_free_rate,
            )
        )
    return {k: (v if isinstance(v, int) else float(v)) for k, v in values.items()}
