"""Walk-forward optimisation over a sweep's variants: choose in sample, run out of sample.

With ``sweep.walk_forward`` in the sweep file::

    sweep:
      grid: {strategy.n: [5, 10, 25], "risk_rules[0].stop_pct": [0.03, 0.05]}
      walk_forward: {train: 3y, test: 1y, step: 1y, select: sharpe}

the bars of the sweep (the ``ok`` trials' common bars, :func:`~ml4t_pipeline.lib.sweep.results.
returns_matrix`) are cut into folds (:func:`make_folds`). For each fold:

1. **Selection (in sample).** Every variant's per-bar excess returns on the fold's *selection
   bars* are scored by ``select`` (:func:`selection_scores`); the highest score wins (first
   trial on ties). The selection bars are the train window without its last ``purge +
   embargo`` bars: with a label horizon ``h`` (the signal model's ``data.signals.horizon``, the
   default purge), the label of an in-sample bar ``t`` is the return over ``(t, t + h]``, so
   the last ``h`` bars' labels would reach into the test window. The in-sample returns come
   from each variant's run over the whole sample, read only on those bars: a run's return at a
   bar depends on that bar and earlier ones only.
2. **Out of sample.** The chosen variant runs alone on the fold's test window (its config with
   ``backtest.start``/``backtest.end`` set to the window's first and last bar: it starts in
   cash; features and signals keep their full look-back). The run is stored in the sweep's
   trial store like any trial, so a rerun reuses it.

The test windows follow each other without overlap; their per-bar returns are chained into one
out-of-sample equity curve (growth of 1, ``walk_forward_oos.parquet``) and every fold's
selection ends before its test window starts (:func:`check_no_overlap`, checked on every run).

**Outputs** (``sweep_summary.json["walk_forward"]`` and the report's walk-forward section):
the chosen variant per fold with its in-sample score and Sharpe ratio and its out-of-sample
Sharpe ratio and return; the stitched out-of-sample metrics; the **degradation ratio**
``OOS Sharpe (stitched) / mean IS Sharpe of the chosen variants`` and the **walk-forward
efficiency** ``annualised OOS return / mean annualised IS return`` (Pardo, R. (2008), "The
Evaluation and Optimization of Trading Strategies", 2nd ed., Wiley, ch. 11).

Annual Sharpe ratios here are ``mean(r − rf) / std(r − rf, ddof=1) × sqrt(P)`` of per-bar
returns ``r``, the per-bar risk-free rate ``rf`` and ``P`` periods per year (the base
experiment's reporting section); CAGR ``(Π(1 + r))^(P / T) − 1``; max drawdown the largest
fall of ``Π(1 + r)`` from its running peak (a negative fraction).
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ml4t_pipeline.config import ExperimentConfig, ModelSignalsConfig
from ml4t_pipeline.lib.sweep import stats
from ml4t_pipeline.lib.sweep.spec import SweepFile, Trial, WalkForwardSpec, data_key

if TYPE_CHECKING:
    from engine import MarketData
    from ml4t_pipeline.lib.sweep.runner import SweepRun

__all__ = [
    "OOS_FILE",
    "Fold",
    "check_no_overlap",
    "default_purge",
    "make_folds",
    "selection_scores",
    "stitch",
    "summary_section",
]

OOS_FILE = "walk_forward_oos.parquet"
"""The stitched out-of-sample returns: ``timestamp``, ``fold``, ``trial``, ``return``,
``equity`` (growth of 1)."""


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold, as row positions into the sweep's bars.

    Attributes
    ----------
    index : int
        0-based, in time order.
    train : ndarray[int64]
        Rows of the train window.
    select : ndarray[int64]
        Rows the selection reads: ``train`` without its last ``purge + embargo`` rows.
    test : ndarray[int64]
        Rows of the test window (all after ``train``).
    """

    index: int
    train: np.ndarray
    select: np.ndarray
    test: np.ndarray


