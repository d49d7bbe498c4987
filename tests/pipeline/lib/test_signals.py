"""Specification of the walk-forward signal model (ml4t_pipeline.lib.signals)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from threadpoolctl import threadpool_limits

from ml4t_pipeline.lib.signals import (
    FitRecord,
    gather_rows,
    run_walk_forward,
    training_cutoff_violations,
    walk_forward_signals,
)

OUTPUT_COLUMNS = ["timestamp", "symbol", "score", "available_at", "model_trained_at"]


def _bar(day: date) -> datetime:
    """Daily bar close stamped 21:00 UTC (16:00 New York in winter)."""
    return datetime(day.year, day.month, day.day, 21, tzinfo=UTC)


def _weekdays(start: date, end: date) -> list[datetime]:
    days = (start + timedelta(days=i) for i in range((end - start).days + 1))
    return [_bar(d) for d in days if d.weekday() < 5]


def _frame(rows: list[tuple[datetime, str, float]], name: str) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"timestamp": pl.Datetime("us", "UTC"), "symbol": pl.String, name: pl.Float64},
        orient="row",
    )


def _random_panel(
    symbols: list[str], bars: list[datetime], seed: int = 1
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Random-walk closes and two random features for every (bar, symbol)."""
    rng = np.random.default_rng(seed)
    n_t, n_s = len(bars), len(symbols)
    closes = 50.0 * np.cumprod(1.0 + 0.01 * rng.standard_normal((n_t, n_s)), axis=0)
    keys = pl.DataFrame(
        {
            "timestamp": pl.Series(
                [b for b in bars for _ in symbols], dtype=pl.Datetime("us", "UTC")
            ),
            "symbol": symbols * n_t,
        }
    )
    prices = keys.with_columns(close=pl.Series(closes.ravel()))
    features = keys.with_columns(
        f1=pl.Series(rng.standard_normal(n_t * n_s)), f2=pl.Series(rng.standard_normal(n_t * n_s))
    )
    return prices, features


