"""A sweep's result table and summary: one row per trial, DSR and PBO across the trials.

``sweep_results.parquet`` has one row per trial: ``trial`` (its index), one column per swept
path (named by the path, e.g. ``strategy.n``; values that are not scalars are stored as JSON
text), ``status`` (``ok``/``failed``), ``hash`` (the trial key), ``seconds`` and
``cpu_seconds`` (the trial's own wall and CPU time; in a variant pass its share of the pass),
``driver`` (``variants``: run in a pass of the compiled variant driver, :mod:`~ml4t_pipeline.
lib.sweep.variants`; ``single``: a backtest of its own), ``error`` and the metrics of
:data:`~ml4t_pipeline.lib.sweep.runner.TRIAL_METRICS` (``sharpe`` is annualised, as everywhere
in the project).

Four more columns carry each ``ok`` trial's evidence on its own and after the search:
``psr`` (probability that its true Sharpe ratio is above 0), ``sharpe_pvalue`` (``1 − psr``),
``sharpe_pvalue_holm`` and ``sharpe_pvalue_by`` (Holm and Benjamini–Hochberg–Yekutieli
adjusted, across the ``ok`` trials); null for failed trials.

``sweep_summary.json`` (strict JSON: no NaN) holds the counts, the best trial, the Deflated
Sharpe Ratio and the PBO, the best trial's PSR and minimum track record length, Hansen's SPA,
White's Reality Check and StepM (``spa``), the adjusted p-value counts
(``multiple_testing``), the gates and their verdict (``gates``, ``verdict``), the walk-forward
results when the sweep has ``walk_forward`` and the CPCV distribution of out-of-sample Sharpe
ratios when it has ``cpcv`` (:mod:`ml4t_pipeline.lib.sweep.stats`,
:mod:`ml4t_pipeline.lib.sweep.walkforward`, :mod:`ml4t_pipeline.lib.sweep.cpcv`) and the
lineage (code version, data versions).
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
from ml4t_pipeline.lib.sweep.spec import GatesSpec, StatsSpec, SweepFile

__all__ = [
    "GATES",
    "evaluate_gates",
    "results_table",
    "returns_matrix",
    "summarize",
    "trial_statistics",
]

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
            "driver": record.get("driver", "single"),
            "error": record.get("error"),
        }
        metrics = record.get("metrics") or {}
        for name in TRIAL_METRICS:
            value = metrics.get(name)
            row[name] = None if value is None else float(value)
        rows.append(row)
    schema: dict[str, Any] = {"trial": pl.Int64, "status": pl.String, "hash": pl.String,
                              "seconds": pl.Float64, "cpu_seconds": pl.Float64,
                              "driver": pl.String, "error": pl.String}  # fmt: skip
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


def excess_matrix(sweep: SweepFile, matrix: np.ndarray) -> np.ndarray:
    """Per-bar returns minus the per-bar risk-free rate ``(1 + R_f) ** (1 / P) - 1`` of the
    base experiment's reporting section."""
    reporting = sweep.base.reporting
    rf = (1.0 + reporting.risk_free_rate) ** (1.0 / reporting.periods_per_year) - 1.0
    return matrix - rf


def trial_statistics(table: pl.DataFrame, excess: np.ndarray, trials: list[int]) -> pl.DataFrame:
    """``table`` with the per-trial columns ``psr``, ``sharpe_pvalue``, ``sharpe_pvalue_holm``
    and ``sharpe_pvalue_by`` (Float64; null where a trial failed or there are < 3 bars).

    Parameters
    ----------
    table : pl.DataFrame
        :func:`results_table`.
    excess : ndarray[float64], shape (T, N)
        The ``ok`` trials' per-bar excess returns (:func:`excess_matrix`).
    trials : list[int]
        Trial index of each column.
    """
    names = ["psr", "sharpe_pvalue", "sharpe_pvalue_holm", "sharpe_pvalue_by"]
    if excess.shape[1] == 0 or excess.shape[0] < 3:
        return table.with_columns(pl.lit(None, dtype=pl.Float64).alias(n) for n in names)
    p = stats.sharpe_pvalues(excess)
    frame = pl.DataFrame(
        {
            "trial": pl.Series(trials, dtype=pl.Int64),
            "psr": 1.0 - p,
            "sharpe_pvalue": p,
            "sharpe_pvalue_holm": stats.adjusted_pvalues(p, "holm"),
            "sharpe_pvalue_by": stats.adjusted_pvalues(p, "by"),
        }
    )
    return table.join(frame, on="trial", how="left").sort("trial")