def default_purge(cfg: ExperimentConfig) -> int:
    """The signal model's label horizon (``data.signals.horizon``) in bars, else 0."""
    signals = cfg.data.signals
    return int(signals.horizon) if isinstance(signals, ModelSignalsConfig) else 0


def _shift(moment: datetime, amount: int, unit: str) -> datetime:
    if unit == "days":
        return moment + timedelta(days=amount)
    if unit == "weeks":
        return moment + timedelta(weeks=amount)
    months = amount * (12 if unit == "years" else 1)
    total = moment.month - 1 + months
    year, month = moment.year + total // 12, total % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def make_folds(timestamps: np.ndarray, spec: WalkForwardSpec, purge: int) -> list[Fold]:
    """The folds of ``spec`` over the bars ``timestamps``.

    Bar counts: fold ``k`` trains on rows ``[s_k, s_k + train)`` (``s_k = k × step``, or 0 when
    ``anchored``: then the train window ends at ``k × step + train``) and tests on the next
    ``test`` rows. Calendar lengths: the same with times, from the first bar: train ``[t_k,
    t_k + train)``, test ``[t_k + train, t_k + train + test)``, ``t_k = t_0 + k × step``. The
    last test window is cut at the last bar; a test window with fewer than 2 bars, or a
    selection with fewer than 3, is not made.

    Parameters
    ----------
    timestamps : ndarray[datetime64[us]], shape (T,)
        The bars, strictly increasing.
    spec : WalkForwardSpec
    purge : int
        Bars left out at the end of each train window before the embargo (``spec.purge`` or
        :func:`default_purge`).

    Returns
    -------
    list[Fold]

    Raises
    ------
    ValueError
        No fold fits the bars (the message gives their count and range).
    """
    ts = np.asarray(timestamps).astype("datetime64[us]")
    n = ts.size
    train_len, test_len, step_len = spec.offsets()
    gap = purge + spec.embargo
    bounds: list[tuple[int, int, int, int]] = []  # train start, train end, test start, test end
    if isinstance(train_len, int):
        assert isinstance(test_len, int) and isinstance(step_len, int)
        k = 0
        while True:
            start = 0 if spec.anchored else k * step_len
            train_end = (k * step_len + train_len) if spec.anchored else start + train_len
            if train_end >= n:
                break
            bounds.append((start, train_end, train_end, min(train_end + test_len, n)))
            k += 1
    else:
        assert isinstance(test_len, tuple) and isinstance(step_len, tuple)
        first = ts[0].astype(datetime).replace(tzinfo=UTC)
        as_us = ts.astype(np.int64)
        k = 0
        while True:
            origin = _shift(first, k * step_len[0], step_len[1])
            train_start = first if spec.anchored else origin
            train_stop = _shift(origin, *train_len)
            test_stop = _shift(train_stop, *test_len)
            lo, mid, hi = (
                int(np.searchsorted(as_us, _micros(t), side="left"))
                for t in (train_start, train_stop, test_stop)
            )
            if mid >= n:
                break
            bounds.append((lo, mid, mid, min(hi, n)))
            k += 1
    folds = []
    for train_start, train_end, test_start, test_end in bounds:
        select_end = train_end - gap
        if test_end - test_start < 2 or select_end - train_start < 3:
            continue
        folds.append(
            Fold(
                index=len(folds),
                train=np.arange(train_start, train_end),
                select=np.arange(train_start, select_end),
                test=np.arange(test_start, test_end),
            )
        )
    if not folds:
        span = f"{ts[0]} to {ts[-1]}" if n else "no bars"
        raise ValueError(
            f"walk_forward: no fold fits {n} bars ({span}) with train={spec.train!r}, "
            f"test={spec.test!r}, step={spec.step!r}, purge+embargo={gap}"
        )
    return folds


def _micros(moment: datetime) -> int:
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))


