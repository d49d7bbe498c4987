"""Read-only set-ups computed in niced, untraced child processes from the start of the session.

Some fixtures only produce something their tests read: a Backtrader reference run, an
``ml4t run`` output folder. In the suite's process each costs ~2x its plain time under the
coverage tracer, and the main process uses one core. So when collection selects a test that
uses such a fixture, ``tests/conftest.py`` starts the same computation as a child process
(``nice -n 10``: it takes the idle core and yields to the tests' own processes); the fixture
then waits for its child and reads the result. What the child runs is the same command or
function on the same inputs; its code stays covered by the in-process tests of the same paths
(the demo runs, the validation assets).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SP500_FILE = "sp500_5yr_daily_ohlcv.parquet"


@dataclass(frozen=True)
class JobSpec:
    """How to build a job's command; :data:`JOBS` keys it by the fixture that reads it.

    ``command(data_root, folder)`` returns the argv to run with the repository as working
    directory; the child writes its result under ``folder``. ``needs`` lists the packages the
    job imports and ``real_data`` says whether it reads the S&P file (otherwise the fixture
    skips first and no child is started).
    """

    command: Callable[[Path, Path], list[str]]
    needs: tuple[str, ...] = ()
    real_data: bool = True


def _backtrader_reference(data_root: Path, folder: Path) -> list[str]:
    module = "tests.pipeline.backtrader_reference"
    return [sys.executable, "-m", module, str(data_root), str(folder / "run.pickle")]


def _ml4t_run(config: Path, folder: Path) -> list[str]:
    """``ml4t run CONFIG -o FOLDER/out`` with this interpreter."""
    return [
        sys.executable,
        "-m",
        "ml4t_pipeline.cli",
        "run",
        str(config),
        "-o",
        str(folder / "out"),
    ]


def _sp500_cli_run(data_root: Path, folder: Path) -> list[str]:
    return _ml4t_run(REPO_ROOT / "configs" / "sp500_top25.yaml", folder)


def _api_small_cli_run(data_root: Path, folder: Path) -> list[str]:
    import yaml

    from tests.pipeline.helpers import SMALL

    config = folder / "configs" / "api_small.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump(SMALL))
    return _ml4t_run(config, folder)


JOBS = {
    "backtrader_reference_folder": JobSpec(_backtrader_reference, ("backtrader",)),
    "sp500_cli_output": JobSpec(_sp500_cli_run),
    "api_small_cli_output": JobSpec(_api_small_cli_run, real_data=False),
}
"""Background jobs by the name of the session fixture of ``tests/pipeline/conftest.py`` that
reads them: a selected test that uses that fixture, directly or through another fixture,
starts the job at collection. A renamed fixture without its entry here fails loudly
(:func:`job_folder` raises), never silently computes in the foreground."""


class BackgroundJob:
    """One started child; ``wait()`` returns its folder once it exited 0."""

    def __init__(self, fixture: str, data_root: Path) -> None:
        self.name = fixture
        self.folder = Path(tempfile.mkdtemp(prefix=f"ml4t_{fixture}_"))
        self.log = self.folder / "child.log"
        env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}  # ephemeral instance
        for key in ("COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG", "COV_CORE_SOURCE"):
            env.pop(key, None)  # untraced: that is the point
        env["ML4T_DATA_ROOT"] = str(data_root)  # what the data_root fixture sets for the suite
        command = JOBS[fixture].command(data_root, self.folder)
        nice = shutil.which("nice")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [nice, "-n", "10", *command] if nice else command,
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait(self) -> Path:
        """Wait for the child; fail the asking test with the child's output unless it exited 0."""
        code = self.process.wait()
        if code != 0:
            tail = self.log.read_text(errors="replace")[-4000:]
            pytest.fail(f"background job {self.name} exited {code}:\n{tail}")
        return self.folder

    def stop(self) -> None:
        """End the child if it still runs and remove its folder."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


JOBS_KEY = pytest.StashKey[dict[str, BackgroundJob]]()


def start_wanted(session: pytest.Session, data_root: Path) -> None:
    """Start every job whose fixture a selected test uses (and whose prerequisites are met)."""
    import importlib.util

    if session.config.option.collectonly:
        return
    jobs = session.config.stash.setdefault(JOBS_KEY, {})
    has_data = (data_root / SP500_FILE).exists()
    for fixture, spec in JOBS.items():
        wanted = any(fixture in getattr(item, "fixturenames", ()) for item in session.items)
        installed = all(importlib.util.find_spec(package) for package in spec.needs)
        if wanted and installed and (has_data or not spec.real_data) and fixture not in jobs:
            jobs[fixture] = BackgroundJob(fixture, data_root)


def job_folder(request: pytest.FixtureRequest, data_root: Path) -> Path:
    """The finished folder of the job of the asking fixture (``request.fixturename``), started
    now if collection did not start it.

    Raises
    ------
    KeyError
        If the fixture has no entry in :data:`JOBS`.
    """
    fixture = request.fixturename
    if fixture not in JOBS:
        raise KeyError(f"fixture {fixture!r} has no background job in tests/background.py JOBS")
    jobs = request.config.stash.setdefault(JOBS_KEY, {})
    if fixture not in jobs:
        jobs[fixture] = BackgroundJob(fixture, data_root)
    return jobs[fixture].wait()


def stop_all(config: pytest.Config) -> None:
    """Stop the children still running and remove every job folder."""
    for job in config.stash.get(JOBS_KEY, {}).values():
        job.stop()
