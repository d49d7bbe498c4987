"""Child process of ``test_sweep_1000_variants``: one sweep, its timings as a JSON line.

``python benchmarks/sweep_child.py SWEEP_FILE OUTPUT [--no-variants]``: runs the sweep into
OUTPUT, whose ``prepared/`` folder already holds the data (read back, not prepared again), with
the serial backend, and prints ``{"seconds": fan-out wall time (trials, metrics, stored
results), "prepare_seconds": reading the prepared data back, "total_seconds", "trials",
"variant_trials", "ok", "cpu_seconds": the child's CPU time (all threads, imports included),
"fan_out_cpu_seconds": its CPU time from the data being ready to the end of the sweep}``.
Its parent reads the child's peak RSS (:mod:`childproc`).
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> None:
    from ml4t_pipeline.lib.sweep.runner import run_sweep
    from ml4t_pipeline.lib.sweep.spec import load_sweep_file
    from ml4t_pipeline.sweeps import prepare_data

    started = time.perf_counter()
    sweep = load_sweep_file(argv[0])
    at_fan_out: list[float] = []
    run = run_sweep(
        sweep, argv[1], prepare=prepare_data, variants="--no-variants" not in argv,
        on_prepared=lambda pending, total: at_fan_out.append(time.process_time()),
    )  # fmt: skip
    fan_out_cpu = time.process_time() - at_fan_out[0]
    print(
        json.dumps(
            {
                "seconds": run.seconds,
                "prepare_seconds": run.prepare_seconds,
                "total_seconds": time.perf_counter() - started,
                "trials": len(run.records),
                "variant_trials": run.variant_trials,
                "ok": sum(r["status"] == "ok" for r in run.records),
                "cpu_seconds": time.process_time(),
                "fan_out_cpu_seconds": fan_out_cpu,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
