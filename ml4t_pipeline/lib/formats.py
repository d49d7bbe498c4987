"""The stored forms of asset values: Parquet, JSON, HTML and month-partitioned tables.

Dagster-free: :class:`ml4t_pipeline.defs.io_managers.Ml4tIOManager` stores every asset value
with :func:`write_value` and loads it with :func:`read_value`; ``ml4t run`` reads the values it
publishes the same way. Layout of one value: ``<stem>.parquet`` (a DataFrame), ``<stem>/``
(a dict of DataFrames: one ``<name>.parquet`` each; or a prepared table: one LZ4 Parquet file
per UTC month under ``year=YYYY/month=MM/`` plus ``_schema.parquet``), ``<stem>.json`` (any
other dict or list, strict JSON) or ``<stem>.html`` (a str). Every write goes to a temporary
sibling that is then renamed over the old file.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from ml4t_pipeline.lib import storage
from ml4t_pipeline.lib.output import to_json_safe

__all__ = [
    "SCHEMA_FILE",
    "atomic_replace",
    "require_frame",
    "select_columns",
    "storage_schema",
    "stored_schema",
    "with_ext",
    "is_partitioned_table",
    "month_bounds",
    "read_value",
    "scan_table",
    "stored_path",
    "table_as_read",
    "write_month",
    "write_table_by_month",
    "write_value",
]

SCHEMA_FILE = "_schema.parquet"
"""Zero-row file at the root of a prepared table: its column types (also for an empty table)."""


def with_ext(stem: Path, ext: str) -> Path:
    # not Path.with_suffix: a key such as "exp.v2" must give "exp.v2.parquet", not "exp.parquet"
    return stem.with_name(stem.name + ext)


def atomic_replace(tmp: Path, final: Path) -> None:
    if final.is_dir() and not final.is_symlink():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


# ---------------------------------------------------------------------------------------------
# Prepared tables (hive-partitioned by year/month)


def is_partitioned_table(folder: Path) -> bool:
    """True when ``folder`` holds a table written by :func:`write_table_by_month`."""
    return (folder / SCHEMA_FILE).is_file() or bool(storage.list_partitions(folder))


def require_frame(value: Any, where: Path) -> pl.DataFrame:
    if not isinstance(value, pl.DataFrame):
        raise TypeError(
            f"{where}: a prepared table must be a polars DataFrame, got {type(value).__name__}"
        )
    return value


def write_table_by_month(
    frame: pl.DataFrame,
    root: Path,
    *,
    allow_empty: bool = False,
    what: str | None = None,
    stored: list[pl.DataFrame] | None = None,
) -> list[storage.WrittenPartition]:
    """Replace the table under ``root`` with ``frame``, one LZ4 Parquet file per UTC month
    (:data:`storage.MONTH_COMPRESSION`; older zstd month files read the same).

    Parameters
    ----------
    frame : pl.DataFrame
        Table with a timezone-aware, non-null ``timestamp`` column and no ``year``/``month``
        columns. Empty only with ``allow_empty`` (then only the schema file is kept).
    root : Path
        The table's folder; months present in ``frame`` are rewritten (each atomically), months
        no longer present are removed, and ``_schema.parquet`` records the column types.
    allow_empty : bool
        Let an empty ``frame`` replace the table. Default False: an empty input is an error and
        nothing stored is removed.
    what : str, optional
        The asset (and partition) for error messages, e.g. ``"prices[demo]"``.
    stored : list of pl.DataFrame, optional
        Receives the month frames as written (:func:`storage.write_partitioned`);
        :func:`table_as_read` turns them into the frame :func:`read_value` would return.

    Returns
    -------
    list of storage.WrittenPartition
        The month files written, in time order.

    Raises
    ------
    ValueError
        ``timestamp`` missing, naive or null (the offending rows are listed), or an empty
        ``frame`` without ``allow_empty`` (the message names ``what``; nothing is removed).
    """
    if frame.height == 0 and not allow_empty:
        n_stored = len(storage.list_partitions(root))
        raise ValueError(
            f"{what or root}: refusing to store an empty table (0 rows, columns "
            f"{frame.columns}); an empty input is an error. The {n_stored} stored month files "
            f"under {root} are kept."
        )
    written = storage.write_partitioned(
        frame, root, remove_other_partitions=True, allow_empty=allow_empty, stored=stored
    )
    storage.write_parquet_atomic(frame.clear(), root / SCHEMA_FILE)
    return written


def table_as_read(parts: Sequence[pl.DataFrame]) -> pl.DataFrame | None:
    """The frame :func:`read_value` returns for a prepared table whose month files hold
    ``parts`` (the ``stored`` frames of :func:`write_table_by_month`, in time order): the same
    rows, columns and types (``symbol`` Categorical, other categorical columns String), read
    from memory. None for no parts (an empty table: read its schema file instead)."""
    if not parts:
        return None
    frame = pl.concat(list(parts), how="vertical", rechunk=False)
    if "symbol" in frame.columns:
        frame = frame.with_columns(pl.col("symbol").cast(pl.Categorical))
    return frame


def month_bounds(month_key: str) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC of a monthly partition key such as ``"2016-05-01"``."""
    start = datetime.strptime(month_key[:10], "%Y-%m-%d").replace(tzinfo=UTC)
    if start.day != 1:
        raise ValueError(f"monthly partition key {month_key!r} is not the first of a month")
    end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start, end


