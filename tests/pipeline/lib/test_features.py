"""Specification of ml4t_pipeline.lib.features: indicators hand-checked on tiny series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from ml4t_pipeline.lib.features import FEATURE_COLUMNS, OUTPUT_COLUMNS, compute_features
from ml4t_pipeline.lib.io import load_prices_file
from ml4t_pipeline.lib.stamps import duplicated_rows, has_adjacent_duplicate
from ml4t_pipeline.lib.timing import UTC_DATETIME

T0 = datetime(2024, 1, 2, 21, tzinfo=UTC)


def bars(closes: list[float], symbol: str = "A", spread: float = 1.0) -> pl.DataFrame:
    """Daily bars with high = close + spread and low = close - spread."""
    n = len(closes)
    return pl.DataFrame(
        {
            "timestamp": [T0 + timedelta(days=i) for i in range(n)],
            "symbol": [symbol] * n,
            "open": closes,
            "high": [c + spread for c in closes],
            "low": [c - spread for c in closes],
            "close": closes,
            "volume": [1000.0] * n,
        },
        schema_overrides={"timestamp": UTC_DATETIME},
    )


# Closes: 100, then ten +1 and four -1 changes (bars 1..14), then +5 (bar 15) and -3 (bar 16).
CHANGES = [1.0] * 10 + [-1.0] * 4 + [5.0, -3.0]
CLOSES = [100.0]
for change in CHANGES:
    CLOSES.append(CLOSES[-1] + change)


def test_compute_features_atr_14_wilder_hand_checked() -> None:
    out = compute_features(bars(CLOSES))
    atr = out["atr_14"].to_list()
    assert atr[:14] == [None] * 14
    # |change| = 1 with high/low = close ± 1: TR = max(2, |c+1-prev|, |c-1-prev|) = 2.
    assert atr[14] == pytest.approx(2.0)  # mean(TR_1..TR_14)
    # Bar 15: change +5 -> TR = 6; ATR = (13 * 2 + 6) / 14.
    assert atr[15] == pytest.approx(32 / 14)
    # Bar 16: change -3 -> TR = 4; ATR = (13 * 32/14 + 4) / 14.
    assert atr[16] == pytest.approx((13 * 32 / 14 + 4) / 14)
    assert out["atr_14_pct"][16] == pytest.approx(atr[16] / CLOSES[16])


def test_compute_features_rsi_14_wilder_hand_checked() -> None:
    rsi = compute_features(bars(CLOSES))["rsi_14"].to_list()
    assert rsi[:14] == [None] * 14
    # Seed: avg gain 10/14, avg loss 4/14 -> RSI = 100 * 10 / 14.
    assert rsi[14] == pytest.approx(100 * 10 / 14)
    # Bar 15 (+5): gain = (13*10/14 + 5)/14 = 200/196, loss = 52/196 -> 100 * 200 / 252.
    assert rsi[15] == pytest.approx(100 * 200 / 252)
    # Bar 16 (-3): gain = 2600/2744, loss = (13*52/196 + 3)/14 = 1264/2744.
    assert rsi[16] == pytest.approx(100 * 2600 / 3864)


def test_compute_features_rsi_only_gains_is_100_flat_is_50() -> None:
    up = compute_features(bars([float(100 + i) for i in range(16)]))["rsi_14"]
    flat = compute_features(bars([100.0] * 16))["rsi_14"]
    assert up[15] == 100.0
    assert flat[15] == 50.0


def test_compute_features_returns_hand_checked_with_warmup_nulls() -> None:
    closes = [100.0, 110.0, 99.0, 99.0, 120.0, 90.0, 100.0]
    out = compute_features(bars(closes))
    assert out["ret_1"].to_list()[:3] == [None, pytest.approx(0.1), pytest.approx(-0.1)]
    assert out["ret_5"].to_list()[:6] == [None] * 5 + [pytest.approx(90 / 100 - 1)]
    assert out["ret_5"][6] == pytest.approx(100 / 110 - 1)
    assert out["ret_20"].null_count() == len(closes)


def test_compute_features_vol_sma_ema_zscore_windows() -> None:
    closes = [100.0 + (i % 3) for i in range(25)]
    out = compute_features(bars(closes))
    rets = [None] + [closes[i] / closes[i - 1] - 1 for i in range(1, 25)]
    assert out["vol_20"][19] is None
    expected_vol = pl.Series(rets[1:21]).std()
    assert out["vol_20"][20] == pytest.approx(expected_vol)
    sma = sum(closes[:20]) / 20
    assert out["sma_20"][18] is None
    assert out["sma_20"][19] == pytest.approx(sma)
    assert out["ema_20"][19] == pytest.approx(sma)  # EMA seeded with the SMA
    alpha = 2 / 21
    assert out["ema_20"][20] == pytest.approx((1 - alpha) * sma + alpha * closes[20])
    std = pl.Series(closes[:20]).std()
    assert out["zscore_20"][19] == pytest.approx((closes[19] - sma) / std)
    assert out["close_to_sma_20"][19] == pytest.approx(closes[19] / sma - 1)


def test_compute_features_constant_close_zscore_null_not_inf() -> None:
    out = compute_features(bars([50.0] * 25))
    assert out["zscore_20"].null_count() == 25
    assert out["close_to_ema_20"][24] == pytest.approx(0.0)


def test_compute_features_symbols_independent_and_sorted() -> None:
    a, b = bars(CLOSES, "A"), bars([c * 2 for c in CLOSES], "B", spread=3.0)
    together = compute_features(pl.concat([b, a]).sample(fraction=1.0, shuffle=True, seed=7))
    assert together.columns == list(OUTPUT_COLUMNS)
    assert together.select(pl.col("timestamp").is_sorted()).item()
    alone = compute_features(a)
    assert together.filter(pl.col("symbol") == "A").equals(alone)


def test_compute_features_value_at_t_ignores_later_bars(data_root: Path) -> None:
    prices = load_prices_file(data_root / "sp500_5yr_daily_ohlcv.parquet").filter(
        pl.col("symbol").is_in(["AAPL", "MSFT", "XOM"])
    )
    cut = prices["timestamp"].unique().sort()[300]
    full = compute_features(prices).filter(pl.col("timestamp") <= cut)
    truncated = compute_features(prices.filter(pl.col("timestamp") <= cut))
    assert full.equals(truncated)


def test_compute_features_key_ordered_prices_same_frame_as_shuffled(data_root: Path) -> None:
    # Prices in (timestamp, symbol) order run their windows in place and skip the final sort;
    # shuffled prices are sorted by symbol first and back at the end: the same frame.
    prices = (
        load_prices_file(data_root / "sp500_5yr_daily_ohlcv.parquet")
        .filter(pl.col("symbol").is_in(["AAPL", "MSFT", "XOM", "A", "ZTS"]))
        .sort("timestamp", "symbol")
    )

    in_order = compute_features(prices)
    shuffled = compute_features(prices.sample(fraction=1.0, shuffle=True, seed=11))

    assert in_order.height == prices.height
    assert in_order.select("timestamp", "symbol").equals(prices.select("timestamp", "symbol"))
    assert_frame_equal(in_order, shuffled, check_exact=True)


def test_compute_features_null_high_gives_null_true_range_bar() -> None:
    df = bars(CLOSES).with_columns(
        pl.when(pl.int_range(pl.len()) == 15).then(None).otherwise(pl.col("high")).alias("high")
    )
    atr = compute_features(df)["atr_14"]
    assert atr[14] == pytest.approx(2.0)
    assert atr[15] is None


def test_compute_features_duplicate_key_raises() -> None:
    df = pl.concat([bars(CLOSES[:3]), bars(CLOSES[:1])])
    with pytest.raises(ValueError, match="1 rows share|2 rows share"):
        compute_features(df)


def test_feature_columns_are_output_columns() -> None:
    assert set(FEATURE_COLUMNS) <= set(OUTPUT_COLUMNS)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["A", "B", None]), st.one_of(st.none(), st.integers(0, 3))),
        max_size=12,
    )
)
def test_has_adjacent_duplicate_on_sorted_frame_equals_hash_test(
    keys: list[tuple[str | None, int | None]],
) -> None:
    # Arrange: a key frame with nulls and repeats, sorted as compute_features sorts it
    frame = pl.DataFrame(keys, schema={"symbol": pl.String, "bar": pl.Int64}, orient="row").sort(
        "symbol", "bar"
    )

    # Act
    found = has_adjacent_duplicate(frame, ["symbol", "bar"])

    # Assert: the same verdict as hashing every key (null equal to null)
    assert found == bool(frame.select(pl.struct("symbol", "bar").is_duplicated().any()).item())


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.one_of(st.none(), st.integers(0, 3)), st.sampled_from(["A", "B", None])),
        max_size=10,
    ),
    st.booleans(),
)
def test_duplicated_rows_key_order_fast_path_equals_hash_test(
    keys: list[tuple[int | None, str | None]], in_order: bool
) -> None:
    # Arrange: (timestamp, symbol) keys with nulls and repeats, in key order or as drawn
    frame = pl.DataFrame(keys, schema={"t": pl.Int64, "symbol": pl.String}, orient="row")
    frame = frame.select(
        (T0 + pl.duration(days=pl.col("t"))).alias("timestamp"),
        "symbol",
    )
    if in_order:
        frame = frame.sort("timestamp", "symbol")

    # Act
    found = duplicated_rows(frame, ["timestamp", "symbol"])

    # Assert: every copy of a repeated key, in input order, as the hash test finds them
    assert_frame_equal(found, frame.filter(pl.struct("timestamp", "symbol").is_duplicated()))
