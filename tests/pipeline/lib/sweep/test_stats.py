"""Deflated Sharpe Ratio and PBO (CSCV): hand-worked cases, an independent enumeration, noise.

The expected values are computed here step by step from the papers' formulas with the standard
library (``statistics``, ``statistics.NormalDist``), independently of the numpy/scipy code
under test.
"""

from __future__ import annotations

import itertools
import math
import statistics
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml4t_pipeline.lib.sweep import stats

N01 = NormalDist()
GAMMA = 0.5772156649015329


def _sr(values: list[float]) -> float:
    sd = statistics.stdev(values)
    return statistics.fmean(values) / sd if sd > 0 else 0.0


def test_expected_max_sharpe_one_trial_is_zero() -> None:
    assert stats.expected_max_sharpe(1, 0.04) == 0.0


def test_expected_max_sharpe_grows_with_trials_and_spread() -> None:
    assert stats.expected_max_sharpe(10, 0.01) < stats.expected_max_sharpe(100, 0.01)
    assert stats.expected_max_sharpe(10, 0.01) < stats.expected_max_sharpe(10, 0.04)


def test_expected_max_sharpe_formula_step_by_step() -> None:
    n, v = 20, 0.0025
    expected = math.sqrt(v) * (
        (1 - GAMMA) * N01.inv_cdf(1 - 1 / n) + GAMMA * N01.inv_cdf(1 - 1 / (n * math.e))
    )
    assert stats.expected_max_sharpe(n, v) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n, v", [(0, 0.1), (5, -1.0), (5, float("nan"))])
def test_expected_max_sharpe_bad_input_raises(n: int, v: float) -> None:
    with pytest.raises(ValueError):
        stats.expected_max_sharpe(n, v)


