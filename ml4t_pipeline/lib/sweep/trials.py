"""One trial of a sweep: its key, its backtest on prepared data and what it produced.

A trial's key is the SHA-256 of (its config's canonical JSON, the content hashes of the prepared
panel and context, the code version of :func:`sweep_code_version`); :func:`run_trial` never
raises: a failed trial is recorded with its error (``status = "failed"``) and the sweep goes on.
"""

from __future__ import annotations

import hashlib
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from ml4t_pipeline.config import ExperimentConfig
from ml4t_pipeline.lib.lineage import code_version
from ml4t_pipeline.lib.sweep.spec import Trial, canonical_json

if TYPE_CHECKING:
    from engine import MarketData
    from engine.metrics import RunReductions

CODE_VERSION_ENV = "ML4T_CODE_VERSION"
TRIAL_METRICS = (
    "sharpe",
    "cagr",
    "max_drawdown",
    "n_trades",
    "turnover",
    "total_return",
    "annual_volatility",
    "sortino",
    "calmar",
    "win_rate",
    "exposure",
    "final_equity",
    "total_costs",
)
"""Metrics kept per trial (formulas: :func:`ml4t_pipeline.lib.performance.compute_performance`)."""


class SweepError(RuntimeError):
    """A sweep could not start: its data could not be prepared, or the backend is unusable."""


@dataclass
class TrialOutcome:
    """What one trial produced (picklable; crosses process and Ray boundaries).

    ``seconds`` is the trial's own time in its worker (backtest + metrics), without scheduling
    or transfer; ``cpu_seconds`` the worker process's CPU time over the same span (below
    ``seconds`` when other processes compete for the cores). ``timestamps`` are microseconds
    since the epoch (UTC), ``returns`` the per-bar portfolio returns (fractions), ``equity`` in
    currency.
    """

    status: Literal["ok", "failed"]
    seconds: float
    cpu_seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    timestamps: np.ndarray | None = None
    returns: np.ndarray | None = None
    equity: np.ndarray | None = None
    driver: Literal["single", "variants"] = "single"
    """``"variants"``: the trial ran in a pass of the compiled variant driver
    (:mod:`~ml4t_pipeline.lib.sweep.variants`), its ``seconds`` / ``cpu_seconds`` its share of
    that pass; ``"single"``: a backtest of its own."""


def sweep_code_version() -> str:
    """The code version in trial keys: ``$ML4T_CODE_VERSION`` if set, else the git commit.

    Pin it (e.g. to a release tag) when the code runs from an installed package without a git
    checkout, or to resume a sweep across commits that do not touch the engine; unset, any new
    commit recomputes every trial (:func:`ml4t_pipeline.lib.lineage.code_version`).
    """
    return os.environ.get(CODE_VERSION_ENV) or code_version()


def trial_key(trial: Trial, versions: dict[str, str], code: str) -> str:
    """SHA-256 (32 hex digits) of the trial config, the data versions and the code version."""
    text = canonical_json({"config": trial.config_json(), "data": versions, "code": code})
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def run_trial(config_json: str, market: MarketData) -> TrialOutcome:
    """Run one backtest on prepared data and compute its metrics; never raises.

    Parameters
    ----------
    config_json : str
        The trial's experiment config as JSON (``ExperimentConfig.model_dump_json``).
    market : engine.MarketData
        :func:`build_market` of the trial's prepared data (shared by the worker's trials).

    Returns
    -------
    TrialOutcome
        ``status="failed"`` with the exception's type, message and last frames on error.
    """
    from ml4t_pipeline.lib.experiment import build_engine

    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        cfg = ExperimentConfig.model_validate_json(config_json)
        result = build_engine(cfg, market).run()
        outcome = ok_outcome(cfg, result.portfolio_states, result.trades, result.fills)
    except Exception as exc:  # a failed trial is data, not the end of the sweep
        outcome = failed_outcome(exc)
    outcome.seconds = time.perf_counter() - started
    outcome.cpu_seconds = time.process_time() - cpu_started
    return outcome


