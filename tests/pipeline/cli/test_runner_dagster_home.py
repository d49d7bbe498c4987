"""``ml4t run`` with ``DAGSTER_HOME``: the recorded paths name the output folder, not staging.

The run materializes into the staging folder ``DIR.tmp-*/assets`` and renames it to
``DIR/assets`` at the end, so a path recorded under the staging folder would name a folder that
no longer exists. The run kept in the ``DAGSTER_HOME`` instance must name ``DIR/assets`` in
every materialization's ``path``, in its log lines and in the ``.current.json`` records, and
every such path must exist once the run is over.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ml4t_pipeline import runner
from ml4t_pipeline.defs.io_managers import CONTROL_DIR
from ml4t_pipeline.lib import output as output_lib
from tests.pipeline.helpers import DemoCliRun

STAGING_MARK = ".tmp-"


def _events(instance: dg.DagsterInstance, run_id: str) -> list[dg.EventLogEntry]:
    return list(instance.all_logs(run_id))


def _materialization_meta(entries: list[dg.EventLogEntry]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for entry in entries:
        event = entry.dagster_event
        if event is None or not event.is_step_materialization:
            continue
        materialization = event.step_materialization_data.materialization
        out[materialization.asset_key.to_user_string()] = {
            name: getattr(value, "value", value) for name, value in materialization.metadata.items()
        }
    return out


@pytest.fixture(scope="module")
def home_run(demo_cli_run: DemoCliRun) -> dict[str, Any]:
    """The session's ``ml4t run`` of the demo (``demo_cli_run``, run with ``DAGSTER_HOME``
    set) and the one run its instance kept."""
    assert demo_cli_run.code == 0, demo_cli_run.stderr
    with dg.DagsterInstance.from_config(str(demo_cli_run.home)) as instance:
        (run,) = instance.get_runs()
        entries = _events(instance, run.run_id)
    return {"entries": entries, "run": run, "out": demo_cli_run.out}


def test_run_dagster_home_keeps_run_tagged_with_output_folder(home_run: dict[str, Any]) -> None:
    run, out = home_run["run"], home_run["out"]
    assert run is not None and run.is_success
    assert run.tags[runner.OUTPUT_FOLDER_TAG] == str(out.resolve())
    assert output_lib.read_manifest(out)["run_id"] == run.run_id


def test_run_dagster_home_metadata_paths_name_output_folder_and_exist(
    home_run: dict[str, Any],
) -> None:
    out = home_run["out"].resolve()
    metas = _materialization_meta(home_run["entries"])
    assert {"prices", "backtest", "trades", "portfolio_states", "metrics"} <= set(metas)
    with_path = {asset for asset, meta in metas.items() if "path" in meta}
    # prices_raw is written as a pending candidate (no current value yet in a fresh run)
    assert with_path == set(metas) - {"prices_raw"}
    for asset in with_path:
        path = Path(metas[asset]["path"])
        assert path.is_relative_to(out / "assets") and path.exists(), (asset, path)
    assert metas["trades"]["path"] == str(out / "assets" / "trades" / "demo.parquet")
    # the candidate is promoted (renamed to current) by prices' passing checks in the same run
    candidate = Path(metas["prices_raw"]["candidate_path"])
    assert candidate.is_relative_to(out / "assets" / "prices_raw" / CONTROL_DIR / "candidates")
    assert metas["prices"]["ml4t/prices_raw"].endswith("promoted to current")


def test_run_dagster_home_no_event_or_record_names_staging(home_run: dict[str, Any]) -> None:
    out = home_run["out"].resolve()
    leaks = [
        entry.user_message or repr(entry.dagster_event)
        for entry in home_run["entries"]
        if STAGING_MARK in (entry.user_message or "") + repr(entry.dagster_event)
    ]
    assert leaks == []
    records = sorted((out / "assets").glob(f"*/{CONTROL_DIR}/*.current.json"))
    assert len(records) >= 5
    for record in records:
        path = Path(json.loads(record.read_text())["path"])
        assert path.is_relative_to(out / "assets") and path.exists(), record
