"""A sweep's result table and summary: one row per trial, DSR and PBO across the trials.

``sweep_results.parquet`` has one row per trial: ``trial`` (its index), one column per swept
path (named by the path, e.g. ``strategy.n``; values that are not scalars are stored as JSON
text), ``status`` (``ok``/``failed``), ``hash`` (the trial key), ``seconds`` and
``cpu_seconds`` (the trial's own wall and CPU time), ``error`` and the metrics of
:data:`~ml4t_pipeline.lib.sweep.runner.TRIAL_METRICS` (``sharpe`` is annualised, as everywhere
in the project).

``sweep_summary.json`` (strict JSON: no NaN) holds the counts, the best trial, the Deflated
Sharpe Ratio and the PBO (:mod:`ml4t_pipeline.lib.sweep.stats`) and the lineage (code version,
data versions).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ml4t_pipeline.lib.sweep import stats
from ml4t_pipeline.lib.sweep.runner import TRIAL_METRICS, SweepRun, TrialStore
from ml4t_pipeline.lib.sweep.spec import SweepFile

__all__ = ["results_table", "returns_matrix", "summarize"]

DSR_THRESHOLD = 0.95
"""The conventional significance bar for the Deflated Sharpe Ratio."""


def _cell(value: Any) -> Any:
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return json.dumps(value, sort_keys=True)


def results_table(sweep: SweepFile, run: SweepRun) -> pl.DataFrame:
    """One row per trial in trial order (see the module docstring for the columns)."""
    rows = []
    for trial, record in zip(sweep.trials, run.records, strict=True):
        row: dict[str, Any] = {"trial": trial.index}
        row |= {path: _cell(value) for path, value in trial.params.items()}
        row |= {
            "status": record["status"],
            "hash": record["hash"],
            "seconds": float(record["seconds"]),
            "cpu_seconds": float(record.get("cpu_seconds", 0.0)),
            "error": record.get("error"),
        }
        metrics = record.get("metrics") or {}
        for name in TRIAL_METRICS:
            value = metrics.get(name)
            row[name] = None if value is None else float(value)
        rows.append(row)
    schema: dict[str, Any] = {"trial": pl.Int64, "status": pl.String, "hash": pl.String,
                              "seconds": pl.Float64, "cpu_seconds": pl.Float64,
                              "error": pl.String}  # fmt: skip
    schema |= {name: pl.Float64 for name in TRIAL_METRICS}
    frame = pl.DataFrame(rows, infer_schema_length=None, schema_overrides=schema)
    return frame.with_columns(pl.col("n_trades").cast(pl.Int64))


def returns_matrix(run: SweepRun, folder: Path) -> tuple[np.ndarray, list[int], np.ndarray]:
    """The ``ok`` trials' per-bar returns on their common timestamps.

    Returns
    -------
    matrix : ndarray[float64], shape (T, N)
        Per-bar returns (fractions); one column per ``ok`` trial.
    trials : list[int]
        Trial index of each column.
    timestamps : ndarray[datetime64[us]], shape (T,)
        The common bars (present in every ``ok`` trial), increasing.
    """
    store = TrialStore(folder)
    series: list[pl.DataFrame] = []
    trials: list[int] = []
    for key, record in zip(run.keys, run.records, strict=True):
        if record["status"] != "ok":
            continue
        frame = store.load_returns(key).select("timestamp", pl.col("return").alias(key))
        series.append(frame)
        trials.append(int(record["trial"]))
    if not series:
        return np.zeros((0, 0)), [], np.array([], dtype="datetime64[us]")
    joined = series[0]
    for frame in series[1:]:
        if frame.height == joined.height and frame["timestamp"].equals(joined["timestamp"]):
            joined = joined.hstack(frame.drop("timestamp"))
        else:
            joined = joined.join(frame, on="timestamp", how="inner")
    joined = joined.sort("timestamp")
    matrix = joined.drop("timestamp").to_numpy().astype(np.float64)
    return matrix, trials, joined["timestamp"].to_numpy()


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def summarize(sweep: SweepFile, run: SweepRun, table: pl.DataFrame, folder: Path) -> dict[str, Any]:
    """The content of ``sweep_summary.json``.

    The DSR and the PBO use the per-bar excess returns of the ``ok`` trials over the per-bar
    risk-free rate ``(1 + R_f) ** (1 / P) - 1`` of the base experiment's reporting section; the
    DSR deflates by the number of ``ok`` trials. With fewer than two ``ok`` trials (or too few
    bars for the splits) a statistic is ``null`` and ``reason`` says why.
    """
    matrix, trials, timestamps = returns_matrix(run, folder)
    reporting = sweep.base.reporting
    ppy = reporting.periods_per_year
    rf = (1.0 + reporting.risk_free_rate) ** (1.0 / ppy) - 1.0
    excess = matrix - rf
    n_ok = int((table["status"] == "ok").sum())
    summary: dict[str, Any] = {
        "sweep": sweep.name,
        "sweep_file": str(sweep.path),
        "swept": sweep.spec.paths(),
        "kind": "grid" if sweep.spec.grid is not None else "random",
        "n_trials": table.height,
        "n_ok": n_ok,
        "n_failed": table.height - n_ok,
        "n_computed": run.computed,
        "n_reused": run.reused,
        "backend": run.backend,
        "workers": run.workers,
        "seconds": run.seconds,
        "prepare_seconds": run.prepare_seconds,
        "n_periods": int(matrix.shape[0]),
        "periods_per_year": ppy,
        "code_version": run.code_version,
        "data_versions": {k: d.versions for k, d in run.data.items()},
    }
    best = table.filter(pl.col("status") == "ok").sort("sharpe", descending=True, nulls_last=True)
    summary["best_trial"] = (
        {
            "trial": int(best["trial"][0]),
            "hash": best["hash"][0],
            "params": sweep.trials[int(best["trial"][0])].params,
            **{m: best[m][0] for m in TRIAL_METRICS},
        }
        if best.height
        else None
    )
    summary["deflated_sharpe"] = _dsr(excess, trials, ppy)
    summary["pbo"] = _pbo(excess, sweep.spec.pbo_splits)
    return summary


def _dsr(excess: np.ndarray, trials: list[int], ppy: int) -> dict[str, Any]:
    if excess.shape[1] < 2 or excess.shape[0] < 3:
        return {"dsr": None, "reason": f"needs >= 2 ok trials and 3 bars, got {excess.shape}"}
    try:
        d = stats.deflated_sharpe_ratio(excess)
    except ValueError as exc:
        return {"dsr": None, "reason": str(exc)}
    out = asdict(d)
    out["best_trial"] = trials[d.best_index]
    out["sharpe_annual"] = d.sharpe * math.sqrt(ppy)
    out["expected_max_sharpe_annual"] = d.expected_max_sharpe * math.sqrt(ppy)
    out["significant"] = d.dsr > DSR_THRESHOLD
    out["threshold"] = DSR_THRESHOLD
    return {k: (_finite(v) if isinstance(v, float) else v) for k, v in out.items()}


def _pbo(excess: np.ndarray, splits: int) -> dict[str, Any]:
    if excess.shape[1] < 2:
        return {"pbo": None, "reason": f"needs >= 2 ok trials, got {excess.shape[1]}"}
    # fewer bars than the splits need: use the largest even S that fits (stated in the output)
    s = min(splits, (excess.shape[0] // 2) // 2 * 2)
    if s < 2:
        return {"pbo": None, "reason": f"{excess.shape[0]} bars are too few for CSCV"}
    result = stats.probability_of_backtest_overfitting(excess, n_splits=s)
    return {
        "pbo": result.pbo,
        "n_splits": result.n_splits,
        "n_combinations": int(result.logits.size),
        "n_periods_used": result.n_periods_used,
        "logit_median": float(np.median(result.logits)),
        "splits_requested": splits,
    }


def figures(
    sweep: SweepFile, run: SweepRun, table: pl.DataFrame, summary: dict[str, Any], folder: Path
) -> dict[str, bytes]:
    """The report's PNGs: ``heatmap``, ``histogram`` and ``equity`` (top 5 trials)."""
    from ml4t_pipeline.lib.sweep import report

    axes = sweep.spec.axes or sweep.spec.paths()[:2]
    x, y = axes[0], (axes[1] if len(axes) > 1 else None)
    dsr = summary.get("deflated_sharpe") or {}
    ok = table.filter(pl.col("status") == "ok")
    store = TrialStore(folder)
    curves = {}
    for row in ok.sort("sharpe", descending=True, nulls_last=True).head(5).iter_rows(named=True):
        frame = store.load_returns(row["hash"])
        label = f"trial {row['trial']}: " + ", ".join(f"{p}={row[p]}" for p in sweep.spec.paths())
        curves[label] = (frame["timestamp"].to_numpy(), frame["return"].to_numpy())
    return {
        "heatmap": report.sharpe_heatmap_png(table, x, y),
        "histogram": report.sharpe_histogram_png(
            ok["sharpe"].to_numpy().astype(np.float64),
            dsr.get("expected_max_sharpe_annual"),
            dsr.get("sharpe_annual"),
        ),
        "equity": report.equity_top_png(curves),
    }


def write_outputs(sweep: SweepFile, run: SweepRun, folder: Path) -> dict[str, Any]:
    """Write ``sweep_results.parquet``, ``sweep_summary.json`` and ``sweep_report.html``.

    Each file is written to a temporary name and renamed. Returns a dict with ``table``,
    ``summary`` and ``figures`` (PNG bytes by name) for callers that show them (the Dagster
    asset).
    """
    from ml4t_pipeline.lib.sweep import report
    from ml4t_pipeline.lib.sweep.runner import _atomic_write, write_json

    folder = Path(folder)
    table = results_table(sweep, run)
    summary = summarize(sweep, run, table, folder)
    pngs = figures(sweep, run, table, summary, folder)
    _atomic_write(folder / "sweep_results.parquet", lambda tmp: table.write_parquet(tmp))
    write_json(folder / "sweep_summary.json", summary)
    text = report.render_sweep_html(summary, table, pngs)
    _atomic_write(folder / "sweep_report.html", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return {"table": table, "summary": summary, "figures": pngs}
