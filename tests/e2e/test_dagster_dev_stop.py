"""SIGTERM to the ``dagster dev`` process group stops every process of it within 30 s.

Started the way a script's background job is (``dagster dev &`` without job control: SIGINT
ignored, inherited), a plain ``python -m dagster dev`` ignores SIGTERM, because Dagster gives
SIGTERM the disposition SIGINT has: every process of the group was still up 40 s after the
signal. ``python -m ml4t_pipeline.devserver`` (what the README's UI section and the e2e fixture
start) restores the default dispositions first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.e2e.helpers import (
    OUTPUT_DIR,
    DagsterDev,
    start_dagster_dev,
    stop_process_group,
    wait_until_answering,
)

STOP_LIMIT_S = 30.0


def group_alive(leader: subprocess.Popen[bytes], pgid: int) -> bool:
    """Whether any process of group ``pgid`` still exists (the exited leader reaped first: a
    zombie still counts as a member of its group)."""
    leader.poll()
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _running_group(server: DagsterDev) -> str:
    result = subprocess.run(
        ["ps", "-o", "pid,stat,args", "-g", str(server.process.pid)],
        capture_output=True,
        text=True,
        check=False,
    )
    return "\n".join(line[:160] for line in result.stdout.splitlines())


@pytest.mark.e2e
def test_devserver_sigterm_to_group_started_with_sigint_ignored_stops_all_within_30s(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = start_dagster_dev(
        tmp_path_factory.mktemp("dagster_dev_stop"),
        OUTPUT_DIR / "dagster_dev_stop.log",
        sigint_ignored=True,
    )
    pgid = server.process.pid  # start_new_session=True: the leader's PID is the group id
    try:
        wait_until_answering(server)
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_LIMIT_S
        while group_alive(server.process, pgid) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _running_group(server) if group_alive(server.process, pgid) else ""
        assert not left, (
            f"processes of the dagster dev group still running {STOP_LIMIT_S:.0f} s after "
            f"SIGTERM:\n{left}\n{server.log_tail()}"
        )
        assert server.process.wait(timeout=1) == 0, server.log_tail()
        assert "Dagster services shut down." in server.log_tail(20_000)
    finally:
        stop_process_group(server.process)
