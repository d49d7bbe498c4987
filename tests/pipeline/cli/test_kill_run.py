"""SIGKILL an ``ml4t run`` child at named phases: the output folder is always a complete set.

The child pauses at a phase through the test-only hook ``ML4T_TEST_PAUSE_AT``
(:func:`ml4t_pipeline.lib.output.pause_at`), so every kill lands at a known point.
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import pytest

from ml4t_pipeline.lib import output as output_lib
from tests.pipeline.helpers import (
    TWO_SYMBOLS,
    DemoCliRun,
    demo_config,
    run_cli,
    snapshot,
    start_paused_run,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock are POSIX")


def assert_complete(out: Path) -> dict[str, object]:
    manifest = output_lib.read_manifest(out)
    output_lib.verify_files(out, manifest)
    assert sorted(manifest["files"]) == output_lib.list_files(out)
    return manifest


def test_run_sigkill_at_each_phase_leaves_old_or_new_complete_set(
    tmp_path: Path, demo_cli_run: DemoCliRun
) -> None:
    # the new set: two symbols, so the run killed after its swap is short
    new_config = demo_config(tmp_path / "new", TWO_SYMBOLS, ("rate: 0.001", "rate: 0.002"))
    out = tmp_path / "out"
    # the old set: a copy of the session's completed `ml4t run` of the unchanged demo config
    shutil.copytree(demo_cli_run.out, out)
    assert_complete(out)
    old_set = snapshot(out)
    old_sha = output_lib.sha256_file(demo_cli_run.config)

    # Before the swap the visible folder must stay byte-identical to the old set: killed before
    # materializing, and while the output files are being written (the torn-file case). The
    # "marked" phase (run.json written in staging) is the same situation and is left out to
    # keep the test short: each kill after materializing costs a full demo run.
    for phase in ("staged", "writing"):
        child = start_paused_run(new_config, out, phase)
        staging = [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
        assert len(staging) == 1  # the run writes beside, never into, the folder
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert snapshot(out) == old_set, phase
        assert assert_complete(out)["config_sha256"] == old_sha

    # Killed right after the swap: the new complete set is visible.
    child = start_paused_run(new_config, out, "swapped")
    child.send_signal(signal.SIGKILL)
    child.wait()
    manifest = assert_complete(out)
    assert manifest["config_sha256"] == output_lib.sha256_file(new_config)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out"))
    assert any(".tmp-" in name for name in leftovers)  # the previous set, not yet removed
    assert "out.lock" in leftovers  # stale: its flock died with the process

    # The next locked command is not blocked by the stale lock and tidies the leftovers.
    new_set = snapshot(out)
    code, _, err = run_cli("report", str(out))
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == ["out"]
    rebuilt = snapshot(out)
    assert {n: b for n, b in rebuilt.items() if n not in ("report.html", "run.json")} == {
        n: b for n, b in new_set.items() if n not in ("report.html", "run.json")
    }
