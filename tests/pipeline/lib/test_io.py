"""Specification of ml4t_pipeline.lib.io: reading tables and bringing them into the contracts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml4t_pipeline.lib.io import (
    PRICE_COLUMNS,
    EmptyInputError,
    InputFileError,
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
    # Symbol-major file order (like the shared data): in time order within each symbol, not in
    # (timestamp, symbol) order.
    return pl.DataFrame(
        {
            "timestamp": [datetime(2013, 2, 8), datetime(2013, 2, 11), datetime(2013, 2, 8)],
            "symbol": ["B", "B", "A"],
            "open": [2.0, 1.0, 3.0],
            "high": [2.5, 1.5, 3.5],
            "low": [1.5, 0.5, 2.5],
            "close": [2.2, 1.2, 3.2],
            "volume": [200, 100, 300],
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
            "timestamp", [datetime(2013, 2, 8), datetime(2013, 2, 11, 9, 30), datetime(2013, 2, 8)]
        )
    )
    with pytest.raises(ValueError, match=r"1 naive timestamps are not at 00:00.*'row_index': 1"):
        to_prices_contract(raw)


def test_to_prices_contract_tz_aware_without_bar_length_raises() -> None:
    raw = daily_raw().with_columns(pl.col("timestamp").dt.replace_time_zone("UTC"))
    with pytest.raises(ValueError, match="'timestamp' is timezone-aware.*bar START.*bar_length"):
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


# --- bad input: each refused with the file and the offending rows or columns named ---------


def test_read_table_zero_byte_parquet_raises_naming_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.parquet"
    path.write_bytes(b"")
    with pytest.raises(InputFileError, match=r"prices\.parquet: cannot read the Parquet file "
                       r"\(0 bytes"):  # fmt: skip
        read_table(path)


def test_read_table_truncated_parquet_raises_naming_file(tmp_path: Path) -> None:
    good, path = tmp_path / "good.parquet", tmp_path / "cut.parquet"
    daily_raw().write_parquet(good)
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match=r"cut\.parquet: cannot read") as info:
        read_table(path, columns=["symbol"])
    assert info.value.path == path
    assert isinstance(info.value, ValueError)  # the CLI reports it as a failed step


def test_read_table_directory_with_corrupt_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "a.parquet").write_bytes(b"")
    daily_raw().write_parquet(tmp_path / "b.parquet")
    with pytest.raises(InputFileError, match=r"a\.parquet: .*footer") as info:
        read_table(tmp_path)
    assert "b.parquet" not in str(info.value)


def test_read_table_empty_table_raises_empty_input_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    daily_raw().clear().write_parquet(path)
    with pytest.raises(EmptyInputError, match=r"empty\.parquet: the table has no rows"):
        read_table(path)
    assert read_table(path, allow_empty=True).height == 0


def test_load_prices_file_empty_file_raises_naming_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.parquet"
    daily_raw().clear().write_parquet(path)
    with pytest.raises(EmptyInputError, match="prices.parquet: the table has no rows"):
        load_prices_file(path)


def test_load_prices_file_missing_column_names_it_and_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.parquet"
    daily_raw().drop("low").write_parquet(path)
    with pytest.raises(ValueError, match=r"prices\.parquet: columns \['low'\] not found"):
        load_prices_file(path)


def text_prices() -> pl.DataFrame:
    # close stored as text, as a spreadsheet export would: row 2 holds "n/a".
    return daily_raw().with_columns(pl.Series("close", ["2.2", " 1.2 ", "n/a"]))


def test_to_prices_contract_text_prices_refused_naming_column_and_unparsable_rows() -> None:
    with pytest.raises(ValueError, match=r"\['close'\] are stored as text") as info:
        to_prices_contract(text_prices())
    message = str(info.value)
    assert "'row': 2" in message and "'close': 'n/a'" in message
    assert "'row': 0" not in message  # "2.2" parses; only the unparsable row is quoted


def test_to_prices_contract_text_prices_that_all_parse_still_refused() -> None:
    raw = daily_raw().with_columns(pl.col("open").cast(pl.String))
    with pytest.raises(ValueError, match=r"\['open'\] are stored as text.*Every value would parse"):
        to_prices_contract(raw)


def test_to_prices_contract_parse_text_converts_and_names_failures() -> None:
    with pytest.raises(ValueError, match=r"cannot convert text prices.*'close': 'n/a'"):
        to_prices_contract(text_prices(), parse_text=True)
    good = daily_raw().with_columns(pl.Series("close", ["2.2", " 1.2 ", None]))
    out = to_prices_contract(good, parse_text=True)
    # sorted (A 02-08, B 02-08, B 02-11): A's null stays null (validation reports it)
    assert out["close"].to_list() == [None, 2.2, 1.2]


def test_to_prices_contract_rows_back_in_time_within_symbol_refused_naming_rows() -> None:
    raw = daily_raw()[[1, 0, 2]]  # B 02-11 before B 02-08
    with pytest.raises(ValueError, match=r"1 rows go back in time.*'row': 1, 'symbol': 'B'"):
        to_prices_contract(raw)
    out = to_prices_contract(raw, sort_rows=True)
    assert out["close"].to_list() == [3.2, 2.2, 1.2]


def test_to_prices_contract_null_symbol_refused_naming_row() -> None:
    raw = daily_raw().with_columns(pl.Series("symbol", ["B", None, "A"]))
    with pytest.raises(ValueError, match=r"1 rows have a null symbol.*'row': 1"):
        to_prices_contract(raw)


def test_to_prices_contract_non_utc_intraday_converted_to_same_instant() -> None:
    # 09:30 New York (EST) bar start = 14:30 UTC; a 1-minute bar closes at 14:31 UTC.
    raw = daily_raw().with_columns(
        pl.Series(
            "timestamp",
            [datetime(2013, 2, 8, 9, 30), datetime(2013, 2, 8, 9, 31), datetime(2013, 2, 8, 9, 30)],
        ).dt.replace_time_zone("America/New_York")
    )
    out = to_prices_contract(raw, bar_length="1m")
    assert out["timestamp"].to_list() == [
        utc(2013, 2, 8, 14, 31),
        utc(2013, 2, 8, 14, 31),
        utc(2013, 2, 8, 14, 32),
    ]


def test_to_prices_contract_symbol_major_file_duplicates_keep_file_order() -> None:
    """A file in (symbol, timestamp) order, with a repeated key: rows come out in (timestamp,
    symbol) order and the two copies of the key in their file order (hand-checked)."""
    raw = pl.DataFrame(
        {
            "timestamp": [datetime(2013, 2, 8), datetime(2013, 2, 11), datetime(2013, 2, 8)]
            + [datetime(2013, 2, 8), datetime(2013, 2, 11)],
            "symbol": ["A", "A", "B", "B", "B"],
            "open": [1.0, 2.0, 3.0, 4.0, 5.0],
            "high": [1.0, 2.0, 3.0, 4.0, 5.0],
            "low": [1.0, 2.0, 3.0, 4.0, 5.0],
            "close": [1.0, 2.0, 3.0, 4.0, 5.0],
            "volume": [10.0, 20.0, 30.0, 40.0, 50.0],
        }
    )
    out = to_prices_contract(raw, row_column="file_row")
    assert out["file_row"].to_list() == [0, 2, 3, 1, 4]
    assert out["symbol"].to_list() == ["A", "B", "B", "A", "B"]
    assert out["close"].to_list() == [1.0, 3.0, 4.0, 2.0, 5.0]


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(
        st.tuples(st.integers(0, 4), st.sampled_from(["AA", "B", "b", "C"])),
        min_size=1,
        max_size=25,
    ),
    layout=st.sampled_from(["as_drawn", "symbol_major", "time_major"]),
)
def test_to_prices_contract_any_row_order_is_stable_time_symbol_sort(
    keys: list[tuple[int, str]], layout: str
) -> None:
    """Whatever the file's row order (as drawn, symbol-major, time-major; repeated keys
    included), the rows come out in (timestamp, symbol) order with rows of equal keys in their
    file order: Python's stable sort of the file rows by (date, symbol)."""
    if layout == "symbol_major":
        keys = sorted(keys, key=lambda k: (k[1], k[0]))
    elif layout == "time_major":
        keys = sorted(keys)
    days = [datetime(2013, 2, 4 + day) for day, _ in keys]  # Mon 4th .. Fri 8th, sessions
    raw = pl.DataFrame(
        {
            "timestamp": days,
            "symbol": [s for _, s in keys],
            **{c: [float(i) for i in range(len(keys))] for c in ("open", "high", "low", "close")},
            "volume": [1.0] * len(keys),
        }
    )
    out = to_prices_contract(raw, row_column="file_row", sort_rows=True)
    expected = sorted(range(len(keys)), key=lambda i: (keys[i][0], keys[i][1]))
    assert out["file_row"].to_list() == expected
    assert out["close"].to_list() == [float(i) for i in expected]
    assert out["timestamp"].dt.hour().to_list() == [21] * len(keys)  # 16:00 New York in winter