def test_deflated_sharpe_ratio_small_matrix_matches_step_by_step() -> None:
    # three trials over eight periods; trial 2 is the best by construction
    cols = [
        [0.010, -0.020, 0.015, -0.005, 0.000, 0.010, -0.010, 0.005],
        [0.020, -0.010, -0.015, 0.010, 0.005, -0.020, 0.015, 0.000],
        [0.030, 0.010, -0.005, 0.020, 0.015, -0.010, 0.025, 0.005],
    ]
    matrix = np.array(cols).T
    srs = [_sr(c) for c in cols]
    best = max(range(3), key=lambda i: srs[i])
    v = statistics.variance(srs)
    sr0 = math.sqrt(v) * (
        (1 - GAMMA) * N01.inv_cdf(1 - 1 / 3) + GAMMA * N01.inv_cdf(1 - 1 / (3 * math.e))
    )
    x = cols[best]
    mu = statistics.fmean(x)
    m2 = sum((a - mu) ** 2 for a in x) / len(x)
    skew = (sum((a - mu) ** 3 for a in x) / len(x)) / m2**1.5
    kurt = (sum((a - mu) ** 4 for a in x) / len(x)) / m2**2
    sr = srs[best]
    z = (sr - sr0) * math.sqrt(len(x) - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    result = stats.deflated_sharpe_ratio(matrix)
    assert result.best_index == best == 2
    assert result.sharpe == pytest.approx(sr, rel=1e-12)
    assert result.sharpe_variance == pytest.approx(v, rel=1e-12)
    assert result.expected_max_sharpe == pytest.approx(sr0, rel=1e-9)
    assert result.skew == pytest.approx(skew, rel=1e-9)
    assert result.kurtosis == pytest.approx(kurt, rel=1e-9)
    assert result.dsr == pytest.approx(N01.cdf(z), rel=1e-9)


def test_deflated_sharpe_ratio_more_trials_counted_lower_dsr() -> None:
    rng = np.random.default_rng(3)
    matrix = rng.normal(0.001, 0.01, size=(500, 10))
    assert stats.deflated_sharpe_ratio(matrix, n_trials=1000).dsr < (
        stats.deflated_sharpe_ratio(matrix).dsr
    )
    with pytest.raises(ValueError, match="below the number of trials"):
        stats.deflated_sharpe_ratio(matrix, n_trials=5)


def test_probabilistic_sharpe_ratio_bad_denominator_raises() -> None:
    with pytest.raises(ValueError, match="not positive"):
        stats.probabilistic_sharpe_ratio(2.0, 0.0, 100, skew=5.0, kurtosis=3.0)


def test_sharpe_ratios_flat_column_is_zero_and_nan_refused() -> None:
    matrix = np.array([[0.0, 0.01], [0.0, 0.03], [0.0, 0.02]])
    out = stats.sharpe_ratios(matrix)
    assert out[0] == 0.0
    assert out[1] == pytest.approx(_sr([0.01, 0.03, 0.02]))
    with pytest.raises(ValueError, match=r"\(row, trial\) \[\(1, 0\)\]"):
        stats.sharpe_ratios(np.array([[0.0, 0.0], [np.nan, 0.0]]))


def test_pbo_two_splits_hand_enumerated_is_half() -> None:
    # 4 trials x 8 periods, S = 2: block A = rows 0-3, block B = rows 4-7.
    # Sharpe of (m+d, m-d, m+d, m-d) is m / (d * sqrt(4/3)): ordering by m/d.
    def block(m: float, d: float) -> list[float]:
        return [m + d, m - d, m + d, m - d]

    trials = [
        block(0.04, 0.01) + block(0.01, 0.01),  # A: best (SR ∝ 4)   B: 2nd worst (1)
        block(0.01, 0.01) + block(0.00, 0.01),  # A: 1               B: worst (0)
        block(0.02, 0.01) + block(0.02, 0.01),  # A: 2               B: 2
        block(0.03, 0.01) + block(0.03, 0.01),  # A: 3               B: best (3)
    ]
    matrix = np.array(trials).T
    result = stats.probability_of_backtest_overfitting(matrix, n_splits=2)
    # IS = A: best is trial 0, its OOS (B) rank is 2 of 4 → ω = 2/5 → λ = ln(2/3) ≤ 0
    # IS = B: best is trial 3, its OOS (A) rank is 3 of 4 → ω = 3/5 → λ = ln(3/2) > 0
    assert result.is_best.tolist() == [0, 3]
    assert result.logits == pytest.approx([math.log(0.4 / 0.6), math.log(0.6 / 0.4)])
    assert result.pbo == 0.5
    assert result.n_periods_used == 8


def _cscv_reference(matrix: list[list[float]], s: int) -> tuple[float, list[float]]:
    """CSCV written out directly from the paper with plain Python lists."""
    t, n = len(matrix), len(matrix[0])
    size = t // s
    rows = matrix[t - size * s :]
    blocks = [rows[i * size : (i + 1) * size] for i in range(s)]
    logits = []
    for chosen in itertools.combinations(range(s), s // 2):
        train = [r for i in chosen for r in blocks[i]]
        test = [r for i in range(s) if i not in chosen for r in blocks[i]]
        is_sr = [_sr([r[j] for r in train]) for j in range(n)]
        oos_sr = [_sr([r[j] for r in test]) for j in range(n)]
        best = is_sr.index(max(is_sr))
        rank = 1 + sum(1 for v in oos_sr if v < oos_sr[best])  # no ties in random data
        omega = rank / (n + 1)
        logits.append(math.log(omega / (1 - omega)))
    return sum(1 for x in logits if x <= 0) / len(logits), logits


def test_pbo_four_splits_matches_direct_enumeration() -> None:
    rng = np.random.default_rng(11)
    matrix = rng.normal(0.0, 0.01, size=(26, 5))  # 26 rows: the first 2 are left out
    expected_pbo, expected_logits = _cscv_reference(matrix.tolist(), 4)
    result = stats.probability_of_backtest_overfitting(matrix, n_splits=4)
    assert len(expected_logits) == math.comb(4, 2) == result.logits.size
    assert result.logits == pytest.approx(expected_logits, rel=1e-9)
    assert result.pbo == expected_pbo
    assert result.n_periods_used == 24


def test_pbo_dominant_trial_is_zero() -> None:
    rng = np.random.default_rng(5)
    matrix = rng.normal(0.0, 0.01, size=(400, 6))
    matrix[:, 2] += 0.02  # far better in every block
    assert stats.probability_of_backtest_overfitting(matrix, n_splits=8).pbo == 0.0


def test_pbo_noise_trials_near_half_and_dsr_not_significant() -> None:
    rng = np.random.default_rng(2024)
    noise = rng.normal(0.0, 0.01, size=(1000, 50))
    pbo = stats.probability_of_backtest_overfitting(noise, n_splits=16).pbo
    dsr = stats.deflated_sharpe_ratio(noise)
    assert 0.3 <= pbo <= 0.7
    assert dsr.dsr < 0.95
    # the best noise trial still looks good before deflation: its PSR against 0 is high
    naive = stats.probabilistic_sharpe_ratio(dsr.sharpe, 0.0, 1000, dsr.skew, dsr.kurtosis)
    assert naive > dsr.dsr


@pytest.mark.parametrize(
    "shape, splits, message",
    [((40, 1), 4, "at least 2 trials"), ((40, 3), 3, "even"), ((6, 3), 4, "too few")],
)
def test_pbo_bad_input_raises(shape: tuple[int, int], splits: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stats.probability_of_backtest_overfitting(np.zeros(shape), n_splits=splits)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 8), splits=st.sampled_from([2, 4, 6]))
def test_pbo_invariant_under_trial_order(seed: int, n: int, splits: int) -> None:
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, 0.01, size=(60, n))
    perm = rng.permutation(n)
    a = stats.probability_of_backtest_overfitting(matrix, n_splits=splits)
    b = stats.probability_of_backtest_overfitting(matrix[:, perm], n_splits=splits)
    assert 0.0 <= a.pbo <= 1.0
    assert a.pbo == b.pbo
    assert perm[b.is_best].tolist() == a.is_best.tolist()


