"""How the ``ml4t`` console script ends (issue 27: no interpreter teardown after the command)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

_PROLOGUE = """
import atexit, os, sys, types
from pathlib import Path

marks = Path(sys.argv[1])
sys.argv = ["ml4t", "run", str(marks / "missing.yaml")]

fd = os.open(marks / "teardown", os.O_WRONLY | os.O_CREAT)


class Teardown:
    def __del__(self, write=os.write, fd=fd):  # bound now: modules are emptied at teardown
        write(fd, b"freed")


probe = types.ModuleType("ml4t_teardown_probe")  # a module's objects are freed by the teardown
probe.kept = Teardown()
sys.modules[probe.__name__] = probe
del probe
atexit.register(lambda: (marks / "atexit").write_text("ran"))
print("printed before the command", end=" ")  # sits in stdout's buffer (a pipe)
"""


def _console_script(body: str, marks: Path) -> subprocess.CompletedProcess[str]:
    """Run the prologue and ``body`` in a fresh interpreter with block-buffered stdout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", _PROLOGUE + body, str(marks)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )


def test_console_main_runs_exit_handlers_flushes_streams_and_skips_teardown(
    tmp_path: Path,
) -> None:
    done = _console_script("from ml4t_pipeline.cli import console_main\nconsole_main()\n", tmp_path)
    assert done.returncode == 2  # main's code for a missing config file
    assert "missing.yaml" in done.stderr
    assert done.stdout.startswith("printed before the command")
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "teardown").read_text() == ""  # no teardown


def test_console_main_exits_the_ordinary_way_while_another_thread_runs(tmp_path: Path) -> None:
    body = (
        "import threading, time\n"
        "def late():\n"
        "    time.sleep(0.2)\n"
        "    (marks / 'thread').write_text('finished')\n"
        "threading.Thread(target=late).start()\n"
        "from ml4t_pipeline.cli import console_main\n"
        "console_main()\n"
    )
    done = _console_script(body, tmp_path)
    assert done.returncode == 2
    assert (tmp_path / "thread").read_text() == "finished"  # waited for, not cut off
    assert (tmp_path / "atexit").read_text() == "ran"
