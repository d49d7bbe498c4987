"""The Dagster UI in a real browser: materialize the demo experiment, then read it on the page.

``dagster dev`` (fixture ``dagster_dev``) gets the ``demo`` partition and a run of
``experiment_job`` through the GraphQL API; when the run has succeeded, headless Chromium opens
the global asset lineage, the asset graph upstream of ``metrics`` and the ``metrics`` asset page,
and checks the asset names, the latest materialization's Sharpe ratio (against the stored
``<storage>/metrics/demo.json``) and the equity plot (a PNG data-URI image). Screenshots go to
``test-output/e2e/``.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.e2e.conftest import CHROMIUM_ARGS, OUTPUT_DIR, DagsterDev

PARTITIONS_DEF = "experiments"
JOB = "experiment_job"
EXPERIMENT = "demo"
RUN_TIMEOUT_S = 150.0
PAGE_TIMEOUT_MS = 30_000
DONE = {"SUCCESS", "FAILURE", "CANCELED"}
IN_PROGRESS = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"]
UPSTREAM_OF_METRICS = [
    "prices_raw",
    "prices",
    "features",
    "signals",
    "market_panel",
    "backtest",
    "portfolio_states",
    "trades",
    "metrics",
]

LOCATIONS = """
{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError {
  __typename ... on RepositoryLocation { name repositories { name } }
  ... on PythonError { message } } } } } }
"""
ADD_PARTITION = """
mutation($selector: RepositorySelector!, $defName: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $selector, partitionsDefName: $defName,
                      partitionKey: $key) {
    __typename
    ... on AddDynamicPartitionSuccess { partitionKey }
    ... on DuplicateDynamicPartitionError { partitionName }
    ... on PythonError { message stack }
    ... on UnauthorizedError { message }
  }
}
"""
LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""
RUN_STATUS = """
query($runId: ID!) { runOrError(runId: $runId) {
  __typename ... on Run { status } ... on PythonError { message } } }
"""
RUNS_IN_PROGRESS = """
query($statuses: [RunStatus!]) { runsOrError(filter: {statuses: $statuses}) {
  ... on Runs { results { runId jobName status } } } }
"""


def repository_selector(server: DagsterDev) -> dict[str, str]:
    """The (location, repository) pair of the single code location ``dagster dev`` serves."""
    entries = server.graphql(LOCATIONS)["workspaceOrError"]["locationEntries"]
    assert len(entries) == 1, entries
    location = entries[0]["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", location
    return {
        "repositoryLocationName": location["name"],
        "repositoryName": location["repositories"][0]["name"],
    }


def launch_demo_run(server: DagsterDev, selector: dict[str, str]) -> str:
    """Add the ``demo`` partition, put its YAML in place and launch ``experiment_job`` for it."""
    added = server.graphql(
        ADD_PARTITION, {"selector": selector, "defName": PARTITIONS_DEF, "key": EXPERIMENT}
    )["addDynamicPartition"]
    assert added["__typename"] == "AddDynamicPartitionSuccess", added
    # The partition exists before the file appears, so the configs sensor starts no second run.
    shutil.copy(REPO_ROOT / "configs" / f"{EXPERIMENT}.yaml", server.configs_dir)
    params = {
        "selector": selector | {"jobName": JOB},
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": EXPERIMENT}]},
    }
    launched = server.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id: str = launched["run"]["runId"]
    return run_id


def wait_for_run(server: DagsterDev, run_id: str, timeout_s: float = RUN_TIMEOUT_S) -> str:
    """Poll the run's status until it is final; return it (AssertionError on timeout)."""
    deadline = time.monotonic() + timeout_s
    status = "?"
    while time.monotonic() < deadline:
        run = server.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]
        assert run["__typename"] == "Run", run
        status = str(run["status"])
        if status in DONE:
            return status
        time.sleep(2.0)
    raise AssertionError(
        f"run {run_id} still {status} after {timeout_s:.0f} s:\n{server.log_tail()}"
    )