def summarize(
    sweep: SweepFile,
    run: SweepRun,
    table: pl.DataFrame,
    folder: Path,
    *,
    matrix: tuple[np.ndarray, list[int], np.ndarray] | None = None,
) -> dict[str, Any]:
    """The content of ``sweep_summary.json``.

    The statistics use the per-bar excess returns of the ``ok`` trials (:func:`excess_matrix`);
    the DSR deflates by the number of ``ok`` trials. With fewer than two ``ok`` trials (or too
    few bars for the splits) a statistic is ``null`` and ``reason`` says why. ``matrix`` is
    :func:`returns_matrix`'s result when the caller has it already.
    """
    matrix_, trials, timestamps = matrix if matrix is not None else returns_matrix(run, folder)
    matrix = (matrix_, trials, timestamps)
    ppy = sweep.base.reporting.periods_per_year
    excess = excess_matrix(sweep, matrix_)
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
        "n_periods": int(matrix_.shape[0]),
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
    settings = sweep.spec.stats
    summary["psr"] = _psr(excess, trials, ppy, settings.alpha)
    summary["spa"] = _spa(excess, trials, settings)
    summary["multiple_testing"] = _multiple_testing(excess, trials, settings.alpha)
    if sweep.spec.walk_forward is not None:
        from ml4t_pipeline.lib.sweep import walkforward

        summary["walk_forward"] = walkforward.summary_section(sweep, run, folder, matrix)
    if sweep.spec.cpcv is not None:
        from ml4t_pipeline.lib.sweep import cpcv
        from ml4t_pipeline.lib.sweep.walkforward import default_purge

        spec = sweep.spec.cpcv
        summary["cpcv"] = cpcv.summary_section(
            excess,
            trials,
            n_folds=spec.n_folds,
            n_test_folds=spec.n_test_folds,
            purge=spec.purge if spec.purge is not None else default_purge(sweep.base),
            embargo=spec.embargo,
            select=spec.select,
            periods_per_year=ppy,
        )
    gates = evaluate_gates(summary, sweep.spec.gates)
    summary["gates"] = gates
    summary["verdict"] = verdict(gates)
    return summary


GATES = ("best_trial_dsr_at_least", "pbo_at_most", "spa_pvalue_at_most")
"""The asset checks of ``sweep_results``, named as predicates (thresholds: ``sweep.gates``)."""


def evaluate_gates(summary: dict[str, Any], gates: GatesSpec) -> list[dict[str, Any]]:
    """Each gate of :data:`GATES` against the summary's statistics.

    Returns
    -------
    list[dict]
        One per gate, in :data:`GATES` order: ``name``, ``passed`` (bool), ``value`` (the
        statistic or None), ``threshold``, ``blocking`` (``gates.blocking``) and ``detail`` (a
        sentence; the reason when the statistic could not be computed, which fails the gate).
    """
    values = {
        "best_trial_dsr_at_least": (
            (summary.get("deflated_sharpe") or {}).get("dsr"),
            gates.best_trial_dsr_at_least,
            ">=",
            "deflated_sharpe",
        ),
        "pbo_at_most": ((summary.get("pbo") or {}).get("pbo"), gates.pbo_at_most, "<=", "pbo"),
        "spa_pvalue_at_most": (
            (summary.get("spa") or {}).get("spa_pvalue"),
            gates.spa_pvalue_at_most,
            "<=",
            "spa",
        ),
    }
    out = []
    for name in GATES:
        value, threshold, op, section = values[name]
        if value is None:
            passed = False
            reason = (summary.get(section) or {}).get("reason", "not computed")
            detail = f"{name}: not computable ({reason})"
        else:
            passed = value >= threshold if op == ">=" else value <= threshold
            detail = f"{name}: {value:.4g} {op} {threshold:g}: {'pass' if passed else 'fail'}"
        out.append(
            {
                "name": name,
                "passed": bool(passed),
                "value": value,
                "threshold": threshold,
                "blocking": gates.blocking,
                "detail": detail,
            }
        )
    return out


def verdict(gates: list[dict[str, Any]]) -> str:
    """One line naming the gates that pass and those that fail."""
    passed = [g["name"] for g in gates if g["passed"]]
    failed = [g["name"] for g in gates if not g["passed"]]
    head = "all gates pass" if not failed else f"{len(failed)} of {len(gates)} gates fail"
    parts = [f"passed: {', '.join(passed)}" if passed else "passed: none"]
    if failed:
        parts.append(f"failed: {', '.join(failed)}")
    return f"{head} ({'; '.join(parts)})"


