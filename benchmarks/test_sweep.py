"""Sweep benchmarks (issue 15): trials per second serial vs Ray, per-trial overhead, 1,000 trials.

Run: ``ML4T_DATA_ROOT=../shared/data python -m pytest benchmarks/test_sweep.py --no-cov -s``
(needs the ``ray`` extra; about 5 minutes on a quiet 2-core machine).

The workload is ``configs/sweeps/sp500_top25_sweep.yaml``: the S&P 500 top-25 experiment of
``configs/sp500_top25.yaml`` (505 symbols × 1,259 days, walk-forward ridge scores, 5 % stop,
60-bar time exit, VIX context) over a 100-trial grid of ``strategy.n`` × ``rebalance_every`` ×
``stop_pct``. The data is prepared once (outside the timings); every figure times the fan-out
only, each run into a fresh folder (nothing reused).

- ``test_sweep_100_serial_vs_ray``: wall time of the 100 trials serial and on Ray with 2 workers
  (a local Ray started before the timing; ``ray.init`` is reported separately), trials/s of
  each, speed-up = serial / Ray wall time, actor start-up included (target ≥ 1.7×), and the
  per-trial overhead = ((Ray wall − start-up) × workers − Σ trial times under Ray) / Σ trial
  times under Ray: the share of the workers' time not spent in backtests (scheduling, result
  transfer, the idle tail). Target < 10 %. Start-up (each actor fetches the panel from the
  object store once and runs one unrecorded warm-up trial: imports, numba's first calls) is
  reported apart, and the overhead with it too. A
  trial's own time is measured inside its worker (backtest + metrics), wall and CPU: a mean
  trial wall time above its CPU time means other processes took the cores (the machine is
  shared), which the load averages before/after also show.
- ``test_sweep_1000_trials_ray``: a 1,000-trial random sweep over the same three parameters on
  Ray with 2 workers. Target: under 5 minutes (300 s) here. Afterwards the first 100 of the same
  trials run serially (their metrics must equal Ray's); Ray's trials/s over that serial rate is
  the speed-up with the start-up amortised over 1,000 trials.
- ``test_sweep_statistics_1000_trials``: the statistics ``write_outputs`` computes across the
  trials (DSR, PBO with 16 splits, SPA + Reality Check + StepM at 1,000 bootstrap
  replications, per-trial PSR p-values with Holm and BY) on a 1,259 × 1,000 matrix of seeded
  Gaussian returns, the shape of the 1,000-trial S&P sweep (their cost depends on the shape
  only). No target: the figures say what ``sweep.stats.bootstrap_reps`` costs. Needs no data
  and no Ray: ``pytest benchmarks/test_sweep.py -k statistics --no-cov -s``.

- ``test_sweep_1000_variants`` (issue 30): a 1,000-variant grid of the same experiment
  (``VARIANT_GRID``: 10 values each of ``strategy.n``, ``stop_pct`` and ``rebalance_every``)
  on the serial backend, where all trials qualify for the compiled variant driver
  (``engine/compiled/variants.py``). It runs in a child process whose ``prepared/`` folder holds
  the data already (read back, not prepared; the engine arrays are built from it before the
  fan-out). Figures: the fan-out wall time (backtests, metrics and every trial's stored
  results, as ``run_sweep`` times it), its CPU time, and the child's peak RSS. Targets: 5 s
  wall, 2 GiB. Then every 20th trial runs one at a time in this process (``variants=False``).
  Their stored metrics must equal the child's, and their rate gives the speed-up. Not
  included: ``write_outputs``, whose SPA / Reality Check / StepM bootstrap is timed apart by
  ``test_sweep_statistics_1000_trials``. Its replications are set by
  ``sweep.stats.bootstrap_reps``.
- ``test_sweep_variants_vs_vectorbt``: 50 variants (n x stop_pct) of the issue-7 reference
  workload, one variant pass against VectorBT ``from_order_func`` called once per variant, in
  this process (the ``validation`` extra). Run them with
  ``pytest benchmarks/test_sweep.py -k "1000_variants or vs_vectorbt" --no-cov -s`` (no Ray).

Figures go into ``benchmark.extra_info`` and are printed; ``--benchmark-json=FILE`` keeps them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ml4t_pipeline.lib.sweep.runner import PreparedData, TrialStore, ray_available, run_sweep
from ml4t_pipeline.lib.sweep.spec import (
    RandomSpec,
    SweepFile,
    expand_trials,
    load_sweep_file,
)
from ml4t_pipeline.sweeps import prepare_data

REPO_ROOT = Path(__file__).resolve().parents[1]
SWEEP_FILE = REPO_ROOT / "configs" / "sweeps" / "sp500_top25_sweep.yaml"
WORKERS = 2
TARGET_SPEEDUP = 1.7
TARGET_OVERHEAD = 0.10
TARGET_1000_SECONDS = 300.0
SAMPLE = 100

needs_ray = pytest.mark.skipif(not ray_available(), reason="needs the ray extra")


def _data_root() -> Path:
    env = os.environ.get("ML4T_DATA_ROOT")
    return Path(env).resolve() if env else (REPO_ROOT.parent / "shared" / "data").resolve()


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep folder the data is prepared in (its ``prepared/`` is reused by children).

    The code version is pinned for the module (``ML4T_CODE_VERSION``, inherited by the
    children): the prepared data and the trial keys stay valid if a commit lands meanwhile."""
    from ml4t_pipeline.lib.sweep.trials import CODE_VERSION_ENV, sweep_code_version

    os.environ.setdefault(CODE_VERSION_ENV, f"benchmark-{sweep_code_version()}")
    return tmp_path_factory.mktemp("prepare")


