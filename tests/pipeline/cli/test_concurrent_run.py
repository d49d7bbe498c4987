"""Two ``ml4t run`` into one output folder at once: one wins, the other is refused by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ml4t_pipeline.lib import output as output_lib
from tests.conftest import REPO_ROOT
from tests.pipeline.helpers import TWO_SYMBOLS, demo_config, start_paused_run

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock and SIGUSR1 are POSIX")


def test_run_concurrent_same_folder_second_refused_with_first_pid(tmp_path: Path) -> None:
    first_config = demo_config(tmp_path / "first", TWO_SYMBOLS)
    second_config = demo_config(tmp_path / "second", TWO_SYMBOLS, ("n: 2", "n: 1"))
    out = tmp_path / "out"
    # The first run holds the folder's lock while it is paused after materializing.
    first = start_paused_run(first_config, out, "materialized")
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    second = subprocess.run(
        [sys.executable, "-m", "ml4t_pipeline.cli", "run", str(second_config), "-o", str(out)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 2
    assert f"output folder {out} is in use by pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    first.send_signal(signal.SIGUSR1)  # resume the first run
    assert first.wait(timeout=300) == 0
    manifest = output_lib.read_manifest(out)
    output_lib.verify_files(out, manifest)
    assert manifest["config_sha256"] == output_lib.sha256_file(first_config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "out", "second"]
