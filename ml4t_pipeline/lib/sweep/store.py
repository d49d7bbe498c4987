"""Trial storage: one file pair per finished trial under ``DIR/trials``, written atomically.

``trials/<key>.parquet`` holds the trial's per-bar returns and ``trials/<key>.json`` its record,
written last, so its presence marks the trial as done. Files are written to a temporary name
and renamed, so a killed sweep leaves whole files or none.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ml4t_pipeline.lib.sweep.spec import Trial
from ml4t_pipeline.lib.sweep.trials import TrialOutcome


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, value: Any) -> None:
    """Write strict JSON (NaN/inf become null) atomically."""
    text = json.dumps(_strict(value), indent=2, sort_keys=True, allow_nan=False)
    _atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


def _strict(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class TrialStore:
    """One small file pair per finished trial under ``DIR/trials``.

    Parameters
    ----------
    folder : Path
        The sweep's output folder ``DIR``.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder) / "trials"

    def record_path(self, key: str) -> Path:
        """``trials/<key>.json``."""
        return self.folder / f"{key}.json"

    def returns_path(self, key: str) -> Path:
        """``trials/<key>.parquet``."""
        return self.folder / f"{key}.parquet"

    def done(self, key: str) -> bool:
        """Whether the trial's record exists (its returns are written before it)."""
        return self.record_path(key).is_file()

    def load(self, key: str) -> dict[str, Any]:
        """The trial's JSON record."""
        return dict(json.loads(self.record_path(key).read_text()))

    def load_returns(self, key: str) -> pl.DataFrame:
        """``timestamp``, ``return``, ``equity`` of an ``ok`` trial."""
        return pl.read_parquet(self.returns_path(key))

    def save(self, key: str, trial: Trial, outcome: TrialOutcome) -> dict[str, Any]:
        """Write the returns (ok trials), then the record; return the record."""
        if outcome.status == "ok":
            assert outcome.timestamps is not None
            frame = pl.DataFrame(
                {
                    "timestamp": pl.Series(outcome.timestamps, dtype=pl.Int64).cast(
                        pl.Datetime("us", "UTC")
                    ),
                    "return": outcome.returns,
                    "equity": outcome.equity,
                }
            )
            _atomic_write(
                self.returns_path(key), lambda tmp: frame.write_parquet(tmp, compression="zstd")
            )
        record = {
            "hash": key,
            "trial": trial.index,
            "params": trial.params,
            "status": outcome.status,
            "seconds": outcome.seconds,
            "cpu_seconds": outcome.cpu_seconds,
            "error": outcome.error,
            "metrics": outcome.metrics,
            "driver": outcome.driver,
        }
        write_json(self.record_path(key), record)
        return record