def wait_until_idle(server: DagsterDev, timeout_s: float = 60.0) -> None:
    """Wait until no run is queued or running (automation may start one after ours)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = server.graphql(RUNS_IN_PROGRESS, {"statuses": IN_PROGRESS})["runsOrError"]
        if not runs["results"]:
            return
        time.sleep(2.0)
    raise AssertionError(f"runs still in progress after {timeout_s:.0f} s: {runs['results']}")


def assert_close_to_displayed(displayed: str, expected: float, what: str) -> None:
    """``displayed`` (as the UI printed it) equals ``expected`` to the digits it shows."""
    match = re.search(r"-?\d+(?:\.(\d+))?(?:e-?\d+)?", displayed.replace(",", ""))
    assert match, f"{what}: no number in {displayed!r}"
    decimals = len(match.group(1) or "")
    tolerance = 0.5 * 10.0**-decimals + 1e-12
    assert abs(float(match.group(0)) - expected) <= tolerance, (
        f"{what}: page shows {displayed!r}, stored value is {expected!r}"
    )


def dismiss_dialogs(page: Any) -> None:
    """Close the first-visit 'Join the Dagster community' dialog if it shows."""
    skip = page.get_by_role("button", name="Skip")
    if skip.count():
        skip.first.click()


@pytest.mark.e2e
def test_ui_browser_demo_materialized_shows_assets_sharpe_and_equity_plot(
    dagster_dev: DagsterDev, chromium_path: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    server = dagster_dev
    run_id = launch_demo_run(server, repository_selector(server))
    status = wait_for_run(server, run_id)
    assert status == "SUCCESS", f"run {run_id} ended {status}:\n{server.log_tail()}"
    wait_until_idle(server)

    metrics_file = server.storage_dir / "metrics" / f"{EXPERIMENT}.json"
    assert metrics_file.is_file(), f"no stored metrics at {metrics_file}"
    expected_sharpe = float(json.loads(metrics_file.read_text())["sharpe"])

    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(PAGE_TIMEOUT_MS)

            # 1. Global asset lineage: the code location's asset groups.
            page.goto(f"{server.base_url}/asset-groups", wait_until="networkidle")
            dismiss_dialogs(page)
            expect(page.get_by_text("Global asset lineage")).to_be_visible()
            for group in ("data", "backtest"):
                expect(page.locator("foreignObject").get_by_text(group, exact=True)).to_be_visible()
            page.screenshot(path=str(OUTPUT_DIR / "01_global_lineage.png"))

            # 2. The asset graph upstream of metrics, whole depth (the UI clamps 10 to the
            #    graph's depth and fits it to the window): every asset node by name.
            page.goto(
                f"{server.base_url}/assets/metrics?view=lineage&lineageScope=upstream&lineageDepth=10",
                wait_until="networkidle",
            )
            dismiss_dialogs(page)
            graph = page.locator("foreignObject")
            expect(graph.get_by_text("metrics", exact=True).first).to_be_visible()
            page.screenshot(path=str(OUTPUT_DIR / "02_metrics_upstream_graph.png"))
            for name in UPSTREAM_OF_METRICS:
                expect(graph.get_by_text(name, exact=True).first).to_be_attached()

            # 3. The metrics asset page: latest materialization's metadata.
            page.goto(f"{server.base_url}/assets/metrics", wait_until="networkidle")
            dismiss_dialogs(page)
            expect(page.get_by_text("Latest materialization")).to_be_visible()
            # the `sharpe` metadata entry and the `sharpe` row of the `metrics` table (metric,
            # value, unit): rows holding no nested table whose first cell is "sharpe"
            sharpe_rows = page.locator("tr:not(:has(table))").filter(
                has=page.locator("td:first-child", has_text=re.compile(r"^\s*sharpe\s*$"))
            )
            expect(sharpe_rows).to_have_count(2)
            for i in range(2):
                cells = [t.strip() for t in sharpe_rows.nth(i).locator("td").all_inner_texts()]
                shows_value = []
                for cell in cells[1:]:  # the value column differs between the two layouts
                    if not re.fullmatch(r"-?\d+\.\d{2,}", cell):
                        continue  # a timestamp, a unit, a rounded integer
                    try:
                        assert_close_to_displayed(cell, expected_sharpe, "sharpe")
                        shows_value.append(cell)
                    except (AssertionError, ValueError):
                        continue
                assert shows_value, f"no cell of {cells} shows sharpe {expected_sharpe}"
            lines = {line.strip() for line in page.locator("body").inner_text().splitlines()}
            neighbours = {"backtest", "portfolio_states", "trades", "performance_report"}
            assert neighbours <= lines, f"upstream/downstream assets missing: {neighbours - lines}"
            page.screenshot(path=str(OUTPUT_DIR / "03_metrics_asset.png"), full_page=True)

            # 4. The equity plot: the markdown metadata opens as an image with a PNG data URI.
            page.locator("tr", has_text="equity_curve").get_by_text("[Show Markdown]").click()
            plot = page.locator("img[src^='data:image/png']").first
            expect(plot).to_be_visible()
            width = plot.evaluate("img => img.complete ? img.naturalWidth : 0")
            assert width > 100, f"equity plot did not decode (naturalWidth={width})"
            page.screenshot(path=str(OUTPUT_DIR / "04_metrics_equity_plot.png"))
        finally:
            browser.close()