@pytest.fixture(scope="module")
def sweep_and_data(prepared_dir: Path) -> tuple[SweepFile, dict[str, PreparedData]]:
    root = _data_root()
    if not (root / "sp500_5yr_daily_ohlcv.parquet").exists():
        pytest.skip(f"real market data not found under {root} (set ML4T_DATA_ROOT)")
    os.environ.setdefault("ML4T_DATA_ROOT", str(root))
    sweep = load_sweep_file(SWEEP_FILE)
    assert len(sweep.trials) == 100
    two = SweepFile(sweep.path, sweep.raw, sweep.base, sweep.spec, trials=sweep.trials[:2])
    # prepares the data (Dagster data assets) and compiles the kernels (the single run's and,
    # two trials being a variant pass, the variant driver's)
    warm = run_sweep(two, prepared_dir, prepare=prepare_data)
    return sweep, warm.data


@pytest.fixture(scope="module")
def serial_100(
    sweep_and_data: tuple[SweepFile, dict[str, PreparedData]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    """The 100 trials run serially in this process (the baseline of both tests)."""
    sweep, data = sweep_and_data
    return run_sweep(sweep, tmp_path_factory.mktemp("serial"), prepared=data)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[float]:
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    yield time.perf_counter() - started
    ray.shutdown()


def _cpu(run: Any) -> float:
    return float(sum(r.get("cpu_seconds", 0.0) for r in run.records))


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


@needs_ray
def test_sweep_100_serial_vs_ray(
    benchmark: Any,
    sweep_and_data: tuple[SweepFile, dict[str, PreparedData]],
    local_ray: float,
    serial_100: Any,
    tmp_path: Path,
) -> None:
    sweep, data = sweep_and_data
    load_before = _load()
    serial = serial_100
    runs: list[Any] = []

    def on_ray() -> None:
        runs.append(
            run_sweep(
                sweep, tmp_path / f"ray{len(runs)}", backend="ray", workers=WORKERS, prepared=data
            )
        )

    benchmark.pedantic(on_ray, rounds=1, iterations=1)
    ray_run = runs[-1]
    assert serial.computed == ray_run.computed == 100
    assert [r["metrics"] for r in ray_run.records] == [r["metrics"] for r in serial.records]
    serial_trial = sum(r["seconds"] for r in serial.records)
    ray_trial = sum(r["seconds"] for r in ray_run.records)
    speedup = serial.seconds / ray_run.seconds
    overhead = ((ray_run.seconds - ray_run.startup_seconds) * WORKERS - ray_trial) / ray_trial
    overhead_all = (ray_run.seconds * WORKERS - ray_trial) / ray_trial
    info = {
        "trials": 100,
        "serial_seconds": round(serial.seconds, 2),
        "serial_trials_per_second": round(100 / serial.seconds, 2),
        "serial_mean_trial_seconds": round(serial_trial / 100, 4),
        "serial_mean_trial_cpu_seconds": round(_cpu(serial) / 100, 4),
        "ray_seconds": round(ray_run.seconds, 2),
        "ray_trials_per_second": round(100 / ray_run.seconds, 2),
        "ray_mean_trial_seconds": round(ray_trial / 100, 4),
        "ray_mean_trial_cpu_seconds": round(_cpu(ray_run) / 100, 4),
        "ray_init_seconds": round(local_ray, 2),
        "speedup": round(speedup, 2),
        "speedup_without_startup": round(
            serial.seconds / (ray_run.seconds - ray_run.startup_seconds), 2
        ),
        "ray_startup_seconds": round(ray_run.startup_seconds, 2),
        "overhead_fraction": round(overhead, 4),
        "overhead_fraction_with_startup": round(overhead_all, 4),
        "load_before": load_before,
        "load_after": _load(),
        "target_speedup": TARGET_SPEEDUP,
        "target_overhead": TARGET_OVERHEAD,
    }
    benchmark.extra_info.update(info)
    print("\n" + "\n".join(f"  {k:<28} {v}" for k, v in info.items()))


@needs_ray
def test_sweep_1000_trials_ray(
    benchmark: Any,
    sweep_and_data: tuple[SweepFile, dict[str, PreparedData]],
    local_ray: float,
    tmp_path: Path,
) -> None:
    sweep, data = sweep_and_data
    spec = sweep.spec.model_copy(
        update={
            "grid": None,
            "axes": None,
            "random": RandomSpec.model_validate(
                {
                    "n_trials": 1000,
                    "seed": 15,
                    "params": {
                        "strategy.n": {"type": "int", "low": 5, "high": 60},
                        "strategy.rebalance_every": {"type": "int", "low": 1, "high": 21},
                        "risk_rules[0].stop_pct": {"type": "uniform", "low": 0.02, "high": 0.2},
                    },
                }
            ),
        }
    )
    big = SweepFile(path=sweep.path, raw=sweep.raw, base=sweep.base, spec=spec)
    big.trials.extend(expand_trials(big))
    assert len(big.trials) == 1000
    load_before = _load()
    runs: list[Any] = []

    def on_ray() -> None:
        runs.append(run_sweep(big, tmp_path / "big", backend="ray", workers=WORKERS, prepared=data))

    benchmark.pedantic(on_ray, rounds=1, iterations=1)
    run = runs[-1]
    # the serial rate on the first SAMPLE random trials (an i.i.d. sample of the 1,000)
    part = SweepFile(
        path=big.path, raw=big.raw, base=big.base, spec=spec, trials=big.trials[:SAMPLE]
    )
    sample = run_sweep(part, tmp_path / "serial_sample", prepared=data)
    assert [r["metrics"] for r in sample.records] == [r["metrics"] for r in run.records[:SAMPLE]]
    ok = sum(r["status"] == "ok" for r in run.records)
    trial = sum(r["seconds"] for r in run.records)
    info = {
        "trials": 1000,
        "ok": ok,
        "ray_seconds": round(run.seconds, 1),
        "trials_per_second": round(1000 / run.seconds, 2),
        "serial_sample_trials_per_second": round(SAMPLE / sample.seconds, 2),
        # Ray's rate over 1,000 trials (start-up included) / the serial rate of a sample of them
        "speedup_vs_serial_rate": round((1000 / run.seconds) / (SAMPLE / sample.seconds), 2),
        "mean_trial_seconds": round(trial / 1000, 4),
        "mean_trial_cpu_seconds": round(_cpu(run) / 1000, 4),
        "ray_startup_seconds": round(run.startup_seconds, 2),
        "overhead_fraction": round(
            ((run.seconds - run.startup_seconds) * WORKERS - trial) / trial, 4
        ),
        "overhead_fraction_with_startup": round((run.seconds * WORKERS - trial) / trial, 4),
        "load_before": load_before,
        "load_after": _load(),
        "target_seconds": TARGET_1000_SECONDS,
    }
    benchmark.extra_info.update(info)
    print("\n" + "\n".join(f"  {k:<28} {v}" for k, v in info.items()))


def test_sweep_statistics_1000_trials(benchmark: Any) -> None:
    import numpy as np

    from ml4t_pipeline.lib.sweep import stats

    matrix = np.random.default_rng(30).normal(0.0002, 0.01, size=(1259, 1000))
    seconds: dict[str, float] = {}

    def timed(name: str, call: Any) -> Any:
        started = time.perf_counter()
        out = call()
        seconds[name] = round(time.perf_counter() - started, 2)
        return out

    def everything() -> None:
        timed("dsr_seconds", lambda: stats.deflated_sharpe_ratio(matrix))
        timed("pbo_seconds", lambda: stats.probability_of_backtest_overfitting(matrix))
        timed("spa_rc_stepm_seconds", lambda: stats.superior_predictive_ability(matrix, reps=1000))
        p = timed("psr_pvalues_seconds", lambda: stats.sharpe_pvalues(matrix))
        timed("holm_by_seconds", lambda: [stats.adjusted_pvalues(p, m) for m in ("holm", "by")])

    load_before = _load()
    benchmark.pedantic(everything, rounds=1, iterations=1)
    info = {"shape": "1259 x 1000", "bootstrap_reps": 1000, **seconds}
    info |= {"load_before": load_before, "load_after": _load()}
    benchmark.extra_info.update(info)
    print("\n" + "\n".join(f"  {k:<28} {v}" for k, v in info.items()))


# --- issue 30: 1,000 variants in compiled passes ---------------------------------------------

VARIANT_GRID = {
    "strategy.n": [5, 10, 15, 20, 25, 30, 35, 40, 45, 50],
    "risk_rules[0].stop_pct": [0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.14, 0.16, 0.18, 0.20],
    "strategy.rebalance_every": [1, 2, 3, 4, 5, 10, 15, 21, 42, 63],
}
"""The 1,000-variant grid of ``test_sweep_1000_variants`` (10 x 10 x 10)."""
TARGET_VARIANT_SECONDS = 5.0
TARGET_VARIANT_RSS = 2 * 1024**3
VECTORBT_SUBSET = 50


def _variant_sweep_file(folder: Path) -> Path:
    import yaml

    raw = yaml.safe_load(SWEEP_FILE.read_text())
    raw["sweep"] = raw["sweep"] | {"grid": VARIANT_GRID}
    path = folder / "sp500_top25_1000_variants.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_sweep_1000_variants(
    benchmark: Any,
    sweep_and_data: tuple[SweepFile, dict[str, PreparedData]],
    prepared_dir: Path,
    tmp_path: Path,
) -> None:
    """The 1,000-variant grid in a child process (its own peak RSS), serial backend: the trials
    run as compiled variant passes; then 50 of them one at a time, in this process, for the
    speed-up over the path every trial took before."""
    import shutil

    from childproc import run_child

    path = _variant_sweep_file(tmp_path)
    sweep = load_sweep_file(path)
    assert len(sweep.trials) == 1000
    out = tmp_path / "variants"
    shutil.copytree(prepared_dir / "prepared", out / "prepared")  # read back, not prepared
    load_before = _load()
    results: list[tuple[dict[str, Any], int, float]] = []

    def in_child() -> None:
        results.append(
            run_child(REPO_ROOT / "benchmarks" / "sweep_child.py", [str(path), str(out)])
        )

    benchmark.pedantic(in_child, rounds=1, iterations=1)
    report, rss, wall = results[-1]
    assert report["trials"] == report["ok"] == report["variant_trials"] == 1000
    # the one-at-a-time rate on a sample of the same trials (every 20th), same data
    _, data = sweep_and_data
    sample = SweepFile(
        path=sweep.path, raw=sweep.raw, base=sweep.base, spec=sweep.spec,
        trials=sweep.trials[::20],
    )  # fmt: skip
    single = run_sweep(sample, tmp_path / "single", prepared=data, variants=False)
    stored = TrialStore(out)
    for key, record in zip(single.keys, single.records, strict=True):
        assert stored.load(key)["metrics"] == record["metrics"]
    per_single = single.seconds / len(sample.trials)
    info = {
        "trials": 1000,
        "variant_trials": report["variant_trials"],
        "fan_out_seconds": round(report["seconds"], 2),
        "trials_per_second": round(1000 / report["seconds"], 1),
        "read_prepared_seconds": round(report["prepare_seconds"], 2),
        "child_total_seconds": round(report["total_seconds"], 2),
        "child_wall_seconds": round(wall, 2),
        "child_cpu_seconds": round(report["cpu_seconds"], 2),
        "fan_out_cpu_seconds": round(report["fan_out_cpu_seconds"], 2),
        # what the fan-out would take on the 2 cores alone (CPU time / 2)
        "fan_out_cpu_over_2_cores": round(report["fan_out_cpu_seconds"] / 2, 2),
        "peak_rss_gib": round(rss / 1024**3, 3),
        "one_at_a_time_seconds_per_trial": round(per_single, 4),
        "one_at_a_time_1000_projected_seconds": round(1000 * per_single, 1),
        "speedup_vs_one_at_a_time": round(1000 * per_single / report["seconds"], 2),
        "target_seconds": TARGET_VARIANT_SECONDS,
        "target_peak_rss_gib": TARGET_VARIANT_RSS / 1024**3,
        "load_before": load_before,
        "load_after": _load(),
    }
    benchmark.extra_info.update(info)
    print("\n" + "\n".join(f"  {k:<36} {v}" for k, v in info.items()))


def test_sweep_variants_vs_vectorbt(benchmark: Any, reference: Any) -> None:
    """Ours (one variant pass) against VectorBT ``from_order_func`` looped over the variants, in
    this process, on the issue-7 reference workload (461 symbols x 1,259 days, top-n by 20-day
    return, weight 1/n, 5 %..20 % stop, every bar, 0.1 % commission, ``backtrader`` preset),
    the strategy VectorBT's callbacks implement (``lib/crossval/vectorbt_run.py``: no
    ``rebalance_every``, no time exit): ``VECTORBT_SUBSET`` variants of n x stop_pct, both
    timed on the same variants, and the per-variant ratio scaled to 1,000."""
    pytest.importorskip("vectorbt")
    from engine import (
        ExecutionConfig,
        MarketData,
        PercentageCommission,
        PriceBasedStopLoss,
        RiskManager,
        TopNStrategy,
    )
    from engine.compiled import variants
    from ml4t_pipeline.lib.crossval.reference import ReferenceSpec
    from ml4t_pipeline.lib.crossval.vectorbt_run import run_vectorbt

    grid = [
        (n, stop) for n in (10, 20, 25, 30, 50) for stop in VARIANT_GRID["risk_rules[0].stop_pct"]
    ]
    assert len(grid) == VECTORBT_SUBSET
    data = MarketData.from_frame(reference.panel, signal_columns=["score"])
    specs = [ReferenceSpec(n=n, weight=1.0 / n, stop_pct=stop) for n, stop in grid]

    def ours() -> list[Any]:
        runs = [
            (
                TopNStrategy("score", n=s.n, weight=s.weight),
                RiskManager([PriceBasedStopLoss(s.stop_pct)]),
                ExecutionConfig.preset(
                    "backtrader",
                    commission=PercentageCommission(s.commission_rate),
                    initial_cash=s.initial_cash,
                ),
            )
            for s in specs
        ]
        plans = variants.plan_variants(data, runs)
        return [run for _, run in variants.run_variants(data, plans)]

    ours()  # warm-up (numba cache load)
    run_vectorbt(reference, specs[0])
    times: dict[str, float] = {}
    out: dict[str, list[Any]] = {}

    def both() -> None:
        for who in ("vectorbt", "ours"):
            started = time.perf_counter()
            out[who] = [run_vectorbt(reference, s) for s in specs] if who == "vectorbt" else ours()
            times[who] = time.perf_counter() - started

    load_before = _load()
    benchmark.pedantic(both, rounds=1, iterations=1)
    same = sum(
        int(run.n_fills) == theirs.n_fills
        and round(float(run.records.table("states")["equity"][-1]), 2)
        == round(theirs.final_equity, 2)
        for run, theirs in zip(out["ours"], out["vectorbt"], strict=True)
    )
    info = {
        "variants": VECTORBT_SUBSET,
        "ours_seconds": round(times["ours"], 3),
        "vectorbt_seconds": round(times["vectorbt"], 3),
        "ours_ms_per_variant": round(1e3 * times["ours"] / VECTORBT_SUBSET, 2),
        "vectorbt_ms_per_variant": round(1e3 * times["vectorbt"] / VECTORBT_SUBSET, 2),
        "ratio_ours_over_vectorbt": round(times["ours"] / times["vectorbt"], 4),
        "vectorbt_1000_projected_seconds": round(1000 * times["vectorbt"] / VECTORBT_SUBSET, 1),
        "ours_1000_projected_seconds": round(1000 * times["ours"] / VECTORBT_SUBSET, 1),
        "variants_equal_fills_and_final_equity": same,
        "load_before": load_before,
        "load_after": _load(),
    }
    benchmark.extra_info.update(info)
    print("\n" + "\n".join(f"  {k:<36} {v}" for k, v in info.items()))
