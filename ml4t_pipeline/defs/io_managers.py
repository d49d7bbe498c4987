"""The IO manager: every asset value lives as a file (or folder) under one storage folder.

Layout: ``<base_dir>/<asset_name>/<partition_key>[.<ext>]`` where the form follows the value:

- a *prepared table* (an asset or output whose definition metadata is :func:`by_month_metadata`:
  prices, prices_quarantine, features, market_context, signals, market_panel) → a folder of zstd
  Parquet files hive-partitioned by the UTC year and month of ``timestamp``::

      <base_dir>/market_panel/<experiment>/_schema.parquet          (0 rows: the column types)
      <base_dir>/market_panel/<experiment>/year=2016/month=05/data.parquet

  written with :func:`ml4t_pipeline.lib.storage.write_partitioned` (each month atomically, fixed
  row order and settings, so a rerun of the same data writes byte-identical files). ``symbol`` is
  stored as String and read back as Categorical. An asset partitioned by experiment × month
  (``prepared_panel``) writes only its own month's folder under ``<asset>/<experiment>/``.
- any other ``polars.DataFrame`` → ``.parquet`` (zstd)
- ``dict`` whose values are all DataFrames → a folder of ``<name>.parquet`` files
- any other ``dict`` / ``list`` → ``.json``
- ``str`` → ``.html`` (reports)

Reads of Parquet are lazy scans: a downstream asset that declares
``dg.AssetIn(metadata={"columns": [...]})`` gets only those columns, and only those are read from
disk (projection pushdown); ``metadata={"lazy": True}`` hands over the ``pl.LazyFrame`` itself so
the asset can filter months before anything is read.

Writes are atomic per file: a temporary sibling is written first, then renamed over the old file,
so a failure while writing leaves the previous version readable. A prepared table is replaced
month by month; a failure part-way leaves every month readable, some old and some new, and the
failed run says so.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from ml4t_pipeline.lib import storage

STORAGE_ENV = "ML4T_STORAGE_DIR"
STORAGE_KEY = "ml4t/storage"
"""Definition-metadata key selecting how an output is stored."""
BY_MONTH = "parquet_by_year_month"
"""Value of :data:`STORAGE_KEY` for prepared tables (hive-partitioned by year/month)."""
SCHEMA_FILE = "_schema.parquet"
"""Zero-row file at the root of a prepared table: its column types (also for an empty table)."""
MONTH_DIMENSION = "month"
"""Name of the monthly dimension of a multi-partitioned prepared table."""


def by_month_metadata() -> dict[str, str]:
    """Definition metadata that stores an asset's DataFrame as a year/month-partitioned table."""
    return {STORAGE_KEY: BY_MONTH}


def default_storage_dir() -> str:
    """``$ML4T_STORAGE_DIR`` or ``.ml4t_storage`` in the current directory."""
    return os.environ.get(STORAGE_ENV, str(Path.cwd() / ".ml4t_storage"))


def _atomic_replace(tmp: Path, final: Path) -> None:
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


def _require_frame(value: Any, where: Path) -> pl.DataFrame:
    if not isinstance(value, pl.DataFrame):
        raise TypeError(
            f"{where}: a prepared table must be a polars DataFrame, got {type(value).__name__}"
        )
    return value


def write_table_by_month(frame: pl.DataFrame, root: Path) -> list[storage.WrittenPartition]:
    """Replace the table under ``root`` with ``frame``, one zstd Parquet file per UTC month.

    Parameters
    ----------
    frame : pl.DataFrame
        Table with a timezone-aware, non-null ``timestamp`` column and no ``year``/``month``
        columns. May be empty (only the schema file is kept).
    root : Path
        The table's folder; months present in ``frame`` are rewritten (each atomically), months
        no longer present are removed, and ``_schema.parquet`` records the column types.

    Returns
    -------
    list of storage.WrittenPartition
        The month files written, in time order.

    Raises
    ------
    ValueError
        ``timestamp`` missing, naive or null (the offending rows are listed).
    """
    written = storage.write_partitioned(frame, root, remove_other_partitions=True)
    storage.write_parquet_atomic(frame.clear(), root / SCHEMA_FILE)
    return written