def selection_scores(excess: np.ndarray, select: str) -> np.ndarray:
    """Each column's in-sample score (higher is better) on the selection bars.

    Parameters
    ----------
    excess : ndarray[float64], shape (T, N)
        Per-bar excess returns of the variants on the fold's selection bars.
    select : str
        ``sharpe`` (per-bar Sharpe ratio), ``psr`` (PSR against 0), ``dsr`` (PSR against the
        expected maximum Sharpe ratio of N unskilled variants, :func:`~ml4t_pipeline.lib.sweep.
        stats.expected_max_sharpe`), ``sortino`` (mean over the root mean square of the
        negative returns), ``cagr`` / ``total_return`` (compounded), ``calmar`` (CAGR over the
        absolute max drawdown). Compounded scores use the excess returns; the ranking is what
        counts.

    Returns
    -------
    ndarray[float64], shape (N,)
        ``-inf`` where a score is undefined (e.g. a PSR with a non-positive variance term).
    """
    r = np.asarray(excess, dtype=np.float64)
    t, n = r.shape
    srs = stats.sharpe_ratios(r)
    if select == "sharpe":
        return srs
    if select in ("psr", "dsr"):
        bench = 0.0
        if select == "dsr":
            variance = float(np.var(srs, ddof=1)) if n > 1 else 0.0
            bench = stats.expected_max_sharpe(n, variance)
        skew, kurt = stats.column_moments(r)
        out = np.full(n, -np.inf)
        for j in range(n):
            try:
                out[j] = stats.probabilistic_sharpe_ratio(
                    float(srs[j]), bench, t, float(skew[j]), float(kurt[j])
                )
            except ValueError:
                continue
        return out
    growth = np.cumprod(1.0 + r, axis=0)
    total = growth[-1] - 1.0
    if select == "total_return":
        return total
    cagr = np.where(growth[-1] > 0, np.abs(growth[-1]) ** (1.0 / t) - 1.0, -1.0)
    if select == "cagr":
        return cagr
    if select == "sortino":
        downside = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2, axis=0))
        return np.where(downside > 0, r.mean(axis=0) / np.where(downside > 0, downside, 1), 0.0)
    if select == "calmar":
        drawdown = np.abs(_max_drawdown(growth))
        return np.where(drawdown > 0, cagr / np.where(drawdown > 0, drawdown, 1.0), np.inf)
    raise ValueError(f"unknown selection statistic {select!r}")


def _max_drawdown(growth: np.ndarray) -> np.ndarray:
    peak = np.maximum.accumulate(np.maximum(growth, 1.0), axis=0)
    return np.asarray((growth / peak - 1.0).min(axis=0))