def ok_outcome(
    cfg: ExperimentConfig, states: pl.DataFrame, trades: pl.DataFrame, fills: pl.DataFrame
) -> TrialOutcome:
    """The outcome of a finished backtest: its :data:`TRIAL_METRICS`
    (:func:`trial_metrics` of its portfolio states, trades and fills; the trades need
    ``pnl_net``, ``pnl_gross``, ``commission``, ``slippage`` and the fills ``quantity``,
    ``price``, ``commission``, ``slippage``) and its per-bar returns
    (missing ones as 0) and equity. ``seconds`` are left at 0 for the caller."""
    metrics = trial_metrics(cfg, states, trades, fills)
    # numpy, not polars expressions: an eager polars expression waits for polars' thread
    # pool, which a variant pass keeps busy (3 ms a call under load)
    column = states["return"]
    if column.null_count():
        column = column.fill_null(0.0)
    returns = column.to_numpy().astype(np.float64)
    returns[np.isnan(returns)] = 0.0
    stamps = states["timestamp"]
    return TrialOutcome(
        status="ok",
        seconds=0.0,
        metrics=metrics,
        timestamps=stamps.cast(pl.Datetime("us", getattr(stamps.dtype, "time_zone", None)))
        .to_physical()
        .to_numpy(),
        returns=returns,
        equity=states["equity"].to_numpy().astype(np.float64),
    )


def trial_metrics(
    cfg: ExperimentConfig, states: pl.DataFrame, trades: pl.DataFrame, fills: pl.DataFrame
) -> dict[str, Any]:
    """The :data:`TRIAL_METRICS` of a finished backtest, as
    :func:`ml4t_pipeline.lib.experiment.experiment_metrics` gives them, without the metrics a
    trial does not keep (drawdown duration, per-trade statistics, benchmark comparison: some
    0.5 ms a trial, half of the metrics' time in a 1,000-variant sweep).

    The same calls as :func:`ml4t_pipeline.lib.performance.compute_performance` makes for
    these keys: :func:`engine.compute_metrics` of the states, trades and fills with the run's
    ``periods_per_year``, ``risk_free_rate`` and initial cash, and ``total_costs`` from the
    fills' commission and slippage; an ``int`` stays an ``int``, any other value is a
    ``float``.
    """
    from engine import compute_metrics
    from ml4t_pipeline.lib import performance

    e0 = performance.initial_equity(states, cfg.execution.initial_cash)
    values: dict[str, Any] = dict(
        compute_metrics(
            states,
            trades,
            periods_per_year=float(cfg.reporting.periods_per_year),
            risk_free_rate=cfg.reporting.risk_free_rate,
            fills=fills,
            initial_cash=e0,
        )
    )
    return _kept(values, performance._cost_stats(trades, fills, e0)["total_costs"])


def reduced_metrics(
    cfg: ExperimentConfig, sums: RunReductions, commission: float, slippage: float
) -> dict[str, Any]:
    """:func:`trial_metrics` from a run's reductions (a variant pass computes them in a
    compiled kernel: :meth:`engine.compiled.variants.VariantPass.summary`) and the sums of its
    fills' commission and slippage (currency, summed as polars sums a column, as
    :func:`trial_metrics` does): the same values, from the same arithmetic
    (:func:`engine.metrics.metrics_from_reductions`)."""
    from engine.metrics import metrics_from_reductions

    values: dict[str, Any] = metrics_from_reductions(
        sums, float(cfg.execution.initial_cash), float(cfg.reporting.periods_per_year)
    )
    return _kept(values, commission + slippage)


def _kept(values: dict[str, Any], total_costs: float) -> dict[str, Any]:
    values["n_trades"] = int(values["n_trades"])
    values["total_costs"] = total_costs
    kept = (k for k in TRIAL_METRICS if k in values)
    return {k: (values[k] if isinstance(values[k], int) else float(values[k])) for k in kept}


def failed_outcome(exc: BaseException) -> TrialOutcome:
    """A failed trial's outcome: the exception's type, message and last frames."""
    tail = "".join(traceback.format_exception(exc)[-3:]).strip()
    return TrialOutcome(status="failed", seconds=0.0, error=f"{type(exc).__name__}: {exc}\n{tail}")