def write_month(
    frame: pl.DataFrame,
    root: Path,
    month_key: str,
    *,
    allow_empty: bool = False,
    what: str | None = None,
) -> list[storage.WrittenPartition]:
    """(Re)write one month of the table under ``root``; every other month is left untouched.

    Parameters
    ----------
    frame : pl.DataFrame
        The month's rows (``timestamp`` tz-aware, every row inside the month in UTC). Empty
        only with ``allow_empty``, which removes the month's folder (the month has no rows any
        more).
    root : Path
        The table's folder.
    month_key : str
        Monthly partition key, ``YYYY-MM-DD`` on the first of the month.
    allow_empty : bool
        Let an empty ``frame`` remove the month. Default False: an empty input is an error.
    what : str, optional
        The asset and partition for error messages.

    Raises
    ------
    ValueError
        A row outside the month (the first five are listed), a bad ``timestamp``, or an empty
        ``frame`` without ``allow_empty`` (nothing is removed).
    """
    start, end = month_bounds(month_key)
    if frame.height == 0 and not allow_empty:
        raise ValueError(
            f"{what or root}: refusing to store an empty month {month_key[:7]} (0 rows); an "
            "empty input is an error and the stored month file is kept"
        )
    if "timestamp" in frame.columns and frame.height:
        outside = frame.filter(
            (pl.col("timestamp") < start) | (pl.col("timestamp") >= end)
            | pl.col("timestamp").is_null()
        )  # fmt: skip
        if outside.height:
            raise ValueError(
                f"{root}: {outside.height} rows fall outside the month {month_key[:7]} (UTC) "
                f"they are written to: {outside.head(5).to_dicts()}"
            )
    root.mkdir(parents=True, exist_ok=True)
    if frame.height == 0:
        folder = root / f"year={start.year}" / f"month={start.month:02d}"
        if folder.exists():
            shutil.rmtree(folder)
        written: list[storage.WrittenPartition] = []
    else:
        written = storage.write_partitioned(frame, root)
    schema_file = root / SCHEMA_FILE
    if not schema_file.is_file() or stored_schema(schema_file) != storage_schema(frame):
        storage.write_parquet_atomic(frame.clear(), schema_file)
    return written


def storage_schema(frame: pl.DataFrame) -> dict[str, pl.DataType]:
    return {
        name: pl.String() if isinstance(dtype, pl.Categorical | pl.Enum) else dtype
        for name, dtype in frame.schema.items()
    }


def stored_schema(path: Path) -> dict[str, pl.DataType]:
    return dict(pl.read_parquet_schema(path))


def scan_table(root: Path, *, months: Sequence[str] | None = None) -> pl.LazyFrame:
    """Lazy scan of a prepared table (symbol Categorical), optionally only some months.

    ``months`` are monthly partition keys (``YYYY-MM-DD``); only their folders are read.
    An empty table scans its schema file (zero rows, the right column types).
    """
    if storage.list_partitions(root):
        lf = storage.scan_partitioned(root, include_partition_columns=months is not None)
        if months is not None:
            wanted = [month_bounds(m)[0] for m in months]
            lf = lf.filter(
                pl.any_horizontal(
                    (pl.col("year") == m.year) & (pl.col("month") == m.month) for m in wanted
                )
                if wanted
                else pl.lit(False)
            ).drop(list(storage.PARTITION_COLUMNS))
        return lf
    lf = pl.scan_parquet(root / SCHEMA_FILE)
    if "symbol" in lf.collect_schema().names():
        lf = lf.with_columns(pl.col("symbol").cast(pl.Categorical))
    return lf


# ---------------------------------------------------------------------------------------------
# Any value


