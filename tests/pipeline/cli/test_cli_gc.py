"""``ml4t run`` keeps the objects alive before the run out of the cyclic garbage collector's
full collections while it runs (issue 27), and leaves the collector as it found it."""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

import pytest

from ml4t_pipeline import cli


def _run_args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(
        config=str(tmp_path / "x.yaml"), output=str(tmp_path / "out"), validate=False
    )


def test_cmd_run_freezes_objects_during_the_run_and_unfreezes_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []

    def fake_run(*args: object, **kwargs: object) -> None:
        seen.append(gc.get_freeze_count())
        raise RuntimeError("stop here")

    monkeypatch.setattr(cli, "run_to_folder", fake_run)
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError, match="stop here"):
        cli.cmd_run(_run_args(tmp_path))

    assert seen and seen[0] > 0  # the modules' objects were frozen while the run ran
    assert gc.get_freeze_count() == 0  # and handed back to the collector, even on failure


def test_cmd_run_leaves_a_callers_own_freeze_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_run(*args: object, **kwargs: object) -> None:
        raise RuntimeError("stop here")

    monkeypatch.setattr(cli, "run_to_folder", fake_run)
    gc.freeze()
    try:
        with pytest.raises(RuntimeError):
            cli.cmd_run(_run_args(tmp_path))
        # still frozen (the count moves: a frozen object freed by its refcount leaves it)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
