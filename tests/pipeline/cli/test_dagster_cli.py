"""The README's shell commands for one experiment run work as written.

The commands are read from the README's Dagster section (the fenced block after "From a shell,
without the UI") and run with bash in a fresh ``DAGSTER_HOME`` and storage folder, so the README
cannot drift from what works. ``dagster asset materialize --select '*' --partition demo`` could
not work (the selection mixes partitions definitions); the README gives the job instead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from ml4t_pipeline.cli import main
from ml4t_pipeline.defs.partitions import EXPERIMENTS
from ml4t_pipeline.defs.sensors import register_experiments
from tests.conftest import REPO_ROOT

MARKER = "From a shell, without the UI"


def readme_shell_block() -> str:
    """The bash block following :data:`MARKER` in the README."""
    text = (REPO_ROOT / "README.md").read_text()
    after = text[text.index(MARKER) :]
    match = re.search(r"```bash\n(.*?)```", after, re.S)
    assert match is not None, "no bash block after the marker"
    return match.group(1)


def test_readme_shell_block_runs_the_experiment_job_not_asset_star() -> None:
    block = readme_shell_block()
    assert "dagster job execute -m ml4t_pipeline.definitions -j experiment_job" in block
    assert '"dagster/partition": "demo"' in block
    assert "--select '*'" not in (REPO_ROOT / "README.md").read_text().replace(
        "`dagster asset materialize --select '*' --partition demo` cannot work", ""
    )


def test_register_experiments_adds_safe_keys_and_refuses_others(tmp_path: Path) -> None:
    (tmp_path / "demo.yaml").write_text("{}")
    (tmp_path / "other.json").write_text("{}")
    (tmp_path / "a b.yaml").write_text("{}")
    instance = dg.DagsterInstance.ephemeral()
    added, refused = register_experiments(instance, str(tmp_path), ["demo", "a b", "missing"])
    assert added == ["demo"]
    assert set(refused) == {"a b", "missing"}
    assert "not a safe partition key" in refused["a b"]
    assert "no missing.yaml" in refused["missing"]
    again, _ = register_experiments(instance, str(tmp_path))
    assert again == ["other"]  # demo is known already; the unsafe stem is never added
    assert sorted(instance.get_dynamic_partitions(EXPERIMENTS)) == ["demo", "other"]


def test_cli_register_without_dagster_home_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["register", "demo"]) == 2
    assert "set DAGSTER_HOME" in capsys.readouterr().err


def test_cli_register_unsafe_key_exits_2_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert main(["register", "../../esc", "--configs", str(REPO_ROOT / "configs")]) == 2
    assert "experiment '../../esc' refused: not a safe partition key" in capsys.readouterr().err


@pytest.mark.slow
def test_readme_shell_commands_run_demo_experiment(tmp_path: Path) -> None:
    """About 30-60 s on the shared 2-core machine (import of the code location + demo run)."""
    home, store = tmp_path / "dagster_home", tmp_path / "storage"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ML4T_STORAGE_DIR": str(store),
        "ML4T_CONFIGS_DIR": str(REPO_ROOT / "configs"),
    }
    env.pop("ML4T_EXECUTOR", None)  # the command sets it
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_shell_block()],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RUN_SUCCESS" in proc.stderr + proc.stdout
    metrics = json.loads((store / "metrics" / "demo.json").read_text())
    assert metrics["n_trades"] > 0
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_dynamic_partitions(EXPERIMENTS) == ["demo"]
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("metrics"), asset_partitions=["demo"]),
            limit=5,
        ).records
        assert len(records) == 1