def test_min_track_record_length_hand_checked_normal_case() -> None:
    # SR = 0.1 per period, SR* = 0, normal returns, alpha = 0.05:
    # 1 + (1 - 0 + (3 - 1)/4 * 0.01) * (1.6448536 / 0.1)^2 = 1 + 1.005 * 270.5543 = 272.907
    z = N01.inv_cdf(0.95)
    expected = 1 + 1.005 * (z / 0.1) ** 2
    assert expected == pytest.approx(272.907, abs=1e-3)
    assert stats.min_track_record_length(0.1, 0.0, 0.0, 3.0) == pytest.approx(expected, rel=1e-12)


def test_min_track_record_length_is_where_psr_reaches_one_minus_alpha() -> None:
    sr, skew, kurt = 0.08, -0.4, 5.0
    mintrl = stats.min_track_record_length(sr, 0.0, skew, kurt, alpha=0.05)
    above = stats.probabilistic_sharpe_ratio(sr, 0.0, math.ceil(mintrl), skew, kurt)
    below = stats.probabilistic_sharpe_ratio(sr, 0.0, math.floor(mintrl) - 1, skew, kurt)
    assert below < 0.95 <= above
    # negative skew and fat tails need a longer record than normal returns
    assert mintrl > stats.min_track_record_length(sr, 0.0, 0.0, 3.0)


def test_min_track_record_length_no_edge_is_infinite_and_bad_alpha_raises() -> None:
    assert stats.min_track_record_length(0.05, 0.05, 0.0, 3.0) == math.inf
    assert stats.min_track_record_length(-0.1, 0.0, 0.0, 3.0) == math.inf
    with pytest.raises(ValueError, match="alpha"):
        stats.min_track_record_length(0.1, 0.0, 0.0, 3.0, alpha=1.5)


def test_sharpe_pvalues_are_one_minus_psr_and_flat_column_is_one() -> None:
    rng = np.random.default_rng(8)
    matrix = rng.normal(0.001, 0.01, size=(300, 3))
    matrix[:, 1] = 0.0
    p = stats.sharpe_pvalues(matrix)
    col = matrix[:, 0].tolist()
    mu = statistics.fmean(col)
    m2 = sum((a - mu) ** 2 for a in col) / len(col)
    skew = (sum((a - mu) ** 3 for a in col) / len(col)) / m2**1.5
    kurt = (sum((a - mu) ** 4 for a in col) / len(col)) / m2**2
    sr = _sr(col)
    z = sr * math.sqrt(len(col) - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    assert p[0] == pytest.approx(1 - N01.cdf(z), rel=1e-9)
    assert p[1] == 1.0


def test_adjusted_pvalues_holm_and_by_hand_checked() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.2])
    # Holm: sorted 0.01, 0.03, 0.04, 0.2 times 4, 3, 2, 1 = 0.04, 0.09, 0.08, 0.2, then the
    # running maximum: 0.04, 0.09, 0.09, 0.2
    assert stats.adjusted_pvalues(p, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.2])
    # BH: p(i) m / i = 0.04, 0.06, 0.0533, 0.2, running minimum from the top: 0.04, 0.0533,
    # 0.0533, 0.2; BY multiplies by 1 + 1/2 + 1/3 + 1/4 = 25/12
    c = 25 / 12
    expected = [0.04 * c, 0.16 / 3 * c, 0.16 / 3 * c, 0.2 * c]
    assert stats.adjusted_pvalues(p, "by") == pytest.approx(expected)
    with pytest.raises(ValueError, match="unknown adjustment"):
        stats.adjusted_pvalues(p, "bonferonni")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        stats.adjusted_pvalues(np.array([0.5, 1.5]), "holm")


def test_superior_predictive_ability_noise_trials_pvalue_not_small() -> None:
    # 30 seeded draws of 10 trials of pure noise (true mean 0) over 1,000 bars
    spa, rc = [], []
    for seed in range(30):
        noise = np.random.default_rng(1000 + seed).normal(0.0, 0.01, size=(1000, 10))
        result = stats.superior_predictive_ability(noise, reps=200, seed=seed)
        spa.append(result.spa_pvalue)
        rc.append(result.reality_check_pvalue)
        assert result.spa_pvalue_lower <= result.spa_pvalue <= result.spa_pvalue_upper
    assert np.mean(np.array(spa) > 0.1) >= 0.9
    assert np.mean(np.array(rc) > 0.1) >= 0.9