def write_value(
    value: Any,
    stem: Path,
    *,
    by_month: bool = False,
    allow_empty: bool = False,
    what: str | None = None,
) -> Path:
    """Write ``value`` next to ``stem`` with the form its type selects; return the path.

    With ``by_month`` the value must be a DataFrame and ``stem`` becomes its table folder
    (:func:`write_table_by_month`, which refuses an empty frame unless ``allow_empty``).
    Otherwise the file is ``<stem>.parquet`` / ``.json`` / ``.html`` or the folder ``<stem>``,
    written to a temporary sibling and renamed over the old one.
    """
    if by_month:
        write_table_by_month(require_frame(value, stem), stem, allow_empty=allow_empty, what=what)
        return stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    if isinstance(value, pl.DataFrame):
        final = with_ext(stem, ".parquet")
        tmp = final.with_name(f".{final.name}.{tag}.tmp")
        value.write_parquet(tmp, compression="zstd")
    elif (
        isinstance(value, dict)
        and value
        and all(isinstance(v, pl.DataFrame) for v in value.values())
    ):
        final = stem
        tmp = stem.with_name(f".{stem.name}.{tag}.tmp")
        tmp.mkdir()
        for name, frame in value.items():
            frame.write_parquet(tmp / f"{name}.parquet", compression="zstd")
    elif isinstance(value, str):
        final = with_ext(stem, ".html")
        tmp = final.with_name(f".{final.name}.{tag}.tmp")
        tmp.write_text(value, encoding="utf-8")
    else:
        final = with_ext(stem, ".json")
        tmp = final.with_name(f".{final.name}.{tag}.tmp")
        strict = to_json_safe(value)  # NaN/inf -> null: strict JSON (RFC 8259)
        tmp.write_text(json.dumps(strict, indent=2, sort_keys=True, default=str, allow_nan=False))
    atomic_replace(tmp, final)
    return final


def stored_path(stem: Path) -> Path | None:
    """The file or folder :func:`write_value` wrote for ``stem`` (None when there is none)."""
    if stem.is_dir():
        return stem
    for ext in (".parquet", ".json", ".html"):
        path = with_ext(stem, ext)
        if path.exists():
            return path
    return None


def select_columns(lf: pl.LazyFrame, columns: Sequence[str] | None, where: Path) -> pl.LazyFrame:
    if columns is None:
        return lf
    names = lf.collect_schema().names()
    absent = [c for c in columns if c not in names]
    if absent:
        raise ValueError(f"{where}: columns {absent} requested but not stored (has {names})")
    return lf.select(list(columns))


def read_value(stem: Path, *, columns: Sequence[str] | None = None, lazy: bool = False) -> Any:
    """Read what :func:`write_value` (or the IO manager) wrote for ``stem``.

    Parameters
    ----------
    stem : Path
        ``<base_dir>/<asset>/<partition_key>``: a prepared table's folder, a folder of frames,
        or the stem of a ``.parquet`` / ``.json`` / ``.html`` file.
    columns : sequence of str, optional
        For tables: read only these columns (projection pushdown).
    lazy : bool
        For tables: return the ``pl.LazyFrame`` scan instead of collecting it.

    Raises
    ------
    FileNotFoundError
        If nothing was written for ``stem`` (the upstream asset was never materialized).
    ValueError
        A requested column is not stored.
    """
    if stem.is_dir():
        if is_partitioned_table(stem):
            lf = select_columns(scan_table(stem), columns, stem)
            return lf if lazy else lf.collect()
        return {p.stem: pl.read_parquet(p) for p in sorted(stem.glob("*.parquet"))}
    parquet = with_ext(stem, ".parquet")
    if parquet.exists():
        lf = select_columns(pl.scan_parquet(parquet), columns, parquet)
        return lf if lazy else lf.collect()
    for suffix, reader in (
        (".json", lambda p: json.loads(Path(p).read_text())),
        (".html", lambda p: Path(p).read_text(encoding="utf-8")),
    ):
        path = with_ext(stem, suffix)
        if path.exists():
            return reader(path)
    raise FileNotFoundError(f"no stored value for {stem} (materialize the upstream asset first)")


def value_as_read(value: Any) -> Any:
    """What :func:`read_value` gives back for a value :func:`write_value` stored as Parquet: the
    frame itself, a dict of frames in file-name order; None for other values (read them)."""
    if isinstance(value, pl.DataFrame):
        return value
    if (
        isinstance(value, dict)
        and value
        and all(isinstance(v, pl.DataFrame) for v in value.values())
    ):
        return dict(sorted(value.items(), key=lambda item: f"{item[0]}.parquet"))
    return None


def handed_copy(value: Any, stem: Path, columns: Sequence[str] | None, lazy: bool) -> Any:
    """A loaded input from a handed-off value, as :func:`read_value` would return it (a fresh
    frame or dict, so a step changing its input in place changes no other step's)."""
    if isinstance(value, dict):
        return {name: frame.clone() for name, frame in value.items()}
    where = stem if stem.is_dir() else with_ext(stem, ".parquet")
    lf = select_columns(value.lazy(), columns, where)
    return lf if lazy else lf.collect()