def month_bounds(month_key: str) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC of a monthly partition key such as ``"2016-05-01"``."""
    start = datetime.strptime(month_key[:10], "%Y-%m-%d").replace(tzinfo=UTC)
    if start.day != 1:
        raise ValueError(f"monthly partition key {month_key!r} is not the first of a month")
    end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start, end


def write_month(frame: pl.DataFrame, root: Path, month_key: str) -> list[storage.WrittenPartition]:
    """(Re)write one month of the table under ``root``; every other month is left untouched.

    Parameters
    ----------
    frame : pl.DataFrame
        The month's rows (``timestamp`` tz-aware, every row inside the month in UTC). An empty
        frame removes the month's folder: the month has no rows any more.
    root : Path
        The table's folder.
    month_key : str
        Monthly partition key, ``YYYY-MM-DD`` on the first of the month.

    Raises
    ------
    ValueError
        A row outside the month (the first five are listed), or a bad ``timestamp``.
    """
    start, end = month_bounds(month_key)
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
    if not schema_file.is_file() or _stored_schema(schema_file) != _storage_schema(frame):
        storage.write_parquet_atomic(frame.clear(), schema_file)
    return written


def _storage_schema(frame: pl.DataFrame) -> dict[str, pl.DataType]:
    return {
        name: pl.String() if isinstance(dtype, pl.Categorical | pl.Enum) else dtype
        for name, dtype in frame.schema.items()
    }


def _stored_schema(path: Path) -> dict[str, pl.DataType]:
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


def write_value(value: Any, stem: Path, *, by_month: bool = False) -> Path:
    """Write ``value`` next to ``stem`` with the form its type selects; return the path.

    With ``by_month`` the value must be a DataFrame and ``stem`` becomes its table folder
    (:func:`write_table_by_month`).
    """
    if by_month:
        write_table_by_month(_require_frame(value, stem), stem)
        return stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    if isinstance(value, pl.DataFrame):
        final = stem.with_suffix(".parquet")
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
        final = stem.with_suffix(".html")
        tmp = final.with_name(f".{final.name}.{tag}.tmp")
        tmp.write_text(value, encoding="utf-8")
    else:
        final = stem.with_suffix(".json")
        tmp = final.with_name(f".{final.name}.{tag}.tmp")
        tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str))
    _atomic_replace(tmp, final)
    return final


def _select(lf: pl.LazyFrame, columns: Sequence[str] | None, where: Path) -> pl.LazyFrame:
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
            lf = _select(scan_table(stem), columns, stem)
            return lf if lazy else lf.collect()
        return {p.stem: pl.read_parquet(p) for p in sorted(stem.glob("*.parquet"))}
    parquet = stem.with_suffix(".parquet")
    if parquet.exists():
        lf = _select(pl.scan_parquet(parquet), columns, parquet)
        return lf if lazy else lf.collect()
    for suffix, reader in (
        (".json", lambda p: json.loads(Path(p).read_text())),
        (".html", lambda p: Path(p).read_text(encoding="utf-8")),
    ):
        path = stem.with_suffix(suffix)
        if path.exists():
            return reader(path)
    raise FileNotFoundError(f"no stored value for {stem} (materialize the upstream asset first)")


# ---------------------------------------------------------------------------------------------
# The IO manager


def _dimension_keys(
    partitions_def: dg.PartitionsDefinition | None, key: str
) -> Mapping[str, str] | None:
    """``{dimension: key}`` of a multi-partition key with a monthly dimension, else None."""
    if not isinstance(partitions_def, dg.MultiPartitionsDefinition):
        return None
    names = [d.name for d in partitions_def.partitions_defs]
    if MONTH_DIMENSION not in names:
        return None
    return partitions_def.get_partition_key_from_str(key).keys_by_dimension


def _table_folder(base: Path, dims: Mapping[str, str]) -> Path:
    # the month is a hive folder inside; the other dimensions (the experiment) name the table
    others = [dims[name] for name in sorted(dims) if name != MONTH_DIMENSION]
    return base.joinpath(*others)


class Ml4tIOManager(dg.ConfigurableIOManager):
    """Stores asset values as Parquet/JSON/HTML under ``base_dir`` (see the module docstring).

    Input metadata understood (``dg.AssetIn(metadata=...)``): ``columns`` (list of str: read only
    these columns of a table) and ``lazy`` (bool: pass a ``pl.LazyFrame``).
    """

    base_dir: str

    def _asset_dir(self, context: dg.InputContext | dg.OutputContext) -> Path:
        return Path(self.base_dir).joinpath(*context.asset_key.path)

    def _stem(self, context: dg.InputContext | dg.OutputContext) -> Path:
        part = context.asset_partition_key if context.has_asset_partitions else "__all__"
        return self._asset_dir(context) / part

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        meta: dict[str, Any] = {}
        by_month = context.definition_metadata.get(STORAGE_KEY) == BY_MONTH
        dims = (
            _dimension_keys(context.asset_partitions_def, context.asset_partition_key)
            if context.has_asset_partitions
            else None
        )
        if dims is not None:
            root = _table_folder(self._asset_dir(context), dims)
            frame = _require_frame(obj, root)
            written = write_month(frame, root, dims[MONTH_DIMENSION])
            path = written[0].path if written else root
            meta["partition_files"] = dg.MetadataValue.int(len(written))
        elif by_month:
            root = self._stem(context)
            written = write_table_by_month(_require_frame(obj, root), root)
            path = root
            meta["partition_files"] = dg.MetadataValue.int(len(written))
        else:
            path = write_value(obj, self._stem(context))
        meta["path"] = dg.MetadataValue.path(str(path))
        context.add_output_metadata(meta)

    def load_input(self, context: dg.InputContext) -> Any:
        columns = context.definition_metadata.get("columns")
        lazy = bool(context.definition_metadata.get("lazy", False))
        if context.has_asset_partitions:
            upstream_def = context.asset_partitions_def
            keys = list(context.asset_partition_keys)
            dims = [_dimension_keys(upstream_def, k) for k in keys]
            if keys and all(d is not None for d in dims):
                return self._load_months(context, dims, columns, lazy)  # type: ignore[arg-type]
            if not _downstream_partitioned(context):
                # an unpartitioned asset reading every experiment: {partition_key: value} for
                # the partitions that were materialized (the caller reports the missing ones)
                base = self._asset_dir(context)
                out = {}
                for key in keys:
                    try:
                        out[key] = read_value(base / key, columns=columns, lazy=lazy)
                    except FileNotFoundError:
                        context.log.warning(
                            f"{context.asset_key.to_user_string()}[{key}] not stored"
                        )
                return out
        return read_value(self._stem(context), columns=columns, lazy=lazy)

    def _load_months(
        self,
        context: dg.InputContext,
        dims: list[Mapping[str, str]],
        columns: Sequence[str] | None,
        lazy: bool,
    ) -> Any:
        """Months of a month-partitioned table: one frame per table folder (experiment)."""
        base = self._asset_dir(context)
        by_table: dict[Path, list[str]] = {}
        for d in dims:
            by_table.setdefault(_table_folder(base, d), []).append(d[MONTH_DIMENSION])
        out: dict[str, Any] = {}
        for root, months in by_table.items():
            if not root.is_dir():
                raise FileNotFoundError(f"no stored value for {root} (materialize it first)")
            lf = _select(scan_table(root, months=sorted(months)), columns, root)
            out[root.relative_to(base).as_posix()] = lf if lazy else lf.collect()
        return next(iter(out.values())) if len(out) == 1 else out


def _downstream_partitioned(context: dg.InputContext) -> bool:
    step = context.step_context
    return step is not None and step.has_partition_key
