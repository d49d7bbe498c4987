"""Specification of engine.feature_provider: precomputed and callable feature providers."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.feature_provider import (
    CallableFeatureProvider,
    FeatureProvider,
    PrecomputedFeatureProvider,
    timestamp_to_us,
)

UTC_US = pl.Datetime("us", "UTC")
T0 = datetime(2024, 1, 2, 21, tzinfo=UTC)
T1 = T0 + timedelta(days=1)
T2 = T0 + timedelta(days=2)


def features() -> pl.DataFrame:
    """Two symbols over three days, deliberately unsorted; B has no row on day 0, A a null."""
    return pl.DataFrame(
        {
            "timestamp": [T1, T0, T1, T2, T2],
            "symbol": ["B", "A", "A", "A", "B"],
            "rsi_14": [40.0, 55.0, 60.0, None, 45.0],
            "atr_14": [2.0, 1.0, 1.5, 1.25, 2.5],
            "label": ["x", "y", "z", "w", "v"],  # non-numeric: ignored by default
        },
        schema_overrides={"timestamp": UTC_US},
    )


def market() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "timestamp": [T0, T2, T0 + timedelta(hours=1)],
            "vix": [14.0, 16.0, 99.0],
            "market_return": [0.01, None, 0.0],
        },
        schema_overrides={"timestamp": UTC_US},
    )


@pytest.fixture
def provider() -> PrecomputedFeatureProvider:
    return PrecomputedFeatureProvider.from_frame(features(), market())


def test_precomputed_get_features_exact_row_values(
    provider: PrecomputedFeatureProvider,
) -> None:
    assert provider.get_features("A", T1) == {"rsi_14": 60.0, "atr_14": 1.5}
    assert provider.get_features("B", T2) == {"rsi_14": 45.0, "atr_14": 2.5}


def test_precomputed_default_columns_are_numeric_non_key_columns(
    provider: PrecomputedFeatureProvider,
) -> None:
    assert provider.feature_names == ["rsi_14", "atr_14"]
    assert provider.market_feature_names == ["vix", "market_return"]
    assert isinstance(provider, FeatureProvider)


def test_precomputed_null_value_is_nan(provider: PrecomputedFeatureProvider) -> None:
    values = provider.get_features("A", T2)
    assert math.isnan(values["rsi_14"])
    assert values["atr_14"] == 1.25


def test_precomputed_symbol_without_row_at_known_timestamp_is_all_nan(
    provider: PrecomputedFeatureProvider,
) -> None:
    values = provider.get_features("B", T0)
    assert list(values) == ["rsi_14", "atr_14"]
    assert all(math.isnan(v) for v in values.values())


def test_precomputed_unknown_timestamp_raises_never_rounds(
    provider: PrecomputedFeatureProvider,
) -> None:
    with pytest.raises(KeyError, match="no features at 2024-01-03T22:00:00"):
        provider.get_features("A", T1 + timedelta(hours=1))


def test_precomputed_unknown_symbol_raises(provider: PrecomputedFeatureProvider) -> None:
    with pytest.raises(KeyError, match="unknown symbol 'ZZZ'"):
        provider.get_features("ZZZ", T0)


def test_precomputed_market_features_aligned_by_exact_timestamp(
    provider: PrecomputedFeatureProvider,
) -> None:
    assert provider.get_market_features(T0) == {"vix": 14.0, "market_return": 0.01}
    day1 = provider.get_market_features(T1)  # no market row that day
    assert all(math.isnan(v) for v in day1.values())
    day2 = provider.get_market_features(T2)
    assert day2["vix"] == 16.0
    assert math.isnan(day2["market_return"])


def test_precomputed_without_market_table_returns_empty_dict() -> None:
    provider = PrecomputedFeatureProvider.from_frame(features())
    assert provider.get_market_features(T0) == {}


@pytest.mark.parametrize(
    "when",
    [
        T1,
        T1.astimezone(timezone(timedelta(hours=-5))),  # same instant, New York winter offset
        np.datetime64("2024-01-03T21:00:00", "us"),
        np.datetime64("2024-01-03T21:00:00.000000000", "ns"),
        1_704_315_600_000_000,  # µs since epoch of 2024-01-03 21:00 UTC
    ],
)
def test_precomputed_timestamp_forms_are_equivalent(
    provider: PrecomputedFeatureProvider, when: datetime | np.datetime64 | int
) -> None:
    assert provider.get_features("A", when) == {"rsi_14": 60.0, "atr_14": 1.5}


def test_timestamp_to_us_naive_datetime_raises() -> None:
    with pytest.raises(ValueError, match="naive"):
        timestamp_to_us(datetime(2024, 1, 2, 21))


@pytest.mark.parametrize("bad", ["2024-01-02", 1.5, True, None])
def test_timestamp_to_us_other_types_raise(bad: object) -> None:
    with pytest.raises(TypeError, match="timestamp must be"):
        timestamp_to_us(bad)  # type: ignore[arg-type]


def test_precomputed_selected_columns_in_given_order() -> None:
    provider = PrecomputedFeatureProvider.from_frame(
        features(), market(), columns=["atr_14"], market_columns=["vix"]
    )
    assert provider.get_features("A", T0) == {"atr_14": 1.0}
    assert provider.get_market_features(T0) == {"vix": 14.0}


def test_precomputed_feature_matrix_matches_per_symbol_lookups(
    provider: PrecomputedFeatureProvider,
) -> None:
    matrix = provider.get_feature_matrix(T0, ["B", "A"], ["atr_14", "rsi_14"])
    assert matrix.shape == (2, 2)
    assert np.isnan(matrix[0]).all()  # B has no row on day 0
    np.testing.assert_array_equal(matrix[1], [1.0, 55.0])


def test_precomputed_feature_matrix_unknown_column_raises(
    provider: PrecomputedFeatureProvider,
) -> None:
    with pytest.raises(KeyError, match="unknown feature columns"):
        provider.get_feature_matrix(T0, ["A"], ["rsi_99"])


def test_precomputed_returned_dict_is_a_copy(provider: PrecomputedFeatureProvider) -> None:
    first = provider.get_features("A", T0)
    first["rsi_14"] = -1.0
    assert provider.get_features("A", T0)["rsi_14"] == 55.0


def test_precomputed_duplicate_key_raises_naming_it() -> None:
    dup = pl.concat([features(), features().head(1)])
    with pytest.raises(ValueError, match=r"features has 2 rows with a duplicated .*'B'"):
        PrecomputedFeatureProvider.from_frame(dup)


def test_precomputed_duplicate_market_timestamp_raises() -> None:
    with pytest.raises(ValueError, match="market has 2 rows with a duplicated"):
        PrecomputedFeatureProvider.from_frame(features(), pl.concat([market(), market().head(1)]))


def test_precomputed_naive_timestamp_raises() -> None:
    naive = features().with_columns(pl.col("timestamp").dt.replace_time_zone(None))
    with pytest.raises(ValueError, match="tz-aware UTC"):
        PrecomputedFeatureProvider.from_frame(naive)


def test_precomputed_missing_and_non_numeric_columns_raise() -> None:
    with pytest.raises(ValueError, match=r"missing columns \['vol_20'\]"):
        PrecomputedFeatureProvider.from_frame(features(), columns=["vol_20"])
    with pytest.raises(ValueError, match="must be numeric"):
        PrecomputedFeatureProvider.from_frame(features(), columns=["label"])
    with pytest.raises(ValueError, match="market_columns given without a market table"):
        PrecomputedFeatureProvider.from_frame(features(), market_columns=["vix"])


def test_precomputed_categorical_symbols_and_ms_timestamps_accepted() -> None:
    frame = features().with_columns(
        pl.col("symbol").cast(pl.Categorical), pl.col("timestamp").cast(pl.Datetime("ms", "UTC"))
    )
    provider = PrecomputedFeatureProvider.from_frame(frame)
    assert provider.get_features("B", T1) == {"rsi_14": 40.0, "atr_14": 2.0}
    assert provider.symbols == ["A", "B"]


def test_precomputed_index_shape_is_timestamps_by_symbols(
    provider: PrecomputedFeatureProvider,
) -> None:
    assert provider.row_of.shape == (3, 2)
    assert provider.row_of[0].tolist()[1] == -1  # (T0, B) absent
    assert "symbols=2" in repr(provider)


def test_precomputed_real_features_match_frame_rows(data_root: Path) -> None:
    # Real S&P features: 1,000 random (timestamp, symbol) rows looked up one by one equal the
    # frame's own values.
    from ml4t_pipeline.lib.features import FEATURE_COLUMNS, compute_features
    from ml4t_pipeline.lib.io import load_prices_file

    prices = load_prices_file(data_root / "sp500_5yr_daily_ohlcv.parquet")
    prices = prices.filter(pl.col("symbol").is_in(["AAPL", "MSFT", "XOM", "JPM", "BHF"]))
    feats = compute_features(prices.drop_nulls(["open", "high", "low", "close", "volume"]))
    provider = PrecomputedFeatureProvider.from_frame(feats, columns=list(FEATURE_COLUMNS))
    sample = feats.sample(1_000, seed=1)
    for row in sample.iter_rows(named=True):
        got = provider.get_features(row["symbol"], row["timestamp"])
        expected = [np.nan if row[c] is None else row[c] for c in FEATURE_COLUMNS]
        np.testing.assert_array_equal(list(got.values()), expected)


# --------------------------------------------------------------------------------------------
# Callable


def test_callable_provider_passes_utc_datetime_and_converts_to_float() -> None:
    seen: list[tuple[str, datetime]] = []

    def fn(asset_id: str, timestamp: datetime) -> dict[str, float]:
        seen.append((asset_id, timestamp))
        return {"n": 3}

    provider = CallableFeatureProvider(fn)
    values = provider.get_features("A", 1_704_229_200_000_000)  # µs of T0
    assert values == {"n": 3.0}
    assert isinstance(values["n"], float)
    assert seen == [("A", T0)]
    assert seen[0][1].tzinfo is not None
    assert provider.get_market_features(T0) == {}


def test_callable_provider_market_fn_used() -> None:
    provider = CallableFeatureProvider(lambda s, t: {}, lambda t: {"vix": t.day})
    assert provider.get_market_features(T1) == {"vix": 3.0}


def test_callable_provider_bad_return_raises_naming_key() -> None:
    provider = CallableFeatureProvider(lambda s, t: {"rsi": "high"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="non-numeric value for 'rsi'"):
        provider.get_features("A", T0)
    not_mapping = CallableFeatureProvider(lambda s, t: [1.0])  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="must return a mapping"):
        not_mapping.get_features("A", T0)


def test_callable_provider_not_callable_raises() -> None:
    with pytest.raises(TypeError, match="fn must be callable"):
        CallableFeatureProvider(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="market_fn must be callable"):
        CallableFeatureProvider(lambda s, t: {}, market_fn="vix")  # type: ignore[arg-type]


def test_callable_provider_naive_timestamp_raises() -> None:
    provider = CallableFeatureProvider(lambda s, t: {})
    with pytest.raises(ValueError, match="naive"):
        provider.get_features("A", datetime(2024, 1, 2))


def test_callable_provider_default_feature_matrix_loops_over_symbols() -> None:
    provider = CallableFeatureProvider(lambda s, t: {"len": len(s), "one": 1.0})
    matrix = provider.get_feature_matrix(T0, ["AB", "ABC"], ["len"])
    np.testing.assert_array_equal(matrix, [[2.0], [3.0]])
    with pytest.raises(KeyError, match="feature 'rsi' not provided"):
        provider.get_feature_matrix(T0, ["AB"], ["rsi"])
