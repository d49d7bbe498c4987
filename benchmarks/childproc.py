"""Run a benchmark script in a child process and read its peak memory.

Peak RSS must not include the parent (pytest, fixtures, generated inputs), so the measured work
runs in its own child and its ``ru_maxrss`` is read with ``os.wait4`` on that child alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_child(script: str | Path, args: list[str]) -> tuple[dict[str, Any], int, float]:
    """Run ``python script *args``; return its last stdout line as JSON, peak RSS (bytes), wall s.

    Raises
    ------
    RuntimeError
        If the child exits non-zero.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(Path(script).resolve()), *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"child {script} {args} failed with exit code {proc.returncode}")
    return json.loads(output.strip().splitlines()[-1]), usage.ru_maxrss * 1024, wall  # KiB
