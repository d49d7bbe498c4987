"""Combinatorial purged cross-validation of a sweep's selection: a distribution of OOS Sharpes.

A walk-forward gives one out-of-sample path. Combinatorial purged cross-validation (CPCV;
López de Prado, M. (2018), "Advances in Financial Machine Learning", Wiley, ch. 12) cuts the
bars into ``N`` contiguous groups and, for every choice of ``k`` test groups, selects the best
variant on the other groups (the training set, purged and embargoed around each test group)
and records that variant's returns on the test groups. The ``C(N, k)`` splits recombine into
``φ = k/N × C(N, k)`` complete out-of-sample *paths*, each covering every bar once, each bar's
return coming from a variant chosen without that bar. The Sharpe ratios of the paths are a
distribution of what "choose the best variant by backtest" earns out of sample.

The splits come from ``skfolio.model_selection.CombinatorialPurgedCV`` (its ``split`` and
``get_path_ids``; ``purged_size`` drops ``purge`` bars of the training set on both sides of
each test group, ``embargo_size`` a further ``embargo`` bars after it). The returns are each
variant's run over the whole sample (the sweep's stored trials), so no variant is run again;
selection scores are :func:`~ml4t_pipeline.lib.sweep.walkforward.selection_scores`.

``skfolio`` is optional (``pip install -e ".[research]"``); ``sweep.cpcv`` in a sweep file
without it is refused when the file loads.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ml4t_pipeline.lib.sweep import stats
from ml4t_pipeline.lib.sweep.walkforward import selection_scores

__all__ = ["cpcv_paths", "skfolio_available"]


def skfolio_available() -> bool:
    """Whether ``skfolio`` can be imported (the ``research`` extra is installed)."""
    import importlib.util

    return importlib.util.find_spec("skfolio") is not None


def cpcv_paths(
    excess: np.ndarray,
    *,
    n_folds: int,
    n_test_folds: int,
    purge: int,
    embargo: int,
    select: str,
) -> dict[str, Any]:
    """Out-of-sample paths of "choose the best variant in sample" by CPCV.

    Parameters
    ----------
    excess : ndarray[float64], shape (T, N)
        Per-bar excess returns of the ``N`` variants (the sweep's ``ok`` trials), no NaN.
    n_folds, n_test_folds : int
        ``N`` groups (≥ 3) and ``k`` test groups per split (2 ≤ k < N).
    purge, embargo : int
        Bars (see the module docstring).
    select : str
        The in-sample statistic (:data:`~ml4t_pipeline.lib.sweep.spec.WF_SELECT`).

    Returns
    -------
    dict
        ``paths`` (T, φ) per-bar excess returns of each path, ``path_sharpe`` (φ,) per-bar
        Sharpe ratio of each path, ``chosen`` (n_splits,) column chosen by each split,
        ``split_sharpe`` (n_splits,) per-bar Sharpe of each split's choice on its test groups,
        ``n_splits`` and ``n_paths``.

    Raises
    ------
    ValueError
        Fold settings skfolio refuses, or too few bars for them.
    """
    from skfolio.model_selection import CombinatorialPurgedCV

    r = np.asarray(excess, dtype=np.float64)
    stats.sharpe_ratios(r)  # validates the matrix
    if r.shape[0] < 2 * n_folds:
        raise ValueError(f"{r.shape[0]} bars are too few for {n_folds} CPCV groups")
    cv = CombinatorialPurgedCV(
        n_folds=n_folds, n_test_folds=n_test_folds, purged_size=purge, embargo_size=embargo
    )
    path_ids = np.asarray(cv.get_path_ids())
    n_paths = int(cv.n_test_paths)
    paths = np.full((r.shape[0], n_paths), np.nan)
    chosen, split_sharpe = [], []
    for s, (train, tests) in enumerate(cv.split(r)):
        if len(train) < 3:
            raise ValueError(f"CPCV split {s} keeps {len(train)} training bars after purging")
        best = int(np.argmax(selection_scores(r[train], select)))
        chosen.append(best)
        test_rows = np.concatenate(tests)
        split_sharpe.append(float(stats.sharpe_ratios(r[test_rows, best][:, None])[0]))
        for j, rows in enumerate(tests):
            paths[rows, path_ids[s, j]] = r[rows, best]
    if np.isnan(paths).any():  # every path covers every bar once (skfolio's recombination)
        raise RuntimeError("CPCV paths do not cover every bar: unexpected skfolio output")
    return {
        "paths": paths,
        "path_sharpe": stats.sharpe_ratios(paths),
        "chosen": np.array(chosen, dtype=np.int64),
        "split_sharpe": np.array(split_sharpe),
        "n_splits": len(chosen),
        "n_paths": n_paths,
    }


def summary_section(
    excess: np.ndarray,
    trials: list[int],
    *,
    n_folds: int,
    n_test_folds: int,
    purge: int,
    embargo: int,
    select: str,
    periods_per_year: int,
) -> dict[str, Any]:
    """``sweep_summary.json["cpcv"]``: the settings, the annual Sharpe ratio of every path and
    their mean, standard deviation, quantiles and share above 0, and how often each trial was
    chosen; ``{"reason": ...}`` (with the settings) when it cannot be computed."""
    settings: dict[str, Any] = {
        "n_folds": n_folds,
        "n_test_folds": n_test_folds,
        "purge": purge,
        "embargo": embargo,
        "select": select,
    }
    if excess.shape[1] < 1:
        return settings | {"reason": "no ok trial"}
    try:
        out = cpcv_paths(
            excess, n_folds=n_folds, n_test_folds=n_test_folds, purge=purge, embargo=embargo,
            select=select,
        )  # fmt: skip
    except ValueError as exc:
        return settings | {"reason": str(exc)}
    scale = math.sqrt(periods_per_year)
    sharpe = out["path_sharpe"] * scale
    picks, counts = np.unique(out["chosen"], return_counts=True)
    return settings | {
        "n_splits": out["n_splits"],
        "n_paths": out["n_paths"],
        "path_sharpe_annual": sharpe.tolist(),
        "sharpe_mean": float(sharpe.mean()),
        "sharpe_std": float(sharpe.std(ddof=1)) if sharpe.size > 1 else 0.0,
        "sharpe_quantiles": {
            str(q): float(np.quantile(sharpe, q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)
        },
        "share_positive": float((sharpe > 0).mean()),
        "chosen_trials": {str(trials[int(c)]): int(n) for c, n in zip(picks, counts, strict=True)},
    }
