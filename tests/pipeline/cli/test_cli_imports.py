"""What ``ml4t run`` imports: the code location loads without the modules only sweeps use."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _modules_after(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter (the repository first on the path) and return the
    JSON it prints."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=True
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_cli_import_and_definitions_leave_dagster_ray_unimported() -> None:
    """``import ml4t_pipeline.cli`` builds the Definitions (``ml4t run`` executes their job), and
    the ``sweep_results`` asset still asks for ``ray_cluster`` when dagster-ray is installed,
    but neither dagster-ray nor Ray is imported: the resource imports it when a run of the
    sweep asset initializes it."""
    code = (
        "import json, sys\n"
        "import ml4t_pipeline.cli\n"
        "from ml4t_pipeline.definitions import defs\n"
        "asset = defs.resolve_assets_def('sweep_results')\n"
        "print(json.dumps({'dagster_ray': 'dagster_ray' in sys.modules,"
        " 'ray': 'ray' in sys.modules, 'keys': sorted(asset.required_resource_keys)}))"
    )
    seen = _modules_after(code)
    assert seen["dagster_ray"] is False
    assert seen["ray"] is False
    if importlib.util.find_spec("dagster_ray") is None:
        pytest.skip("dagster-ray not installed: the asset has no ray_cluster resource")
    assert "ray_cluster" in seen["keys"]  # type: ignore[operator]


def test_cli_import_runs_no_full_collection_and_leaves_the_collector_on() -> None:
    """The ~450k objects ``import ml4t_pipeline.cli`` makes are not walked by full collections
    while they are made (the collector is paused for the imports), and the collector is on
    afterwards with nothing frozen: a user's later garbage is collected as usual."""
    code = (
        "import gc, json\n"
        "import ml4t_pipeline.cli\n"
        "print(json.dumps({'enabled': gc.isenabled(), 'frozen': gc.get_freeze_count(),"
        " 'full': gc.get_stats()[2]['collections']}))"
    )
    seen = _modules_after(code)
    assert seen == {"enabled": True, "frozen": 0, "full": 0}


def test_cli_import_keeps_a_callers_disabled_collector_and_own_freeze() -> None:
    """A process that turned the collector off finds it off after importing the CLI; one that
    froze objects itself finds them still frozen (not handed back to the collector)."""
    off = "import gc, json\ngc.disable()\nimport ml4t_pipeline.cli\n"
    off += "print(json.dumps({'enabled': gc.isenabled()}))"
    assert _modules_after(off) == {"enabled": False}
    frozen = (
        "import gc, json\n"
        "import ml4t_pipeline.config\n"
        "gc.freeze()\n"
        "import ml4t_pipeline.cli\n"
        "print(json.dumps({'enabled': gc.isenabled(), 'frozen': gc.get_freeze_count() > 0}))"
    )
    assert _modules_after(frozen) == {"enabled": True, "frozen": True}