def _annual(returns: np.ndarray, rf: float, ppy: int) -> dict[str, float | None]:
    """Sharpe, CAGR, total return and max drawdown of one per-bar return series."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return {"sharpe": None, "cagr": None, "total_return": None, "max_drawdown": None}
    excess = r - rf
    sd = float(excess.std(ddof=1))
    flat = sd <= 1e-12 + 1e-8 * abs(float(excess.mean()))  # as stats.sharpe_ratios
    growth = np.cumprod(1.0 + r)
    total = float(growth[-1] - 1.0)
    return {
        "sharpe": float(excess.mean() / sd * math.sqrt(ppy)) if not flat else 0.0,
        "cagr": float(growth[-1] ** (ppy / r.size) - 1.0) if growth[-1] > 0 else -1.0,
        "total_return": total,
        "max_drawdown": float(_max_drawdown(growth[:, None])[0]),
    }


def check_no_overlap(folds: list[Fold], timestamps: np.ndarray, oos: pl.DataFrame) -> None:
    """Raise unless every out-of-sample bar lies in its own fold's test window, after every bar
    its fold's selection read, and the test windows follow each other without overlap.

    Parameters
    ----------
    folds : list[Fold]
    timestamps : ndarray[datetime64[us]]
        The sweep's bars (the folds' rows index them).
    oos : pl.DataFrame
        :func:`stitch`'s frame (``timestamp``, ``fold``).

    Raises
    ------
    RuntimeError
        Naming the fold and the first offending bar.
    """
    ts = np.asarray(timestamps).astype("datetime64[us]").astype(np.int64)
    previous_end = None
    for fold in folds:
        bars = oos.filter(pl.col("fold") == fold.index)["timestamp"].dt.epoch("us").to_numpy()
        window = ts[fold.test]
        seen_last = ts[fold.select].max()
        outside = bars[(bars < window[0]) | (bars > window[-1])]
        if outside.size or (bars.size and bars.min() <= seen_last):
            bad = outside[0] if outside.size else bars.min()
            raise RuntimeError(
                f"walk-forward fold {fold.index}: out-of-sample bar "
                f"{np.datetime64(int(bad), 'us')} is outside its test window or not after the "
                f"last bar its selection read ({np.datetime64(int(seen_last), 'us')})"
            )
        if previous_end is not None and window[0] <= previous_end:
            raise RuntimeError(f"walk-forward fold {fold.index}: test window overlaps the last")
        previous_end = window[-1]


def stitch(pieces: list[tuple[int, int, pl.DataFrame]]) -> pl.DataFrame:
    """Chain the folds' out-of-sample runs into one series.

    Parameters
    ----------
    pieces : list of (fold, trial, frame)
        Each frame one run's ``timestamp`` and ``return`` (per-bar fraction), in fold order.

    Returns
    -------
    pl.DataFrame
        ``timestamp``, ``fold`` (Int64), ``trial`` (Int64), ``return``, ``equity`` (growth of 1:
        ``Π(1 + return)`` over every earlier out-of-sample bar).
    """
    frames = [
        frame.select(
            "timestamp",
            pl.lit(fold, dtype=pl.Int64).alias("fold"),
            pl.lit(trial, dtype=pl.Int64).alias("trial"),
            pl.col("return").cast(pl.Float64),
        )
        for fold, trial, frame in pieces
    ]
    if not frames:
        return pl.DataFrame(
            schema={
                "timestamp": pl.Datetime("us", "UTC"),
                "fold": pl.Int64,
                "trial": pl.Int64,
                "return": pl.Float64,
                "equity": pl.Float64,
            }  # fmt: skip
        )
    out = pl.concat(frames)
    return out.with_columns((1.0 + pl.col("return")).cum_prod().alias("equity"))


def _iso(value: Any) -> str:
    return str(np.datetime64(value, "us")) + "Z"


def _window_trial(trial: Trial, start: Any, end: Any) -> Trial:
    raw = trial.config.model_dump(mode="json")
    raw["backtest"] = {"start": _iso(start), "end": _iso(end)}
    cfg = ExperimentConfig.model_validate(raw)
    params = dict(trial.params) | {"backtest.start": _iso(start), "backtest.end": _iso(end)}
    return Trial(index=trial.index, params=params, config=cfg)


def _oos_returns(
    sweep: SweepFile, run: SweepRun, folder: Path, trial: Trial, markets: dict[str, MarketData]
) -> pl.DataFrame:
    """The window trial's stored returns, computed and stored first when missing."""
    from ml4t_pipeline.lib.sweep.runner import TrialStore, build_market, run_trial, trial_key

    store = TrialStore(folder)
    prep = run.data[data_key(trial.config)]
    key = trial_key(trial, prep.versions, run.code_version)
    if not store.done(key):
        if prep.key not in markets:
            markets[prep.key] = build_market(prep.frames())
        outcome = run_trial(trial.config.model_dump_json(), markets[prep.key])
        store.save(key, trial, outcome)
    record = store.load(key)
    if record["status"] != "ok":
        raise RuntimeError(
            f"walk-forward: the out-of-sample run of trial {trial.index} on "
            f"{trial.params['backtest.start']}..{trial.params['backtest.end']} failed: "
            f"{record.get('error')}"
        )
    return store.load_returns(key)


