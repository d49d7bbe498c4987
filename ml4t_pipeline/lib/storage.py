"""Prepared tables on disk: lz4 Parquet, hive-partitioned by year/month, written atomically.

Layout (``DESIGN.md``)::

    <root>/year=2016/month=05/data.parquet
    <root>/year=2016/month=06/data.parquet

Months are zero-padded so that the folders sort chronologically as text (a scan then returns
rows in time order); the ``month`` value read back is the integer.

Each partition file is written to a temporary file in its own folder and then renamed over the
old one (``os.replace``, atomic on POSIX and Windows within one file system), so a reader sees
either the previous partition or the new one, never a half-written file, and a failure while
writing leaves the previous partition in place. Rows inside a partition are sorted by the sort
key and written with fixed settings, so the same input gives byte-identical files.

Month files are compressed with LZ4 (Parquet's ``LZ4_RAW`` codec, :data:`MONTH_COMPRESSION`):
the prepared tables are mostly floats that zstd shrinks little (the S&P run's month files are
about 14 % larger), while encoding and decoding them take about a third less CPU. Files
written earlier with zstd read as before (a Parquet reader takes the codec from each file).

The partition columns (``year``, ``month``) live only in folder names. Reads are lazy scans, so a
caller that selects a few columns reads only those (projection pushdown) and a filter on
``year``/``month`` reads only the matching folders.

Writers of one stored value serialize on a lock file (:func:`exclusive_lock`, ``fcntl.flock``):
a second writer waits up to a timeout, then fails with "in use by pid N", so two runs can never
interleave their months or files under one key.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from ml4t_pipeline.lib.lockfile import (
    UnsafeLockFileError,
    check_lock_content,
    open_lock_file,
    read_lock_pid,
)
from ml4t_pipeline.lib.stamps import symbol_text_rank

PARTITION_COLUMNS: tuple[str, str] = ("year", "month")
DATA_FILE = "data.parquet"
COMPRESSION_LEVEL = 3
"""zstd level of :func:`write_parquet_atomic`'s default compression."""
MONTH_COMPRESSION: Literal["lz4"] = "lz4"
"""Parquet codec of the month files of :func:`write_partitioned` (``LZ4_RAW``): about a third
less CPU than zstd to write and read for slightly larger files."""
_HIVE_SCHEMA = {"year": pl.Int32, "month": pl.Int32}
LOCK_POLL_SECONDS = 0.05

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, writers are not serialized
    fcntl = None  # type: ignore[assignment]


class StorageKeyInUseError(RuntimeError):
    """Another process (or thread) holds the write lock of a stored value past the timeout."""


def _lock_holder(path: Path) -> str:
    return read_lock_pid(path) or "unknown"


