"""The performance report: one function that builds it (:func:`build_report`), the settings it
takes from an experiment (:func:`report_settings`) and its rebuild from an ``ml4t run`` folder
(:func:`rebuild_report`).

Everything here is Dagster-free. :func:`build_report` is the one report function: the
``performance_report`` asset calls it, and :func:`rebuild_report` (``ml4t report DIR``) calls it
on an ``ml4t run`` folder's files with the settings the asset used. It computes the analysis
once (:mod:`ml4t_pipeline.lib.report_analysis`) and renders it
(:mod:`ml4t_pipeline.lib.report_html`, figures in :mod:`ml4t_pipeline.lib.report_figures`);
the names of those modules are importable from here too, as before the split.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ml4t_pipeline.lib import attribution as attribution_lib
from ml4t_pipeline.lib.calendars import DEFAULT_CALENDAR

if TYPE_CHECKING:
    from ml4t_pipeline.config import ExperimentConfig

from ml4t_pipeline.lib.report_analysis import ROLLING_WINDOW, ReportAnalysis, analyse_run
from ml4t_pipeline.lib.report_figures import PNG_MAGIC, equity_drawdown_png, png_markdown
from ml4t_pipeline.lib.report_html import (
    MAX_TRADES_SHOWN,
    REPORT_SECTIONS,
    TRADE_COLUMNS,
    format_metric,
    render_report_html,
    write_report,
)

__all__ = [
    "MAX_TRADES_SHOWN",
    "PNG_MAGIC",
    "REPORT_SECTIONS",
    "REPORT_SETTINGS_FILE",
    "ROLLING_WINDOW",
    "TRADE_COLUMNS",
    "ReportAnalysis",
    "analyse_run",
    "build_report",
    "equity_drawdown_png",
    "format_metric",
    "png_markdown",
    "rebuild_report",
    "render_report_html",
    "report_settings",
    "write_report",
]

REPORT_SETTINGS_FILE = "report_settings.json"
"""File of an ``ml4t run`` folder holding the keyword arguments of :func:`build_report` the
``performance_report`` asset used (:func:`report_settings`); ``ml4t report`` reuses them."""


def report_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """The settings :func:`build_report` takes from an experiment: ``periods_per_year``,
    ``risk_free_rate`` (annual fraction), ``initial_cash`` (currency), ``signal`` (the column
    the strategy ranks by), ``horizon`` (bars of the IC's forward return), ``title`` and
    ``benchmark`` (``reporting.benchmark`` with the data's ``bar_length``, and its
    ``calendar`` unless it is the default XNYS; or None).

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
        "benchmark": bench.model_dump(exclude_none=True)
        | {"bar_length": cfg.data.bar_length}
        | ({"calendar": cfg.data.calendar} if cfg.data.calendar != DEFAULT_CALENDAR else {})
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
    corporate_actions: pl.DataFrame | None = None,
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
    corporate_actions : pl.DataFrame, optional
        The run's corporate-action events (``BacktestResult.corporate_actions``), added to
        the attribution tables (:func:`ml4t_pipeline.lib.attribution.add_mechanics`) and
        shown in their section.

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
    if corporate_actions is not None:
        attribution_lib.add_mechanics(analysis.attribution, portfolio_states, corporate_actions)
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
    ``signals.parquet``, ``corporate_actions.parquet`` (the corporate-action events of a run on
    raw prices), ``metrics.json`` and ``lineage.json``, and calls :func:`build_report`
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
        corporate_actions=_read_optional(
            folder / attribution_lib.MECHANICS_FILES["corporate_actions"]
        ),
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
    actions = spec.get("corporate_actions")
    return load_benchmark_returns(
        path,
        str(spec["symbol"]),
        spec.get("bar_length"),
        calendar=str(spec.get("calendar", DEFAULT_CALENDAR)),
        corporate_actions=None
        if not actions
        else (
            resolve_data_path(
                str(actions["path"]), field="reporting.benchmark.corporate_actions.path"
            ),
            str(actions.get("format", "table")),
        ),
    )


def _read_optional(path: Path) -> pl.DataFrame | None:
    return pl.read_parquet(path) if path.is_file() else None
