"""Run the issue-7 Backtrader reference in a child process and pickle its ``FrameworkRun``.

Backtrader is pure Python and this strategy's callbacks live in ``ml4t_pipeline``, so under the
suite's coverage tracer the real-data run takes ~2.5x its plain time. The root ``conftest.py``
starts this module (niced) as soon as collection selects a test that needs the run, so it uses
the otherwise idle core while other tests run; the fixture in ``test_crossval_reference_run.py``
waits for it and unpickles the result. The same ``run_backtrader`` on the same inputs, only out
of the traced process (its lines stay covered by the in-process validation-asset tests).

Usage: ``python -m tests.pipeline.backtrader_reference DATA_ROOT OUT.pickle``
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ml4t_pipeline.lib.crossval.compare import FrameworkRun

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_NAME = "backtrader_run"


class BacktraderReferenceJob:
    """The child process computing the reference run; ``result()`` waits for it."""

    def __init__(self, data_root: Path) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="ml4t_bt_reference_"))
        self.out = self.folder / "run.pickle"
        self.log = self.folder / "child.log"
        env = dict(os.environ)
        for name in ("COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG", "COV_CORE_SOURCE"):
            env.pop(name, None)  # the child runs untraced: that is its point
        nice = shutil.which("nice")
        command = [sys.executable, "-m", "tests.pipeline.backtrader_reference"]
        command += [str(data_root), str(self.out)]
        # niced: it soaks up the idle core and yields it to the tests' own processes
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [nice, "-n", "10", *command] if nice else command,
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def result(self) -> FrameworkRun:
        """Wait for the child and return its run; fail with its output if it did not finish."""
        code = self.process.wait()
        if code != 0 or not self.out.exists():
            pytest.fail(
                f"Backtrader reference child exited {code}:\n"
                + self.log.read_text(errors="replace")[-4000:]
            )
        run: FrameworkRun = pickle.loads(self.out.read_bytes())
        return run

    def stop(self) -> None:
        """End the child if it still runs and remove its folder."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


JOB_KEY = pytest.StashKey[BacktraderReferenceJob]()


def main(data_root: Path, out: Path) -> None:
    from ml4t_pipeline.lib.crossval.backtrader_run import run_backtrader
    from ml4t_pipeline.lib.crossval.reference import load_reference_inputs

    run = run_backtrader(load_reference_inputs(data_root))
    partial = out.with_suffix(".partial")
    partial.write_bytes(pickle.dumps(run))
    partial.replace(out)  # the reader sees a complete pickle or none


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
