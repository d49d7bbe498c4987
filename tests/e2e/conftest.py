"""Fixtures of the browser end-to-end test: a real ``dagster dev`` and headless Chromium.

``dagster dev`` runs on a free local port in its own process group, with a temporary
``DAGSTER_HOME``, storage folder and configs folder, and is always stopped by its PID (SIGTERM
to the group, then SIGKILL after a grace period). Chromium is Debian's ``/usr/bin/chromium``
driven by the ``playwright`` package (never a browser downloaded by ``playwright install``).

When Chromium or playwright is missing the test is skipped with the reason printed; set
``ML4T_REQUIRE_E2E=1`` (CI does, once it has installed them) to turn that skip into a failure.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    CHROMIUM,
    OUTPUT_DIR,
    DagsterDev,
    source_tree,
    start_dagster_dev,
    stop_process_group,
    wait_until_answering,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end-to-end test with dagster dev and a browser")


def _skip_or_fail(reason: str) -> None:
    print(f"\n[e2e] {reason}", file=sys.stderr)
    if os.environ.get("ML4T_REQUIRE_E2E", "") not in ("", "0"):
        pytest.fail(f"{reason} (ML4T_REQUIRE_E2E is set)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Path of the Chromium binary; skip (with the reason) when it or playwright is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _skip_or_fail("browser test skipped: the 'playwright' package is not installed")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        _skip_or_fail(f"browser test skipped: Chromium not found at {CHROMIUM} (apt chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def dagster_dev(
    chromium_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DagsterDev]:
    """Start ``dagster dev`` on a free port with temporary home, storage, configs and data
    folders, serving a :func:`source_tree` copy of the code location (a test edits it).

    The configs folder starts empty; tests add experiments themselves. ``ML4T_DATA_ROOT`` is
    the ``data`` folder (experiments' input files live there); ``ML4T_SENSOR_INTERVAL_S=10``.
    Steps run with the in-process executor (``ML4T_EXECUTOR=in_process``): on a 2-core machine
    each step of the multiprocess executor spends ~15 s importing the code location, which would
    triple the run.
    """
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    root = tmp_path_factory.mktemp("dagster_dev")
    (root / "data").mkdir()
    server = start_dagster_dev(
        root,
        OUTPUT_DIR / "dagster_dev.log",
        source=source_tree(root / "source"),
        # the sensors look every 10 s instead of 30 s: each wait for a sensor-launched run or
        # an automatic rerun is 20 s shorter, for the same sequence of ticks
        env_extra={"ML4T_DATA_ROOT": str(root / "data"), "ML4T_SENSOR_INTERVAL_S": "10"},
    )
    try:
        wait_until_answering(server)
        yield server
    finally:
        stop_process_group(server.process)