def _planted_ar1(
    n_symbols: int = 60, n_bars: int = 500, seed: int = 7
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A persistent cross-sectional state f (AR(1), phi=0.95) that drives next-bar returns.

    f[t] is observed at bar t's close and the return from t to t+1 is 0.002 f[t] + noise, so f
    legitimately predicts the forward return; ``noise`` is an unrelated control feature.
    """
    rng = np.random.default_rng(seed)
    f = np.empty((n_bars, n_symbols))
    f[0] = rng.standard_normal(n_symbols)
    for t in range(1, n_bars):
        f[t] = 0.95 * f[t - 1] + np.sqrt(1 - 0.95**2) * rng.standard_normal(n_symbols)
    ret = np.zeros((n_bars, n_symbols))
    ret[1:] = 0.002 * f[:-1] + 0.01 * rng.standard_normal((n_bars - 1, n_symbols))
    closes = 100.0 * np.cumprod(1.0 + ret, axis=0)
    bars = _weekdays(date(2019, 1, 1), date(2021, 12, 31))[:n_bars]
    symbols = [f"S{i:02d}" for i in range(n_symbols)]
    keys = pl.DataFrame(
        {
            "timestamp": pl.Series(
                [b for b in bars for _ in symbols], dtype=pl.Datetime("us", "UTC")
            ),
            "symbol": symbols * n_bars,
        }
    )
    prices = keys.with_columns(close=pl.Series(closes.ravel()))
    features = keys.with_columns(
        state=pl.Series(f.ravel()), noise=pl.Series(rng.standard_normal(n_bars * n_symbols))
    )
    return prices, features


def _mean_rank_ic(signals: pl.DataFrame, prices: pl.DataFrame, horizon: int = 5) -> float:
    fwd = prices.sort("symbol", "timestamp").select(
        "timestamp",
        "symbol",
        (pl.col("close").shift(-horizon) / pl.col("close") - 1).over("symbol").alias("fwd"),
    )
    per_bar = (
        signals.join(fwd, on=["timestamp", "symbol"])
        .drop_nulls("fwd")
        .group_by("timestamp")
        .agg(pl.corr("score", "fwd", method="spearman").alias("ic"))
    )
    return float(per_bar["ic"].mean())  # type: ignore[arg-type]


# --- label timing ------------------------------------------------------------------------------


def test_walk_forward_first_fit_uses_only_labels_known_before_month_start() -> None:
    # Arrange: weekdays of Jan-Mar 2020; symbol B has no bar on Mon 27 Jan.
    bars = _weekdays(date(2020, 1, 1), date(2020, 3, 31))
    prices, features = _random_panel(["A", "B"], bars)
    gap = _bar(date(2020, 1, 27))
    drop = (pl.col("symbol") == "B") & (pl.col("timestamp") == gap)
    prices, features = prices.filter(~drop), features.filter(~drop)

    # Act
    result = run_walk_forward(prices, features, ["f1", "f2"], min_train_periods=1)

    # Assert: February's cut-off is Mon 3 Feb. A label (t+5 bars of the symbol) must close by
    # Fri 31 Jan, so A trains on 1..24 Jan (18 weekdays); B's 24 Jan label ends on 3 Feb
    # (28,29,30,31 Jan, 3 Feb: its 27 Jan bar is missing) and is excluded -> 17 rows.
    feb = result.fits[0]
    assert feb.trained_at == _bar(date(2020, 2, 3))
    assert feb.n_rows == 18 + 17
    assert feb.n_timestamps == 18
    assert feb.max_train_timestamp == _bar(date(2020, 1, 24))
    assert feb.max_label_available_at == _bar(date(2020, 1, 31))
    assert feb.first_scored_at == _bar(date(2020, 2, 3))
    assert feb.last_scored_at == _bar(date(2020, 2, 28))
    assert feb.n_predictions == 2 * 20
    # January has no known label at its own start, so it is not scored at all.
    assert result.n_rows_before_first_model == 23 + 22
    assert [f.trained_at for f in result.fits] == [_bar(date(2020, 2, 3)), _bar(date(2020, 3, 2))]
    assert training_cutoff_violations(result.fits) == []


def test_walk_forward_future_prices_changed_scores_before_change_unchanged() -> None:
    # Arrange: the same data twice, except closes from the first bar of March on are scrambled.
    bars = _weekdays(date(2020, 1, 1), date(2020, 4, 30))
    prices, features = _random_panel(["A", "B", "C", "D"], bars)
    march = _bar(date(2020, 3, 2))
    scrambled = prices.with_columns(
        pl.when(pl.col("timestamp") >= march)
        .then(pl.col("close") * (1.0 + pl.int_range(pl.len()) % 7))
        .otherwise(pl.col("close"))
        .alias("close")
    )

    # Act
    base = walk_forward_signals(prices, features, ["f1", "f2"], min_train_periods=5)
    moved = walk_forward_signals(scrambled, features, ["f1", "f2"], min_train_periods=5)

    # Assert: labels ending on or after 2 March are unknown to the February and March models,
    # so every score up to the end of March is identical; April's model sees the change.
    until_april = pl.col("timestamp") < _bar(date(2020, 4, 1))
    assert_frame_equal(base.filter(until_april), moved.filter(until_april))
    assert not base.filter(~until_april).equals(moved.filter(~until_april))


def test_training_cutoff_violations_label_at_cutoff_is_reported() -> None:
    cutoff = _bar(date(2020, 2, 3))
    clean = FitRecord(cutoff, cutoff - timedelta(days=3), cutoff - timedelta(days=10), 1, 1,
                      cutoff, cutoff, 1)  # fmt: skip
    leaky = FitRecord(cutoff, cutoff, cutoff - timedelta(days=10), 1, 1, cutoff, cutoff, 1)

    assert training_cutoff_violations([clean, leaky]) == [leaky]


# --- output contract, warm-up, determinism ------------------------------------------------------


def test_walk_forward_signals_output_contract_sorted_and_typed() -> None:
    bars = _weekdays(date(2020, 1, 1), date(2020, 3, 31))
    prices, features = _random_panel(["B", "A", "C"], bars)

    signals = walk_forward_signals(prices, features, ["f1", "f2"], min_train_periods=1)

    assert signals.columns == OUTPUT_COLUMNS
    assert signals.schema["timestamp"] == pl.Datetime("us", "UTC")
    assert signals.schema["symbol"] == pl.String
    assert signals.schema["score"] == pl.Float64
    assert signals.schema["available_at"] == pl.Datetime("us", "UTC")
    assert signals.schema["model_trained_at"] == pl.Datetime("us", "UTC")
    assert signals.equals(signals.sort("timestamp", "symbol"))
    assert (signals["available_at"] == signals["timestamp"]).all()
    assert signals["score"].is_finite().all()
    # Feb (20 weekdays) + Mar (22 weekdays), 3 symbols.
    assert signals.height == 3 * (20 + 22)


def test_walk_forward_null_features_and_short_history_rows_not_scored() -> None:
    # Arrange: f1 is null on each symbol's first 30 bars (an indicator warm-up).
    bars = _weekdays(date(2020, 1, 1), date(2020, 6, 30))
    prices, features = _random_panel(["A", "B", "C"], bars)
    features = features.with_columns(
        pl.when(pl.int_range(pl.len()).over("symbol") < 30).then(None).otherwise(pl.col("f1"))
        .alias("f1")
    )  # fmt: skip

    # Act: ask for 40 timestamps of trained history before the first month is scored.
    result = run_walk_forward(prices, features, ["f1", "f2"], min_train_periods=40)
    signals = result.signals

    # Assert: 90 warm-up rows dropped from training and scoring, not filled.
    assert result.n_rows_null_features == 90
    warm = features.filter(pl.col("f1").is_null()).select("timestamp", "symbol")
    assert signals.join(warm, on=["timestamp", "symbol"]).height == 0
    # Complete rows start on 12 Feb; labels known before 1 Apr span 12 Feb..24 Mar = 30 bars
    # (< 40), before 1 May 12 Feb..23 Apr = 52 bars: April is the last unscored month.
    assert result.fits[0].trained_at == _bar(date(2020, 5, 1))
    assert result.fits[0].n_timestamps == 52
    assert signals["timestamp"].min() == _bar(date(2020, 5, 1))
    # Every row is scored by the model cut at the first bar of its own month.
    first_bar = signals.group_by(pl.col("timestamp").dt.truncate("1mo")).agg(
        pl.col("timestamp").min().alias("first"), pl.col("model_trained_at").unique().alias("m")
    )
    for row in first_bar.iter_rows(named=True):
        assert row["m"] == [row["first"]]
    assert result.n_rows_before_first_model == 3 * (
        len([b for b in bars if b < _bar(date(2020, 5, 1))]) - 30
    )


def test_walk_forward_no_month_with_enough_history_returns_empty_frame() -> None:
    bars = _weekdays(date(2020, 1, 1), date(2020, 2, 28))
    prices, features = _random_panel(["A", "B"], bars)

    result = run_walk_forward(prices, features, ["f1"], min_train_periods=252)

    assert result.signals.height == 0
    assert result.signals.columns == OUTPUT_COLUMNS
    assert result.fits == ()
    assert result.fits_frame().height == 0


@pytest.mark.parametrize("model", ["ridge", "gbm"])
def test_walk_forward_shuffled_input_rows_identical_output(model: str) -> None:
    bars = _weekdays(date(2020, 1, 1), date(2020, 4, 30))
    prices, features = _random_panel(["A", "B", "C", "D", "E"], bars)

    first = walk_forward_signals(prices, features, ["f1", "f2"], min_train_periods=10, model=model)
    again = walk_forward_signals(
        prices.sample(fraction=1.0, shuffle=True, seed=3),
        features.sample(fraction=1.0, shuffle=True, seed=4).with_columns(
            pl.col("symbol").cast(pl.Categorical)
        ),
        ["f1", "f2"],
        min_train_periods=10,
        model=model,
    )

    assert first.height > 0
    assert_frame_equal(first, again)


def test_walk_forward_features_on_other_keys_than_prices_same_scores() -> None:
    # Features carrying exactly the prices' keys take the positional path; one extra key (a
    # symbol without prices, features null) sends the same data through the join.
    bars = _weekdays(date(2020, 1, 1), date(2020, 4, 30))
    prices, features = _random_panel(["A", "B", "C", "D", "E"], bars)
    unpriced = pl.DataFrame(
        {"timestamp": [bars[3]], "symbol": ["F"], "f1": [None], "f2": [None]},
        schema=features.schema,
    )
    widened = pl.concat([features, unpriced]).sort("timestamp", "symbol")

    aligned = run_walk_forward(prices, features, ["f1", "f2"], min_train_periods=10)
    joined = run_walk_forward(prices, widened, ["f1", "f2"], min_train_periods=10)

    assert aligned.signals.height > 0
    assert_frame_equal(aligned.signals, joined.signals)
    assert joined.n_rows_null_features == aligned.n_rows_null_features + 1


# --- predictive power ----------------------------------------------------------------------------


@pytest.mark.parametrize("preprocess", ["rank", "zscore"])
def test_walk_forward_planted_ar1_state_positive_rank_correlation(preprocess: str) -> None:
    prices, features = _planted_ar1()

    informed = walk_forward_signals(
        prices, features, ["state", "noise"], min_train_periods=120, preprocess=preprocess
    )
    blind = walk_forward_signals(
        prices, features, ["noise"], min_train_periods=120, preprocess=preprocess
    )

    # Expected IC about 0.38 (signal 0.009 f against noise 0.022 over 5 bars).
    assert _mean_rank_ic(informed, prices) > 0.25
    assert abs(_mean_rank_ic(blind, prices)) < 0.05


# --- bad input -----------------------------------------------------------------------------------


def test_walk_forward_naive_timestamps_raise_type_error() -> None:
    bars = _weekdays(date(2020, 1, 1), date(2020, 1, 31))
    prices, features = _random_panel(["A"], bars)

    with pytest.raises(TypeError, match="tz-aware UTC"):
        walk_forward_signals(
            prices.with_columns(pl.col("timestamp").dt.replace_time_zone(None)), features, ["f1"]
        )


def test_walk_forward_duplicate_keys_raise_naming_key() -> None:
    bars = _weekdays(date(2020, 1, 1), date(2020, 1, 31))
    prices, features = _random_panel(["A", "B"], bars)
    features = pl.concat([features, features.tail(1)])

    with pytest.raises(ValueError, match=r"duplicate \(timestamp, symbol\).*'B'"):
        walk_forward_signals(prices, features, ["f1"])


def test_walk_forward_nan_feature_raises_naming_row() -> None:
    bars = _weekdays(date(2020, 1, 1), date(2020, 1, 31))
    prices, features = _random_panel(["A", "B"], bars)
    features = features.with_columns(
        pl.when(pl.col("symbol") == "B").then(float("nan")).otherwise(pl.col("f2")).alias("f2")
    )

    with pytest.raises(ValueError, match=r"features\.f2 has 23 NaN/infinite.*'B'"):
        walk_forward_signals(prices, features, ["f1", "f2"])


def test_walk_forward_non_positive_close_raises_naming_row() -> None:
    bars = _weekdays(date(2020, 1, 1), date(2020, 1, 31))
    prices, features = _random_panel(["A", "B"], bars)
    prices = prices.with_columns(
        pl.when((pl.col("symbol") == "A") & (pl.col("timestamp") == bars[3]))
        .then(0.0)
        .otherwise(pl.col("close"))
        .alias("close")
    )

    with pytest.raises(ValueError, match=r"1 row\(s\) whose close.*2020, 1, 6.*'A'"):
        walk_forward_signals(prices, features, ["f1"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"horizon": 0}, "horizon"),
        ({"min_train_periods": 0}, "min_train_periods"),
        ({"alpha": 0.0}, "alpha"),
        ({"model": "lasso"}, "model"),
        ({"retrain": "weekly"}, "retrain"),
        ({"feature_columns": []}, "feature_columns is empty"),
        ({"feature_columns": ["f1", "f1"]}, "more than once"),
        ({"feature_columns": ["missing"]}, "missing column"),
    ],
)
def test_walk_forward_bad_arguments_raise_value_error(
    kwargs: dict[str, object], message: str
) -> None:
    bars = _weekdays(date(2020, 1, 1), date(2020, 1, 31))
    prices, features = _random_panel(["A"], bars)
    call: dict[str, object] = {"feature_columns": ["f1"], **kwargs}

    with pytest.raises(ValueError, match=message):
        walk_forward_signals(prices, features, **call)  # type: ignore[arg-type]


# --- real data -----------------------------------------------------------------------------------


SP500_FEATURES = ["ret_1", "ret_5", "ret_20", "vol_20"]


def _sp500_prices_features(data_root: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The full S&P file (raw), its closes stamped at the 16:00 New York close in UTC, and four
    price features computed inline (each uses bars <= t of its symbol only)."""
    raw = pl.read_parquet(data_root / "sp500_5yr_daily_ohlcv.parquet")
    prices = raw.select(
        (pl.col("timestamp") + pl.duration(hours=16))
        .dt.replace_time_zone("America/New_York")
        .dt.convert_time_zone("UTC"),
        "symbol",
        "close",
    )
    close = pl.col("close")
    ret_1 = close / close.shift(1) - 1
    features = prices.sort("symbol", "timestamp").select(
        "timestamp",
        "symbol",
        ret_1.over("symbol").alias("ret_1"),
        (close / close.shift(5) - 1).over("symbol").alias("ret_5"),
        (close / close.shift(20) - 1).over("symbol").alias("ret_20"),
        ret_1.rolling_std(20).over("symbol").alias("vol_20"),
    )
    return raw, prices, features


def test_walk_forward_full_sp500_no_label_used_before_available(data_root: Path) -> None:
    # Arrange
    raw, prices, features = _sp500_prices_features(data_root)

    # Act
    result = run_walk_forward(prices, features, SP500_FEATURES)
    signals, fits = result.signals, result.fits

    # Assert
    assert training_cutoff_violations(fits) == []
    assert all(f.max_label_available_at < f.trained_at for f in fits)
    assert len(fits) == 47  # Apr 2014 .. Feb 2018: the first 252 labelled bars end in Mar 2014
    assert fits[0].trained_at == datetime(2014, 4, 1, 20, tzinfo=UTC)  # 16:00 EDT
    assert fits[0].n_timestamps >= 252
    assert sum(f.n_predictions for f in fits) == signals.height
    assert signals.height + result.n_rows_null_features + result.n_rows_before_first_model == (
        raw.height
    )
    assert (signals["model_trained_at"] <= signals["timestamp"]).all()
    assert signals["score"].is_finite().all()
    assert signals.select(pl.struct("timestamp", "symbol").is_unique().all()).item()


def test_walk_forward_scores_same_under_one_and_two_blas_threads(data_root: Path) -> None:
    # Arrange: S&P features to mid-2014 (three monthly fits on 130k-160k rows: large enough
    # that OpenBLAS splits Ridge's X.T @ X over threads; unpinned, 2 threads changed 29,898 of
    # the 30,018 scores in the last bits).
    _, prices, features = _sp500_prices_features(data_root)
    early = features.filter(pl.col("timestamp") < datetime(2014, 7, 1, tzinfo=UTC))

    # Act: the caller's BLAS thread count set to 1, then to 2
    scores = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            scores.append(run_walk_forward(prices, early, SP500_FEATURES).signals)

    # Assert: bit-for-bit the same scores
    assert scores[0].height > 0
    assert_frame_equal(scores[0], scores[1], check_exact=True)


# --- the fits' reused row buffer ---------------------------------------------------------------


@pytest.mark.parametrize("n_rows", [1_000, 60_000, 240_000])
def test_gather_rows_ridge_on_reused_buffer_fits_same_bits_as_fresh_copy(n_rows: int) -> None:
    # Arrange: a column-major matrix (as polars hands it over), rows picked with gaps, and a
    # buffer already centred in place by an earlier, larger fit (as in the walk-forward loop)
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(n_rows)
    x = np.asfortranarray(rng.standard_normal((n_rows + 5_000, 9)))
    y = rng.standard_normal(n_rows)
    rows = np.flatnonzero(rng.random(n_rows + 5_000) > 0.02)[:n_rows]
    buffer = np.empty_like(x, order="C")
    with threadpool_limits(limits=1, user_api="blas"):
        Ridge(alpha=1.0, copy_X=False).fit(
            gather_rows(x, np.arange(x.shape[0]), buffer), y[:1].repeat(x.shape[0])
        )

        # Act
        fresh = Ridge(alpha=1.0, copy_X=False).fit(x[rows], y)
        view = gather_rows(x, rows, buffer)
        reused = Ridge(alpha=1.0, copy_X=False).fit(view, y)

        # Assert: same layout as a fresh copy, same fitted bits, same scores
        assert view.flags["C_CONTIGUOUS"] and np.shares_memory(view, buffer)
        np.testing.assert_array_equal(reused.coef_, fresh.coef_, strict=True)
        assert reused.intercept_ == fresh.intercept_
        np.testing.assert_array_equal(reused.predict(x[:500]), fresh.predict(x[:500]))


def test_gather_rows_equals_fancy_index_and_rejects_a_short_or_strided_buffer() -> None:
    x = np.asfortranarray(np.arange(40.0).reshape(10, 4))
    rows = np.array([0, 3, 4, 9])
    buffer = np.full((10, 4), np.nan)

    np.testing.assert_array_equal(gather_rows(x, rows, buffer), x[rows], strict=True)
    with pytest.raises(ValueError, match="at least 4 rows"):
        gather_rows(x, rows, np.empty((3, 4)))
    with pytest.raises(ValueError, match="C-contiguous"):
        gather_rows(x, rows, np.empty((10, 4), order="F"))


def test_walk_forward_zscore_overflowing_to_nan_raises_before_fitting() -> None:
    # Finite features whose cross-sectional mean overflows: the z-scores are NaN. The fits skip
    # scikit-learn's own finiteness scans, so the walk-forward must stop with its own error.
    bars = _weekdays(date(2020, 1, 1), date(2020, 3, 31))
    prices, features = _random_panel(["A", "B", "C"], bars)
    huge = pl.when(pl.col("symbol") == "C").then(-1.7e308).otherwise(1.7e308)
    features = features.with_columns(huge.alias("f1"))

    with pytest.raises(ValueError, match=r"zscore.*\[.f1.\] gave NaN or infinite values"):
        walk_forward_signals(
            prices, features, ["f1", "f2"], min_train_periods=10, preprocess="zscore"
        )


def test_ridge_predictions_on_compact_column_major_copy_equal_strided_slice() -> None:
    # The walk-forward scores each month on np.asfortranarray(x[lo:hi]) of a row-major x; the
    # scores were first computed on slices of a column-major x: same layout, same bits (a
    # row-major block rounds differently, which is why the copy is column-major).
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(5)
    with threadpool_limits(limits=1, user_api="blas"):
        model = Ridge(alpha=1.0).fit(rng.standard_normal((20_000, 9)), rng.standard_normal(20_000))
        column_major = np.asfortranarray(rng.standard_normal((50_000, 9)))
        row_major = np.ascontiguousarray(column_major)

        strided = model.predict(column_major[1_000:11_000])
        compact = model.predict(np.asfortranarray(row_major[1_000:11_000]))

    np.testing.assert_array_equal(compact, strided, strict=True)


# --- the fit loop against the plain way ----------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), horizon=st.integers(1, 6), drop=st.floats(0.0, 0.3))
def test_walk_forward_fits_and_scores_equal_plain_per_month_arrays(
    seed: int, horizon: int, drop: float
) -> None:
    """Each fit's log (training rows, latest label time, latest stamp) and each month's scores
    are what fresh arrays give: the training rows picked by their label times, the targets
    ``y - mean(y)`` per timestamp, Ridge on a fresh ``x[train]``, the month scored on a
    column-major copy. Symbols miss random bars, so label times differ between symbols."""
    from sklearn.linear_model import Ridge

    from ml4t_pipeline.lib.signals import _cross_sectional

    bars = _weekdays(date(2020, 1, 1), date(2020, 6, 30))
    prices, features = _random_panel(["A", "B", "C", "D"], bars, seed=seed)
    rng = np.random.default_rng(seed)
    keep = pl.Series(rng.random(prices.height) >= drop)
    prices, features = prices.filter(keep), features.filter(keep)
    result = run_walk_forward(prices, features, ["f1", "f2"], horizon=horizon, min_train_periods=5)

    labels = (
        prices.sort("symbol", "timestamp")
        .with_columns(
            (pl.col("close").shift(-horizon).over("symbol") / pl.col("close") - 1.0).alias("y"),
            pl.col("timestamp").shift(-horizon).over("symbol").alias("label_at"),
        )
        .drop("close")
    )
    panel = (
        features.join(labels, on=["timestamp", "symbol"])
        .sort("timestamp", "symbol")
        .with_columns(_cross_sectional(c, "rank") for c in ["f1", "f2"])
    )
    x = panel.select("f1", "f2").to_numpy(order="c")
    for fit in result.fits:
        train = panel.with_row_index("i").filter(
            pl.col("label_at").is_not_null() & (pl.col("label_at") < fit.trained_at)
        )
        assert fit.n_rows == train.height
        assert fit.max_label_available_at == train["label_at"].max()
        assert fit.max_train_timestamp == train["timestamp"].max()
        target = train.select(pl.col("y") - pl.col("y").mean().over("timestamp"))["y"]
        rows = train["i"].to_numpy().astype(np.int64)
        month = (panel["timestamp"] >= fit.first_scored_at) & (
            panel["timestamp"] <= fit.last_scored_at
        )
        with threadpool_limits(limits=1, user_api="blas"):
            model = Ridge(alpha=1.0).fit(x[rows], target.to_numpy())
            plain = model.predict(np.asfortranarray(x[month.to_numpy()]))
        scored = result.signals.filter(pl.col("model_trained_at") == fit.trained_at)
        np.testing.assert_allclose(scored["score"].to_numpy(), plain, rtol=0, atol=1e-12)
