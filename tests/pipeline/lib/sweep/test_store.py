"""The trial store: a batch of trials in one file pair, one trial alone in its own pair; both
read back by key, and a new store sees what an earlier one wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ml4t_pipeline.config import ExperimentConfig
from ml4t_pipeline.lib.sweep.spec import Trial
from ml4t_pipeline.lib.sweep.store import TrialStore
from ml4t_pipeline.lib.sweep.trials import TrialOutcome

STAMPS = np.array([1_600_000_000_000_000, 1_600_086_400_000_000, 1_600_172_800_000_000])


def _trial(index: int) -> Trial:
    cfg = ExperimentConfig.model_validate({"name": f"t{index}", "data": {"prices": "p.parquet"}})
    return Trial(index=index, params={"strategy.n": index}, config=cfg)


def _ok(scale: float) -> TrialOutcome:
    returns = scale * np.array([0.0, 0.01, -0.02])
    return TrialOutcome(
        status="ok", seconds=0.1, metrics={"sharpe": scale}, timestamps=STAMPS,
        returns=returns, equity=1e6 * np.cumprod(1.0 + returns),
    )  # fmt: skip


def test_store_batch_one_file_pair_read_back_by_key(tmp_path: Path) -> None:
    store = TrialStore(tmp_path)
    items = [
        ("k0", _trial(0), _ok(1.0)),
        ("k1", _trial(1), TrialOutcome(status="failed", seconds=0.0, error="ValueError: x")),
        ("k2", _trial(2), _ok(2.0)),
    ]
    records = store.save_batch(items)
    assert [r["hash"] for r in records] == ["k0", "k1", "k2"]
    files = sorted(p.name for p in (tmp_path / "trials").iterdir())
    assert files == ["batch-k0.json", "batch-k0.parquet"]
    # a fresh store (a resumed sweep) finds every record and the ok trials' returns
    again = TrialStore(tmp_path)
    assert sorted(again.keys()) == ["k0", "k1", "k2"] and not again.done("k3")
    assert again.load("k1")["status"] == "failed" and again.load("k2")["metrics"]["sharpe"] == 2
    for key, scale in (("k0", 1.0), ("k2", 2.0)):
        frame = again.load_returns(key)
        assert frame.columns == ["timestamp", "return", "equity"]
        assert frame["return"].to_list() == (scale * np.array([0.0, 0.01, -0.02])).tolist()
        assert frame["timestamp"].dtype == pl.Datetime("us", "UTC")
        assert frame["timestamp"].dt.epoch("us").to_list() == STAMPS.tolist()
    assert json.loads((tmp_path / "trials" / "batch-k0.json").read_text())[1]["hash"] == "k1"


def test_store_single_trial_keeps_its_own_file_pair(tmp_path: Path) -> None:
    store = TrialStore(tmp_path)
    record = store.save("k9", _trial(9), _ok(3.0))
    assert record["params"] == {"strategy.n": 9}
    files = sorted(p.name for p in (tmp_path / "trials").iterdir())
    assert files == ["k9.json", "k9.parquet"]
    again = TrialStore(tmp_path)
    assert again.load("k9") == record
    assert again.load_returns("k9")["equity"].to_list() == pytest.approx(
        (1e6 * np.cumprod(1.0 + 3.0 * np.array([0.0, 0.01, -0.02]))).tolist(), rel=1e-15
    )
    with pytest.raises(KeyError):
        again.load("nope")
