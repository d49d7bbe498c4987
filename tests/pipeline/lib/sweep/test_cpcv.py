"""Combinatorial purged cross-validation of a sweep's selection (skfolio's splits)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml4t_pipeline.lib.sweep import spec

pytest.importorskip("skfolio", reason="the research extra (skfolio) is not installed")

from ml4t_pipeline.lib.sweep import cpcv  # noqa: E402


def _noise(seed: int, t: int = 300, n: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.01, size=(t, n))


def test_cpcv_dominant_variant_chosen_by_every_split_paths_are_its_returns() -> None:
    matrix = _noise(1)
    matrix[:, 1] += 0.01  # far the best on any subset of the bars
    out = cpcv.cpcv_paths(matrix, n_folds=6, n_test_folds=2, purge=3, embargo=2, select="sharpe")
    assert out["n_splits"] == math.comb(6, 2) == 15
    assert out["n_paths"] == 5  # k / N x C(N, k) = 2 / 6 x 15
    assert out["chosen"].tolist() == [1] * 15
    for path in out["paths"].T:  # every path covers every bar once, with variant 1's return
        assert path == pytest.approx(matrix[:, 1], rel=0, abs=0)


def test_cpcv_each_split_selects_on_purged_training_bars_only() -> None:
    from skfolio.model_selection import CombinatorialPurgedCV

    matrix = _noise(7, t=240, n=5)
    purge, embargo = 4, 3
    out = cpcv.cpcv_paths(
        matrix, n_folds=5, n_test_folds=2, purge=purge, embargo=embargo, select="sharpe"
    )
    splits = CombinatorialPurgedCV(
        n_folds=5, n_test_folds=2, purged_size=purge, embargo_size=embargo
    ).split(matrix)
    for chosen, (train, tests) in zip(out["chosen"], splits, strict=True):
        test_rows = np.concatenate(tests)
        assert np.intersect1d(train, test_rows).size == 0
        # no training bar within `purge` bars before, or `purge + embargo` after, a test group
        for group in tests:
            assert not np.any((train >= group[0] - purge) & (train < group[0]))
            assert not np.any((train > group[-1]) & (train <= group[-1] + purge + embargo))
        window = matrix[train]
        sharpe = window.mean(axis=0) / window.std(axis=0, ddof=1)
        assert chosen == int(np.argmax(sharpe))


def test_cpcv_summary_section_annualises_path_sharpes() -> None:
    matrix = _noise(3)
    section = cpcv.summary_section(
        matrix, [10, 11, 12, 13], n_folds=6, n_test_folds=2, purge=0, embargo=0,
        select="psr", periods_per_year=252,
    )  # fmt: skip
    raw = cpcv.cpcv_paths(matrix, n_folds=6, n_test_folds=2, purge=0, embargo=0, select="psr")
    expected = raw["path_sharpe"] * math.sqrt(252)
    assert section["path_sharpe_annual"] == pytest.approx(expected.tolist())
    assert section["sharpe_quantiles"]["0.5"] == pytest.approx(np.median(expected))
    assert section["share_positive"] == pytest.approx(float((expected > 0).mean()))
    assert sum(section["chosen_trials"].values()) == section["n_splits"] == 15
    assert set(section["chosen_trials"]) <= {"10", "11", "12", "13"}
    short = cpcv.summary_section(
        matrix[:10], [10, 11, 12, 13], n_folds=6, n_test_folds=2, purge=0, embargo=0,
        select="sharpe", periods_per_year=252,
    )  # fmt: skip
    assert "too few" in short["reason"]


def test_cpcv_spec_refused_without_skfolio_or_with_bad_folds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert spec.CPCVSpec(n_folds=8, n_test_folds=3).select == "sharpe"
    with pytest.raises(ValueError, match="must be below n_folds"):
        spec.CPCVSpec(n_folds=4, n_test_folds=4)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "skfolio" else real(name)
    )
    with pytest.raises(ValueError, match=r"pip install -e \"\.\[research\]\""):
        spec.CPCVSpec()
