"""The IO manager's storage: round trips by type, atomic replacement, year/month tables."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from ml4t_pipeline.defs.io_managers import month_bounds, read_value, write_month, write_value
from ml4t_pipeline.lib import storage


def test_write_value_round_trips_each_type(tmp_path: Path) -> None:
    frame = pl.DataFrame({"a": [1.0, 2.0], "s": ["x", "y"]})
    cases = {
        "frame": frame,
        "tables": {"t1": frame, "t2": frame.head(1)},
        "json": {"sharpe": 1.25, "n_trades": 3},
        "html": "<html><body>hi</body></html>",
    }
    for name, value in cases.items():
        write_value(value, tmp_path / "asset" / name)
        back = read_value(tmp_path / "asset" / name)
        if isinstance(value, pl.DataFrame):
            assert back.equals(value)
        elif isinstance(value, dict) and name == "tables":
            assert set(back) == {"t1", "t2"} and back["t2"].equals(frame.head(1))
        else:
            assert back == value


def test_write_value_replaces_previous_version_without_leftovers(tmp_path: Path) -> None:
    stem = tmp_path / "asset" / "demo"
    write_value({"t": pl.DataFrame({"a": [1]})}, stem)
    write_value({"t": pl.DataFrame({"a": [2]})}, stem)
    assert read_value(stem)["t"]["a"].to_list() == [2]
    assert [p.name for p in (tmp_path / "asset").iterdir()] == ["demo"]


def test_read_value_missing_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="materialize the upstream"):
        read_value(tmp_path / "nothing")


# ---------------------------------------------------------------------------------------------
# prepared tables: hive-partitioned by year/month


def _table(months: list[int], year: int = 2016) -> pl.DataFrame:
    stamps = [datetime(year, m, d, 21, tzinfo=UTC) for m in months for d in (4, 5)]
    return pl.DataFrame(
        {
            "timestamp": stamps,
            "symbol": ["B", "A"] * len(months),
            "close": [float(i) for i in range(len(stamps))],
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    ).with_columns(pl.col("symbol").cast(pl.Categorical))


def test_write_value_by_month_round_trips_sorted_with_categorical_symbol(tmp_path: Path) -> None:
    stem = tmp_path / "market_panel" / "exp"
    frame = _table([5, 6])
    write_value(frame.reverse(), stem, by_month=True)  # any input order
    files = sorted(p.relative_to(stem).as_posix() for p in stem.rglob("*.parquet"))
    assert files == [
        "_schema.parquet",
        "year=2016/month=05/data.parquet",
        "year=2016/month=06/data.parquet",
    ]
    back = read_value(stem)
    assert back.schema == frame.schema  # symbol Categorical again, no year/month columns
    assert back.equals(frame)  # stored in (timestamp, symbol) order


def test_write_value_by_month_replaces_table_and_drops_vanished_months(tmp_path: Path) -> None:
    stem = tmp_path / "prices" / "exp"
    write_value(_table([5, 6]), stem, by_month=True)
    first = (stem / "year=2016" / "month=05" / "data.parquet").read_bytes()
    write_value(_table([5]), stem, by_month=True)
    assert not (stem / "year=2016" / "month=06").exists()
    assert (stem / "year=2016" / "month=05" / "data.parquet").read_bytes() == first
    assert read_value(stem).height == 2


def test_write_value_by_month_empty_table_allowed_reads_back_with_its_columns(
    tmp_path: Path,
) -> None:
    stem = tmp_path / "prices_quarantine" / "exp"
    write_value(_table([5]), stem, by_month=True)
    write_value(_table([5]).clear(), stem, by_month=True, allow_empty=True)
    back = read_value(stem)
    assert back.height == 0 and back.columns == ["timestamp", "symbol", "close"]
    assert back.schema["symbol"] == pl.Categorical


def test_write_value_by_month_empty_table_refused_keeps_stored_months(tmp_path: Path) -> None:
    stem = tmp_path / "prices" / "exp"
    write_value(_table([5, 6]), stem, by_month=True)
    before = {p: p.read_bytes() for p in sorted(stem.rglob("*.parquet"))}
    with pytest.raises(ValueError, match=r"prices\[exp\]: refusing to store an empty table"):
        write_value(_table([5]).clear(), stem, by_month=True, what="prices[exp]")
    assert {p: p.read_bytes() for p in sorted(stem.rglob("*.parquet"))} == before
    assert read_value(stem).equals(_table([5, 6]))


def test_write_partitioned_empty_replacement_refused_keeps_partitions(tmp_path: Path) -> None:
    root = tmp_path / "t"
    storage.write_partitioned(_table([5]), root)
    with pytest.raises(ValueError, match="empty one .0 rows.; its 1 stored month files are kept"):
        storage.write_partitioned(_table([5]).clear(), root, remove_other_partitions=True)
    assert len(storage.list_partitions(root)) == 1


def test_write_value_key_with_dots_keeps_whole_name(tmp_path: Path) -> None:
    path = write_value({"sharpe": 1.0}, tmp_path / "metrics" / "exp.v2")
    assert path.name == "exp.v2.json"
    assert read_value(tmp_path / "metrics" / "exp.v2") == {"sharpe": 1.0}
    assert not (tmp_path / "metrics" / "exp.json").exists()


def test_write_value_by_month_naive_timestamp_raises(tmp_path: Path) -> None:
    frame = _table([5]).with_columns(pl.col("timestamp").dt.replace_time_zone(None))
    with pytest.raises(ValueError, match="timezone-aware"):
        write_value(frame, tmp_path / "t" / "exp", by_month=True)


def test_write_month_rewrites_only_its_month(tmp_path: Path) -> None:
    root = tmp_path / "prepared_panel" / "exp"
    write_month(_table([5]), root, "2016-05-01")
    write_month(_table([6]), root, "2016-06-01")
    may = root / "year=2016" / "month=05" / "data.parquet"
    stat = may.stat()
    write_month(_table([6]).with_columns(pl.col("close") + 10), root, "2016-06-01")
    assert may.stat().st_mtime_ns == stat.st_mtime_ns and may.stat().st_ino == stat.st_ino
    assert read_value(root)["close"].to_list() == [0.0, 1.0, 10.0, 11.0]
    # an empty month is refused and nothing is removed; allowed, it removes that month only
    with pytest.raises(ValueError, match="refusing to store an empty month 2016-06"):
        write_month(_table([6]).clear(), root, "2016-06-01")
    assert read_value(root)["close"].to_list() == [0.0, 1.0, 10.0, 11.0]
    write_month(_table([6]).clear(), root, "2016-06-01", allow_empty=True)
    assert read_value(root)["close"].to_list() == [0.0, 1.0]


def test_write_month_rows_outside_the_month_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 rows fall outside the month 2016-05"):
        write_month(_table([5, 6]), tmp_path / "t", "2016-05-01")


def test_month_bounds_december_rolls_into_next_year() -> None:
    assert month_bounds("2016-12-01") == (
        datetime(2016, 12, 1, tzinfo=UTC),
        datetime(2017, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(ValueError, match="not the first of a month"):
        month_bounds("2016-12-02")


@pytest.mark.parametrize("release", [False, True])
def test_io_manager_release_outputs_drops_in_memory_copy_keeps_stored_value(
    tmp_path: Path, release: bool
) -> None:
    """With ``release_outputs`` (what ``ml4t run`` sets) the in-process result no longer holds
    the value once it is stored; the stored value is the same either way."""
    import dagster as dg

    from ml4t_pipeline.defs.io_managers import Ml4tIOManager

    frame = pl.DataFrame({"a": [1.0, 2.0]})

    @dg.asset
    def table() -> pl.DataFrame:
        return frame

    manager = Ml4tIOManager(base_dir=str(tmp_path), release_outputs=release)
    result = dg.materialize([table], resources={"io_manager": manager})
    assert result.success
    assert read_value(tmp_path / "table" / "__all__").equals(frame)
    if release:
        with pytest.raises(dg.DagsterInvariantViolationError):
            result.output_for_node("table")
    else:
        assert result.output_for_node("table").equals(frame)


def test_io_manager_hand_off_loads_equal_stored_values_without_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``hand_off_to`` (what ``ml4t run`` sets for the data-preparation assets) the named
    assets' loads of a prepared table, a frame and a folder of frames come from memory and equal
    what storage gives back (columns, types, row order, dict order); other assets and lazy
    loads read the files; nothing stays held once the run is over."""
    import dagster as dg
    from polars.testing import assert_frame_equal

    from ml4t_pipeline.defs import io_managers
    from ml4t_pipeline.defs.io_managers import Ml4tIOManager
    from ml4t_pipeline.defs.storage_metadata import by_month_metadata

    months = _table([3, 1, 2]).with_columns(
        pl.Series("side", ["b", "a"] * 3).cast(pl.Enum(["a", "b"]))
    )
    tables = {"b": pl.DataFrame({"x": [1]}), "a-b": pl.DataFrame({"x": [2]}), "a": months.head(2)}
    reads: list[str] = []
    real_read = io_managers.read_value

    def counted(stem: Path, **kwargs: object) -> object:
        reads.append(f"{stem.parent.name}{'/lazy' if kwargs.get('lazy') else ''}")
        return real_read(stem, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(io_managers, "read_value", counted)
    seen: dict[str, object] = {}

    @dg.asset(metadata=by_month_metadata())
    def table() -> pl.DataFrame:
        return months

    @dg.asset
    def frame() -> pl.DataFrame:
        return months.head(3)

    @dg.asset
    def folder() -> dict[str, pl.DataFrame]:
        return tables

    @dg.asset
    def full(table: pl.DataFrame, frame: pl.DataFrame, folder: dict[str, pl.DataFrame]) -> int:
        seen.update(full_table=table, full_frame=frame, full_folder=folder)
        return 1

    @dg.asset(ins={"table": dg.AssetIn(metadata={"columns": ["close", "timestamp"]})})
    def some(table: pl.DataFrame) -> int:
        seen["some_table"] = table
        return 1

    @dg.asset(ins={"table": dg.AssetIn(metadata={"lazy": True})})
    def lazy(table: pl.LazyFrame) -> int:
        seen["lazy_table"] = table.collect()
        return 1

    @dg.asset
    def other(frame: pl.DataFrame) -> int:
        seen["other_frame"] = frame
        return 1

    manager = Ml4tIOManager(base_dir=str(tmp_path), hand_off_to=["full", "some", "lazy"])
    result = dg.materialize(
        [table, frame, folder, full, some, lazy, other], resources={"io_manager": manager}
    )
    assert result.success
    assert sorted(r for r in reads if r.split("/")[0] in ("table", "frame", "folder")) == [
        "frame",  # `other` is not in hand_off_to
        "table/lazy",  # a lazy load scans the files
    ]
    stored_table = real_read(tmp_path / "table" / "__all__")
    stored_frame = real_read(tmp_path / "frame" / "__all__")
    assert_frame_equal(seen["full_table"], stored_table, check_exact=True)  # type: ignore[arg-type]
    assert_frame_equal(seen["lazy_table"], stored_table, check_exact=True)  # type: ignore[arg-type]
    assert_frame_equal(
        seen["some_table"],  # type: ignore[arg-type]
        stored_table.select("close", "timestamp"),
        check_exact=True,
    )
    assert_frame_equal(seen["full_frame"], stored_frame, check_exact=True)  # type: ignore[arg-type]
    assert_frame_equal(seen["other_frame"], stored_frame, check_exact=True)  # type: ignore[arg-type]
    folder_back = real_read(tmp_path / "folder" / "__all__")
    assert list(seen["full_folder"]) == list(folder_back) == ["a-b", "a", "b"]  # type: ignore[arg-type]
    for name, value in folder_back.items():
        assert_frame_equal(seen["full_folder"][name], value, check_exact=True)  # type: ignore[index]
    assert not any(io_managers._HANDED.values())  # each value went with its last load
