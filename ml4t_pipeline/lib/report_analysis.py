"""What the full report shows, computed once: metrics, curves and attribution tables of one run
(:func:`analyse_run` → :class:`ReportAnalysis`). Dagster-free; rendered by
:mod:`ml4t_pipeline.lib.report_html`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from ml4t_pipeline.lib import attribution as attribution_lib
from ml4t_pipeline.lib import performance

if TYPE_CHECKING:
    pass

__all__ = ["ROLLING_WINDOW", "ReportAnalysis", "analyse_run"]

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
