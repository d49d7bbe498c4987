"""The IO manager: every asset value lives as a file under one storage folder.

Layout: ``<base_dir>/<asset_name>/<partition_key>.<ext>`` where the extension follows the value:

- ``polars.DataFrame`` → ``.parquet`` (zstd)
- ``dict`` whose values are all DataFrames → a folder of ``<name>.parquet`` files
- any other ``dict`` / ``list`` → ``.json``
- ``str`` → ``.html`` (reports)

Writes are atomic: a temporary sibling is written first, then renamed over the old file, so a
failure while writing leaves the previous version readable.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

STORAGE_ENV = "ML4T_STORAGE_DIR"


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


def write_value(value: Any, stem: Path) -> Path:
    """Write ``value`` next to ``stem`` with the extension its type selects; return the path."""
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


def read_value(stem: Path) -> Any:
    """Read what :func:`write_value` wrote for ``stem``.

    Raises
    ------
    FileNotFoundError
        If nothing was written for ``stem`` (the upstream asset was never materialized).
    """
    if stem.is_dir():
        return {p.stem: pl.read_parquet(p) for p in sorted(stem.glob("*.parquet"))}
    for suffix, reader in (
        (".parquet", pl.read_parquet),
        (".json", lambda p: json.loads(Path(p).read_text())),
        (".html", lambda p: Path(p).read_text(encoding="utf-8")),
    ):
        path = stem.with_suffix(suffix)
        if path.exists():
            return reader(path)
    raise FileNotFoundError(f"no stored value for {stem} (materialize the upstream asset first)")


class Ml4tIOManager(dg.ConfigurableIOManager):
    """Stores asset values as Parquet/JSON/HTML files under ``base_dir`` (see module docstring)."""

    base_dir: str

    def _stem(self, context: dg.InputContext | dg.OutputContext) -> Path:
        key = context.asset_key.path
        part = context.asset_partition_key if context.has_asset_partitions else "__all__"
        return Path(self.base_dir).joinpath(*key, part)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        path = write_value(obj, self._stem(context))
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> Any:
        if context.has_asset_partitions and not _downstream_partitioned(context):
            # an unpartitioned asset reading every experiment: {partition_key: value} for the
            # partitions that were materialized (the caller reports the missing ones)
            base = Path(self.base_dir).joinpath(*context.asset_key.path)
            out = {}
            for key in context.asset_partition_keys:
                try:
                    out[key] = read_value(base / key)
                except FileNotFoundError:
                    context.log.warning(f"{context.asset_key.to_user_string()}[{key}] not stored")
            return out
        return read_value(self._stem(context))


def _downstream_partitioned(context: dg.InputContext) -> bool:
    step = context.step_context
    return step is not None and step.has_partition_key
