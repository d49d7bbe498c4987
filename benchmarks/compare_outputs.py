"""Compare two ``ml4t run`` output folders file by file (issue 27's "same content" check).

Every Parquet file must hold the same frame (schema, dtypes and values, ``DataFrame.equals``
with nulls equal); every JSON file the same document once the fields that name a run
(run ids, output paths, times, code version and the hashes ``run.json`` keeps of those) are
masked; every other file (``report.html`` and the Dagster storage's ``.lock`` files) is listed
when its bytes differ, not judged. A file present in one folder only is a difference.

Usage, from the repository root::

    python benchmarks/compare_outputs.py OLD_DIR NEW_DIR

Exit status 0 when every Parquet and JSON file agrees, 1 otherwise (each difference printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import polars as pl

#: JSON keys whose values name a run rather than describe its results.
_VOLATILE = {
    "run_id",
    "output_dir",
    "output",
    "path",
    "published_dir",
    "started_at",
    "finished_at",
    "generated_at",
    "created_at",
    "timestamp",
    "code_version",
    "host",
    "pid",
    "process",
    "sha256",
    "size",
    "bytes",
    "elapsed_seconds",
    "duration_seconds",
    "config_path",
    "written_at",
    "output_folder",
    "materialize_seconds",
    "built_from",
    "promoted_in_run",
}


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("<masked>" if k in _VOLATILE else _mask(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file()}


def compare(old: Path, new: Path) -> list[str]:
    """Return one line per difference between the output folders ``old`` and ``new``."""
    problems: list[str] = []
    a, b = _files(old), _files(new)
    for name in sorted(set(a) ^ set(b)):
        problems.append(f"only in {'old' if name in a else 'new'}: {name}")
    for name in sorted(set(a) & set(b)):
        pa, pb = a[name], b[name]
        if name.endswith(".parquet"):
            fa, fb = pl.read_parquet(pa), pl.read_parquet(pb)
            if fa.schema != fb.schema:
                problems.append(f"schema differs: {name}: {fa.schema} vs {fb.schema}")
            elif not fa.equals(fb, null_equal=True):
                problems.append(f"values differ: {name}")
        elif name.endswith(".json"):
            ja = _mask(json.loads(pa.read_text()))
            jb = _mask(json.loads(pb.read_text()))
            if ja != jb:
                problems.append(f"JSON differs: {name}")
        elif pa.read_bytes() != pb.read_bytes() and not name.endswith(".lock"):
            print(f"note: bytes differ (not judged): {name}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    problems = compare(args.old, args.new)
    for line in problems:
        print(line)
    print(f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
