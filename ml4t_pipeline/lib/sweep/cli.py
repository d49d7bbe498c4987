"""``ml4t sweep CONFIG --output DIR``: run (or resume) a parameter sweep.

Registered in :func:`ml4t_pipeline.cli.build_parser` by :func:`add_sweep_parser`. Prints the
counts, the best trial, the Deflated Sharpe Ratio and the PBO; writes ``sweep_results.parquet``,
``sweep_summary.json`` and ``sweep_report.html`` into DIR. A progress bar (trials done/total,
ETA) is drawn on stderr when a person watches (:mod:`ml4t_pipeline.lib.progress`).

Exit codes: 0 the sweep ran (failed trials are recorded, not fatal), 1 the data preparation
failed or no trial succeeded, 2 a bad sweep file (its message names the path), a sweep folder in
use by another sweep or run ("in use by pid N", its lock ``DIR.lock``), or a full disk.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_sweep_parser", "cmd_sweep"]


def add_sweep_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``sweep`` subcommand to the ``ml4t`` parser's subparsers ``sub``."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "sweep", help="run a parameter sweep (grid or random) with DSR and PBO across trials"
    )
    parser.add_argument("config", help="experiment file (YAML or JSON) with a sweep: block")
    parser.add_argument("--output", "-o", required=True, help="sweep folder (resumed if it exists)")
    parser.add_argument(
        "--backend",
        choices=["serial", "processes", "ray"],
        default=None,
        help="where the trials run (default: the file's sweep.backend, else serial)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="parallel workers (default: file, else CPUs)"
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to send the data and trials to (default: the file's "
        "sweep.ray_address, else $RAY_ADDRESS, else a local Ray on 127.0.0.1)",
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="run trials again whose record is 'failed'"
    )
    parser.set_defaults(func=cmd_sweep)
    return parser


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run the ``sweep`` subcommand; returns the exit code."""
    from ml4t_pipeline.config import ConfigError
    from ml4t_pipeline.lib.sweep.api import Sweep
    from ml4t_pipeline.lib.sweep.runner import SweepError

    try:
        sweep = Sweep.from_file(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        backend, workers = sweep.backend_and_workers(args.backend, args.workers)
    except ValueError as exc:
        print(f"error: --workers/--backend: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output)
    print(f"sweep {sweep.name}: {len(sweep)} trials, backend {backend}"
          + ("" if backend == "serial" else f" x{workers}"), file=sys.stderr)  # fmt: skip
    if backend == "ray":
        address = (
            args.ray_address or sweep.sweep_file.spec.ray_address or os.environ.get("RAY_ADDRESS")
        )
        print(
            f"sweep {sweep.name}: the prepared data and the trials go to the Ray cluster at "
            f"{address}"
            if address
            else f"sweep {sweep.name}: on a local Ray listening on 127.0.0.1 only",
            file=sys.stderr,
        )
    try:
        result = sweep.run(
            out,
            backend=backend,
            workers=workers,
            ray_address=args.ray_address,
            retry_failed=args.retry_failed,
        )
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    run, summary = result.run, result.summary
    print(
        f"sweep {sweep.name}: {summary['n_trials']} trials ({summary['n_ok']} ok, "
        f"{summary['n_failed']} failed; {summary['n_computed']} computed now, "
        f"{summary['n_reused']} reused) in {run.seconds:.1f} s "
        f"+ {run.prepare_seconds:.1f} s data preparation"
    )
    best = summary["best_trial"]
    if best is not None:
        params = ", ".join(f"{k}={v}" for k, v in best["params"].items())
        print(f"  best trial    {best['trial']} ({params}): Sharpe {best['sharpe']:.3f}")
    dsr, pbo = summary["deflated_sharpe"], summary["pbo"]
    if dsr.get("dsr") is not None:
        print(
            f"  deflated SR   {dsr['dsr']:.3f} (threshold Sharpe "
            f"{dsr['expected_max_sharpe_annual']:.3f} for {dsr['n_trials']} trials)"
        )
    else:
        print(f"  deflated SR   n/a ({dsr.get('reason')})")
    print(f"  PBO           {pbo['pbo']:.3f}" if pbo.get("pbo") is not None
          else f"  PBO           n/a ({pbo.get('reason')})")  # fmt: skip
    print(f"report: {(out / 'sweep_report.html').resolve()}")
    return 0 if summary["n_ok"] else 1
