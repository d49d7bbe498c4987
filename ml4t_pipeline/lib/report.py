"""Performance report: the equity/drawdown figure and one self-contained HTML file.

Everything here is Dagster-free. The asset that builds the report calls
:func:`render_report_html` and :func:`write_report`; the same PNG goes to the Dagster UI through
:func:`png_markdown`. Figures are drawn on matplotlib's Agg canvas directly (no ``pyplot``, no
global backend switch), so rendering is thread-safe and needs no display.

The HTML needs no network: CSS is inline and the figure is a base64 ``data:`` URI. All text that
comes from the data (title, metric names, lineage, symbols, exit reasons) is HTML-escaped.

The full report (benchmark, underwater, monthly heatmap, rolling Sharpe, attribution tables and
their charts) is drawn when :func:`render_report_html` gets an ``analysis`` from
:func:`analyse_run`. :func:`build_report` is the one report function: the
``performance_report`` asset calls it, and :func:`rebuild_report` (``ml4t report DIR``) calls it
on an ``ml4t run`` folder's files with the settings the asset used (:func:`report_settings`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter, StrMethodFormatter

from ml4t_pipeline.lib import attribution as attribution_lib
from ml4t_pipeline.lib import performance, plots

if TYPE_CHECKING:
    from ml4t_pipeline.config import ExperimentConfig

__all__ = [
    "MAX_TRADES_SHOWN",
    "REPORT_SECTIONS",
    "TRADE_COLUMNS",
    "ReportAnalysis",
    "analyse_run",
    "equity_drawdown_png",
    "format_metric",
    "png_markdown",
    "REPORT_SETTINGS_FILE",
    "build_report",
    "rebuild_report",
    "report_settings",
    "render_report_html",
    "write_report",
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_TRADES_SHOWN = 50
#: Trade columns shown in the trade list, in this order (those present in the frame).
TRADE_COLUMNS = (
    "trade_id",
    "symbol",
    "side",
    "entry_timestamp",
    "exit_timestamp",
    "entry_price",
    "exit_price",
    "quantity",
    "commission",
    "pnl_net",
    "return_pct",
    "bars_held",
    "exit_reason",
)
_EXIT_SUMMARY_INPUTS = ("exit_reason", "pnl_net", "return_pct", "bars_held")
_PERCENT_COLUMNS = {"return_pct"}
_COUNT_COLUMNS = {"trade_id", "bars_held"}
# Metric names shown as percentages (fractions in the metrics dict) and as counts.
_PERCENT_METRICS = {
    "total_return",
    "cagr",
    "annual_volatility",
    "max_drawdown",
    "win_rate",
    "exposure",
    "benchmark_cagr",
    "alpha",
    "tracking_error",
    "cost_drag",
    "cost_to_initial_equity",
}
_PERCENT_SUFFIXES = ("_return", "_drawdown", "_rate", "_volatility")
_COUNT_METRICS = {"n_trades", "max_drawdown_duration_bars", "benchmark_bars"}
_DRAWDOWN_TOLERANCE = 1e-12

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1100px; color: #1f2328; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.3rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de;
     padding-bottom: 0.2rem; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f6f8fa; }
td.text, th.text { text-align: left; }
table.lineage td, table.lineage th { text-align: left; }
.neg { color: #b42318; }
.note { color: #57606a; font-size: 0.85rem; }
img { max-width: 100%; height: auto; }
p.reconciliation { font-family: ui-monospace, monospace; font-size: 0.8rem; }
.scroll { overflow-x: auto; }
tr.total td, tr.total th { font-weight: 600; background: #f6f8fa; }
""".strip()


#: ``<section id=...>`` of the full report (with an ``analysis``), in document order.
REPORT_SECTIONS = (
    "lineage",
    "metrics",
    "equity",
    "benchmark",
    "underwater",
    "monthly-returns",
    "rolling-sharpe",
    "exit-reasons",
    "mfe-mae",
    "signal-deciles",
    "information-coefficient",
    "regimes",
    "costs",
    "trades",
)
ROLLING_WINDOW = 63
"""Bars in the rolling Sharpe window (about a quarter of daily bars)."""


@dataclass(frozen=True)
class ReportAnalysis:
    """What the full report shows beyond the basic sections; built by :func:`analyse_run`.

    Attributes
    ----------
    metrics : dict
        :func:`ml4t_pipeline.lib.performance.compute_performance` output.
    curve : pl.DataFrame
        ``timestamp``, ``equity`` and (with a benchmark) ``benchmark_equity``, currency.
    monthly : pl.DataFrame
        ``year``, ``month``, ``return`` (fraction).
    rolling : pl.DataFrame
        ``timestamp``, ``rolling_sharpe``.
    rolling_window : int
        Bars per rolling-Sharpe window.
    attribution : dict
        :func:`ml4t_pipeline.lib.attribution.attribute_run` output.
    benchmark_name : str
        How the benchmark is described in the report.
    notes : list[str]
        Remarks shown under the headline metrics (e.g. an inferred bar frequency).
    """

    metrics: dict[str, Any]
    curve: pl.DataFrame
    monthly: pl.DataFrame
    rolling: pl.DataFrame
    rolling_window: int
    attribution: dict[str, Any]
    benchmark_name: str = "equal-weight universe"
    notes: list[str] = field(default_factory=list)


