"""RiskManager overhead on W1 (issue 5) counted in CPU instructions, which do not depend on
the load of a shared machine.

Run: ``ML4T_DATA_ROOT=../shared/data python benchmarks/risk_overhead_instructions.py``
(needs ``valgrind``; about 6 minutes on 2 cores).

Each configuration of ``test_engine_risk_overhead.py`` (``none``, ``3-inert``, ``3``, and any
given on the command line) runs in a child Python under ``valgrind --tool=callgrind`` twice:
once with 1 backtest and once with 3, after the same setup. Half the difference of the two
instruction counts is the cost of one backtest, without interpreter start-up, imports, data
loading or the first call's compilation. A first child run of each configuration fills the
numba cache for valgrind's emulated CPU, so no counted run compiles.

Instructions are not time (cache misses and branch mispredictions differ), but the
difference between two configurations is deterministic: it is the extra work itself.
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _child(kind: str, n_runs: int) -> None:
    """Set up W1 and run ``n_runs`` backtests of configuration ``kind``."""
    sys.path.insert(0, str(HERE))
    from conftest import data_root, momentum_panel
    from test_engine_risk_overhead import run_w1

    from engine import MarketData

    warnings.simplefilter("ignore", UserWarning)
    panel = momentum_panel(data_root() / "sp500_5yr_daily_ohlcv.parquet")
    data = MarketData.from_frame(panel, signal_columns=["mom_20"])
    for _ in range(n_runs):
        run_w1(data, kind)


def _instructions(kind: str, n_runs: int) -> int:
    """Instructions of a child doing the setup and ``n_runs`` backtests of ``kind``."""
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            kind,
            str(n_runs),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"I\s+refs:\s+([\d,]+)", proc.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{proc.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main(kinds: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda kind: _instructions(kind, 1), kinds))  # numba cache for valgrind
        ones = dict(zip(kinds, pool.map(lambda kind: _instructions(kind, 1), kinds), strict=True))
        threes = dict(zip(kinds, pool.map(lambda kind: _instructions(kind, 3), kinds), strict=True))
    per_run = {kind: (threes[kind] - ones[kind]) / 2 for kind in kinds}
    base = per_run["none"]
    print(f"{'case':8s} {'instructions per backtest':>26s} {'ratio':>7s}")
    for kind in kinds:
        print(f"{kind:8s} {per_run[kind]:26,.0f} {per_run[kind] / base:7.4f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]))
    else:
        main(["none", "3-inert", "3", *sys.argv[1:]])