@contextlib.contextmanager
def exclusive_lock(path: str | Path, *, timeout: float, what: str | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the body of a ``with`` block.

    The lock file (created if needed, never deleted) holds the holder's pid while locked. Locks
    are per open file, so two threads of one process exclude each other too. The lock is
    released when the block ends or the process dies (the kernel drops it), so a killed run
    never leaves a key locked. The file is opened without following symbolic links and is
    written only when it is a regular file holding a pid or nothing
    (:mod:`ml4t_pipeline.lib.lockfile`); its folder must not be a symbolic link either.

    Parameters
    ----------
    path : str or Path
        The lock file; its folder is created if needed.
    timeout : float
        Seconds to wait for a lock held by someone else (polled every 50 ms); 0: do not wait.
    what : str, optional
        What the lock protects, for the error message (default: the lock file's path).

    Raises
    ------
    StorageKeyInUseError
        Still locked after ``timeout`` seconds; the message names the holder's pid.
    UnsafeLockFileError
        The lock file or its folder is a symbolic link, the lock file is not a regular file
        or holds something other than a pid; the message names the path, which is left as
        it was.
    """
    lock = Path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    if lock.parent.is_symlink():
        raise UnsafeLockFileError(
            lock,
            f"lock folder {lock.parent} is a symbolic link; refusing to create lock file "
            f"{lock.name} through it (nothing was written). Remove the link; the run recreates "
            "the folder",
        )
    fd = open_lock_file(lock)
    try:
        if fcntl is not None:
            deadline = time.monotonic() + max(timeout, 0.0)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StorageKeyInUseError(
                            f"{what or lock}: in use by pid {_lock_holder(lock)} (lock file "
                            f"{lock}; waited {timeout:g} s); retry when that run has finished"
                        ) from None
                    time.sleep(LOCK_POLL_SECONDS)
        check_lock_content(fd, lock)  # someone else's file is left as it is
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class WrittenPartition:
    """One partition file written by :func:`write_partitioned`."""

    year: int
    month: int
    path: Path
    rows: int


def _partition_dir(root: Path, year: int, month: int) -> Path:
    return root / f"year={year}" / f"month={month:02d}"


def write_parquet_atomic(
    df: pl.DataFrame, path: str | Path, *, compression: Literal["zstd", "lz4"] = "zstd"
) -> Path:
    """Write one Parquet file atomically: temporary file in the same folder, then rename.

    Parameters
    ----------
    df : pl.DataFrame
        The table to write, as is (Categorical columns are stored as String).
    path : str or Path
        Destination file; its folder is created if needed. An existing file is replaced only
        once the new one is complete.
    compression : {"zstd", "lz4"}
        Parquet codec; zstd at :data:`COMPRESSION_LEVEL` (default), or
        :data:`MONTH_COMPRESSION` for month files.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OSError, polars errors
        Whatever the write raises; the temporary file is removed and ``path`` is untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        data = _strings_for_storage(df)
        if compression == "zstd":
            data.write_parquet(
                tmp, compression="zstd", compression_level=COMPRESSION_LEVEL, statistics=True
            )
        else:
            data.write_parquet(tmp, compression=compression, statistics=True)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _is_sorted_by(df: pl.DataFrame, columns: list[str]) -> bool:
    """True when rows are in non-decreasing lexicographic order of ``columns`` (nulls first),
    Categorical/Enum columns compared as the text they are stored as."""
    if df.height < 2 or not columns:
        return True
    ok: pl.Expr | None = None
    for column in reversed(columns):
        cur = _stored_order(df, column)
        prev = cur.shift(1)
        less = (prev < cur) | (prev.is_null() & cur.is_not_null())
        equal = (prev == cur) | (prev.is_null() & cur.is_null())
        ok = (less | equal) if ok is None else (less | (equal & ok))
    assert ok is not None
    return bool(df.select(ok.slice(1).all()).item())


def _stored_order(df: pl.DataFrame, column: str) -> pl.Expr:
    """``column`` as an expression that orders (and is null) as its stored values do.

    A Categorical/Enum ``symbol`` is compared by its category's rank in text order
    (:func:`~ml4t_pipeline.lib.stamps.symbol_text_rank`: integer comparisons, the same verdicts
    as a String copy of every row, which cost the S&P tables ~45 ms each); another
    Categorical/Enum column is cast to String, as it is stored."""
    if isinstance(df.schema[column], pl.Categorical | pl.Enum):
        return symbol_text_rank(df) if column == "symbol" else pl.col(column).cast(pl.String)
    return pl.col(column)


def _strings_for_storage(df: pl.DataFrame) -> pl.DataFrame:
    cats = [c for c, t in df.schema.items() if isinstance(t, pl.Categorical | pl.Enum)]
    return df.with_columns(pl.col(cats).cast(pl.String)) if cats else df


def write_partitioned(
    df: pl.DataFrame,
    root: str | Path,
    *,
    timestamp_col: str = "timestamp",
    sort_by: Sequence[str] | None = None,
    partition_tz: str = "UTC",
    remove_other_partitions: bool = False,
    allow_empty: bool = False,
    stored: list[pl.DataFrame] | None = None,
) -> list[WrittenPartition]:
    """Write a table as Parquet (:data:`MONTH_COMPRESSION`) partitioned by the year and month
    of its timestamps.

    Only the partitions present in ``df`` are (re)written; others under ``root`` are left alone,
    so one month can be rematerialized on its own.

    Parameters
    ----------
    df : pl.DataFrame
        Table with a timezone-aware ``timestamp_col`` (no nulls). Must not already have
        ``year``/``month`` columns.
    root : str or Path
        Table folder (created if needed).
    timestamp_col : str
        Column giving each row's partition.
    sort_by : sequence of str, optional
        Row order inside each partition; default ``[timestamp_col, "symbol"]`` when ``symbol``
        exists, else ``[timestamp_col]``. A fixed order makes reruns byte-identical.
    partition_tz : str
        Time zone whose calendar month defines the partition (default UTC, matching a Dagster
        ``MonthlyPartitionsDefinition`` in UTC). Daily US equity closes (20:00/21:00 UTC) fall
        on the same date in UTC and New York.
    remove_other_partitions : bool
        Also delete partition folders under ``root`` that ``df`` has no rows for (a full
        replacement of the table). Each folder removal is separate, so this part is not atomic
        as a whole. An empty ``df`` never removes anything: it raises unless ``allow_empty``.
    allow_empty : bool
        With ``remove_other_partitions``, let an empty ``df`` replace the table (every stored
        partition is removed). Default False: an empty input is refused, so a source that
        suddenly yields no rows cannot wipe a stored table.
    stored : list of pl.DataFrame, optional
        When given, each partition's frame as written (Categorical columns as String, rows in
        ``sort_by`` order) is appended to it, in (year, month) order: concatenated, they hold
        the rows a scan of the written partitions returns, without reading them back. They
        share the buffers of ``df`` where no copy was needed.

    Returns
    -------
    list of WrittenPartition
        One entry per written partition, in (year, month) order.

    Raises
    ------
    ValueError
        Missing, naive or null timestamps, clashing ``year``/``month`` columns, or an empty
        ``df`` replacing a stored table without ``allow_empty`` (nothing is removed).
    """
    if df.height == 0 and remove_other_partitions and not allow_empty:
        stored = list_partitions(root)
        raise ValueError(
            f"write_partitioned: refusing to replace the table under {root} with an empty one "
            f"(0 rows); its {len(stored)} stored month files are kept"
        )
    if timestamp_col not in df.columns:
        raise ValueError(f"write_partitioned: column {timestamp_col!r} missing ({df.columns})")
    dtype = df.schema[timestamp_col]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
        raise ValueError(
            f"write_partitioned: {timestamp_col!r} must be a timezone-aware datetime, got {dtype}"
        )
    clash = [c for c in PARTITION_COLUMNS if c in df.columns]
    if clash:
        raise ValueError(f"write_partitioned: columns {clash} are reserved for partitions")
    if df.get_column(timestamp_col).null_count():
        index = "row_index" if "row_index" not in df.columns else "input_row_index"
        nulls = df.with_row_index(index).filter(pl.col(timestamp_col).is_null())
        raise ValueError(
            f"write_partitioned: {nulls.height} rows have a null {timestamp_col!r} and cannot be "
            f"placed in a partition: {nulls.head(5).to_dicts()}"
        )
    if sort_by is None:
        sort_by = [timestamp_col, "symbol"] if "symbol" in df.columns else [timestamp_col]
    root_path = Path(root)
    root_path.mkdir(parents=True, exist_ok=True)
    # One partition at a time: the keys are a small frame, each partition is filtered out on its
    # own (no copy when the frame is a single month, the usual case), and sorted only if it is
    # not in order already. Peak extra memory is about one partition, not the whole table.
    # A table in time order (the prepared tables) has its months as runs of rows, found from
    # its distinct stamps (1,258 on the S&P tables) instead of a year and month for every row.
    runs = _time_ordered_month_runs(df.get_column(timestamp_col), partition_tz)
    if runs is None:
        local = pl.col(timestamp_col).dt.convert_time_zone(partition_tz)
        keys = df.select(
            local.dt.year().cast(pl.Int32).alias("year"),
            local.dt.month().cast(pl.Int32).alias("month"),
        )
        runs = _month_runs(keys)
    months = keys.unique().sort("year", "month").rows() if runs is None else list(runs)
    # A table in time order whose rows are in sort_by order as a whole (the prepared tables)
    # has every month slice in order: one test on the key columns instead of one per month.
    in_order = runs is not None and len(months) > 1 and _is_sorted_by(df, list(sort_by))
    written: list[WrittenPartition] = []
    for year, month in months:
        y, m = int(year), int(month)
        if len(months) == 1:
            part = df
        elif runs is not None:  # each month one run of rows, in time order: a slice, no copy
            part = df.slice(*runs[(y, m)])
        else:
            part = df.filter((keys["year"] == y) & (keys["month"] == m))
        data = _strings_for_storage(part)
        if not in_order and not _is_sorted_by(data, list(sort_by)):
            data = data.sort(list(sort_by), maintain_order=True)
        path = write_parquet_atomic(
            data, _partition_dir(root_path, y, m) / DATA_FILE, compression=MONTH_COMPRESSION
        )
        written.append(WrittenPartition(y, m, path, data.height))
        if stored is not None:
            stored.append(data)
        del part, data
    if remove_other_partitions:
        keep = {(w.year, w.month) for w in written}
        for year, month, folder in list_partitions(root_path):
            if (year, month) not in keep:
                shutil.rmtree(folder)
    return written


def _time_ordered_month_runs(
    stamps: pl.Series, partition_tz: str
) -> dict[tuple[int, int], tuple[int, int]] | None:
    """``{(year, month): (offset, length)}`` of a time-ordered, null-free ``stamps`` column, the
    months in ``partition_tz``, in (year, month) order; None when ``stamps`` is not in time
    order (or empty).

    What :func:`_month_runs` gives on every row's year and month, computed on the runs of
    equal stamps: in time order the local months never step back, so each month is one run of
    rows."""
    if stamps.len() == 0 or stamps.null_count() or not stamps.is_sorted():
        return None
    distinct = stamps.rle().struct.unnest()  # "len", "value": one row per run of equal stamps
    local = pl.col("value").dt.convert_time_zone(partition_tz)
    months = distinct.select(
        local.dt.year().cast(pl.Int32).alias("year"),
        local.dt.month().cast(pl.Int32).alias("month"),
        pl.col("len").cast(pl.Int64),
    )
    out: dict[tuple[int, int], tuple[int, int]] = {}
    offset = 0
    for year, month, length in (
        months.group_by("year", "month", maintain_order=True).agg(pl.col("len").sum()).iter_rows()
    ):
        out[(int(year), int(month))] = (offset, int(length))
        offset += int(length)
    return out


def _month_runs(keys: pl.DataFrame) -> dict[tuple[int, int], tuple[int, int]] | None:
    """``{(year, month): (offset, length)}`` when each month's rows form one contiguous run and
    the runs are in (year, month) order (a table in time order), else None."""
    if keys.height == 0:
        return None
    code = keys["year"].cast(pl.Int64) * 100 + keys["month"].cast(pl.Int64)
    if not code.is_sorted():
        return None
    out: dict[tuple[int, int], tuple[int, int]] = {}
    offset = 0
    for length, value in code.rle().struct.unnest().iter_rows():
        out[(int(value) // 100, int(value) % 100)] = (offset, int(length))
        offset += int(length)
    return out


def list_partitions(root: str | Path) -> list[tuple[int, int, Path]]:
    """The ``(year, month, folder)`` partitions under ``root`` that hold a data file, sorted."""
    out: list[tuple[int, int, Path]] = []
    root_path = Path(root)
    for data_file in root_path.glob(f"year=*/month=*/{DATA_FILE}"):
        folder = data_file.parent
        year = int(folder.parent.name.split("=", 1)[1])
        month = int(folder.name.split("=", 1)[1])
        out.append((year, month, folder))
    return sorted(out)


def scan_partitioned(
    root: str | Path,
    *,
    symbol_categorical: bool = True,
    include_partition_columns: bool = False,
) -> pl.LazyFrame:
    """Lazily scan a table written by :func:`write_partitioned`.

    Select columns and filter on ``year``/``month`` (with ``include_partition_columns``) or on
    the timestamp before ``.collect()`` so only the needed columns and files are read.

    Parameters
    ----------
    root : str or Path
        Table folder.
    symbol_categorical : bool
        Cast ``symbol`` (stored as String) to Categorical, the in-memory form of the contract.
    include_partition_columns : bool
        Keep the ``year``/``month`` columns (Int32) from the folder names.

    Returns
    -------
    pl.LazyFrame

    Raises
    ------
    FileNotFoundError
        If ``root`` holds no partition.
    """
    root_path = Path(root)
    if not list_partitions(root_path):
        raise FileNotFoundError(f"no partitions (year=*/month=*/{DATA_FILE}) under {root_path}")
    lf = pl.scan_parquet(
        root_path / "year=*" / "month=*" / DATA_FILE,
        hive_partitioning=True,
        hive_schema=_HIVE_SCHEMA,
    )
    names = lf.collect_schema().names()
    if not include_partition_columns:
        lf = lf.drop(list(PARTITION_COLUMNS))
    if symbol_categorical and "symbol" in names:
        lf = lf.with_columns(pl.col("symbol").cast(pl.Categorical))
    return lf


def read_partitioned(
    root: str | Path,
    columns: Sequence[str] | None = None,
    *,
    symbol_categorical: bool = True,
) -> pl.DataFrame:
    """Read a partitioned table (optionally only ``columns``), in (year, month, row) order."""
    lf = scan_partitioned(root, symbol_categorical=symbol_categorical)
    if columns is not None:
        lf = lf.select(list(columns))
    return lf.collect()