def _psr(excess: np.ndarray, trials: list[int], ppy: int, alpha: float) -> dict[str, Any]:
    if excess.shape[1] < 1 or excess.shape[0] < 3:
        return {"psr": None, "reason": f"needs >= 1 ok trial and 3 bars, got {excess.shape}"}
    srs = stats.sharpe_ratios(excess)
    best = int(np.argmax(srs))
    skew, kurt = stats.moments(excess[:, best])
    try:
        psr = stats.probabilistic_sharpe_ratio(float(srs[best]), 0.0, excess.shape[0], skew, kurt)
        mintrl = stats.min_track_record_length(float(srs[best]), 0.0, skew, kurt, alpha=alpha)
    except ValueError as exc:
        return {"psr": None, "reason": str(exc)}
    finite = math.isfinite(mintrl)
    return {
        "best_trial": trials[best],
        "psr": psr,
        "benchmark_sharpe": 0.0,
        "alpha": alpha,
        "n_periods": int(excess.shape[0]),
        "min_track_record_length": mintrl if finite else None,
        "min_track_record_years": mintrl / ppy if finite else None,
        "track_record_sufficient": bool(finite and excess.shape[0] >= mintrl),
    }


def _spa(excess: np.ndarray, trials: list[int], settings: StatsSpec) -> dict[str, Any]:
    if settings.bootstrap_reps == 0:
        return {"spa_pvalue": None, "reason": "sweep.stats.bootstrap_reps is 0 (tests off)"}
    if excess.shape[1] < 1 or excess.shape[0] < 3:
        return {"spa_pvalue": None, "reason": f"needs >= 1 ok trial and 3 bars, got {excess.shape}"}
    result = stats.superior_predictive_ability(
        excess,
        reps=settings.bootstrap_reps,
        block_size=settings.block_size,
        seed=settings.seed,
        alpha=settings.alpha,
    )
    out = asdict(result)
    out["stepm_superior_trials"] = [trials[i] for i in result.stepm_superior]
    out["benchmark"] = "zero excess return (cash at the risk-free rate)"
    out["measure"] = "mean per-bar excess return"
    return out


def _multiple_testing(excess: np.ndarray, trials: list[int], alpha: float) -> dict[str, Any]:
    if excess.shape[1] < 1 or excess.shape[0] < 3:
        return {"alpha": alpha, "reason": f"needs >= 1 ok trial and 3 bars, got {excess.shape}"}
    p = stats.sharpe_pvalues(excess)
    holm = stats.adjusted_pvalues(p, "holm")
    by = stats.adjusted_pvalues(p, "by")
    best = int(np.argmax(stats.sharpe_ratios(excess)))
    return {
        "alpha": alpha,
        "null": "true Sharpe ratio <= 0, one-sided, PSR standard error",
        "n_tested": int(p.size),
        "n_significant": int((p <= alpha).sum()),
        "n_significant_holm": int((holm <= alpha).sum()),
        "n_significant_by": int((by <= alpha).sum()),
        "best_trial": trials[best],
        "best_trial_pvalue": float(p[best]),
        "best_trial_pvalue_holm": float(holm[best]),
        "best_trial_pvalue_by": float(by[best]),
    }


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
    """The report's PNGs: ``heatmap``, ``histogram``, ``equity`` (top 5 trials) and, with a
    walk-forward, ``walk_forward`` (the stitched out-of-sample equity)."""
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
    pngs: dict[str, bytes] = {}
    section = summary.get("walk_forward") or {}
    if section.get("folds"):
        from ml4t_pipeline.lib.sweep.walkforward import OOS_FILE

        oos = pl.read_parquet(folder / OOS_FILE)
        starts = oos.group_by("fold").agg(pl.col("timestamp").min()).sort("fold")
        pngs["walk_forward"] = report.walk_forward_png(
            oos["timestamp"].to_numpy(), oos["equity"].to_numpy(), starts["timestamp"].to_numpy()
        )
    return pngs | {
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
    from ml4t_pipeline.lib.sweep.store import _atomic_write, write_json

    folder = Path(folder)
    table = results_table(sweep, run)
    matrix = returns_matrix(run, folder)
    table = trial_statistics(table, excess_matrix(sweep, matrix[0]), matrix[1])
    summary = summarize(sweep, run, table, folder, matrix=matrix)
    pngs = figures(sweep, run, table, summary, folder)
    _atomic_write(folder / "sweep_results.parquet", lambda tmp: table.write_parquet(tmp))
    write_json(folder / "sweep_summary.json", summary)
    text = report.render_sweep_html(summary, table, pngs)
    _atomic_write(folder / "sweep_report.html", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return {"table": table, "summary": summary, "figures": pngs}
