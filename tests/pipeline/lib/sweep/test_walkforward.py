"""Walk-forward optimisation, Dagster- and engine-free parts: folds, selection, stitching and
the no-overlap guard on synthetic returns whose in-sample best variant is known."""

from __future__ import annotations

import math
import re

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml4t_pipeline.lib.sweep import walkforward
from ml4t_pipeline.lib.sweep.spec import WalkForwardSpec


def _bars(n: int, start: str = "2015-01-01") -> np.ndarray:
    """``n`` business days of bar closes (21:00 UTC), as datetime64[us]."""
    days = np.busday_offset(np.datetime64(start, "D"), np.arange(n), roll="forward")
    return (days.astype("datetime64[us]") + np.timedelta64(21, "h")).astype("datetime64[us]")


def test_make_folds_bar_counts_rolling_with_purge() -> None:
    spec = WalkForwardSpec(train=100, test=50, step=50, embargo=2)
    folds = walkforward.make_folds(_bars(260), spec, purge=5)
    assert [(f.train[0], f.train[-1], f.test[0], f.test[-1]) for f in folds] == [
        (0, 99, 100, 149),
        (50, 149, 150, 199),
        (100, 199, 200, 249),
        (150, 249, 250, 259),  # the last test window is cut at the last bar
    ]
    for fold in folds:  # the selection stops purge + embargo = 7 bars before the test window
        assert fold.select[0] == fold.train[0] and fold.select[-1] == fold.train[-1] - 7
        assert fold.test[0] - fold.select[-1] == 8


def test_make_folds_anchored_train_window_expands() -> None:
    spec = WalkForwardSpec(train=100, test=50, anchored=True)
    folds = walkforward.make_folds(_bars(250), spec, purge=0)
    assert [f.train[0] for f in folds] == [0, 0, 0]
    assert [f.train.size for f in folds] == [100, 150, 200]
    assert [f.test[0] for f in folds] == [100, 150, 200]


def test_make_folds_calendar_lengths_start_at_dates() -> None:
    bars = _bars(5 * 261, start="2015-01-01")
    spec = WalkForwardSpec(train="2y", test="1y", step="1y")
    folds = walkforward.make_folds(bars, spec, purge=0)
    first_test = [str(bars[f.test[0]])[:10] for f in folds]
    # 2015-01-01 + 2y = 2017-01-01, a Sunday: the first bar on or after is Monday 2017-01-02
    assert first_test[:2] == ["2017-01-02", "2018-01-01"]
    assert len(folds) == 3  # tests 2017, 2018, 2019 (the data end in 2019-12)
    for fold in folds:  # fold k: train [2015+k-01-01 21:00, +2y), test [+2y, +3y)
        origin = np.datetime64(f"{2015 + fold.index}-01-01T21:00", "us")
        split = np.datetime64(f"{2017 + fold.index}-01-01T21:00", "us")
        stop = np.datetime64(f"{2018 + fold.index}-01-01T21:00", "us")
        assert bars[fold.train[0]] >= origin
        assert fold.train[0] == 0 or bars[fold.train[0] - 1] < origin
        assert bars[fold.train[-1]] < split <= bars[fold.test[0]]
        assert bars[fold.test[-1]] < stop


