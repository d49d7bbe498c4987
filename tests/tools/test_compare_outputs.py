"""``benchmarks/compare_outputs.py``: the same-content check between two ``ml4t run`` folders."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest

from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def compare_outputs() -> ModuleType:
    path = REPO_ROOT / "benchmarks" / "compare_outputs.py"
    spec = importlib.util.spec_from_file_location("compare_outputs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _folder(root: Path, close: float = 10.0, run_id: str = "a", total: float = 0.5) -> Path:
    frame = pl.DataFrame({"symbol": ["AAA", "BBB"], "close": [close, 20.0]})
    (root / "assets" / "prices").mkdir(parents=True)
    frame.write_parquet(root / "assets" / "prices" / "data.parquet", compression="zstd")
    (root / "run.json").write_text(json.dumps({"run_id": run_id, "metrics": {"total": total}}))
    (root / "report.html").write_text(f"<p>{run_id}</p>")
    return root


def test_compare_outputs_same_frames_other_codec_and_run_names_agree(
    compare_outputs: ModuleType, tmp_path: Path
) -> None:
    old = _folder(tmp_path / "old", run_id="a")
    new = _folder(tmp_path / "new", run_id="b")
    # the same frame stored with another codec: other bytes, the same content
    pl.read_parquet(new / "assets/prices/data.parquet").write_parquet(
        new / "assets/prices/data.parquet", compression="lz4"
    )
    assert compare_outputs.compare(old, new) == []
    assert compare_outputs.main([str(old), str(new)]) == 0


def test_compare_outputs_changed_value_metric_or_missing_file_each_named(
    compare_outputs: ModuleType, tmp_path: Path
) -> None:
    old = _folder(tmp_path / "old")
    new = _folder(tmp_path / "new", close=10.5, total=0.25)
    (old / "fills.parquet").write_bytes((old / "assets/prices/data.parquet").read_bytes())
    problems = compare_outputs.compare(old, new)
    assert problems == [
        "only in old: fills.parquet",
        "values differ: assets/prices/data.parquet",
        "JSON differs: run.json",
    ]
    assert compare_outputs.main([str(old), str(new)]) == 1