def analyse_run(
    portfolio_states: pl.DataFrame,
    trades: pl.DataFrame,
    *,
    fills: pl.DataFrame | None = None,
    signals: pl.DataFrame | None = None,
    prices: pl.DataFrame | None = None,
    benchmark: pl.DataFrame | None = None,
    periods_per_year: float | None = None,
    risk_free_rate: float = 0.0,
    initial_cash: float | None = None,
    signal: str = "score",
    horizon: int = 1,
    regime_column: str | None = None,
    rolling_window: int = ROLLING_WINDOW,
    index_benchmark: pl.DataFrame | None = None,
    attribution: dict[str, Any] | None = None,
) -> ReportAnalysis:
    """Compute the metrics, curves and attribution tables of the full report.

    Parameters
    ----------
    portfolio_states, trades, fills : pl.DataFrame
        The engine's outputs (see :class:`engine.BacktestResult`).
    signals : pl.DataFrame, optional
        ``timestamp``, ``symbol``, ``signal``, optional ``available_at``: for the IC.
    prices : pl.DataFrame, optional
        ``timestamp``, ``symbol``, ``close``: for the IC's forward returns and, when
        ``benchmark`` is not given, the equal-weight benchmark
        (:func:`ml4t_pipeline.lib.performance.equal_weight_benchmark`).
    benchmark : pl.DataFrame, optional
        ``timestamp``, ``benchmark_return`` (fraction per bar).
    periods_per_year : float, optional
        Bars per year; inferred from the timestamps when omitted (and said in ``notes``).
    risk_free_rate : float, default 0.0
        Annual rate (fraction).
    initial_cash : float, optional
        Equity before the first bar (default: inferred from the first bar's return).
    signal : str, default "score"
        Signal column (``entry_<signal>`` in the trades).
    horizon : int, default 1
        Forward-return horizon (bars) of the IC.
    regime_column : str, optional
        Context column for the regime table (default:
        :func:`ml4t_pipeline.lib.attribution.default_regime_column`).
    rolling_window : int, default 63
        Bars per rolling-Sharpe window (shortened to the number of bars when fewer, min 2).
    index_benchmark : pl.DataFrame, optional
        ``reporting.benchmark``'s returns (``timestamp``, ``benchmark_return``, from
        :func:`ml4t_pipeline.lib.benchmark.load_benchmark_returns`): its equity is added to the
        curve as ``bench_equity`` (a second line on the equity chart).
    attribution : dict, optional
        The attribution tables, already computed (as
        :func:`ml4t_pipeline.lib.attribution.from_tables` returns them from the attribution
        assets); default: computed here with
        :func:`ml4t_pipeline.lib.attribution.attribute_run` from ``signal``, ``horizon``,
        ``regime_column`` and ``periods_per_year``.

    Raises
    ------
    ValueError
        From the metric and attribution functions, on malformed inputs.
    """
    notes: list[str] = []
    if periods_per_year is None:
        periods_per_year = performance.infer_periods_per_year(portfolio_states["timestamp"])
        notes.append(
            f"Bars per year inferred from the timestamps: {periods_per_year:.1f}; "
            f"risk-free rate {risk_free_rate:.2%}."
        )
    if benchmark is None and prices is not None:
        benchmark = performance.equal_weight_benchmark(prices)
    metrics = performance.compute_performance(
        portfolio_states,
        trades,
        fills=fills,
        benchmark=benchmark,
        periods_per_year=periods_per_year,
        risk_free_rate=risk_free_rate,
        initial_cash=initial_cash,
    )
    e0 = performance.initial_equity(portfolio_states, initial_cash)
    returns = performance.strategy_returns(portfolio_states, e0)
    curve = (
        performance.benchmark_equity(portfolio_states, benchmark, e0)
        if benchmark is not None
        else portfolio_states.select("timestamp", "equity")
    )
    if index_benchmark is not None:
        from ml4t_pipeline.lib.benchmark import benchmark_equity_curve

        bench = benchmark_equity_curve(curve["timestamp"], index_benchmark, e0)
        curve = curve.join(bench, on="timestamp", how="left", maintain_order="left")
    window = max(2, min(rolling_window, portfolio_states.height))
    if attribution is None:
        attribution = attribution_lib.attribute_run(
            trades,
            portfolio_states,
            signals=signals,
            prices=prices,
            signal=signal,
            horizon=horizon,
            regime_column=regime_column,
            periods_per_year=periods_per_year,
        )
    if "ic_summary" in attribution:
        metrics.update({k: v for k, v in attribution["ic_summary"].items() if k.startswith("ic_")})
    return ReportAnalysis(
        metrics=metrics,
        curve=curve,
        monthly=performance.monthly_returns(returns),
        rolling=performance.rolling_sharpe(returns, window, periods_per_year, risk_free_rate),
        rolling_window=window,
        attribution=attribution,
        notes=notes,
    )


REPORT_SETTINGS_FILE = "report_settings.json"
"""File of an ``ml4t run`` folder holding the keyword arguments of :func:`build_report` the
``performance_report`` asset used (:func:`report_settings`); ``ml4t report`` reuses them."""