def test_make_folds_too_few_bars_names_the_span() -> None:
    with pytest.raises(ValueError, match=r"no fold fits 50 bars"):
        walkforward.make_folds(_bars(50), WalkForwardSpec(train=100, test=20), purge=0)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"train": 100, "test": "1y"}, "all be bar counts or all calendar"),
        ({"train": "3x", "test": "1y"}, "bar count or <n>d/w/m/y"),
        ({"train": 100, "test": 10, "select": "luck"}, "not one of"),
        ({"train": 0, "test": 10}, ">= 1 bar"),
    ],
)
def test_walk_forward_spec_bad_values_refused(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WalkForwardSpec.model_validate(raw)


def _planted() -> tuple[np.ndarray, np.ndarray, list[walkforward.Fold]]:
    """Three variants; variant 2 is far the best in fold 0's train window, variant 0 in fold
    1's, and each is the worst in its own test window (a case where IS-best is known and
    OOS punishes it)."""
    rng = np.random.default_rng(17)
    bars = _bars(300)
    returns = rng.normal(0.0, 0.01, size=(300, 3))
    returns[0:100, 2] += 0.01
    returns[100:150, 2] -= 0.01
    returns[150:250, 0] += 0.01
    returns[250:300, 0] -= 0.01
    spec = WalkForwardSpec(train=100, test=50, step=150)
    return returns, bars, walkforward.make_folds(bars, spec, purge=0)


@pytest.mark.parametrize("select", ["sharpe", "psr", "dsr", "sortino", "cagr", "calmar",
                                    "total_return"])  # fmt: skip
def test_selection_scores_planted_is_best_variant_chosen(select: str) -> None:
    returns, _, folds = _planted()
    scores = [walkforward.selection_scores(returns[f.select], select) for f in folds]
    chosen = [int(np.argmax(score)) for score in scores]
    assert chosen == [2, 0]


def test_selection_scores_sharpe_is_mean_over_std() -> None:
    returns, _, folds = _planted()
    window = returns[folds[0].select]
    expected = window.mean(axis=0) / window.std(axis=0, ddof=1)
    assert walkforward.selection_scores(window, "sharpe") == pytest.approx(expected, rel=1e-12)


def test_stitch_chains_test_windows_and_guard_accepts_them() -> None:
    returns, bars, folds = _planted()
    pieces = []
    for fold, best in zip(folds, [2, 0], strict=True):
        frame = pl.DataFrame(
            {
                "timestamp": pl.Series(bars[fold.test]).dt.replace_time_zone("UTC"),
                "return": returns[fold.test, best],
            }
        )
        pieces.append((fold.index, best, frame))
    oos = walkforward.stitch(pieces)
    assert oos["fold"].to_list() == [0] * 50 + [1] * 50
    assert oos["trial"].to_list() == [2] * 50 + [0] * 50
    expected = np.cumprod(1.0 + np.concatenate([returns[100:150, 2], returns[250:300, 0]]))
    assert oos["equity"].to_numpy() == pytest.approx(expected, rel=1e-12)
    walkforward.check_no_overlap(folds, bars, oos)
    # no out-of-sample bar was read by its fold's selection
    for fold in folds:
        seen = set(bars[fold.select].tolist())
        used = oos.filter(pl.col("fold") == fold.index)["timestamp"].dt.replace_time_zone(None)
        assert seen.isdisjoint(used.to_numpy().tolist())


def test_check_no_overlap_refuses_a_bar_the_selection_saw() -> None:
    _, bars, folds = _planted()
    leaked = pl.DataFrame(
        {
            "timestamp": pl.Series(bars[[95, 100, 101]]).dt.replace_time_zone("UTC"),
            "fold": [0, 0, 0],
        }
    )
    with pytest.raises(RuntimeError, match=re.escape(f"fold 0: out-of-sample bar {bars[95]}")):
        walkforward.check_no_overlap(folds, bars, leaked)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(30, 400),
    train=st.integers(5, 120),
    test=st.integers(2, 60),
    step=st.integers(1, 80),
    gap=st.integers(0, 10),
    anchored=st.booleans(),
)
def test_make_folds_selection_always_before_test(
    n: int, train: int, test: int, step: int, gap: int, anchored: bool
) -> None:
    spec = WalkForwardSpec(train=train, test=test, step=step, anchored=anchored)
    try:
        folds = walkforward.make_folds(_bars(n), spec, purge=gap)
    except ValueError:
        assert train + 2 > n or train - gap < 3  # nothing fits
        return
    for fold in folds:
        assert fold.select.size >= 3 and fold.test.size >= 2
        assert fold.select[-1] + gap < fold.test[0]
        assert fold.test[-1] < n
        assert math.isclose(fold.test[0], fold.train[-1] + 1)
