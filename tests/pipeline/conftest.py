"""Pipeline fixtures shared across modules: one ``ml4t run`` of the demo per session.

Several modules only read a finished demo output folder (``test_output_atomic``, ``test_cli``)
or need one to start from (``test_report_browser`` rebuilds its report, ``test_kill_run`` runs
over it); each run costs a full Dagster materialization under coverage. Readers use the shared
folder as is; a test that changes a folder works on its own ``shutil.copytree`` copy.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from ml4t_pipeline.cli import main
from tests.conftest import REPO_ROOT


@dataclass(frozen=True)
class DemoCliRun:
    """``ml4t run <base>/configs/demo.yaml --output <base>/out`` and what it printed.

    ``config`` is a copy of ``configs/demo.yaml`` (same bytes, so the same ``config_sha256``);
    ``base`` holds only ``configs`` and ``out``.
    """

    base: Path
    config: Path
    out: Path
    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def demo_cli_run(tmp_path_factory: pytest.TempPathFactory) -> DemoCliRun:
    """The demo experiment run once through the CLI; read it, or copy it before changing it."""
    base = tmp_path_factory.mktemp("demo_cli_run")
    config = base / "configs" / "demo.yaml"
    config.parent.mkdir()
    config.write_bytes((REPO_ROOT / "configs" / "demo.yaml").read_bytes())
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["run", str(config), "--output", str(base / "out")])
    run = DemoCliRun(base, config, base / "out", code, out.getvalue(), err.getvalue())
    assert run.code == 0, run.stderr
    return run