def summary_section(
    sweep: SweepFile,
    run: SweepRun,
    folder: Path,
    matrix: tuple[np.ndarray, list[int], np.ndarray],
) -> dict[str, Any]:
    """Run the walk-forward optimisation of ``sweep`` and return its summary section; write
    :data:`OOS_FILE` into ``folder``.

    Parameters
    ----------
    sweep : SweepFile
        With ``spec.walk_forward`` set.
    run : SweepRun
        The sweep's run (its prepared data and code version key the out-of-sample runs).
    folder : Path
        The sweep folder (trial store, outputs).
    matrix : tuple
        :func:`~ml4t_pipeline.lib.sweep.results.returns_matrix` of the run.

    Returns
    -------
    dict
        ``folds`` (one dict per fold), ``oos`` and ``is`` metrics, ``degradation_ratio``,
        ``efficiency`` and the settings; or ``{"reason": ...}`` when no fold can be made or
        fewer than one trial succeeded.
    """
    from ml4t_pipeline.lib.sweep.store import _atomic_write

    spec = sweep.spec.walk_forward
    assert spec is not None
    returns, trials, timestamps = matrix
    reporting = sweep.base.reporting
    ppy = reporting.periods_per_year
    rf = (1.0 + reporting.risk_free_rate) ** (1.0 / ppy) - 1.0
    purge = spec.purge if spec.purge is not None else default_purge(sweep.base)
    settings: dict[str, Any] = {
        "train": spec.train,
        "test": spec.test,
        "step": spec.step if spec.step is not None else spec.test,
        "select": spec.select,
        "anchored": spec.anchored,
        "purge": purge,
        "embargo": spec.embargo,
    }
    if returns.shape[1] == 0:
        return settings | {"reason": "no ok trial"}
    try:
        folds = make_folds(timestamps, spec, purge)
    except ValueError as exc:
        return settings | {"reason": str(exc)}
    excess = returns - rf
    by_index = {t.index: t for t in sweep.trials}
    markets: dict[str, MarketData] = {}
    pieces: list[tuple[int, int, pl.DataFrame]] = []
    rows = []
    for fold in folds:
        scores = selection_scores(excess[fold.select], spec.select)
        best = int(np.argmax(scores))
        trial = by_index[trials[best]]
        start, end = timestamps[fold.test[0]], timestamps[fold.test[-1]]
        oos = _oos_returns(sweep, run, folder, _window_trial(trial, start, end), markets)
        pieces.append((fold.index, trial.index, oos))
        is_metrics = _annual(returns[fold.select, best], rf, ppy)
        oos_metrics = _annual(oos["return"].to_numpy(), rf, ppy)
        rows.append(
            {
                "fold": fold.index,
                "train_start": _iso(timestamps[fold.train[0]]),
                "train_end": _iso(timestamps[fold.train[-1]]),
                "select_end": _iso(timestamps[fold.select[-1]]),
                "test_start": _iso(start),
                "test_end": _iso(end),
                "n_select_bars": int(fold.select.size),
                "n_test_bars": int(fold.test.size),
                "trial": trial.index,
                "params": trial.params,
                "is_score": float(scores[best]),
                "is_sharpe": is_metrics["sharpe"],
                "is_cagr": is_metrics["cagr"],
                "oos_sharpe": oos_metrics["sharpe"],
                "oos_cagr": oos_metrics["cagr"],
                "oos_total_return": oos_metrics["total_return"],
                "degradation_ratio": _ratio(oos_metrics["sharpe"], is_metrics["sharpe"]),
            }
        )
    stitched = stitch(pieces)
    check_no_overlap(folds, timestamps, stitched)
    _atomic_write(folder / OOS_FILE, lambda tmp: stitched.write_parquet(tmp))
    oos_all = _annual(stitched["return"].to_numpy(), rf, ppy)
    is_sharpe = _mean([r["is_sharpe"] for r in rows])
    is_cagr = _mean([r["is_cagr"] for r in rows])
    return settings | {
        "n_folds": len(folds),
        "folds": rows,
        "oos": oos_all | {"n_bars": stitched.height},
        "is": {"sharpe": is_sharpe, "cagr": is_cagr},
        "degradation_ratio": _ratio(oos_all["sharpe"], is_sharpe),
        "efficiency": _ratio(oos_all["cagr"], is_cagr),
        "oos_file": OOS_FILE,
    }


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0 or not math.isfinite(num / den):
        return None
    return num / den