def report_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """The settings :func:`build_report` takes from an experiment: ``periods_per_year``,
    ``risk_free_rate`` (annual fraction), ``initial_cash`` (currency), ``signal`` (the column
    the strategy ranks by), ``horizon`` (bars of the IC's forward return), ``title`` and
    ``benchmark`` (``reporting.benchmark`` with the data's ``bar_length``, or None).

    The ``performance_report`` asset calls :func:`build_report` with them and ``ml4t run``
    stores them as :data:`REPORT_SETTINGS_FILE`, so ``ml4t report`` rebuilds with the same
    arguments.
    """
    return {
        "periods_per_year": cfg.reporting.periods_per_year,
        "risk_free_rate": cfg.reporting.risk_free_rate,
        "initial_cash": cfg.execution.initial_cash,
        "signal": cfg.strategy.signal,
        "horizon": cfg.ic_horizon(),
        "title": cfg.reporting.title or f"ml4t experiment: {cfg.name}",
        "benchmark": bench.model_dump() | {"bar_length": cfg.data.bar_length}
        if (bench := cfg.reporting.benchmark) is not None
        else None,
    }


def build_report(
    portfolio_states: pl.DataFrame,
    trades: pl.DataFrame,
    *,
    metrics: Mapping[str, Any],
    lineage: Mapping[str, str],
    title: str,
    fills: pl.DataFrame | None = None,
    signals: pl.DataFrame | None = None,
    prices: pl.DataFrame | None = None,
    attribution: dict[str, Any] | None = None,
    periods_per_year: float | None = None,
    risk_free_rate: float = 0.0,
    initial_cash: float | None = None,
    signal: str = "score",
    horizon: int = 1,
    notes: Sequence[str] = (),
    index_benchmark: pl.DataFrame | None = None,
    benchmark: Mapping[str, Any] | None = None,
) -> tuple[str, ReportAnalysis]:
    """The full HTML report of one run and the analysis it shows: :func:`analyse_run` then
    :func:`render_report_html`.

    The one report function: the ``performance_report`` asset calls it with the experiment's
    :func:`report_settings` and the attribution assets' tables; :func:`rebuild_report` calls it
    on an output folder's files with the same settings (``attribution`` then computed here,
    from ``signal``, ``horizon`` and ``periods_per_year``).

    Parameters
    ----------
    portfolio_states, trades, fills, signals, prices, periods_per_year, risk_free_rate,
    initial_cash, signal, horizon, attribution, index_benchmark
        As for :func:`analyse_run`.
    benchmark : mapping, optional
        ``reporting.benchmark`` as :func:`report_settings` stores it (``symbol``, ``path``,
        ``bar_length``): its returns are loaded as ``index_benchmark`` when that is not given.
    metrics : Mapping[str, Any]
        Headline metrics shown first (the ``metrics`` asset's value).
    lineage : Mapping[str, str]
        Rows of the lineage table (experiment, config hash, code version, run id...).
    title : str
        Report title.
    notes : sequence of str
        Extra remarks shown under the headline metrics.

    Returns
    -------
    tuple of (str, ReportAnalysis)
        The HTML document and the analysis.
    """
    if index_benchmark is None and benchmark:
        index_benchmark = _index_benchmark(dict(benchmark))
    analysis = analyse_run(
        portfolio_states,
        trades,
        fills=fills,
        signals=signals,
        prices=prices,
        periods_per_year=periods_per_year,
        risk_free_rate=risk_free_rate,
        initial_cash=initial_cash,
        signal=signal,
        horizon=horizon,
        attribution=attribution,
        index_benchmark=index_benchmark,
    )
    analysis.notes.extend(notes)
    html_text = render_report_html(
        title=title,
        metrics=metrics,
        portfolio_states=portfolio_states,
        trades=trades,
        lineage=lineage,
        analysis=analysis,
    )
    return html_text, analysis


