"""The Dagster UI in a real browser, driven as the README's UI section says.

``dagster dev`` (fixture ``dagster_dev``, serving a symlinked copy of the code location that one
test edits) gets three experiments:

- ``demo`` (its partition added first, then its YAML), run **from the job page** as the README
  says: Jobs → ``experiment_job`` → Materialize all… → Custom → the partition → Launch 1 run;
- ``gamma``, reading its prices from a file, and ``bad``, the same with one IBM bar whose high is
  below its low: both YAMLs dropped into the configs folder, so ``experiment_configs_sensor``
  adds and runs them (``gamma`` succeeds, ``bad`` stops at its blocking price check).

Then headless Chromium and the GraphQL API check: the asset graph and the metrics page (Sharpe
against ``<storage>/metrics/demo.json``, the equity plot), the report opened from
``performance_report``'s metadata, freshness of ``signals``, the failing check recorded on
``bad`` only, a restated prices file rerunning ``features``/``market_context``/``signals`` (and
everything after them) of ``gamma`` with the stored panel holding the new prices, the comparison
as a typed table, and a code edit marking ``performance_report`` stale while ``prices`` stays
fresh. Screenshots go to ``test-output/e2e/``.

Each test starts what it needs through module fixtures, so any order and any subset works.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from ml4t_pipeline.defs.io_managers import read_value
from ml4t_pipeline.lib.io import load_demo_prices
from tests.conftest import REPO_ROOT
from tests.e2e.helpers import CHROMIUM_ARGS, OUTPUT_DIR, DagsterDev, edit_source
from tests.pipeline.helpers import assert_panel_from_prices

PARTITIONS_DEF = "experiments"
JOB = "experiment_job"
EXPERIMENT = "demo"
RUN_TIMEOUT_S = 420.0
RERUN_TIMEOUT_S = 480.0
PAGE_TIMEOUT_MS = 60_000
EXPECT_TIMEOUT_MS = 30_000
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
RERUN_ON_NEW_PRICES = [
    "prices_raw",
    "prices",
    "features",
    "market_context",
    "signals",
    "market_panel",
    "backtest",
]
FAILING_CHECK = "prices_high_at_or_above_low"
FILE_EXPERIMENT = """\
name: {name}
data:
  prices: {prices}
  signals: {{model: ridge, horizon: 5, min_train_periods: 252}}
  features: computed
  context: {{source: market}}
  signal_available_at: market_close
  invalid_rows: fail
  max_fill_bars: 0
strategy: {{type: TopN, signal: score, n: 2, rebalance_every: 5}}
execution:
  commission: {{type: Percentage, rate: 0.001}}
  initial_cash: 100000
"""

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
RUNS = """
query($filter: RunsFilter) { runsOrError(filter: $filter) {
  ... on Runs { results { runId jobName status startTime
    tags { key value } assetSelection { path } } } } }
"""
MATERIALIZATIONS = """
query($key: AssetKeyInput!, $partition: String!) { assetOrError(assetKey: $key) {
  ... on Asset { assetMaterializations(partitions: [$partition], limit: 1) {
    runId timestamp partition } } } }
"""
CHECK_EXECUTIONS = """
query($key: AssetKeyInput!, $check: String!, $partition: String) {
  assetCheckExecutions(assetKey: $key, checkName: $check, partition: $partition, limit: 5) {
    runId status partition evaluation { success partition } } }
"""
ASSET_STATE = """
query($keys: [AssetKeyInput!], $partition: String) { assetNodes(assetKeys: $keys) {
  assetKey { path } staleStatus(partition: $partition)
  staleCauses(partition: $partition) { reason category key { path } }
  freshnessStatusInfo { freshnessStatus } } }
"""
RELOAD = """
mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) {
  __typename ... on WorkspaceLocationEntry { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } }
  ... on PythonError { message } } }
