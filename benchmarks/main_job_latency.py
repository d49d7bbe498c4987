"""Main-job latency: ``ml4t run CONFIG`` end to end in fresh processes (issue 27).

Runs ``ml4t run CONFIG --output DIR`` ``--rounds`` times, each in a new process under
``/usr/bin/time -v``, and prints every round's wall time, user and system CPU and peak RSS with
their medians, plus the load average before and after. ``--profile FILE`` adds one more round
under ``cProfile`` (``python -m cProfile -o FILE``) and prints its top entries by cumulative
time. ``--steps`` adds one more round that prints the process CPU time (all threads) and the
peak RSS after each Dagster step, and the CPU of the imports. ``--repo PATH`` measures another
checkout (e.g. a ``git worktree`` of ``main``): it goes first on ``PYTHONPATH``.

Not a pytest benchmark: the figure is a whole fresh process (imports, Dagster, numba cache,
report), which pytest-benchmark cannot time. Usage, from the repository root::

    export ML4T_DATA_ROOT=../shared/data
    python benchmarks/main_job_latency.py configs/sp500_top25.yaml --rounds 5 \
        --profile /tmp/run.prof
"""

from __future__ import annotations

import argparse
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_FIELDS = {
    "wall": re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)"),
    "user": re.compile(r"User time \(seconds\): (\S+)"),
    "system": re.compile(r"System time \(seconds\): (\S+)"),
    "rss_kb": re.compile(r"Maximum resident set size \(kbytes\): (\d+)"),
}


def _seconds(text: str) -> float:
    parts = [float(p) for p in text.split(":")]
    total = 0.0
    for part in parts:
        total = total * 60 + part
    return total


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _command(config: Path, output: Path, profile: Path | None = None) -> list[str]:
    tail = ["run", str(config), "--output", str(output)]
    if profile is not None:
        return [
            sys.executable,
            "-m",
            "cProfile",
            "-o",
            str(profile),
            "-m",
            "ml4t_pipeline.cli",
            *tail,
        ]
    # what the `ml4t` console script calls (`console_main`; a checkout from before it: `main`)
    code = (
        "import sys, ml4t_pipeline.cli as cli\n"
        "if hasattr(cli, 'console_main'):\n"
        "    cli.console_main()\n"
        "sys.exit(cli.main())"
    )
    return [sys.executable, "-c", code, *tail]


_STEPS_CHILD = """
import atexit, collections, resource, sys, time
import dagster._core.execution.plan.execute_plan as plan  # private: wrapped to time each step

cpu, rss = collections.Counter(), {}
step_events = plan.dagster_event_sequence_for_step

def timed(step_context, *args, **kwargs):
    start = time.process_time()
    try:
        yield from step_events(step_context, *args, **kwargs)
    finally:
        cpu[step_context.step.key] += time.process_time() - start
        rss[step_context.step.key] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

plan.dagster_event_sequence_for_step = timed
before = time.process_time()
from ml4t_pipeline.cli import main
imports = time.process_time() - before

@atexit.register
def report():
    out = sys.stderr
    print(f"imports (ml4t_pipeline.cli) {imports:.2f} s CPU", file=out)
    for key, seconds in cpu.most_common():
        print(f"  {seconds:6.2f} s CPU  {key:28s} peak RSS after: {rss[key]:.0f} MB", file=out)
    print(f"  {sum(cpu.values()):6.2f} s CPU  all steps", file=out)
    print(f"process: {time.process_time():.2f} s CPU", file=out)

sys.exit(main())
"""


def steps_round(config: Path, env: dict[str, str], workdir: Path, cwd: Path | None) -> str:
    """One fresh ``ml4t run`` with the CPU time (process, all threads) and peak RSS of each
    Dagster step; returns the table it printed."""
    tail = ["run", str(config), "--output", str(workdir / "out")]
    cmd = [sys.executable, "-c", _STEPS_CHILD, *tail]
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ml4t run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    start = proc.stderr.find("imports (ml4t_pipeline.cli)")
    return proc.stderr[start:]


def one_round(
    config: Path, env: dict[str, str], workdir: Path, cwd: Path | None = None
) -> dict[str, float]:
    """One fresh ``ml4t run`` under ``/usr/bin/time -v``: wall, user, system (s), rss (MB).

    ``cwd``: the folder the child runs in (``--repo``'s checkout: ``python -c`` puts the working
    folder first on ``sys.path``, ahead of ``PYTHONPATH``)."""
    output = workdir / "out"
    cmd = ["/usr/bin/time", "-v", *_command(config, output)]
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ml4t run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    found = {name: pattern.search(proc.stderr) for name, pattern in _FIELDS.items()}
    missing = [name for name, match in found.items() if match is None]
    if missing:
        raise RuntimeError(f"/usr/bin/time -v printed no {missing}:\n{proc.stderr}")
    values = {name: match.group(1) for name, match in found.items() if match is not None}
    return {
        "wall": _seconds(values["wall"]),
        "user": float(values["user"]),
        "system": float(values["system"]),
        "rss_mb": int(values["rss_kb"]) / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repo", type=Path, default=None, help="checkout to measure")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile output file")
    parser.add_argument("--top", type=int, default=40, help="profile entries printed")
    parser.add_argument(
        "--steps", action="store_true", help="one more round: CPU and peak RSS per Dagster step"
    )
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.repo is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(args.repo.resolve()), env.get("PYTHONPATH", "")) if p
        )
    env.pop("DAGSTER_HOME", None)  # an ephemeral instance, as a first-time user has
    config = args.config.resolve()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ml4t-latency-") as tmp:
        workdir = Path(tmp)
        for i in range(args.rounds):
            before = _load()
            row = one_round(config, env, workdir, cwd=args.repo)
            rows.append(row)
            print(
                f"round {i + 1}: wall {row['wall']:.2f} s, user {row['user']:.2f} s, "
                f"sys {row['system']:.2f} s, peak RSS {row['rss_mb']:.0f} MB "
                f"(load {before} -> {_load()})",
                flush=True,
            )
            shutil.rmtree(workdir / "out", ignore_errors=True)
        if rows:
            med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            print(
                f"median of {len(rows)}: wall {med['wall']:.2f} s, user {med['user']:.2f} s, "
                f"sys {med['system']:.2f} s, peak RSS {med['rss_mb']:.0f} MB"
            )
        if args.steps:
            print(steps_round(config, env, workdir, args.repo), end="", flush=True)
            shutil.rmtree(workdir / "out", ignore_errors=True)
        if args.profile is not None:
            cmd = _command(config, workdir / "out", args.profile)
            subprocess.run(cmd, env=env, cwd=args.repo, check=True, capture_output=True)
            stats = pstats.Stats(str(args.profile))
            stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
