"""Specification of ml4t_pipeline.lib.storage: atomic, hive-partitioned Parquet tables (LZ4
month files; zstd single files)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from ml4t_pipeline.lib.io import read_table
from ml4t_pipeline.lib.storage import (
    list_partitions,
    read_partitioned,
    scan_partitioned,
    write_parquet_atomic,
    write_partitioned,
)
from ml4t_pipeline.lib.timing import UTC_DATETIME


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def table() -> pl.DataFrame:
    # Deliberately unsorted, spanning three months and two years.
    return pl.DataFrame(
        {
            "timestamp": [
                utc(2016, 10, 3, 20),
                utc(2016, 2, 1, 21),
                utc(2016, 2, 1, 21),
                utc(2017, 1, 3, 21),
                utc(2016, 2, 29, 21),
            ],
            "symbol": ["B", "B", "A", "A", "A"],
            "close": [5.0, 2.0, 1.0, 4.0, 3.0],
        },
        schema_overrides={"timestamp": UTC_DATETIME},
    ).with_columns(pl.col("symbol").cast(pl.Categorical))


def test_write_partitioned_hive_layout_year_month(tmp_path: Path) -> None:
    written = write_partitioned(table(), tmp_path)
    assert [(w.year, w.month, w.rows) for w in written] == [
        (2016, 2, 3),
        (2016, 10, 1),
        (2017, 1, 1),
    ]
    rel = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.parquet"))
    assert rel == [
        "year=2016/month=02/data.parquet",
        "year=2016/month=10/data.parquet",
        "year=2017/month=01/data.parquet",
    ]
    assert [(y, m) for y, m, _ in list_partitions(tmp_path)] == [(2016, 2), (2016, 10), (2017, 1)]


def test_write_partitioned_files_are_lz4_without_partition_columns(tmp_path: Path) -> None:
    written = write_partitioned(table(), tmp_path)
    meta = pq.ParquetFile(written[0].path).metadata
    assert meta.row_group(0).column(0).compression == "LZ4"  # pyarrow's name of LZ4_RAW
    assert pq.read_schema(written[0].path).names == ["timestamp", "symbol", "close"]


def test_write_parquet_atomic_single_file_stays_zstd(tmp_path: Path) -> None:
    path = write_parquet_atomic(table(), tmp_path / "one.parquet")
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"


def test_read_partitioned_old_zstd_and_new_lz4_months_read_as_one_table(tmp_path: Path) -> None:
    """A table stored before month files were LZ4 (zstd, level 3) reads the same, also when
    some months have been rewritten since in LZ4."""
    write_partitioned(table(), tmp_path / "lz4")
    for year, month, folder in list_partitions(tmp_path / "lz4"):
        month_frame = pl.read_parquet(folder / "data.parquet")
        old = tmp_path / "mixed" / f"year={year}" / f"month={month:02d}" / "data.parquet"
        old.parent.mkdir(parents=True)
        codec = "zstd" if month != 10 else "lz4"
        month_frame.write_parquet(old, compression=codec, statistics=True)
    codecs = {
        pq.ParquetFile(f).metadata.row_group(0).column(0).compression
        for f in (tmp_path / "mixed").rglob("data.parquet")
    }
    assert codecs == {"ZSTD", "LZ4"}
    assert read_partitioned(tmp_path / "mixed").equals(read_partitioned(tmp_path / "lz4"))


def test_write_partitioned_real_prices_read_back_equal_frame(
    tmp_path: Path, data_root: Path
) -> None:
    """Three months of the S&P 500 file (505 symbols, float prices) written as LZ4 month files
    read back as the very frame written: same values bit for bit, dtypes and row order."""
    from ml4t_pipeline.lib.io import load_prices_file

    prices = load_prices_file(data_root / "sp500_5yr_daily_ohlcv.parquet")
    first = prices["timestamp"].min()
    frame = prices.filter(pl.col("timestamp") < first + timedelta(days=85))
    written = write_partitioned(frame, tmp_path)
    assert len(written) >= 3
    back = read_partitioned(tmp_path, symbol_categorical=False)
    assert back.equals(frame.with_columns(pl.col("symbol").cast(pl.String)))


def test_read_partitioned_round_trip_sorted_categorical(tmp_path: Path) -> None:
    write_partitioned(table(), tmp_path)
    out = read_partitioned(tmp_path)
    expected = table().sort(["timestamp", "symbol"])
    assert out.schema["symbol"] == pl.Categorical
    assert out.schema["timestamp"] == UTC_DATETIME
    assert out.with_columns(pl.col("symbol").cast(pl.String)).equals(
        expected.with_columns(pl.col("symbol").cast(pl.String))
    )


def test_scan_partitioned_projection_and_month_filter(tmp_path: Path) -> None:
    write_partitioned(table(), tmp_path)
    out = (
        scan_partitioned(tmp_path, include_partition_columns=True)
        .filter((pl.col("year") == 2016) & (pl.col("month") == 2))
        .select("close")
        .collect()
    )
    assert out.columns == ["close"]
    assert out["close"].to_list() == [1.0, 2.0, 3.0]


def test_read_table_reads_partitioned_directory(tmp_path: Path) -> None:
    write_partitioned(table(), tmp_path)
    out = read_table(tmp_path)
    assert out.height == 5
    assert sorted(out["month"].unique().to_list()) == [1, 2, 10]


def test_write_partitioned_rerun_same_input_byte_identical(tmp_path: Path) -> None:
    first = {w.path: w.path.read_bytes() for w in write_partitioned(table(), tmp_path)}
    shuffled = table().sample(fraction=1.0, shuffle=True, seed=3)
    second = {w.path: w.path.read_bytes() for w in write_partitioned(shuffled, tmp_path)}
    assert first == second


def test_write_partitioned_one_month_rewritten_others_untouched(tmp_path: Path) -> None:
    write_partitioned(table(), tmp_path)
    october = tmp_path / "year=2016" / "month=10" / "data.parquet"
    before = october.read_bytes()
    feb = table().filter(pl.col("timestamp").dt.month() == 2).with_columns(pl.col("close") * 10)
    write_partitioned(feb, tmp_path)
    assert october.read_bytes() == before
    out = read_partitioned(tmp_path)
    assert out["close"].to_list() == [10.0, 20.0, 30.0, 5.0, 4.0]


def test_write_partitioned_remove_other_partitions_replaces_table(tmp_path: Path) -> None:
    write_partitioned(table(), tmp_path)
    write_partitioned(table().head(1), tmp_path, remove_other_partitions=True)
    assert [(y, m) for y, m, _ in list_partitions(tmp_path)] == [(2016, 10)]


def test_write_partitioned_failure_keeps_previous_partition_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_partitioned(table(), tmp_path)
    original = pl.DataFrame.write_parquet

    def half_write_then_fail(self: pl.DataFrame, file: object, **kwargs: object) -> None:
        Path(str(file)).write_bytes(b"PAR1 garbage")  # a torn write
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", half_write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_partitioned(table().with_columns(pl.col("close") * 100), tmp_path)
    monkeypatch.setattr(pl.DataFrame, "write_parquet", original)
    assert read_partitioned(tmp_path)["close"].to_list() == [1.0, 2.0, 3.0, 5.0, 4.0]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_write_parquet_atomic_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "t.parquet"
    write_parquet_atomic(table(), path)
    write_parquet_atomic(table().head(2), path)
    assert pl.read_parquet(path).height == 2
    assert [p.name for p in path.parent.iterdir()] == ["t.parquet"]


def test_write_partitioned_naive_timestamps_raise(tmp_path: Path) -> None:
    df = table().with_columns(pl.col("timestamp").dt.replace_time_zone(None))
    with pytest.raises(ValueError, match="timezone-aware"):
        write_partitioned(df, tmp_path)


def test_write_partitioned_null_timestamp_raises_naming_row(tmp_path: Path) -> None:
    df = table().with_columns(
        pl.when(pl.col("close") == 3.0).then(None).otherwise(pl.col("timestamp")).alias("timestamp")
    )
    with pytest.raises(ValueError, match=r"1 rows have a null 'timestamp'.*'row_index': 4"):
        write_partitioned(df, tmp_path)


def test_write_partitioned_reserved_columns_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        write_partitioned(table().with_columns(pl.lit(1).alias("year")), tmp_path)


def test_scan_partitioned_empty_root_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no partitions"):
        scan_partitioned(tmp_path)


def test_write_partitioned_new_york_partition_tz_moves_late_utc_rows(tmp_path: Path) -> None:
    # 2016-03-01 01:00 UTC is still February 29 in New York.
    df = pl.DataFrame(
        {"timestamp": [utc(2016, 3, 1, 1)], "v": [1.0]},
        schema_overrides={"timestamp": UTC_DATETIME},
    )
    written = write_partitioned(df, tmp_path, partition_tz="America/New_York")
    assert (written[0].year, written[0].month) == (2016, 2)


@pytest.mark.parametrize("order", ["unsorted", "time_order"])
def test_write_partitioned_stored_frames_are_what_a_read_returns(
    tmp_path: Path, order: str
) -> None:
    """The month frames ``stored`` receives, as :func:`table_as_read` joins them, equal the
    table read back from the files: rows, order, types (symbol Categorical), in time order or
    not, and the files are the same bytes as a write without ``stored``."""
    from ml4t_pipeline.lib.formats import read_value, table_as_read

    frame = (
        table()
        .with_columns(
            pl.col("symbol").cast(pl.Categorical), pl.Series("side", ["x", "y", "x", "y", "x"])
        )
        .with_columns(pl.col("side").cast(pl.Enum(["x", "y"])))
    )
    if order == "time_order":
        frame = frame.sort("timestamp", "symbol")
    stored: list[pl.DataFrame] = []
    write_partitioned(frame, tmp_path / "kept", stored=stored)
    write_partitioned(frame, tmp_path / "plain")
    assert len(stored) == len(list_partitions(tmp_path / "kept")) == 3
    handed = table_as_read(stored)
    assert handed is not None
    back = read_value(tmp_path / "kept")
    assert handed.schema == back.schema  # symbol Categorical, the Enum stored as String
    assert handed.to_dicts() == back.to_dicts()
    for (_, _, kept), (_, _, plain) in zip(
        list_partitions(tmp_path / "kept"), list_partitions(tmp_path / "plain"), strict=True
    ):
        assert (kept / "data.parquet").read_bytes() == (plain / "data.parquet").read_bytes()


def test_write_partitioned_time_ordered_months_sorted_by_symbol_text_not_category_code(
    tmp_path: Path,
) -> None:
    """A table in time order spanning months, symbols Categorical with codes in the opposite of
    text order (B before A): each month file holds its rows in (timestamp, symbol-as-text)
    order, the same bytes as writing each month on its own."""
    frame = pl.DataFrame(
        {
            "timestamp": [utc(2016, 2, 1, 21)] * 2 + [utc(2016, 3, 1, 21)] * 2,
            "symbol": ["B", "A", "A", "B"],  # February out of text order, March in order
            "close": [1.0, 2.0, 3.0, 4.0],
        },
        schema_overrides={"timestamp": UTC_DATETIME},
    ).with_columns(pl.col("symbol").cast(pl.Categorical))
    written = write_partitioned(frame, tmp_path / "whole")
    february = pl.read_parquet(written[0].path)
    assert february["symbol"].to_list() == ["A", "B"]
    assert february["close"].to_list() == [2.0, 1.0]
    for month, w in zip((2, 3), written, strict=True):
        one = write_partitioned(
            frame.filter(pl.col("timestamp").dt.month() == month), tmp_path / f"m{month}"
        )
        assert one[0].path.read_bytes() == w.path.read_bytes()
    in_order = frame.sort("timestamp", pl.col("symbol").cast(pl.String))
    again = write_partitioned(in_order, tmp_path / "sorted")
    assert [w.path.read_bytes() for w in again] == [w.path.read_bytes() for w in written]