"""


# --- GraphQL helpers ------------------------------------------------------------------------


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


def add_partition(server: DagsterDev, key: str) -> None:
    added = server.graphql(
        ADD_PARTITION,
        {"selector": repository_selector(server), "defName": PARTITIONS_DEF, "key": key},
    )["addDynamicPartition"]
    assert added["__typename"] == "AddDynamicPartitionSuccess", added


def runs(server: DagsterDev, **filters: Any) -> list[dict[str, Any]]:
    """Runs matching a ``RunsFilter`` (``pipelineName``, ``tags``, ``statuses``), newest first."""
    results: list[dict[str, Any]] = server.graphql(RUNS, {"filter": filters})["runsOrError"][
        "results"
    ]
    return results


def partition_runs(server: DagsterDev, key: str) -> list[dict[str, Any]]:
    return runs(server, tags=[{"key": "dagster/partition", "value": key}])


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
        time.sleep(3.0)
    raise AssertionError(
        f"run {run_id} still {status} after {timeout_s:.0f} s:\n{server.log_tail()}"
    )


def wait_until_idle(server: DagsterDev, timeout_s: float = 240.0) -> None:
    """Wait until no run is queued or running (automation may start one after ours)."""
    deadline = time.monotonic() + timeout_s
    active: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        active = runs(server, statuses=IN_PROGRESS)
        if not active:
            return
        time.sleep(3.0)
    raise AssertionError(f"runs still in progress after {timeout_s:.0f} s: {active}")


def latest_materialization(server: DagsterDev, asset: str, key: str) -> dict[str, Any] | None:
    events = server.graphql(MATERIALIZATIONS, {"key": {"path": [asset]}, "partition": key})[
        "assetOrError"
    ]["assetMaterializations"]
    return events[0] if events else None


def asset_states(
    server: DagsterDev, assets: list[str], partition: str | None
) -> dict[str, dict[str, Any]]:
    nodes = server.graphql(
        ASSET_STATE, {"keys": [{"path": [a]} for a in assets], "partition": partition}
    )["assetNodes"]
    return {"/".join(n["assetKey"]["path"]): n for n in nodes}


def launch_job(server: DagsterDev, job: str, partition: str | None = None) -> str:
    tags = [{"key": "dagster/partition", "value": partition}] if partition else []
    params = {
        "selector": repository_selector(server) | {"jobName": job},
        "runConfigData": {},
        "executionMetadata": {"tags": tags},
    }
    launched = server.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id: str = launched["run"]["runId"]
    return run_id


# --- browser helpers ------------------------------------------------------------------------


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


def open_page(page: Any, url: str) -> None:
    page.goto(url, wait_until="networkidle")
    dismiss_dialogs(page)


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    """Headless Chromium (Debian's) through playwright, for the whole module.

    ``expect`` waits up to :data:`EXPECT_TIMEOUT_MS` for what it asserts (playwright's 5 s
    default failed on a loaded 2-core machine while a partitions page was still loading)."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)

    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        yield tab
    finally:
        context.close()


# --- the experiments --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def file_experiments(dagster_dev: DagsterDev, demo_run: str) -> dict[str, str]:
    """``gamma`` and ``bad`` (prices from files under the data root) added by the configs
    sensor, which launches their first runs; returned as {experiment: run id}, unfinished.

    Added after ``demo`` has finished: Dagster decides whether an update came from a run that
    also targeted the downstream asset from the asset's latest materialization of *any*
    partition, so two experiments finishing together can cost one automatic rerun of the last
    asset; ``demo``'s check of "no rerun" needs it to run alone."""
    server = dagster_dev
    wait_until_idle(server)
    assert server.data_dir is not None
    prices = (
        load_demo_prices()
        .filter(pl.col("timestamp").dt.year().is_between(2010, 2012))
        .with_columns(pl.col("timestamp").dt.convert_time_zone("America/New_York").dt.date())
    )
    prices.write_parquet(server.data_dir / "gamma_prices.parquet")
    last_ibm = (pl.col("symbol") == "IBM") & (pl.col("timestamp") == pl.col("timestamp").max())
    prices.with_columns(
        pl.when(last_ibm).then(pl.col("low") * 0.9).otherwise(pl.col("high")).alias("high")
    ).write_parquet(server.data_dir / "bad_prices.parquet")
    for name in ("gamma", "bad"):
        (server.configs_dir / f"{name}.yaml").write_text(
            FILE_EXPERIMENT.format(name=name, prices=server.data_dir / f"{name}_prices.parquet")
        )
    launched: dict[str, str] = {}
    deadline = time.monotonic() + 120.0  # the sensor looks every 10 s here
    while time.monotonic() < deadline and len(launched) < 2:
        for name in ("gamma", "bad"):
            found = [r for r in partition_runs(server, name) if r["jobName"] == JOB]
            if found:
                launched[name] = found[-1]["runId"]
        time.sleep(3.0)
    assert set(launched) == {"gamma", "bad"}, f"sensor launched {launched}:\n{server.log_tail()}"
    return launched


@pytest.fixture(scope="module")
def finished_file_experiments(
    dagster_dev: DagsterDev, file_experiments: dict[str, str]
) -> dict[str, str]:
    """{experiment: final status} of the sensor's first runs of ``gamma`` and ``bad``."""
    return {name: wait_for_run(dagster_dev, run) for name, run in file_experiments.items()}


@pytest.fixture(scope="module")
def demo_run(dagster_dev: DagsterDev, browser: Any) -> str:
    """The README's way to run one experiment, in the browser: Jobs → ``experiment_job`` →
    Materialize all… → Custom → pick ``demo`` → Launch 1 run. Returns the run id (finished)."""
    server = dagster_dev
    add_partition(server, EXPERIMENT)
    # the partition exists before the file appears, so the configs sensor starts no run of it
    shutil.copy(REPO_ROOT / "configs" / f"{EXPERIMENT}.yaml", server.configs_dir)
    location = repository_selector(server)["repositoryLocationName"]
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        open_page(tab, f"{server.base_url}/locations/{location}/jobs/{JOB}")
        materialize = tab.get_by_role("button", name=re.compile("Materialize all"))
        materialize.first.wait_for()
        tab.wait_for_timeout(1500)  # the community dialog may pop up late
        dismiss_dialogs(tab)
        materialize.first.click()
        dialog = tab.get_by_role("dialog")
        dialog.get_by_text("Launch runs to materialize").first.wait_for()
        dialog.get_by_text("Select a partition or create one").click()
        tab.get_by_placeholder("Filter partitions").fill(EXPERIMENT)
        tab.get_by_role("menuitem").filter(
            has=tab.get_by_text(EXPERIMENT, exact=True)
        ).first.click()
        tab.keyboard.press("Escape")
        tab.screenshot(path=str(OUTPUT_DIR / "00_job_page_launch_one_partition.png"))
        dialog.get_by_role("button", name="Launch 1 run").click()
        deadline = time.monotonic() + 60.0
        launched: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not launched:
            launched = [r for r in partition_runs(server, EXPERIMENT) if r["jobName"] == JOB]
            time.sleep(2.0)
    finally:
        context.close()
    assert len(launched) == 1, f"the job page launched {launched}"
    run_id: str = launched[0]["runId"]
    status = wait_for_run(server, run_id)
    assert status == "SUCCESS", f"run {run_id} ended {status}:\n{server.log_tail()}"
    return run_id


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_ui_readme_job_page_path_runs_one_experiment_and_no_automatic_rerun(
    dagster_dev: DagsterDev, demo_run: str
) -> None:
    server = dagster_dev
    wait_until_idle(server)
    (run,) = [r for r in partition_runs(server, EXPERIMENT) if r["runId"] == demo_run]
    assert run["jobName"] == JOB and run["status"] == "SUCCESS"
    assert (server.storage_dir / "metrics" / f"{EXPERIMENT}.json").is_file()
    # the run did all the work: automation reruns nothing of demo after it (it used to rerun
    # metrics, then performance_report, for lack of a recorded asset selection)
    later = [r for r in partition_runs(server, EXPERIMENT) if r["runId"] != demo_run]
    assert later == [], f"extra runs of {EXPERIMENT}: {later}"


@pytest.mark.e2e
def test_ui_browser_demo_shows_assets_sharpe_equity_plot_report_and_freshness(
    dagster_dev: DagsterDev, demo_run: str, page: Any
) -> None:
    from playwright.sync_api import expect

    server = dagster_dev
    metrics_file = server.storage_dir / "metrics" / f"{EXPERIMENT}.json"
    expected_sharpe = float(json.loads(metrics_file.read_text())["sharpe"])

    # 1. Global asset lineage: the code location's asset groups.
    open_page(page, f"{server.base_url}/asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    for group in ("data", "backtest"):
        expect(page.locator("foreignObject").get_by_text(group, exact=True)).to_be_visible()
    page.screenshot(path=str(OUTPUT_DIR / "01_global_lineage.png"))

    # 2. The asset graph upstream of metrics, whole depth: every asset node by name.
    open_page(
        page,
        f"{server.base_url}/assets/metrics?view=lineage&lineageScope=upstream&lineageDepth=10",
    )
    graph = page.locator("foreignObject")
    expect(graph.get_by_text("metrics", exact=True).first).to_be_visible()
    page.screenshot(path=str(OUTPUT_DIR / "02_metrics_upstream_graph.png"))
    for name in UPSTREAM_OF_METRICS:
        expect(graph.get_by_text(name, exact=True).first).to_be_attached()

    # 3. The metrics asset, partition demo (the Overview tab shows whichever experiment
    #    materialized last): the sharpe entry and the sharpe row of the metrics table.
    open_page(page, f"{server.base_url}/assets/metrics?view=partitions&partition={EXPERIMENT}")
    sharpe_rows = page.locator("tr:not(:has(table))").filter(
        has=page.locator("td:first-child", has_text=re.compile(r"^\s*sharpe\s*$"))
    )
    expect(sharpe_rows.first).to_be_visible()
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
    page.screenshot(path=str(OUTPUT_DIR / "03_metrics_demo_partition.png"), full_page=True)

    # 4. The equity plot: the markdown metadata opens as an image with a PNG data URI.
    page.locator("tr", has_text="equity_curve").get_by_text("[Show Markdown]").first.click()
    plot = page.locator("img[src^='data:image/png']").first
    expect(plot).to_be_visible()
    width = plot.evaluate("img => img.complete ? img.naturalWidth : 0")
    assert width > 100, f"equity plot did not decode (naturalWidth={width})"
    page.screenshot(path=str(OUTPUT_DIR / "04_metrics_equity_plot.png"))

    # the Overview tab lists the asset's neighbours
    open_page(page, f"{server.base_url}/assets/metrics")
    expect(page.get_by_text("Latest materialization").first).to_be_visible()
    lines = {line.strip() for line in page.locator("body").inner_text().splitlines()}
    neighbours = {"backtest", "portfolio_states", "trades", "performance_report"}
    assert neighbours <= lines, f"upstream/downstream assets missing: {neighbours - lines}"

    # 5. The report opens inside the UI: performance_report's `report` entry is the whole
    #    report (headings, the metrics table, every plot).
    open_page(
        page, f"{server.base_url}/assets/performance_report?view=partitions&partition={EXPERIMENT}"
    )
    report_row = page.locator("tr", has=page.locator("td", has_text=re.compile(r"^\s*report\s*$")))
    report_row.get_by_text("[Show Markdown]").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading", name=f"ml4t experiment: {EXPERIMENT}")).to_be_visible()
    expect(dialog.get_by_role("heading", name="Headline metrics")).to_be_visible()
    expect(dialog.get_by_role("heading", name="Monthly returns")).to_be_attached()
    images = dialog.locator("img[src^='data:image/png']")
    assert images.count() >= 5, f"{images.count()} plots in the report"
    page.screenshot(path=str(OUTPUT_DIR / "05_report_in_ui.png"))

    # 6. Freshness: signals has a policy and is fresh after the run (the daemon evaluates it
    #    every 30 s); metrics has none.
    deadline = time.monotonic() + 120.0
    states: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        states = asset_states(server, ["signals", "metrics"], EXPERIMENT)
        if (states["signals"]["freshnessStatusInfo"] or {}).get("freshnessStatus") == "HEALTHY":
            break
        time.sleep(5.0)
    assert states["signals"]["freshnessStatusInfo"]["freshnessStatus"] == "HEALTHY", states
    assert states["metrics"]["freshnessStatusInfo"] is None, states


@pytest.mark.e2e
def test_ui_failing_check_shows_on_its_experiment_only(
    dagster_dev: DagsterDev, demo_run: str, finished_file_experiments: dict[str, str], page: Any
) -> None:
    from playwright.sync_api import expect

    server = dagster_dev
    assert finished_file_experiments == {"gamma": "SUCCESS", "bad": "FAILURE"}
    verdicts = {}
    for key in (EXPERIMENT, "gamma", "bad"):
        executions = server.graphql(
            CHECK_EXECUTIONS,
            {"key": {"path": ["prices"]}, "check": FAILING_CHECK, "partition": key},
        )["assetCheckExecutions"]
        assert executions, f"no {FAILING_CHECK} execution for {key}"
        verdicts[key] = (executions[0]["status"], executions[0]["evaluation"]["partition"])
    assert verdicts == {
        EXPERIMENT: ("SUCCEEDED", EXPERIMENT),
        "gamma": ("SUCCEEDED", "gamma"),
        "bad": ("FAILED", "bad"),
    }
    # the check's execution history in the UI: one verdict per experiment partition
    open_page(page, f"{server.base_url}/assets/prices?view=checks&checkDetail={FAILING_CHECK}")
    page.get_by_role("tab", name="Execution history").click()
    for key, shown in ((EXPERIMENT, "Passed"), ("gamma", "Passed"), ("bad", "Failed")):
        row = page.locator("tr", has=page.locator("td", has_text=re.compile(rf"^\s*{key}\s*$")))
        expect(row.first).to_be_visible()
        expect(row.first).to_contain_text(shown)
    page.screenshot(path=str(OUTPUT_DIR / "06_failing_check.png"), full_page=True)


@pytest.mark.e2e
def test_ui_prices_file_change_reruns_features_context_signals_of_that_experiment(
    dagster_dev: DagsterDev, finished_file_experiments: dict[str, str], page: Any
) -> None:
    server = dagster_dev
    assert finished_file_experiments["gamma"] == "SUCCESS"
    wait_until_idle(server)
    assert server.data_dir is not None
    before = {a: latest_materialization(server, a, "gamma") for a in RERUN_ON_NEW_PRICES}
    assert all(before.values()), before
    # changed at once: input_files_sensor compares with the file gamma's run read (recorded by
    # prices_raw), whether or not it has looked at gamma before
    # the vendor restates the prices: every price of the last year 3 % higher
    path = server.data_dir / "gamma_prices.parquet"
    restated = pl.read_parquet(path).with_columns(
        pl.when(pl.col("timestamp").dt.year() == 2012)
        .then(pl.col(c) * 1.03)
        .otherwise(pl.col(c))
        .alias(c)
        for c in ("open", "high", "low", "close")
    )
    changed_at = time.time()
    restated.write_parquet(path)
    deadline = time.monotonic() + RERUN_TIMEOUT_S
    after: dict[str, dict[str, Any] | None] = {}
    while time.monotonic() < deadline:
        after = {a: latest_materialization(server, a, "gamma") for a in RERUN_ON_NEW_PRICES}
        if all(
            (new := after[a]) is not None and float(new["timestamp"]) > float(old["timestamp"])
            for a, old in before.items()
            if old is not None
        ):
            break
        time.sleep(5.0)
    stale = [a for a in RERUN_ON_NEW_PRICES if after.get(a) == before[a]]
    assert not stale, f"not rerun after the prices change: {stale}\n{server.log_tail()}"
    wait_until_idle(server, RERUN_TIMEOUT_S)
    # no other experiment reran
    for key in (EXPERIMENT, "bad"):
        rerun = [r for r in partition_runs(server, key) if float(r["startTime"] or 0) > changed_at]
        assert rerun == [], f"{key} reran after gamma's prices changed: {rerun}"
    # the stored panel holds the new closes and features computed from them
    assert_panel_from_prices(read_value(server.storage_dir / "market_panel" / "gamma"), restated)
    # in the UI: the rerun of signals was an automatic run
    open_page(page, f"{server.base_url}/runs?q%5B0%5D=tag%3Aml4t%2Ftrigger%3Dautomation")
    page.screenshot(path=str(OUTPUT_DIR / "07_automatic_reruns.png"), full_page=True)
    signals_run = after["signals"]["runId"]  # type: ignore[index]
    (run,) = [r for r in partition_runs(server, "gamma") if r["runId"] == signals_run]
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags.get("ml4t/trigger") == "automation", tags


@pytest.mark.e2e
def test_ui_comparison_is_a_typed_table_with_one_row_per_experiment(
    dagster_dev: DagsterDev,
    demo_run: str,
    finished_file_experiments: dict[str, str],
    page: Any,
) -> None:
    from playwright.sync_api import expect

    server = dagster_dev
    wait_until_idle(server, RERUN_TIMEOUT_S)
    run_id = launch_job(server, "comparison_job")
    assert wait_for_run(server, run_id) == "SUCCESS", server.log_tail()
    expected_sharpe = float(
        json.loads((server.storage_dir / "metrics" / f"{EXPERIMENT}.json").read_text())["sharpe"]
    )
    open_page(page, f"{server.base_url}/assets/experiment_comparison")
    expect(page.get_by_text("Latest materialization").first).to_be_visible()
    row = page.locator("tr", has=page.locator("td", has_text=re.compile(r"^\s*comparison\s*$")))
    table = row.locator("table").first
    expect(table).to_be_visible()
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    assert {"experiment", "sharpe", "total_return", "max_drawdown", "config_hash"} <= set(
        headers
    ), headers
    body_rows = table.locator("tbody tr")
    experiments = {
        body_rows.nth(i).locator("td").nth(headers.index("experiment")).inner_text().strip()
        for i in range(body_rows.count())
    }
    assert experiments == {EXPERIMENT, "gamma"}, experiments  # bad has no metrics
    demo_row = body_rows.filter(has=page.get_by_text(EXPERIMENT, exact=True)).first
    shown = demo_row.locator("td").nth(headers.index("sharpe")).inner_text()
    assert_close_to_displayed(shown, expected_sharpe, "comparison sharpe")
    page.screenshot(path=str(OUTPUT_DIR / "08_comparison_table.png"), full_page=True)
    # typed columns: "Show schema" lists sharpe as a float column
    row.get_by_text("Show schema").first.click()
    schema = page.get_by_role("dialog")
    expect(schema.get_by_text("float64").first).to_be_visible()


@pytest.mark.e2e
def test_ui_code_change_marks_report_stale_and_leaves_prices_fresh(
    dagster_dev: DagsterDev, demo_run: str, page: Any
) -> None:
    from playwright.sync_api import expect

    server = dagster_dev
    wait_until_idle(server, RERUN_TIMEOUT_S)
    fresh = asset_states(server, ["performance_report", "prices"], EXPERIMENT)
    assert {k: v["staleStatus"] for k, v in fresh.items()} == {
        "performance_report": "FRESH",
        "prices": "FRESH",
    }
    edit_source(server.source, "ml4t_pipeline/lib/report.py", "\n# e2e: a report code change\n")
    location = repository_selector(server)["repositoryLocationName"]
    reloaded = server.graphql(RELOAD, {"name": location})["reloadRepositoryLocation"]
    assert reloaded.get("loadStatus") == "LOADED", reloaded
    deadline = time.monotonic() + 60.0
    states: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        states = asset_states(server, ["performance_report", "prices"], EXPERIMENT)
        if states["performance_report"]["staleStatus"] == "STALE":
            break
        time.sleep(2.0)
    report = states["performance_report"]
    assert report["staleStatus"] == "STALE", states
    assert any(c["category"] == "CODE" for c in report["staleCauses"]), report["staleCauses"]
    assert states["prices"]["staleStatus"] == "FRESH", states
    # the partitions view counts the experiment's partition as unsynced
    open_page(
        page, f"{server.base_url}/assets/performance_report?view=partitions&partition={EXPERIMENT}"
    )
    expect(page.get_by_text(re.compile(r"Unsynced \(1\)")).first).to_be_visible()
    page.screenshot(path=str(OUTPUT_DIR / "09_report_stale_after_code_change.png"), full_page=True)


def test_source_tree_links_repository_files_and_edits_stay_in_the_copy(tmp_path: Path) -> None:
    from tests.e2e.helpers import source_tree

    tree = source_tree(tmp_path / "src")
    report = tree / "ml4t_pipeline" / "lib" / "report.py"
    assert report.is_symlink() and report.resolve() == REPO_ROOT / "ml4t_pipeline/lib/report.py"
    versions = tree / "ml4t_pipeline" / "defs" / "versions.py"
    assert versions.is_file() and not versions.is_symlink()
    original = (REPO_ROOT / "ml4t_pipeline" / "lib" / "report.py").read_bytes()
    edit_source(tree, "ml4t_pipeline/lib/report.py", "# changed\n")
    assert not report.is_symlink() and report.read_bytes() == original + b"# changed\n"
    assert (REPO_ROOT / "ml4t_pipeline" / "lib" / "report.py").read_bytes() == original
