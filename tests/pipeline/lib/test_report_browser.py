"""The full HTML report opens in headless Chromium, offline, and shows every section.

The run is the demo experiment (real daily OHLCV shipped in bokeh-sampledata, so no data folder
is needed); the report is rebuilt from its output folder with :func:`rebuild_report`. Chromium
runs with a dead proxy and background networking off, so any request for a remote resource
would fail; the report must not need one. The screenshot is saved under ``test-output/``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest

from ml4t_pipeline.lib import attribution as att
from ml4t_pipeline.lib import output as output_lib
from ml4t_pipeline.lib.report import REPORT_SECTIONS, rebuild_report
from ml4t_pipeline.runner import run_prices
from tests.conftest import REPO_ROOT
from tests.pipeline.helpers import DemoCliRun

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
SCREENSHOT = REPO_ROOT / "test-output" / "report_full.png"
# sections that must carry at least one inline PNG
SECTIONS_WITH_IMAGES = (
    "equity",
    "benchmark",
    "underwater",
    "monthly-returns",
    "rolling-sharpe",
    "exit-reasons",
    "mfe-mae",
    "signal-deciles",
)


def _chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, demo_cli_run: DemoCliRun) -> dict[str, Any]:
    # a copy of the session's demo run: rebuild_report rewrites files in the folder
    out = tmp_path_factory.mktemp("demo_run") / "out"
    shutil.copytree(demo_cli_run.out, out)
    # the stored prices as `ml4t report` reads them (lib does not know the storage layout)
    prices = run_prices(out, output_lib.read_manifest(out))
    assert prices is not None
    path = rebuild_report(out, prices=prices, periods_per_year=252, risk_free_rate=0.0, horizon=5)
    return {"out": out, "path": path, "html": path.read_text(encoding="utf-8")}


@pytest.fixture(scope="module")
def browser_dom(report: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> str:
    chromium = _chromium()
    if chromium is None:
        reason = f"no Chromium found (looked for {CHROMIUM_NAMES}); browser test skipped"
        print(reason)
        pytest.skip(reason)
    profile = tmp_path_factory.mktemp("chromium_profile")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-quic",
        "--no-first-run",
        "--proxy-server=127.0.0.1:9",  # a dead proxy: any network request fails
        f"--user-data-dir={profile}",
        "--window-size=1200,12000",  # tall enough for the whole report
    ]
    url = report["path"].resolve().as_uri()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    shot = subprocess.run(
        [chromium, *flags, f"--screenshot={SCREENSHOT}", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout


def _section(dom: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', dom, re.S)
    assert match, f"section {section_id!r} not in the rendered page"
    return match.group(1)


def test_report_browser_shows_every_section_in_order(browser_dom: str) -> None:
    positions = [browser_dom.find(f'<section id="{s}">') for s in REPORT_SECTIONS]
    missing = [s for s, p in zip(REPORT_SECTIONS, positions, strict=True) if p < 0]
    assert not missing, f"sections missing from the rendered page: {missing}"
    assert positions == sorted(positions)
    for section_id in REPORT_SECTIONS:
        assert "<h2>" in _section(browser_dom, section_id) or section_id == "lineage"


def test_report_browser_sections_have_images_and_reconciliations(browser_dom: str) -> None:
    for section_id in SECTIONS_WITH_IMAGES:
        body = _section(browser_dom, section_id)
        assert '<img src="data:image/png;base64,' in body, section_id
    for section_id in ("exit-reasons", "signal-deciles", "regimes", "costs"):
        body = _section(browser_dom, section_id)
        assert "reconciliation (" in body and "(ok)" in body, section_id
        assert att.TOTAL in body, section_id
    assert "ic_mean" in _section(browser_dom, "information-coefficient")
    for metric in ("alpha", "beta", "information_ratio", "cost_drag", "expectancy"):
        assert f">{metric}<" in _section(browser_dom, "metrics"), metric


def test_report_browser_screenshot_saved(browser_dom: str) -> None:
    assert SCREENSHOT.is_file()
    head = SCREENSHOT.read_bytes()[:8]
    assert head == b"\x89PNG\r\n\x1a\n"
    assert SCREENSHOT.stat().st_size > 50_000  # a rendered page, not a blank one


def test_report_needs_no_network(report: dict[str, Any]) -> None:
    html = report["html"]
    remote = re.findall(r'(?:src|href)\s*=\s*["\']?(?:https?:)?//', html, re.I)
    assert not remote, f"remote references in the report: {remote[:5]}"
    assert "<script" not in html.lower()
    assert "@import" not in html and "url(http" not in html


def test_report_rebuild_writes_attribution_files(report: dict[str, Any]) -> None:
    for name in [*att.ATTRIBUTION_FILES.values(), "attribution_summary.json"]:
        assert (report["out"] / name).is_file(), name
