"""Pipeline fixtures shared across modules: one ``ml4t run`` of the demo per session.

Several modules only read a finished demo output folder (``test_output_atomic``, ``test_cli``)
or need one to start from (``test_report_browser`` rebuilds its report, ``test_kill_run`` runs
over it); each run costs a full Dagster materialization under coverage. Readers use the shared
folder as is; a test that changes a folder works on its own ``shutil.copytree`` copy.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from ml4t_pipeline.cli import main
from tests.background import job_folder, once_per_run
from tests.conftest import REPO_ROOT, shared_data_root
from tests.pipeline.helpers import DemoCliRun


@pytest.fixture(scope="session")
def demo_cli_run(request: pytest.FixtureRequest) -> DemoCliRun:
    """The demo experiment run once through the CLI (once per test run, shared by the
    pytest-xdist workers) with ``DAGSTER_HOME`` set, so its Dagster run is kept for the tests
    that read the instance; read it, or copy it before changing it."""

    def build(folder: Path) -> dict[str, object]:
        base, home = folder / "run", folder / "dagster_home"
        config = base / "configs" / "demo.yaml"
        config.parent.mkdir(parents=True)
        config.write_bytes((REPO_ROOT / "configs" / "demo.yaml").read_bytes())
        home.mkdir()
        (home / "dagster.yaml").write_text("")
        out, err = io.StringIO(), io.StringIO()
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            pytest.MonkeyPatch.context() as mp,
        ):
            mp.setenv("DAGSTER_HOME", str(home))
            code = main(["run", str(config), "--output", str(base / "out")])
        assert code == 0, err.getvalue()
        return {
            "folder": str(folder),
            "code": code,
            "stdout": out.getvalue(),
            "stderr": err.getvalue(),
        }

    built = once_per_run(request.config, "demo_cli_run", build)
    folder = Path(str(built["folder"]))
    run = DemoCliRun(
        folder / "run",
        folder / "run" / "configs" / "demo.yaml",
        folder / "run" / "out",
        folder / "dagster_home",
        int(str(built["code"])),
        str(built["stdout"]),
        str(built["stderr"]),
    )
    assert run.code == 0, run.stderr
    return run


# Read-only outputs computed by background jobs (tests/background.py's JOBS, keyed by these
# fixtures' names).
@pytest.fixture(scope="session")
def sp500_cli_output(request: pytest.FixtureRequest, data_root: Path) -> Path:
    """``ml4t run configs/sp500_top25.yaml`` output folder (a niced, untraced child started at
    collection; it exited 0). Read it, or copy it before changing it."""
    return job_folder(request, data_root) / "out"


@pytest.fixture(scope="session")
def api_small_cli_output(request: pytest.FixtureRequest) -> Path:
    """``ml4t run`` on :data:`tests.pipeline.helpers.SMALL` written as
    ``configs/api_small.yaml`` (a background child; it exited 0). Read-only."""
    return job_folder(request, shared_data_root()) / "out"


@pytest.fixture(scope="session")
def backtrader_reference_folder(request: pytest.FixtureRequest, data_root: Path) -> Path:
    """Folder holding ``run.pickle``: ``run_backtrader(load_reference_inputs(data_root))``
    computed in a background child (``tests/pipeline/backtrader_reference.py``)."""
    pytest.importorskip("backtrader")
    return job_folder(request, data_root)
