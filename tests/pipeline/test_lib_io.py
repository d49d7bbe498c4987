"""Specification of ml4t_pipeline.lib.io: reading tables and bringing them into the contracts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from ml4t_pipeline.lib.io import (
    PRICE_COLUMNS,
    load_demo_prices,
    load_prices_file,
    load_vix,
    read_table,
    to_prices_contract,
)
from ml4t_pipeline.lib.timing import UTC_DATETIME

PRICE_SCHEMA = {
    "timestamp": UTC_DATETIME,
    "symbol": pl.String,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def daily_raw() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "timestamp": [datetime(2013, 2, 11), datetime(2013, 2, 8), datetime(2013, 2, 8)],
            "symbol": ["B", "B", "A"],
            "open": [1.0, 2.0, 3.0],
            "high": [1.5, 2.5, 3.5],
            "low": [0.5, 1.5, 2.5],
            "close": [1.2, 2.2, 3.2],
            "volume": [100, 200, 300],
        }
    )


def test_read_table_parquet_with_columns_projects(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    daily_raw().write_parquet(path)
    out = read_table(path, columns=["symbol", "close"])
    assert out.columns == ["symbol", "close"]
    assert out.height == 3


def test_read_table_csv_parses_dates(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    daily_raw().write_csv(path)
    out = read_table(path)
    assert out.schema["timestamp"] in (pl.Datetime("us"), pl.Date, pl.Datetime("ns"))
    assert out["symbol"].to_list() == ["B", "B", "A"]


def test_read_table_directory_of_hive_partitions_reads_all(tmp_path: Path) -> None:
    df = daily_raw()
    for month, part in ((2, df.head(2)), (3, df.tail(1))):
        folder = tmp_path / "year=2013" / f"month={month}"
        folder.mkdir(parents=True)
        part.write_parquet(folder / "part-0.parquet")
    out = read_table(tmp_path).sort("close")
    assert out.height == 3
    assert out.schema["year"] == pl.Int32
    assert out["month"].to_list() == [2, 2, 3]  # closes 1.2, 2.2 in month 2; 3.2 in month 3


def test_read_table_missing_path_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        read_table(tmp_path / "nope.parquet")


def test_read_table_empty_directory_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no \\*.parquet"):
        read_table(tmp_path)


def test_read_table_unknown_suffix_raises_value_error(tmp_path: Path) -> None:
    path = tmp_path / "prices.xlsx"
    path.write_text("x")
    with pytest.raises(ValueError, match="prices.xlsx"):
        read_table(path)


def test_read_table_absent_column_raises_value_error(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    daily_raw().write_parquet(path)
    with pytest.raises(ValueError, match=r"\['bid'\] not found"):
        read_table(path, columns=["symbol", "bid"])


def test_to_prices_contract_daily_stamped_close_sorted_float() -> None:
    out = to_prices_contract(daily_raw())
    assert dict(out.schema) == PRICE_SCHEMA
    assert out["timestamp"].to_list() == [
        utc(2013, 2, 8, 21),
        utc(2013, 2, 8, 21),
        utc(2013, 2, 11, 21),
    ]
    assert out["symbol"].to_list() == ["A", "B", "B"]
    assert out["volume"].to_list() == [300.0, 200.0, 100.0]


def test_to_prices_contract_naive_not_midnight_raises_naming_rows() -> None:
    raw = daily_raw().with_columns(
        pl.Series(
            "timestamp", [datetime(2013, 2, 11), datetime(2013, 2, 8, 9, 30), datetime(2013, 2, 8)]
        )
    )
    with pytest.raises(ValueError, match=r"1 naive timestamps are not at 00:00.*'row_index': 1"):
        to_prices_contract(raw)


def test_to_prices_contract_tz_aware_without_bar_length_raises() -> None:
    raw = daily_raw().with_columns(pl.col("timestamp").dt.replace_time_zone("UTC"))
    with pytest.raises(ValueError, match="bar START.*bar_length"):
        to_prices_contract(raw)


def test_to_prices_contract_daily_with_bar_length_raises() -> None:
    with pytest.raises(ValueError, match="naive daily dates"):
        to_prices_contract(daily_raw(), bar_length="1m")


def test_to_prices_contract_missing_column_raises() -> None:
    with pytest.raises(ValueError, match=r"missing columns \['volume'\]"):
        to_prices_contract(daily_raw().drop("volume"))


def test_load_prices_file_sp500_daily_contract(data_root: Path) -> None:
    out = load_prices_file(data_root / "sp500_5yr_daily_ohlcv.parquet")
    assert out.height == 619_040
    assert dict(out.schema) == PRICE_SCHEMA
    assert out["symbol"].n_unique() == 505
    first = out.filter(pl.col("symbol") == "AAPL").row(0, named=True)
    # 2013-02-08 (EST): close 16:00 New York = 21:00 UTC; AAPL's split-adjusted open 67.71.
    assert first["timestamp"] == utc(2013, 2, 8, 21)
    assert first["open"] == pytest.approx(67.7142)
    assert out.select(pl.col("timestamp").is_sorted()).item()


def test_load_prices_file_lean_minute_bar_start_becomes_close(data_root: Path) -> None:
    raw = pl.read_parquet(data_root / "lean_minute_ohlcv_unadjusted.parquet")
    out = load_prices_file(data_root / "lean_minute_ohlcv_unadjusted.parquet", bar_length="1m")
    assert out.height == raw.height == 21_258
    aapl = out.filter(pl.col("symbol") == "AAPL")
    # The first AAPL minute starts 2014-06-05 08:15 UTC (04:15 EDT pre-market), closes 08:16.
    assert aapl["timestamp"][0] == utc(2014, 6, 5, 8, 16)


def test_load_prices_file_lean_hourly_last_bar_closes_at_1600_new_york(data_root: Path) -> None:
    out = load_prices_file(data_root / "lean_hourly_ohlcv_unadjusted.parquet", bar_length="1h")
    ny = out.filter(pl.col("symbol") == "SPY").with_columns(
        pl.col("timestamp").dt.convert_time_zone("America/New_York").dt.hour().alias("h")
    )
    assert sorted(ny["h"].unique().to_list()) == [10, 11, 12, 13, 14, 15, 16]


def test_load_demo_prices_adjusted_contract() -> None:
    out = load_demo_prices()
    assert out.height == 12_154
    assert dict(out.schema) == PRICE_SCHEMA
    assert sorted(out["symbol"].unique().to_list()) == ["AAPL", "FB", "GOOG", "IBM", "MSFT"]
    assert out.select(pl.col("timestamp").is_sorted()).item()
    first = out.filter(pl.col("symbol") == "AAPL").row(0, named=True)
    # bokeh's first AAPL row: 2000-03-01 open 118.56, close 130.31, adj_close 4.186663, vol 9616100
    factor = 4.186663 / 130.31
    assert first["timestamp"] == utc(2000, 3, 1, 21)
    assert first["close"] == pytest.approx(4.186663)
    assert first["open"] == pytest.approx(118.56 * factor)
    assert first["volume"] == pytest.approx(9_616_100 / factor)


def test_load_vix_stamped_1615_new_york(data_root: Path) -> None:
    out = load_vix(data_root / "vix_daily_cboe.parquet")
    assert out.columns == ["timestamp", "vix"]
    assert out.height == 9_223
    assert out.row(0) == (utc(1990, 1, 2, 21, 15), 17.24)  # EST: 16:15 = 21:15 UTC
    summer = out.filter(pl.col("timestamp").dt.date() == datetime(2024, 7, 1).date())
    assert summer["timestamp"].to_list() == [utc(2024, 7, 1, 20, 15)]


def test_load_vix_duplicate_dates_raise(tmp_path: Path) -> None:
    path = tmp_path / "vix.parquet"
    pl.DataFrame({"timestamp": [datetime(2024, 1, 2)] * 2, "close": [13.0, 14.0]}).write_parquet(
        path
    )
    with pytest.raises(ValueError, match="duplicate dates"):
        load_vix(path)


def test_price_columns_constant_matches_contract() -> None:
    assert tuple(PRICE_SCHEMA) == PRICE_COLUMNS
