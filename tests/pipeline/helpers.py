"""Helpers shared by the pipeline tests (never imported from another test module).

- :func:`demo_config`, :func:`run_cli`, :func:`snapshot`: a demo config copy with edits, the
  ``ml4t`` CLI in-process with its output captured, and a folder's exact content;
- :func:`start_paused_run`: an ``ml4t run`` child paused at a named phase (the kill tests);
- :data:`SMALL`: a two-symbol demo experiment whose whole graph runs in ~10 s;
- :class:`DemoCliRun`: what the session fixture ``demo_cli_run`` (``conftest.py``) holds;
- :func:`assert_panel_from_prices`: a stored market panel holds a prices file's last closes
  and the 20-bar SMA computed from that file (no value from an older file).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ml4t_pipeline.cli import main
from ml4t_pipeline.lib import output as output_lib
from tests.conftest import REPO_ROOT


@dataclass(frozen=True)
class DemoCliRun:
    """``ml4t run <base>/configs/demo.yaml --output <base>/out`` and what it printed.

    ``config`` is a copy of ``configs/demo.yaml`` (same bytes, so the same ``config_sha256``);
    ``base`` holds only ``configs`` and ``out``; ``home`` is the ``DAGSTER_HOME`` the run was
    recorded in (its only run).
    """

    base: Path
    config: Path
    out: Path
    home: Path
    code: int
    stdout: str
    stderr: str


TWO_SYMBOLS = ("prices: demo", "prices: demo\n  symbols: [AAPL, MSFT]")
"""A :func:`demo_config` replacement restricting the demo to two symbols: the whole graph in
less time, for tests whose point is not the panel's size (locks, kills, output swaps)."""


def demo_config(folder: Path, *replacements: tuple[str, str]) -> Path:
    """A copy of configs/demo.yaml in ``folder`` (stem ``demo``) with text replacements."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (REPO_ROOT / "configs" / "demo.yaml").read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    path = folder / "demo.yaml"
    path.write_text(text)
    return path


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``main(argv)`` with stdout and stderr captured (works in module-scoped fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (the folder's exact content)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


PAUSED = "ml4t-test-paused"


def child_env(phase: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}  # ephemeral instance
    env[output_lib.PAUSE_ENV] = phase
    env[output_lib.PAUSE_SECONDS_ENV] = "120"
    return env


def start_paused_run(config: Path, out: Path, phase: str) -> subprocess.Popen[str]:
    """Start ``ml4t run`` as a child and return once it is paused at ``phase``."""
    child = subprocess.Popen(
        [sys.executable, "-m", "ml4t_pipeline.cli", "run", str(config), "--output", str(out)],
        env=child_env(phase),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stderr is not None
    seen: list[str] = []
    reached = threading.Event()

    def watch() -> None:
        assert child.stderr is not None
        for line in child.stderr:  # read to the end so the pipe never fills
            seen.append(line)
            if line.startswith(f"{PAUSED} {phase} "):
                reached.set()

    threading.Thread(target=watch, daemon=True).start()
    if not reached.wait(timeout=180):
        child.kill()
        child.wait()
        pytest.fail(f"child never reached phase {phase}: {''.join(seen)[-2000:]}")
    return child


# Two demo symbols, weekly top-1 with a stop: a real run of the whole graph in ~10 s.
SMALL: dict[str, Any] = {
    "name": "api_small",
    "data": {"prices": "demo", "symbols": ["AAPL", "MSFT"], "max_fill_bars": 0},
    "strategy": {"type": "TopN", "signal": "score", "n": 1, "rebalance_every": 5},
    "risk_rules": [{"type": "PriceBasedStopLoss", "stop_pct": 0.05}],
    "execution": {"commission": {"type": "Percentage", "rate": 0.001}, "initial_cash": 100000},
}


def assert_panel_from_prices(panel: Any, prices: Any) -> None:
    """The market panel's last bar holds ``prices``' last closes for every symbol, and its
    ``sma_20`` is the mean of the last 20 closes of ``prices`` (polars frames; ``prices`` in
    the prices schema)."""
    import polars as pl

    last = panel.filter(pl.col("timestamp") == pl.col("timestamp").max()).with_columns(
        pl.col("symbol").cast(pl.String)
    )
    new_close = prices.filter(pl.col("timestamp") == pl.col("timestamp").max()).drop("timestamp")
    joined = last.join(new_close, on="symbol", suffix="_file")
    assert joined.height == new_close.height
    assert (joined["close"] == joined["close_file"]).all()
    expected = (
        prices.sort("symbol", "timestamp")
        .group_by("symbol", maintain_order=True)
        .agg(pl.col("close").tail(20).mean().alias("sma_expected"))
    )
    check = last.join(expected, on="symbol")
    assert check.height == new_close.height
    assert ((check["sma_20"] - check["sma_expected"]).abs() < 1e-9).all()