def rebuild_report(
    output_dir: str | os.PathLike[str],
    *,
    prices: pl.DataFrame | None = None,
    periods_per_year: float | None = None,
    risk_free_rate: float = 0.0,
    initial_cash: float | None = None,
    signal: str = "score",
    horizon: int = 1,
    title: str | None = None,
    write_tables: bool = True,
    benchmark: dict[str, Any] | None = None,
) -> Path:
    """Rebuild ``report.html`` (and the attribution Parquet files) from an ``ml4t run`` folder.

    Reads ``trades.parquet``, ``portfolio_states.parquet`` and, when present, ``fills.parquet``,
    ``signals.parquet``, ``metrics.json`` and ``lineage.json``, and calls :func:`build_report`
    with the settings given (an ``ml4t run`` folder stores those the ``performance_report``
    asset used in :data:`REPORT_SETTINGS_FILE`; ``ml4t report`` passes them). Writes
    ``report.html`` atomically and, with ``write_tables``, the files of
    :data:`ml4t_pipeline.lib.attribution.ATTRIBUTION_FILES` plus ``attribution_summary.json``.

    Parameters
    ----------
    output_dir : str or os.PathLike
        The folder ``ml4t run ... --output DIR`` wrote.
    prices : pl.DataFrame, optional
        The run's prepared prices (``timestamp``, ``symbol``, ``close``), for the IC and the
        equal-weight benchmark; without them those sections say so.
    periods_per_year, risk_free_rate, initial_cash, signal, horizon
        As for :func:`build_report` (:func:`report_settings`); ``periods_per_year`` is
        inferred from the timestamps when omitted.
    title : str, optional
        Report title (default ``ml4t experiment: <folder name>``).
    write_tables : bool, default True
        Also write the attribution tables as Parquet.
    benchmark : dict, optional
        ``{"symbol": ..., "path": ...}`` (``reporting.benchmark``; ``path`` resolved under the
        data root): its equity is drawn on the equity chart.

    Returns
    -------
    Path
        The absolute path of ``report.html``.

    Raises
    ------
    FileNotFoundError
        ``trades.parquet`` or ``portfolio_states.parquet`` is missing (the message names it).
    """
    folder = Path(output_dir)
    required = [folder / "trades.parquet", folder / "portfolio_states.parquet"]
    missing = [str(p) for p in required if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"not an `ml4t run` output folder, missing: {missing}")
    trades = pl.read_parquet(folder / "trades.parquet")
    states = pl.read_parquet(folder / "portfolio_states.parquet")
    metrics: dict[str, Any] = {}
    if (folder / "metrics.json").is_file():
        metrics = json.loads((folder / "metrics.json").read_text())
    lineage: dict[str, str] = {"output_folder": str(folder.resolve())}
    if (folder / "lineage.json").is_file():
        lineage |= {k: str(v) for k, v in json.loads((folder / "lineage.json").read_text()).items()}
    lineage["generated_at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    notes = []
    if prices is None:
        notes.append("No prepared prices: no benchmark and no information coefficient.")
    text, analysis = build_report(
        states,
        trades,
        metrics=metrics,
        lineage=lineage,
        title=title or f"ml4t experiment: {folder.resolve().name}",
        fills=_read_optional(folder / "fills.parquet"),
        signals=_read_optional(folder / "signals.parquet"),
        prices=prices,
        periods_per_year=periods_per_year,
        risk_free_rate=risk_free_rate,
        initial_cash=initial_cash,
        signal=signal,
        horizon=horizon,
        benchmark=benchmark,
        notes=notes,
    )
    if write_tables:
        attribution_lib.write_attribution(analysis.attribution, folder)
    path = write_report(folder / "report.html", text)
    path.chmod(0o644)  # mkstemp creates 0600; the report is meant to be opened by anyone
    return path


def _index_benchmark(spec: dict[str, Any] | None) -> pl.DataFrame | None:
    if not spec:
        return None
    from ml4t_pipeline.config import resolve_data_path
    from ml4t_pipeline.lib.benchmark import load_benchmark_returns

    path = resolve_data_path(str(spec["path"]), field="reporting.benchmark.path")
    return load_benchmark_returns(path, str(spec["symbol"]), spec.get("bar_length"))


# --- figure --------------------------------------------------------------------------------------


@plots.memo_png
def equity_drawdown_png(portfolio_states: pl.DataFrame, title: str = "") -> bytes:
    """Draw the equity curve above the underwater (drawdown) curve and return PNG bytes.

    Parameters
    ----------
    portfolio_states : pl.DataFrame
        One row per timestamp. Uses ``timestamp`` (Datetime, any or no time zone; drawn in UTC,
        or Date), ``equity`` (Float64, currency, finite) and ``drawdown`` (Float64 fraction
        <= 0, ``equity / running peak - 1``). Other columns are ignored. Rows are drawn in
        timestamp order; a single row is drawn as a point.
    title : str, default ""
        Figure title (plain text).

    Returns
    -------
    bytes
        A PNG image (1000 x 600 px), starting with the PNG signature. Identical input gives
        identical bytes (no timestamp or software tag is embedded).

    Raises
    ------
    ValueError
        Missing columns, no rows, duplicate or null timestamps, null or non-finite equity or
        drawdown, or a drawdown above 0 (the message names the first offending timestamps).
    TypeError
        ``timestamp`` is not a Datetime or Date column.
    """
    states = _checked_states(portfolio_states)
    x = _plot_times(states["timestamp"])
    equity = states["equity"].to_numpy().astype(np.float64)
    drawdown = states["drawdown"].to_numpy().astype(np.float64)
    marker = "o" if states.height == 1 else None

    fig = Figure(figsize=(10, 6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
    top.plot(x, equity, color="#1f6feb", linewidth=1.2, marker=marker)
    top.set_ylabel("Equity")
    top.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    top.grid(True, alpha=0.3)
    bottom.fill_between(x, drawdown, 0.0, color="#d1242f", alpha=0.35, linewidth=0)
    bottom.plot(x, drawdown, color="#d1242f", linewidth=0.8, marker=marker)
    bottom.set_ylabel("Drawdown")
    bottom.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    bottom.set_ylim(top=0.0)
    if float(drawdown.min()) == 0.0:
        bottom.set_ylim(-0.01, 0.0)
    bottom.grid(True, alpha=0.3)
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    if title:
        fig.suptitle(title)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def png_markdown(png: bytes, alt: str = "equity") -> str:
    """Embed PNG bytes as a Markdown image with a base64 data URI (for Dagster metadata).

    Parameters
    ----------
    png : bytes
        A PNG image, e.g. from :func:`equity_drawdown_png`.
    alt : str, default "equity"
        Alternative text; ``[`` and ``]`` are removed so the Markdown stays well formed.

    Returns
    -------
    str
        ``![equity](data:image/png;base64,...)``.

    Raises
    ------
    ValueError
        ``png`` does not start with the PNG signature.
    """
    _check_png(png)
    label = alt.replace("[", "").replace("]", "")
    return f"![{label}]({_data_uri(png)})"


# --- HTML ---------------------------------------------------------------------------------------


def format_metric(name: str, value: float | int | None) -> str:
    """Format one headline metric for display.

    Percent metrics (total_return, cagr, annual_volatility, max_drawdown, win_rate, exposure,
    benchmark_cagr, alpha, tracking_error, cost_drag, cost_to_initial_equity and names ending
    in _return, _drawdown, _rate, _volatility) are fractions shown as ``12.34%``; ``n_trades``,
    max_drawdown_duration_bars, benchmark_bars and names starting with ``n_`` as integers;
    names starting with ``ic_`` with four decimals; everything else
    (final_equity, sharpe, sortino, calmar, profit_factor, turnover, ...) with two decimals and
    thousands separators. None and NaN show as ``n/a``, infinities as ``inf`` / ``-inf``.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    number = float(value)
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    if name in _PERCENT_METRICS or name.endswith(_PERCENT_SUFFIXES):
        return f"{number:.2%}"
    if name in _COUNT_METRICS or name.startswith("n_"):
        return f"{number:,.0f}"
    if name.startswith("ic_"):
        return f"{number:.4f}"
    return f"{number:,.2f}"


def render_report_html(
    *,
    title: str,
    metrics: Mapping[str, float],
    portfolio_states: pl.DataFrame,
    trades: pl.DataFrame,
    lineage: Mapping[str, str],
    analysis: ReportAnalysis | None = None,
) -> str:
    """Render the backtest report as one self-contained HTML document.

    Sections, in order: header (title and a lineage table), ``Headline metrics``,
    ``Equity and drawdown`` (inline PNG), ``Trades by exit reason`` and ``Trades`` (the first
    50). Each section is a ``<section id=...>`` with ids ``lineage``, ``metrics``, ``equity``,
    ``exit-reasons`` and ``trades``.

    Parameters
    ----------
    title : str
        Report title (plain text; escaped).
    metrics : Mapping[str, float]
        Headline metrics in display order, formatted with :func:`format_metric`.
    portfolio_states : pl.DataFrame
        As for :func:`equity_drawdown_png`. With zero rows the figure is replaced by a note.
    trades : pl.DataFrame
        One row per round trip. With rows it needs ``exit_reason`` (String), ``pnl_net``
        (Float64, currency), ``return_pct`` (Float64, fraction) and ``bars_held`` (Int); the
        trade list shows the :data:`TRADE_COLUMNS` that are present, in the frame's row order.
        With zero rows (any columns) both trade sections say "No trades.".
    lineage : Mapping[str, str]
        Provenance shown under the title, e.g. ``config_hash``, ``data_version_prices``,
        ``code_version``, ``generated_at``. When ``generated_at`` is missing the current UTC
        time is added (pass it for byte-identical reports).
    analysis : ReportAnalysis, optional
        From :func:`analyse_run`. When given the report is the full one, with the sections
        :data:`REPORT_SECTIONS` in that order: the metrics table adds every metric of
        ``analysis.metrics`` not in ``metrics``; then equity vs benchmark, underwater
        drawdown, monthly returns heatmap, rolling Sharpe; the exit-reason section becomes the
        attribution table (win rate, mean/total P&L, holding period, MFE/MAE) with its
        reconciliation line and a P&L bar chart; then the MFE/MAE scatter, the signal-decile
        table and chart, the information coefficient, the regime table and the cost
        attribution (each attribution table with its reconciliation line).

    Returns
    -------
    str
        The HTML document (UTF-8 text). It references nothing outside itself.

    Raises
    ------
    ValueError
        Invalid portfolio states (see :func:`equity_drawdown_png`); trades with rows but
        without the columns of the exit-reason summary.
    """
    if trades.height:
        missing = [c for c in _EXIT_SUMMARY_INPUTS if c not in trades.columns]
        if missing:
            raise ValueError(
                f"trades is missing column(s) {missing} needed for 'Trades by exit reason'; "
                f"it has {trades.columns}"
            )
    provenance = dict(lineage)
    if "generated_at" not in provenance:
        provenance["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{_esc(title)}</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<h1>{_esc(title)}</h1>",
        '<section id="lineage">',
        _lineage_table(provenance),
        "</section>",
        "</header>",
        "<main>",
        '<section id="metrics">',
        "<h2>Headline metrics</h2>",
        _metrics_table(_merged_metrics(metrics, analysis)),
        *(_notes(analysis.notes) if analysis is not None else []),
        "</section>",
        '<section id="equity">',
        "<h2>Equity and drawdown</h2>",
        _figure(portfolio_states, title),
        "</section>",
        *(_analysis_sections_before(analysis) if analysis is not None else []),
        '<section id="exit-reasons">',
        "<h2>Trades by exit reason</h2>",
        _exit_reason_table(trades) if analysis is None else _exit_attribution(analysis),
        "</section>",
        *(_analysis_sections_after(analysis, trades) if analysis is not None else []),
        '<section id="trades">',
        "<h2>Trades</h2>",
        _trades_table(trades),
        "</section>",
        "</main>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(path: str | os.PathLike[str], html_text: str) -> Path:
    """Write the report atomically: a temporary file in the same folder, then a rename.

    A reader never sees a half-written report; on failure the temporary file is removed and
    an existing report at ``path`` is left untouched. Parent folders are created.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, e.g. ``out/report.html``.
    html_text : str
        The document, written as UTF-8.

    Returns
    -------
    Path
        The absolute destination path.
    """
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(html_text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


# --- full-report sections ------------------------------------------------------------------------

_ATTRIBUTION_NOTE = {
    "by_signal_decile": "Deciles of the entry signal over the closed trades (D01 lowest); hit "
    "rate = share of trades with pnl_net &gt; 0.",
    "by_regime": "Quantile buckets of the context variable at the entry decision; cut points "
    "from its values over all bars. n_bars, mean_bar_return and annualised_return describe the "
    "portfolio on the bars of each regime.",
    "cost_attribution": "Trades booked in their exit month (UTC). pnl_before_costs &minus; "
    "slippage &minus; commission = pnl_net; cost_share = (slippage + commission) / "
    "pnl_before_costs.",
}


def _merged_metrics(
    metrics: Mapping[str, float], analysis: ReportAnalysis | None
) -> dict[str, Any]:
    merged: dict[str, Any] = dict(metrics)
    if analysis is not None:
        for name, value in analysis.metrics.items():
            merged.setdefault(name, value)
    return dict(performance.metric_items(merged))


def _notes(notes: list[str]) -> list[str]:
    return [f'<p class="note">{_esc(n)}</p>' for n in notes]


def _image(png: bytes, alt: str) -> str:
    return f'<figure><img src="{_data_uri(png)}" alt="{_esc(alt)}"></figure>'


def _section(section_id: str, heading: str, *body: str) -> str:
    return "\n".join(
        [f'<section id="{section_id}">', f"<h2>{_esc(heading)}</h2>", *body, "</section>"]
    )


def _analysis_sections_before(a: ReportAnalysis) -> list[str]:
    m = a.metrics
    bench = (
        f"Benchmark: {a.benchmark_name}, from the same starting equity. Alpha "
        f"{format_metric('alpha', m.get('alpha'))}, beta {format_metric('beta', m.get('beta'))}, "
        f"information ratio {format_metric('information_ratio', m.get('information_ratio'))}."
        if "benchmark_equity" in a.curve.columns
        else "No benchmark available: strategy equity only."
    )
    return [
        _section(
            "benchmark",
            "Equity vs benchmark",
            _image(plots.equity_vs_benchmark_png(a.curve), "Equity vs benchmark"),
            f'<p class="note">{_esc(bench)}</p>',
        ),
        _section(
            "underwater",
            "Underwater drawdown",
            _image(plots.underwater_png(_drawdown_frame(a.curve)), "Underwater drawdown"),
            f'<p class="note">Longest drawdown: '
            f"{format_metric('n_bars', m.get('max_drawdown_duration_bars'))} bars "
            f"({format_metric('days', m.get('max_drawdown_duration_days'))} days).</p>",
        ),
        _section(
            "monthly-returns",
            "Monthly returns",
            _image(plots.monthly_heatmap_png(a.monthly), "Monthly returns heatmap"),
        ),
        _section(
            "rolling-sharpe",
            "Rolling Sharpe",
            _image(
                plots.rolling_sharpe_png(a.rolling, a.rolling_window),
                f"Rolling Sharpe over {a.rolling_window} bars",
            ),
        ),
    ]


def _exit_attribution(a: ReportAnalysis) -> str:
    table = a.attribution["by_exit_reason"]
    return "\n".join(
        [
            _frame_table(table, "exit-reasons"),
            _reconciliation(a, "by_exit_reason"),
            _image(plots.pnl_by_exit_reason_png(table), "Net P&L by exit reason"),
        ]
    )


def _analysis_sections_after(a: ReportAnalysis, trades: pl.DataFrame) -> list[str]:
    att = a.attribution
    out = [
        _section(
            "mfe-mae",
            "MFE / MAE per trade",
            _image(plots.mfe_mae_scatter_png(trades), "MFE vs MAE scatter"),
        )
    ]
    if "by_signal_decile" in att:
        out.append(
            _section(
                "signal-deciles",
                "P&L by signal decile",
                _frame_table(att["by_signal_decile"], "signal-deciles"),
                f'<p class="note">{_ATTRIBUTION_NOTE["by_signal_decile"]}</p>',
                _reconciliation(a, "by_signal_decile"),
                _image(plots.signal_decile_png(att["by_signal_decile"]), "Signal decile chart"),
            )
        )
    else:
        out.append(_section("signal-deciles", "P&L by signal decile", _na("no entry signal")))
    if "ic_summary" in att:
        ic = att["ic_summary"]
        rows = pl.DataFrame({"statistic": list(ic), "value": [float(v) for v in ic.values()]})
        note = (
            "IC = Spearman rank correlation, per signal timestamp, of the score with the "
            f"symbol's realised {ic['horizon']}-bar forward close-to-close return; t = mean / "
            "(std / &radic;n). With a horizon above one bar neighbouring periods overlap; the "
            "non-overlapping t uses every horizon-th period only."
        )
        out.append(
            _section(
                "information-coefficient",
                "Information coefficient",
                _frame_table(rows, "ic"),
                f'<p class="note">{note}</p>',
            )
        )
    else:
        out.append(
            _section(
                "information-coefficient",
                "Information coefficient",
                _na("signals or prices not available"),
            )
        )
    if "by_regime" in att:
        out.append(
            _section(
                "regimes",
                f"P&L by regime ({att['regime_column']})",
                _frame_table(att["by_regime"], "regimes"),
                f'<p class="note">{_ATTRIBUTION_NOTE["by_regime"]}</p>',
                _reconciliation(a, "by_regime"),
            )
        )
    else:
        out.append(_section("regimes", "P&L by regime", _na("no context column in the trades")))
    out.append(
        _section(
            "costs",
            "Cost attribution",
            _frame_table(att["cost_attribution"], "costs"),
            f'<p class="note">{_ATTRIBUTION_NOTE["cost_attribution"]}</p>',
            _reconciliation(a, "cost_attribution"),
        )
    )
    out.extend(_mechanics_sections(att))
    return out


def _mechanics_sections(att: Mapping[str, Any]) -> list[str]:
    """Dividends and financing per month, and the corporate-action events (market mechanics
    runs only)."""
    out = []
    if "carry_attribution" in att:
        out.append(
            _section(
                "carry",
                "Dividends and financing",
                _frame_table(att["carry_attribution"], "carry"),
                '<p class="note">Cash lines outside the trades\' P&amp;L, per month (UTC): '
                "dividends (ex-date), interest on cash, short borrow fees.</p>",
            )
        )
    events = att.get("corporate_actions")
    if events is not None:
        shown = events.head(200).with_columns(
            pl.col(c).cast(pl.String)
            for c in ("timestamp", "ex_date", "pay_date")
            if c in events.columns
        )
        out.append(
            _section(
                "corporate-actions",
                f"Corporate actions applied ({events.height})",
                _frame_table(shown, "corporate-actions"),
                '<p class="note">Splits and dividends on held positions or working orders, '
                "at the bar they took effect (first 200).</p>",
            )
        )
    return out


def _na(reason: str) -> str:
    return f'<p class="note">Not available: {_esc(reason)}.</p>'


def _reconciliation(a: ReportAnalysis, name: str) -> str:
    result = a.attribution["reconciliation"][name]
    return f'<p class="reconciliation">{_esc(attribution_lib.reconciliation_line(result))}</p>'


def _drawdown_frame(curve: pl.DataFrame) -> pl.DataFrame:
    return curve.select(
        "timestamp", (pl.col("equity") / pl.col("equity").cum_max() - 1.0).alias("drawdown")
    )


def _frame_table(frame: pl.DataFrame, css: str) -> str:
    if frame.height == 0:
        return '<p class="note">No rows.</p>'
    key = frame.columns[0]
    head = "".join(
        f'<th class="{"text" if _is_text(frame, c) else "num"}">{_esc(c)}</th>'
        for c in frame.columns
    )
    body = []
    for row in frame.iter_rows(named=True):
        cells = []
        for c in frame.columns:
            value = row[c]
            if value is None:
                cells.append("<td>—</td>")
            elif _is_text(frame, c):
                cells.append(f'<td class="text">{_esc(value)}</td>')
            else:
                cells.append(_num_cell(float(value), _column_format(c, float(value))))
        total = ' class="total"' if row[key] == attribution_lib.TOTAL else ""
        body.append(f"<tr{total}>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table class="{_esc(css)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _column_format(column: str, value: float) -> str:
    if column.startswith("n_") or column in ("horizon",):
        return "{:,.0f}"
    if any(t in column for t in ("rate", "share", "return", "pct")) and "t_stat" not in column:
        return "{:.2%}"
    if column in ("signal_min", "signal_max", "lower", "upper", "value") or abs(value) < 0.01:
        return "{:.4g}"
    return "{:,.2f}"


# --- helpers -------------------------------------------------------------------------------------


def _read_optional(path: Path) -> pl.DataFrame | None:
    return pl.read_parquet(path) if path.is_file() else None


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _check_png(png: bytes) -> None:
    if not png.startswith(PNG_MAGIC):
        raise ValueError(f"not a PNG image: starts with {png[:8]!r}, expected {PNG_MAGIC!r}")


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _checked_states(states: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in ("timestamp", "equity", "drawdown") if c not in states.columns]
    if missing:
        raise ValueError(
            f"portfolio_states is missing column(s) {missing}; it has {states.columns}"
        )
    if states.height == 0:
        raise ValueError("portfolio_states has no rows: nothing to plot")
    dtype = states.schema["timestamp"]
    if not isinstance(dtype, pl.Datetime) and dtype != pl.Date:
        raise TypeError(f"portfolio_states.timestamp must be Datetime or Date, got {dtype}")
    out = states.select(
        "timestamp", pl.col("equity").cast(pl.Float64), pl.col("drawdown").cast(pl.Float64)
    )
    checks = {
        "null timestamp": pl.col("timestamp").is_null(),
        "duplicate timestamp": pl.col("timestamp").is_duplicated(),
        "null or non-finite equity": pl.col("equity").is_null() | ~pl.col("equity").is_finite(),
        "null or non-finite drawdown": pl.col("drawdown").is_null()
        | ~pl.col("drawdown").is_finite(),
        "drawdown above 0 (must be equity / peak - 1 <= 0)": pl.col("drawdown")
        > _DRAWDOWN_TOLERANCE,
    }
    for problem, expr in checks.items():
        bad = out.filter(expr)
        if bad.height:
            raise ValueError(
                f"portfolio_states has {bad.height} row(s) with {problem}, e.g. "
                f"{bad.head(5).rows()}"
            )
    return out.sort("timestamp")


def _plot_times(timestamps: pl.Series) -> np.ndarray:
    if isinstance(timestamps.dtype, pl.Datetime):
        if timestamps.dtype.time_zone is not None:
            timestamps = timestamps.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return timestamps.cast(pl.Datetime("us")).to_numpy()
    return timestamps.to_numpy()


def _figure(portfolio_states: pl.DataFrame, title: str) -> str:
    if portfolio_states.height == 0:
        return '<p class="note">No portfolio states: nothing to plot.</p>'
    png = equity_drawdown_png(portfolio_states, title="")
    states = _checked_states(portfolio_states)
    first, last = states["timestamp"][0], states["timestamp"][-1]
    caption = (
        f"{states.height:,} bars from {_cell_time(first)} to {_cell_time(last)} (UTC). "
        "Drawdown = equity / running peak - 1."
    )
    return (
        f'<figure><img src="{_data_uri(png)}" alt="{_esc("Equity and drawdown: " + title)}">'
        f'<figcaption class="note">{_esc(caption)}</figcaption></figure>'
    )


def _lineage_table(lineage: Mapping[str, str]) -> str:
    if not lineage:
        return '<p class="note">No lineage recorded.</p>'
    rows = "".join(
        f'<tr><th scope="row">{_esc(k)}</th><td><code>{_esc(v)}</code></td></tr>'
        for k, v in lineage.items()
    )
    return f'<table class="lineage"><tbody>{rows}</tbody></table>'


def _metrics_table(metrics: Mapping[str, float]) -> str:
    if not metrics:
        return '<p class="note">No metrics.</p>'
    rows = []
    for name, value in metrics.items():
        shown = format_metric(name, value)
        css = ' class="neg"' if shown.startswith("-") else ""
        rows.append(
            f'<tr><th scope="row" class="text">{_esc(name)}</th><td{css}>{_esc(shown)}</td></tr>'
        )
    return (
        '<table class="metrics"><thead><tr><th class="text">metric</th><th>value</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _exit_reason_table(trades: pl.DataFrame) -> str:
    if trades.height == 0:
        return '<p class="note">No trades.</p>'
    summary = (
        trades.group_by("exit_reason")
        .agg(
            pl.len().alias("count"),
            (pl.col("pnl_net") > 0).mean().alias("win_rate"),
            pl.col("pnl_net").sum().alias("total_pnl_net"),
            pl.col("return_pct").mean().alias("mean_return_pct"),
            pl.col("bars_held").mean().alias("mean_bars_held"),
        )
        .sort(["count", "exit_reason"], descending=[True, False], nulls_last=True)
    )
    head = (
        '<thead><tr><th class="text">exit reason</th><th>count</th><th>win rate</th>'
        "<th>total pnl_net</th><th>mean return_pct</th><th>mean bars_held</th></tr></thead>"
    )
    rows = []
    for r in summary.iter_rows(named=True):
        reason = r["exit_reason"] if r["exit_reason"] is not None else "—"
        cells = [
            f'<td class="text">{_esc(reason)}</td>',
            f"<td>{r['count']:,}</td>",
            _num_cell(r["win_rate"], "{:.1%}"),
            _num_cell(r["total_pnl_net"], "{:,.2f}"),
            _num_cell(r["mean_return_pct"], "{:.2%}"),
            _num_cell(r["mean_bars_held"], "{:,.1f}"),
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    note = (
        '<p class="note">Win rate = share of trades with pnl_net &gt; 0; return_pct is '
        "pnl_net / (entry_price &times; quantity).</p>"
    )
    return f'<table class="exit-reasons">{head}<tbody>{"".join(rows)}</tbody></table>{note}'


def _trades_table(trades: pl.DataFrame) -> str:
    if trades.height == 0:
        return '<p class="note">No trades.</p>'
    columns = [c for c in TRADE_COLUMNS if c in trades.columns]
    shown = trades.head(MAX_TRADES_SHOWN).select(columns)
    head = "".join(
        f'<th class="{"text" if _is_text(shown, c) else "num"}">{_esc(c)}</th>' for c in columns
    )
    body = []
    for row in shown.iter_rows(named=True):
        body.append("<tr>" + "".join(_trade_cell(c, row[c], shown) for c in columns) + "</tr>")
    note = (
        f'<p class="note">Showing the first {shown.height:,} of {trades.height:,} trades. '
        "Timestamps are UTC bar closes; prices in currency per share.</p>"
    )
    return (
        f'<table class="trades"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
        f"</table>{note}"
    )


def _is_text(frame: pl.DataFrame, column: str) -> bool:
    return not frame.schema[column].is_numeric()


def _num_cell(value: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "<td>n/a</td>"
    shown = fmt.format(value)
    css = ' class="neg"' if shown.startswith("-") else ""
    return f"<td{css}>{_esc(shown)}</td>"


def _trade_cell(column: str, value: object, frame: pl.DataFrame) -> str:
    if value is None:
        return "<td>—</td>"
    if isinstance(value, datetime | date):
        return f'<td class="text">{_esc(_cell_time(value))}</td>'
    if _is_text(frame, column):
        return f'<td class="text">{_esc(value)}</td>'
    if column in _PERCENT_COLUMNS:
        return _num_cell(float(value), "{:.2%}")  # type: ignore[arg-type]
    if column in _COUNT_COLUMNS or isinstance(value, int):
        return _num_cell(float(value), "{:,.0f}")  # type: ignore[arg-type]
    if column == "quantity":
        number = float(value)  # type: ignore[arg-type]
        fmt = "{:,.0f}" if number.is_integer() else "{:,.4f}"
        return _num_cell(number, fmt)
    return _num_cell(float(value), "{:,.2f}")  # type: ignore[arg-type]


def _cell_time(value: object) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        if value.hour == value.minute == value.second == value.microsecond == 0:
            return value.strftime("%Y-%m-%d")
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
