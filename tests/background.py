"""Read-only set-ups computed in niced, untraced child processes from the start of the session.

Some fixtures only produce something their tests read: a Backtrader reference run, an
``ml4t run`` output folder. In the suite's process each costs ~2x its plain time under the
coverage tracer, and the main process uses one core. So when collection selects a test that
uses such a fixture, ``tests/conftest.py`` starts the same computation as a child process
(``nice -n 10``: it takes the idle core and yields to the tests' own processes); the fixture
then waits for its child and reads the result. What the child runs is the same command or
function on the same inputs; its code stays covered by the in-process tests of the same paths
(the demo runs, the validation assets). The suite runs on two pytest-xdist workers: a job is
started once per test run (the first process to claim its folder under :func:`shared_folder`)
and every worker waits for that one child; :func:`once_per_run` does the same for an in-process
set-up (the demo CLI run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from tests.conftest import REPO_ROOT

SP500_FILE = "sp500_5yr_daily_ohlcv.parquet"
T = TypeVar("T")


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


_WRAPPER = """
import os, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1] + ".tmp", "w") as out:
    out.write(str(code))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
"""
"""Runs the job's command and writes its exit code to a file, so that every process of the
test run (each pytest-xdist worker) can wait for the job, not only the one that started it."""

JOB_TIMEOUT_S = 1800.0


def shared_folder(config: pytest.Config) -> Path:
    """A folder every process of this test run sees: pytest's base temporary folder, or under
    pytest-xdist the controller's one, which holds each worker's (``popen-gw0``, ...)."""
    base = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    return base.parent if hasattr(config, "workerinput") else base


class BackgroundJob:
    """One job of the run, started by the first process that claims its folder.

    The folder ``<shared>/background/<fixture>`` is the claim (``mkdir`` succeeds for one
    process only); the child runs in its own session, writes its result under the folder and
    its exit code to ``exit_code``. Any process ``wait()`` s for that file; :func:`stop_all`
    (run by the controller, or the only process without xdist) ends it and removes the folder.
    """

    def __init__(self, fixture: str, data_root: Path, shared: Path) -> None:
        self.name = fixture
        self.folder = shared / "background" / fixture
        self.log = self.folder / "child.log"
        self.exit_code = self.folder / "exit_code"
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.folder.mkdir()
        except FileExistsError:
            return  # another process of this run started it
        env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}  # ephemeral instance
        for key in ("COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG", "COV_CORE_SOURCE"):
            env.pop(key, None)  # untraced: that is the point
        env["ML4T_DATA_ROOT"] = str(data_root)  # what the data_root fixture sets for the suite
        command = JOBS[fixture].command(data_root, self.folder)
        command = [sys.executable, "-c", _WRAPPER, str(self.exit_code), *command]
        nice = shutil.which("nice")
        with self.log.open("wb") as log:
            process = subprocess.Popen(
                [nice, "-n", "10", *command] if nice else command,
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives the worker that started it; stop_all ends it
            )
        (self.folder / "pid").write_text(str(process.pid))

    def wait(self) -> Path:
        """Wait for the child; fail the asking test with the child's output unless it exited 0."""
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while not self.exit_code.exists():
            if time.monotonic() > deadline:
                pytest.fail(f"background job {self.name} still running after {JOB_TIMEOUT_S} s")
            time.sleep(0.2)
        code = int(self.exit_code.read_text())
        if code != 0:
            tail = self.log.read_text(errors="replace")[-4000:]
            pytest.fail(f"background job {self.name} exited {code}:\n{tail}")
        return self.folder


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
            jobs[fixture] = BackgroundJob(fixture, data_root, shared_folder(session.config))


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
        jobs[fixture] = BackgroundJob(fixture, data_root, shared_folder(request.config))
    return jobs[fixture].wait()


def stop_all(config: pytest.Config) -> None:
    """Stop the children still running and remove every job folder (the controller's or the
    only process's work: a pytest-xdist worker leaves them to the others still reading)."""
    if hasattr(config, "workerinput"):
        return
    root = shared_folder(config) / "background"
    for folder in sorted(root.glob("*")) if root.is_dir() else []:
        pid = folder / "pid"
        if pid.exists() and not (folder / "exit_code").exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid.read_text()), signal.SIGKILL)  # its own session: the group
        shutil.rmtree(folder, ignore_errors=True)


def once_per_run(config: pytest.Config, name: str, build: Callable[[Path], T]) -> T:
    """``build(folder)`` computed once per test run, whatever the number of pytest-xdist
    workers: the first process to ask builds under an exclusive lock and stores the result
    (JSON-able) beside the folder; the others wait for the lock and read it. A build that
    raised is tried again by the next asker."""
    import fcntl
    import json

    root = shared_folder(config) / "once"
    root.mkdir(parents=True, exist_ok=True)
    folder, result = root / name, root / f"{name}.json"
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            value = build(folder)
            result.write_text(json.dumps(value))
            return value
        loaded: T = json.loads(result.read_text())
        return loaded
