"""Helpers of the end-to-end tests: start, query and stop a real ``dagster dev``, a code
location copy a test may edit, and where Chromium and the screenshots are.

``dagster dev`` runs on a free local port in its own process group, with a temporary
``DAGSTER_HOME``, storage folder and configs folder, and is always stopped by its PID (SIGTERM
to the group, then SIGKILL after a grace period). The fixtures (``conftest.py``) use these.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import REPO_ROOT

CHROMIUM = os.environ.get("ML4T_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT_DIR = REPO_ROOT / "test-output" / "e2e"
SERVER_START_TIMEOUT_S = 120.0
STOP_GRACE_S = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DagsterDev:
    """A running ``dagster dev``: its URL, process and the folders it was given."""

    base_url: str
    process: subprocess.Popen[bytes]
    home: Path
    storage_dir: Path
    configs_dir: Path
    log_path: Path
    source: Path = REPO_ROOT
    data_dir: Path | None = None

    def log_tail(self, n_chars: int = 4000) -> str:
        """The end of the server's combined stdout/stderr (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return "(no log)"

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST a GraphQL query; return ``data`` or raise AssertionError naming the errors."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.base_url}/graphql",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise AssertionError(f"GraphQL errors: {payload['errors']}")
        data: dict[str, Any] = payload["data"]
        return data


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the process group led by ``process`` (SIGTERM, then SIGKILL after a grace); the
    group's other processes are killed even when the leader has already exited."""
    pgid = process.pid  # start_new_session=True: the group id is the leader's PID
    if process.poll() is None:
        try:
            os.killpg(pgid, signal.SIGTERM)
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            process.wait(timeout=STOP_GRACE_S)
        except ProcessLookupError:
            return
    # children (webserver, daemon, code servers, run workers) share the group: clean them up too
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def wait_until_answering(server: DagsterDev) -> None:
    """Wait until the server answers and its code location is loaded (AssertionError if it
    exits or takes longer than :data:`SERVER_START_TIMEOUT_S`)."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(
                f"dagster dev exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"{server.base_url}/server_info", timeout=5) as resp:
                if resp.status == 200:
                    data = server.graphql(
                        "{ workspaceOrError { ... on Workspace { locationEntries {"
                        " loadStatus } } } }"
                    )
                    entries = data["workspaceOrError"]["locationEntries"]
                    if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                        return
        except (urllib.error.URLError, ConnectionError, TimeoutError, AssertionError):
            pass
        time.sleep(1.0)
    raise AssertionError(
        f"dagster dev did not answer within {SERVER_START_TIMEOUT_S:.0f} s:\n{server.log_tail()}"
    )


def source_tree(dest: Path) -> Path:
    """A copy of the code location the test may edit without touching the repository.

    ``engine`` is a symlink to the repository's (its compiled-kernel cache stays shared);
    ``ml4t_pipeline`` is a tree of symlinks to the repository's files, except
    ``defs/versions.py``, which is copied so that its source root (the folder whose files the
    code versions hash) is ``dest``. Replacing one of the symlinks by an edited copy is a code
    change the running server sees after a reload; the repository stays as it is.
    """
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "engine").symlink_to(REPO_ROOT / "engine", target_is_directory=True)
    shutil.copy2(REPO_ROOT / "workspace.yaml", dest / "workspace.yaml")
    package = REPO_ROOT / "ml4t_pipeline"
    for path in sorted(package.rglob("*.py")):
        target = dest / "ml4t_pipeline" / path.relative_to(package)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.relative_to(package).as_posix() == "defs/versions.py":
            shutil.copy2(path, target)
        else:
            target.symlink_to(path)
    return dest


def edit_source(tree: Path, relative: str, appended: str) -> Path:
    """Replace ``tree/relative`` (a symlink of :func:`source_tree`) by a copy of the file with
    ``appended`` at its end: a code change."""
    target = tree / relative
    text = target.read_text(encoding="utf-8")
    target.unlink()
    target.write_text(text + appended, encoding="utf-8")
    return target


def start_dagster_dev(
    root: Path,
    log_path: Path,
    *,
    sigint_ignored: bool = False,
    source: Path = REPO_ROOT,
    env_extra: dict[str, str] | None = None,
) -> DagsterDev:
    """Start ``dagster dev`` (through :mod:`ml4t_pipeline.devserver`) on a free port, in its own
    process group, with ``home``, ``storage`` and ``configs`` folders made under ``root``.

    ``source`` is the folder holding the code location (``workspace.yaml``, ``ml4t_pipeline``,
    ``engine``; a :func:`source_tree` to change code during the test). ``sigint_ignored=True``
    starts it the way a non-interactive shell starts a background job (``dagster dev &`` in a
    script): SIGINT ignored, inherited across ``exec``. Returns at once;
    :func:`wait_until_answering` waits for the code location.
    """
    home, storage, configs = root / "home", root / "storage", root / "configs"
    for folder in (home, storage, configs):
        folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    python_path = os.pathsep.join(p for p in (str(source), os.environ.get("PYTHONPATH", "")) if p)
    env = os.environ | {
        "DAGSTER_HOME": str(home),
        "ML4T_STORAGE_DIR": str(storage),
        "ML4T_CONFIGS_DIR": str(configs),
        "ML4T_EXECUTOR": "in_process",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": python_path,
    }
    env |= env_extra or {}
    env.pop("COV_CORE_SOURCE", None)  # no coverage collection in the server's processes
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ml4t_pipeline.devserver",
                "-w",
                str(source / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=source,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_ignore_sigint if sigint_ignored else None,  # noqa: PLW1509
        )
    return DagsterDev(
        base_url=f"http://127.0.0.1:{port}",
        process=process,
        home=home,
        storage_dir=storage,
        configs_dir=configs,
        log_path=log_path,
        source=source,
        data_dir=root / "data",
    )


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
