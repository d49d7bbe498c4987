"""Specification of ml4t_pipeline.lib.context: market context and its as-of join onto bars."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from ml4t_pipeline.lib.context import join_context_asof, market_context_from_prices
from ml4t_pipeline.lib.io import load_prices_file, load_vix
from ml4t_pipeline.lib.timing import UTC_DATETIME, status_counts


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def closes(rows: list[tuple[int, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "timestamp": [utc(2024, 1, 2, 21) + timedelta(days=d) for d, _, _ in rows],
            "symbol": [s for _, s, _ in rows],
            "close": [c for _, _, c in rows],
        },
        schema_overrides={"timestamp": UTC_DATETIME},
    )


def test_market_context_equal_weight_mean_of_symbol_returns() -> None:
    df = closes(
        [
            (0, "A", 100.0),
            (0, "B", 50.0),
            (1, "A", 110.0),
            (1, "B", 45.0),
            (2, "A", 110.0),
            (2, "C", 20.0),
        ]
    )
    ctx = market_context_from_prices(df)
    assert ctx.columns == ["timestamp", "market_return", "market_vol_20", "n_symbols"]
    assert ctx["market_return"].to_list() == [
        None,
        pytest.approx((0.10 - 0.10) / 2),
        pytest.approx(0.0),
    ]
    # Day 2: A returns 0; C has no previous bar and B no bar, so only A counts.
    assert ctx["n_symbols"].to_list() == [0, 2, 1]


def test_market_context_vol_20_is_std_of_last_20_market_returns() -> None:
    rows = [(d, "A", 100.0 * (1.01 if d % 2 else 0.99)) for d in range(22)]
    ctx = market_context_from_prices(closes(rows))
    returns = ctx["market_return"]
    assert ctx["market_vol_20"][19] is None
    assert ctx["market_vol_20"][20] == pytest.approx(returns[1:21].std())


def test_market_context_duplicate_key_raises() -> None:
    with pytest.raises(ValueError, match="duplicated"):
        market_context_from_prices(closes([(0, "A", 1.0), (0, "A", 2.0)]))


def vix_like(days: list[datetime], values: list[float]) -> pl.DataFrame:
    return pl.DataFrame(
        {"timestamp": days, "vix": values}, schema_overrides={"timestamp": UTC_DATETIME}
    )


@pytest.mark.parametrize("symbol_type", [pl.String, pl.Categorical])
def test_market_context_time_ordered_and_shuffled_inputs_give_same_bits(symbol_type) -> None:
    """Rows in time order take the one-key sort; any other order the two-key sort: the same
    frame, bit for bit (the means add the same values in the same order)."""
    rng = __import__("random").Random(7)
    rows = [(d, s, rng.uniform(10, 200)) for d in range(40) for s in ("MSFT", "AAPL", "B", "ZZ")]
    rows = [r for r in rows if rng.random() > 0.15]  # gaps: symbols missing on some days
    frame = closes(rows).with_columns(pl.col("symbol").cast(symbol_type))
    in_time = frame.sort("timestamp", "symbol")
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=3)
    assert in_time.get_column("timestamp").is_sorted()
    assert not shuffled.get_column("timestamp").is_sorted()
    a, b = market_context_from_prices(in_time), market_context_from_prices(shuffled)
    assert a.equals(b)
    assert a["market_return"].to_list() == b["market_return"].to_list()


def test_join_context_asof_vix_after_close_visible_next_bar_only() -> None:
    bars = pl.DataFrame(
        {"timestamp": [utc(2024, 1, 2, 21), utc(2024, 1, 3, 21)]},
        schema_overrides={"timestamp": UTC_DATETIME},
    )
    vix = vix_like([utc(2024, 1, 2, 21, 15), utc(2024, 1, 3, 21, 15)], [13.2, 14.0])
    out = join_context_asof(bars, vix)
    assert out["vix"].to_list() == [None, 13.2]
    assert out["context_status"].to_list() == ["missing", "fresh"]
    assert out["context_timestamp"].to_list() == [None, utc(2024, 1, 2, 21, 15)]


def test_join_context_asof_staleness_limit_nulls_and_counts() -> None:
    bars = pl.DataFrame(
        {"timestamp": [utc(2024, 1, d, 21) for d in (3, 4, 5, 12)]},
        schema_overrides={"timestamp": UTC_DATETIME},
    )
    vix = vix_like([utc(2024, 1, 2, 21, 15)], [13.2])
    out = join_context_asof(bars, vix, max_staleness="2d")
    assert out["vix"].to_list() == [13.2, 13.2, None, None]
    assert status_counts(out, "context_status") == {
        "fresh": 1,
        "filled": 1,
        "stale": 2,
        "missing": 0,
    }


def test_join_context_asof_naive_context_timestamp_raises_naming_column() -> None:
    bars = pl.DataFrame(
        {"timestamp": [utc(2024, 1, 3, 21)]}, schema_overrides={"timestamp": UTC_DATETIME}
    )
    naive = pl.DataFrame({"timestamp": [datetime(2024, 1, 2)], "vix": [13.2]})
    with pytest.raises(ValueError, match=r"context column 'timestamp' is Datetime.*timezone-aware"):
        join_context_asof(bars, naive)


def test_join_context_asof_new_york_context_time_is_same_instant_as_utc() -> None:
    # 16:15 New York on 2024-01-02 (EST) = 21:15 UTC: after the 21:00 UTC close of that day,
    # so first visible at the 2024-01-03 bar, exactly as the UTC-stamped row would be.
    bars = pl.DataFrame(
        {"timestamp": [utc(2024, 1, 2, 21), utc(2024, 1, 3, 21)]},
        schema_overrides={"timestamp": UTC_DATETIME},
    )
    ny = pl.DataFrame({"timestamp": [datetime(2024, 1, 2, 16, 15)], "vix": [13.2]}).with_columns(
        pl.col("timestamp").dt.replace_time_zone("America/New_York")
    )
    out = join_context_asof(bars, ny)
    assert out["vix"].to_list() == [None, 13.2]
    assert out["context_timestamp"].to_list() == [None, utc(2024, 1, 2, 21, 15)]


def test_join_context_asof_duplicate_context_timestamp_raises() -> None:
    bars = pl.DataFrame(
        {"timestamp": [utc(2024, 1, 3, 21)]}, schema_overrides={"timestamp": UTC_DATETIME}
    )
    vix = vix_like([utc(2024, 1, 2, 21, 15)] * 2, [13.2, 13.3])
    with pytest.raises(ValueError, match="share a key"):
        join_context_asof(bars, vix)


def test_join_context_asof_real_vix_on_sp500_bars_lags_one_day(data_root: Path) -> None:
    prices = load_prices_file(data_root / "sp500_5yr_daily_ohlcv.parquet")
    bars = prices.select("timestamp").unique().sort("timestamp")
    vix = load_vix(data_root / "vix_daily_cboe.parquet")
    out = join_context_asof(bars, vix, max_staleness="5d")
    assert out.height == 1_259
    assert status_counts(out, "context_status") == {
        "fresh": 1_259,
        "filled": 0,
        "stale": 0,
        "missing": 0,
    }
    # Every bar sees the VIX of an earlier New York date, never its own day's 16:15 close.
    lag = out.select(
        (
            pl.col("timestamp").dt.convert_time_zone("America/New_York").dt.date()
            - pl.col("context_timestamp").dt.convert_time_zone("America/New_York").dt.date()
        )
        .dt.total_days()
        .min()
    ).item()
    assert lag >= 1
    first = out.row(0, named=True)
    assert first["timestamp"] == utc(2013, 2, 8, 21)
    assert first["context_timestamp"] == utc(2013, 2, 7, 21, 15)


def test_join_context_asof_daily_vix_on_hourly_bars_next_session(data_root: Path) -> None:
    hourly = load_prices_file(data_root / "lean_hourly_ohlcv_unadjusted.parquet", bar_length="1h")
    spy = hourly.filter(
        (pl.col("symbol") == "SPY") & (pl.col("timestamp").dt.year() == 2015)
    ).select("timestamp")
    vix = load_vix(data_root / "vix_daily_cboe.parquet")
    out = join_context_asof(spy, vix, max_fill_bars=6)
    assert out.height == spy.height
    # Up to 7 hourly bars a session (fewer on half-days): each VIX close is fresh at the next
    # session's 10:00 bar and forward-filled for its later bars; nothing is stale or missing.
    counts = status_counts(out, "context_status")
    sessions = spy["timestamp"].dt.convert_time_zone("America/New_York").dt.date().n_unique()
    assert counts["stale"] == counts["missing"] == 0
    assert counts["fresh"] == sessions == 252
    assert counts["filled"] == spy.height - sessions
    first_bars = out.filter(pl.col("context_status") == "fresh")
    ny_hours = first_bars["timestamp"].dt.convert_time_zone("America/New_York").dt.hour()
    assert ny_hours.unique().to_list() == [10]


def test_market_context_categorical_symbols_sum_in_name_order_not_code_order() -> None:
    """The symbols sort as their names whatever a Categorical's codes are: a Categorical
    whose categories were created in reverse name order gives the bits of String symbols."""
    rng = __import__("random").Random(11)
    names = ["b", "B", "a", "Z9", "10", "9", "é", "AAPL", "aapl", "MSFT"]
    rows = [(d, s, rng.uniform(1, 500)) for d in range(30) for s in names if rng.random() > 0.1]
    frame = closes(rows).sort("timestamp", "symbol")
    # a Categorical that has met the names in reverse order first: its codes run backwards
    pl.Series(sorted(names, reverse=True), dtype=pl.Categorical)
    as_category = frame.with_columns(pl.col("symbol").cast(pl.Categorical))
    a, b = market_context_from_prices(frame), market_context_from_prices(as_category)
    assert a.equals(b)
    assert a["market_return"].to_list() == b["market_return"].to_list()
