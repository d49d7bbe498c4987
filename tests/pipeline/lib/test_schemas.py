"""Specification of ml4t_pipeline.lib.schemas: pandera schemas and row-level price validation."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandera.errors
import polars as pl
import pytest

from ml4t_pipeline.lib.features import compute_features
from ml4t_pipeline.lib.io import load_prices_file
from ml4t_pipeline.lib.schemas import (
    PRICE_RULE_NAMES,
    ContextSchema,
    FeaturesSchema,
    PricesSchema,
    SignalsSchema,
    validate_context,
    validate_features,
    validate_prices,
    validate_signals,
)
from ml4t_pipeline.lib.timing import UTC_DATETIME

T0 = datetime(2024, 1, 2, 21, tzinfo=UTC)


def prices(
    rows: list[tuple[str, float | None, float | None, float | None, float | None, float | None]],
    days: list[int] | None = None,
) -> pl.DataFrame:
    """Rows of (symbol, open, high, low, close, volume), one day apart unless ``days`` given."""
    days = days if days is not None else list(range(len(rows)))
    return pl.DataFrame(
        {
            "timestamp": [T0 + timedelta(days=d) for d in days],
            "symbol": [r[0] for r in rows],
            "open": [r[1] for r in rows],
            "high": [r[2] for r in rows],
            "low": [r[3] for r in rows],
            "close": [r[4] for r in rows],
            "volume": [r[5] for r in rows],
        },
        schema_overrides={
            "timestamp": UTC_DATETIME,
            **dict.fromkeys(["open", "high", "low", "close", "volume"], pl.Float64),
        },
    )


GOOD = ("A", 10.0, 11.0, 9.0, 10.5, 100.0)


def test_validate_prices_clean_frame_all_valid() -> None:
    df = prices([GOOD, GOOD, GOOD])
    result = validate_prices(df)
    assert result.ok
    assert result.valid.equals(df)
    assert result.invalid.height == 0
    assert result.summary == dict.fromkeys(PRICE_RULE_NAMES, 0)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (("A", None, 11.0, 9.0, 10.5, 100.0), "ohlcv_not_null"),
        (("A", 10.0, 11.0, 9.0, 10.5, None), "ohlcv_not_null"),
        (("A", 10.0, 11.0, 9.0, math.nan, 100.0), "ohlcv_finite"),
        (("A", 10.0, 11.0, 9.0, 10.5, math.inf), "ohlcv_finite"),
        (("A", -1.0, 11.0, -2.0, 10.5, 100.0), "prices_positive"),
        (("A", 10.0, 11.0, 9.0, 10.5, -5.0), "volume_non_negative"),
        (("A", 10.0, 11.0, 9.0, 11.5, 100.0), "high_at_or_above_open_close"),
        (("A", 10.0, 11.0, 9.0, 8.5, 100.0), "low_at_or_below_open_close"),
        # high < low also breaks both envelope rules: every broken rule is named.
        (("A", 10.0, 9.0, 10.0, 10.0, 100.0), "high_at_or_above_open_close; high_at_or_above_low"),
        (
            ("A", 10.0, 9.5, 11.0, 10.0, 100.0),
            "high_at_or_above_open_close; low_at_or_below_open_close; high_at_or_above_low",
        ),
    ],
)
def test_validate_prices_bad_row_named_with_each_rule(row: tuple, reason: str) -> None:  # type: ignore[type-arg]
    df = prices([GOOD, row, GOOD])
    result = validate_prices(df)
    assert result.invalid["row_index"].to_list() == [1]
    assert result.invalid["reason"].to_list() == [reason]
    assert result.valid.height + result.invalid.height == df.height
    assert result.violations["rule"].to_list() == reason.split("; ")
    assert result.n_violations == len(reason.split("; "))
    for rule in reason.split("; "):
        assert result.summary[rule] == 1


def test_validate_prices_invalid_keeps_every_input_column() -> None:
    df = prices([GOOD, ("A", None, None, None, 10.5, 0.0)]).with_columns(pl.lit(1.0).alias("bid"))
    result = validate_prices(df)
    assert result.invalid.columns == ["row_index", *df.columns, "reason"]
    assert result.valid.columns == df.columns


def test_validate_prices_duplicate_key_flags_every_copy() -> None:
    df = prices([GOOD, GOOD, GOOD], days=[0, 1, 1])
    result = validate_prices(df)
    assert result.invalid["row_index"].to_list() == [1, 2]
    assert result.summary["key_unique"] == 2
    assert result.rows_breaking("key_unique")["row_index"].to_list() == [1, 2]


def test_validate_prices_unsorted_symbol_rows_flagged() -> None:
    df = prices([GOOD, GOOD, GOOD, ("B", *GOOD[1:])], days=[0, 2, 1, 0])
    result = validate_prices(df)
    assert result.rows_breaking("timestamp_sorted_within_symbol")["row_index"].to_list() == [2]


def test_validate_prices_categorical_symbol_accepted() -> None:
    df = prices([GOOD]).with_columns(pl.col("symbol").cast(pl.Categorical))
    assert validate_prices(df).ok


def test_validate_prices_naive_timestamp_raises_schema_errors() -> None:
    df = prices([GOOD]).with_columns(pl.col("timestamp").dt.replace_time_zone(None))
    with pytest.raises(pandera.errors.SchemaErrors, match="timestamp"):
        validate_prices(df)


def test_validate_prices_missing_and_mistyped_columns_listed_together() -> None:
    df = prices([GOOD]).drop("low").with_columns(pl.col("volume").cast(pl.Int64))
    with pytest.raises(pandera.errors.SchemaErrors) as info:
        validate_prices(df)
    cases = info.value.failure_cases
    assert set(cases["failure_case"].to_list()) >= {"low", "Int64"}


def test_validate_prices_rows_breaking_unknown_rule_raises() -> None:
    with pytest.raises(ValueError, match="unknown rule"):
        validate_prices(prices([GOOD])).rows_breaking("prices_pretty")


def test_prices_schema_validate_bad_frame_names_rule_checks() -> None:
    df = prices([GOOD, ("A", 10.0, 9.0, 10.0, 10.0, 100.0)])
    with pytest.raises(pandera.errors.SchemaErrors) as info:
        PricesSchema.validate(df, lazy=True)
    checks = set(info.value.failure_cases["check"].to_list())
    assert {"high_at_or_above_open_close", "high_at_or_above_low"} <= checks


def test_prices_schema_every_column_has_description() -> None:
    for schema in (PricesSchema, SignalsSchema, FeaturesSchema, ContextSchema):
        columns = schema.to_schema().columns
        assert columns, schema
        assert all(col.description for col in columns.values()), schema


def test_validate_prices_real_sp500_quirks_named_by_row(data_root: Path) -> None:
    df = load_prices_file(data_root / "sp500_5yr_daily_ohlcv.parquet")
    result = validate_prices(df)
    # /work/shared/data/README.md: 11 null opens (8 with null high/low too); AOS high < low and
    # close > high; 8 closes below low plus 3 opens below low (CHD, DHR, O).
    assert result.summary == {
        "ohlcv_not_null": 11,
        "ohlcv_finite": 0,
        "prices_positive": 0,
        "volume_non_negative": 0,
        "high_at_or_above_open_close": 1,
        "low_at_or_below_open_close": 11,
        "high_at_or_above_low": 1,
        "key_unique": 0,
        "timestamp_sorted_within_symbol": 0,
    }
    assert result.valid.height + result.invalid.height == 619_040
    named = {
        (r["symbol"], r["timestamp"].date().isoformat()): r["reason"]
        for r in result.invalid.iter_rows(named=True)
    }
    assert named[("AOS", "2014-05-19")] == "high_at_or_above_open_close; high_at_or_above_low"
    assert named[("LNT", "2016-05-19")] == "low_at_or_below_open_close"
    assert named[("BHF", "2017-07-26")] == "ohlcv_not_null"
    assert named[("ES", "2015-07-17")] == "ohlcv_not_null"
    null_high = result.invalid.filter(pl.col("high").is_null())
    assert null_high.height == 8


def test_signals_schema_non_finite_score_fails() -> None:
    df = pl.DataFrame(
        {
            "timestamp": [T0, T0],
            "symbol": ["A", "B"],
            "score": [0.1, math.inf],
            "available_at": [T0, T0],
        },
        schema_overrides={"timestamp": UTC_DATETIME, "available_at": UTC_DATETIME},
    )
    SignalsSchema.validate(df.head(1))
    with pytest.raises(pandera.errors.SchemaError, match="score_finite"):
        SignalsSchema.validate(df)


def test_context_schema_duplicate_timestamp_fails() -> None:
    df = pl.DataFrame(
        {"timestamp": [T0, T0], "vix": [13.0, 14.0]}, schema_overrides={"timestamp": UTC_DATETIME}
    )
    ContextSchema.validate(df.head(1))
    with pytest.raises(pandera.errors.SchemaError):
        ContextSchema.validate(df)


def test_features_schema_accepts_computed_features() -> None:
    rows = [("A", 10.0 + i, 11.0 + i, 9.0 + i, 10.5 + i, 100.0) for i in range(30)]
    FeaturesSchema.validate(compute_features(prices(rows)))


def signal_rows(scores: list[float | None], symbols: list[str], days: list[int]) -> pl.DataFrame:
    ts = [T0 + timedelta(days=d) for d in days]
    return pl.DataFrame(
        {"timestamp": ts, "symbol": symbols, "score": scores, "available_at": ts},
        schema_overrides={
            "timestamp": UTC_DATETIME,
            "available_at": UTC_DATETIME,
            "score": pl.Float64,
        },
    )


def test_validate_signals_names_duplicate_nonfinite_and_unknown_symbol_rows() -> None:
    df = signal_rows([0.1, 0.2, math.nan, None, 0.5], ["A", "A", "A", "B", "ZZZ"], [0, 0, 1, 1, 1])
    result = validate_signals(df, known_symbols=["A", "B"])
    assert result.invalid["reason"].to_list() == [
        "key_unique",
        "key_unique",
        "values_finite",
        "values_finite",
        "symbol_known",
    ]
    assert result.summary == {
        "key_unique": 2,
        "values_finite": 2,
        "available_at_not_null": 0,
        "symbol_known": 1,
    }
    assert result.violations.columns == ["row_index", "timestamp", "symbol", "rule"]


def test_validate_signals_clean_passes_and_naive_available_at_raises() -> None:
    df = signal_rows([0.1, 0.2], ["A", "B"], [0, 0])
    assert validate_signals(df, known_symbols=pl.Series(["A", "B"])).ok
    with pytest.raises(ValueError, match="'available_at' is Datetime"):
        validate_signals(df.with_columns(pl.col("available_at").dt.replace_time_zone(None)))


def test_validate_signals_text_scores_raise_naming_column_and_rows() -> None:
    df = signal_rows([0.1, 0.2], ["A", "B"], [0, 0]).with_columns(
        pl.Series("score", ["0.1", "n/a"])
    )
    with pytest.raises(ValueError, match=r"\['score'\] are stored as text.*'score': 'n/a'"):
        validate_signals(df, known_symbols=["A", "B"])


def test_validate_context_text_column_raises_naming_it() -> None:
    df = pl.DataFrame(
        {"timestamp": [T0], "vix": ["13.2"], "context_status": ["fresh"]},
        schema_overrides={"timestamp": UTC_DATETIME},
    )
    with pytest.raises(ValueError, match=r"context: value columns \['vix'\] are stored as text"):
        validate_context(df, required_columns=["vix"])


def test_validate_features_warmup_nulls_ok_nan_breaks() -> None:
    rows = [("A", 10.0 + i, 11.0 + i, 9.0 + i, 10.5 + i, 100.0) for i in range(25)]
    feats = compute_features(prices(rows))
    assert validate_features(feats, known_symbols=["A"]).ok
    bad = feats.with_columns(
        pl.when(pl.int_range(pl.len()) == 22)
        .then(math.inf)
        .otherwise(pl.col("rsi_14"))
        .alias("rsi_14")
    )
    result = validate_features(bad, known_symbols=["B"])
    assert result.summary["values_finite_or_null"] == 1
    assert result.summary["symbol_known"] == 25


def test_validate_context_duplicate_timestamp_and_null_required_value() -> None:
    df = pl.DataFrame(
        {
            "timestamp": [T0, T0, T0 + timedelta(days=1), T0 + timedelta(days=2)],
            "vix": [13.0, 13.5, None, 14.0],
            "n_symbols": [1, 2, 3, 4],
        },
        schema_overrides={"timestamp": UTC_DATETIME, "n_symbols": pl.UInt32},
    )
    result = validate_context(df, required_columns=["vix"])
    assert result.invalid["reason"].to_list() == [
        "timestamp_unique",
        "timestamp_unique",
        "required_not_null",
    ]
    assert result.valid.height == 1
    assert validate_context(df.tail(1), required_columns=["vix"]).ok
    with pytest.raises(ValueError, match=r"required columns \['spy'\] missing"):
        validate_context(df, required_columns=["spy"])


# ---------------------------------------------------------------------------------------------
# Validation levels: fast (sample), standard (every row), paranoid (+ signal timing, staleness)


def many_prices(n: int, bad_rows: list[int]) -> pl.DataFrame:
    """``n`` clean daily rows of symbol A with high < low at the positions in ``bad_rows``."""
    df = prices([GOOD] * n)
    high = [8.0 if i in set(bad_rows) else 11.0 for i in range(n)]
    return df.with_columns(pl.Series("high", high, dtype=pl.Float64))


def test_validate_prices_default_level_is_standard_every_row_checked() -> None:
    df = many_prices(50, [7])
    result = validate_prices(df)
    assert (result.level, result.sampled, result.n_rows, result.n_checked) == (
        "standard",
        False,
        50,
        50,
    )
    assert result.invalid["row_index"].to_list() == [7]


def test_validate_prices_unknown_level_raises() -> None:
    with pytest.raises(ValueError, match="unknown validation level 'thorough'"):
        validate_prices(prices([GOOD]), level="thorough")


def test_validate_prices_fast_checks_only_sample_and_says_so() -> None:
    df = many_prices(1_000, list(range(0, 1_000, 10)))  # every 10th row bad: 100 bad rows
    result = validate_prices(df, level="fast", sample_size=200, seed=3)
    assert result.level == "fast"
    assert result.sampled
    assert (result.n_rows, result.n_checked, result.n_unchecked) == (1_000, 200, 800)
    # Only checked rows appear; row_index is the position in the input, not in the sample.
    assert result.valid.height + result.invalid.height == 200
    assert all(i % 10 == 0 for i in result.invalid["row_index"].to_list())
    assert 0 < result.invalid.height < 100
    assert result.summary["high_at_or_above_low"] == result.invalid.height


def test_validate_prices_fast_same_seed_same_rows_other_seed_other_rows() -> None:
    df = many_prices(1_000, list(range(0, 1_000, 10)))
    first = validate_prices(df, level="fast", sample_size=200, seed=3)
    again = validate_prices(df, level="fast", sample_size=200, seed=3)
    other = validate_prices(df, level="fast", sample_size=200, seed=4)
    assert first.invalid.equals(again.invalid)
    assert first.invalid["row_index"].to_list() != other.invalid["row_index"].to_list()


def test_validate_prices_fast_sample_covering_frame_is_not_sampled() -> None:
    df = many_prices(20, [3])
    result = validate_prices(df, level="fast", sample_size=20)
    assert not result.sampled
    assert result.n_checked == 20
    assert result.invalid["row_index"].to_list() == [3]


def test_validate_prices_fast_still_checks_schema() -> None:
    df = many_prices(100, []).with_columns(pl.col("volume").cast(pl.Int64))
    with pytest.raises(pandera.errors.SchemaErrors, match="volume"):
        validate_prices(df, level="fast", sample_size=5)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_validate_prices_fast_bad_sample_size_raises(bad: object) -> None:
    with pytest.raises(ValueError, match="sample_size"):
        validate_prices(many_prices(10, []), level="fast", sample_size=bad)  # type: ignore[arg-type]


def test_validation_drop_invalid_keeps_unchecked_rows_of_sampled_result() -> None:
    df = many_prices(1_000, list(range(0, 1_000, 10)))
    result = validate_prices(df, level="fast", sample_size=200, seed=3)
    kept = result.drop_invalid(df)
    assert kept.height == 1_000 - result.invalid.height
    full = validate_prices(df)
    assert full.drop_invalid(df).equals(full.valid)


def panel_rows(signal_days: list[int | None], available_days: list[int | None]) -> pl.DataFrame:
    """Market panel of symbol A, one daily bar per entry, with the signal each bar sees."""
    n = len(signal_days)

    def day(d: int | None) -> datetime | None:
        return None if d is None else T0 + timedelta(days=d)

    return prices([GOOD] * n).with_columns(
        pl.Series("score", [None if d is None else 0.1 for d in signal_days], dtype=pl.Float64),
        pl.Series("signal_timestamp", [day(d) for d in signal_days], dtype=UTC_DATETIME),
        pl.Series("signal_available_at", [day(d) for d in available_days], dtype=UTC_DATETIME),
    )


def test_validate_prices_paranoid_clean_panel_passes_with_timing_rules() -> None:
    panel = panel_rows([None, 1, 1, 3], [None, 1, 1, 3])
    result = validate_prices(panel, level="paranoid", max_signal_age_bars=1)
    assert result.ok
    assert result.level == "paranoid"
    assert result.summary["signal_available_before_use"] == 0
    assert result.summary["signal_not_stale"] == 0


def test_validate_prices_paranoid_stale_signal_reported_by_row() -> None:
    # Signal of day 0 still used on days 1, 2, 3: ages 1, 2, 3; limit 1 -> rows 2 and 3.
    panel = panel_rows([0, 0, 0, 0], [0, 0, 0, 0])
    result = validate_prices(panel, level="paranoid", max_signal_age_bars=1)
    assert result.rows_breaking("signal_not_stale")["row_index"].to_list() == [2, 3]
    assert result.invalid["reason"].to_list() == ["signal_not_stale"] * 2


def test_validate_prices_paranoid_signal_used_before_available_reported() -> None:
    # Row 1 sees a signal that becomes available only on day 2 (a forward-shifted file).
    panel = panel_rows([0, 1, 1], [0, 2, 2])
    result = validate_prices(panel, level="paranoid", max_signal_age_bars=5)
    assert result.rows_breaking("signal_available_before_use")["row_index"].to_list() == [1]


def test_validate_prices_paranoid_standard_rules_still_apply() -> None:
    panel = panel_rows([0, 1], [0, 1]).with_columns(pl.Series("high", [11.0, 8.0]))
    result = validate_prices(panel, level="paranoid", max_signal_age_bars=0)
    assert result.rows_breaking("high_at_or_above_low")["row_index"].to_list() == [1]


def test_validate_prices_paranoid_without_signal_columns_raises() -> None:
    with pytest.raises(ValueError, match="signal_timestamp"):
        validate_prices(prices([GOOD]), level="paranoid", max_signal_age_bars=1)


def test_validate_prices_paranoid_without_age_limit_raises() -> None:
    with pytest.raises(ValueError, match="max_signal_age_bars"):
        validate_prices(panel_rows([0], [0]), level="paranoid")