def test_superior_predictive_ability_planted_winner_found() -> None:
    for seed in range(5):
        matrix = np.random.default_rng(seed).normal(0.0, 0.01, size=(500, 10))
        matrix[:, 6] += 0.003  # an annual Sharpe ratio of about 4.8 in trial 6
        result = stats.superior_predictive_ability(matrix, reps=200, seed=seed)
        assert result.spa_pvalue < 0.05
        assert result.reality_check_pvalue < 0.05
        assert result.stepm_superior == [6]


def test_superior_predictive_ability_same_seed_same_pvalues_and_bad_input() -> None:
    matrix = np.random.default_rng(3).normal(0.0005, 0.01, size=(200, 4))
    a = stats.superior_predictive_ability(matrix, reps=100, seed=4)
    b = stats.superior_predictive_ability(matrix, reps=100, seed=4)
    assert a == b
    assert a.block_size == round(math.sqrt(200))
    with pytest.raises(ValueError, match="reps"):
        stats.superior_predictive_ability(matrix, reps=5)
    with pytest.raises(ValueError, match="non-finite"):
        stats.superior_predictive_ability(np.full((10, 2), np.nan))


def test_stepm_equals_arch_stepm_where_arch_finishes() -> None:
    from arch.bootstrap import StepM

    matrix = np.random.default_rng(21).normal(0.0, 0.01, size=(400, 8))
    matrix[:, [1, 5]] += [0.004, 0.003]
    ours = stats.superior_predictive_ability(matrix, reps=300, seed=9)
    theirs = StepM(np.zeros(400), -matrix, size=0.05, block_size=ours.block_size, reps=300,
                   seed=np.random.default_rng(9))  # fmt: skip
    theirs.compute()
    assert ours.stepm_superior == sorted(theirs.superior_models) == [1, 5]


def test_stepm_every_trial_superior_all_found() -> None:
    # trial 0 is found in StepM's first step, trial 1 only in the second; arch 8.0.0's
    # StepM.compute then tests an empty set and raises "zero-size array"; our loop stops
    from arch.bootstrap import StepM

    matrix = np.random.default_rng(1).normal(0.0, 0.01, size=(400, 2))
    matrix += [0.006, 0.001]
    theirs = StepM(np.zeros(400), -matrix, reps=200, block_size=20, seed=np.random.default_rng(1))
    with pytest.raises(ValueError, match="zero-size array"):
        theirs.compute()
    assert stats.superior_predictive_ability(matrix, reps=200, seed=1).stepm_superior == [0, 1]


def test_column_moments_equal_per_column_moments_flat_is_normal() -> None:
    matrix = np.random.default_rng(12).standard_t(4, size=(250, 4)) * 0.01
    matrix[:, 2] = 0.003
    skew, kurt = stats.column_moments(matrix)
    for j in range(4):
        assert (skew[j], kurt[j]) == pytest.approx(stats.moments(matrix[:, j]), rel=1e-12)
    assert (skew[2], kurt[2]) == (0.0, 3.0)
    p = stats.sharpe_pvalues(matrix)
    for j in (0, 1, 3):
        one = stats.probabilistic_sharpe_ratio(
            float(stats.sharpe_ratios(matrix)[j]), 0.0, 250, skew[j], kurt[j]
        )
        assert p[j] == pytest.approx(1.0 - one, rel=1e-9, abs=1e-15)
    assert p[2] == 1.0


def test_sharpe_ratios_constant_excess_column_has_no_edge() -> None:
    # a constant per-bar return (a trial parked in one position paying a fixed rate, or cash
    # minus the risk-free rate): its float standard deviation is rounding noise (~1e-19), not
    # a spread to divide by (the old code gave a Sharpe ratio of 1.4e15)
    matrix = np.column_stack([np.full(300, 0.003), np.random.default_rng(2).normal(0, 0.01, 300)])
    assert 0.0 < matrix[:, 0].std() < 1e-15
    assert stats.sharpe_ratios(matrix)[0] == 0.0
    assert stats.sharpe_pvalues(matrix)[0] == 1.0
    assert stats.moments(matrix[:, 0]) == (0.0, 3.0)


def test_superior_predictive_ability_flat_trials_give_no_evidence() -> None:
    # arch reports p = 0 for trials that never trade (all loss differentials 0): the sweep
    # leaves constant columns out, and with none left every p-value is 1
    flat = np.zeros((200, 3))
    none = stats.superior_predictive_ability(flat, reps=50)
    assert (none.spa_pvalue, none.reality_check_pvalue, none.n_tested) == (1.0, 1.0, 0)
    mixed = flat.copy()
    mixed[:, 2] = np.random.default_rng(5).normal(0.004, 0.01, 200)
    found = stats.superior_predictive_ability(mixed, reps=200)
    assert found.n_tested == 1 and found.stepm_superior == [2]  # the original column index
    assert found.spa_pvalue < 0.05
