"""Running a sweep: prepare data once per distinct ``data`` section, fan out the backtests,
store the finished trials in batches as they come (a variant pass's, or within a second).

Layout of a sweep's output folder ``DIR``::

    DIR/prepared/<data_key>/        the data assets of one data section (Dagster IO-manager
                                    storage) and prepared.json (input hashes, data versions)
    DIR/trials/batch-<key>.parquet  per-bar ``hash``, ``timestamp``, ``return``, ``equity`` of
                                    a batch of trials (up to :data:`STORE_BATCH`; a trial
                                    stored alone: ``<trial_key>.parquet``, without ``hash``)
    DIR/trials/batch-<key>.json     their records (parameters, metrics, status, seconds,
                                    error; alone: ``<trial_key>.json``): written last, so its
                                    presence marks its trials as done
    DIR/sweep_results.parquet, DIR/sweep_summary.json, DIR/sweep_report.html

**Resuming.** A trial's key is the SHA-256 of (its config's canonical JSON, the content hashes
of the prepared panel and context, the code version of :func:`ml4t_pipeline.lib.lineage.
code_version`). Rerunning a sweep computes only the trials whose key has no stored record yet; a
changed input file changes the prepared data's hash and therefore every key, so those trials
are recomputed, and the old files stay beside them (unused). Files are written to a temporary
name and renamed, so a killed sweep leaves whole files or none.

Failed trials are recorded with their error (``status = "failed"``) and the sweep goes on.

**One sweep per folder.** A sweep holds the exclusive lock ``DIR.lock`` beside its folder for
its whole run (the lock ``ml4t run`` takes on its output folder,
:func:`ml4t_pipeline.lib.output.output_lock`); a second sweep into the same folder is refused at
once with :class:`~ml4t_pipeline.lib.output.OutputInUseError` ("output folder DIR is in use by
pid N"), instead of computing the same trials again beside it.

**Modules.** One trial's key, run and outcome (:mod:`~ml4t_pipeline.lib.sweep.trials`), the
trial store (:mod:`~ml4t_pipeline.lib.sweep.store`), the data preparation
(:mod:`~ml4t_pipeline.lib.sweep.prepare`) and the backends ``serial``, ``processes`` and ``ray``
(:mod:`~ml4t_pipeline.lib.sweep.backends`) each have their own module; this one runs a sweep
through them and re-exports their public names.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml4t_pipeline.lib.sweep.backends import (
    BACKENDS,
    _Job,
    _run_processes,
    _run_ray,
    _run_serial,
    ray_available,
    start_local_ray,
)
from ml4t_pipeline.lib.sweep.prepare import (
    PREPARED_STEM,
    MaterializeData,
    PrepareData,
    PreparedData,
    build_market,
    prepare_data,
)
from ml4t_pipeline.lib.sweep.spec import SweepFile, Trial, data_key
from ml4t_pipeline.lib.sweep.store import TrialStore, write_json
from ml4t_pipeline.lib.sweep.trials import (
    CODE_VERSION_ENV,
    TRIAL_METRICS,
    SweepError,
    TrialOutcome,
    run_trial,
    sweep_code_version,
    trial_key,
)

__all__ = [
    "BACKENDS",
    "PreparedData",
    "SweepError",
    "SweepRun",
    "TrialOutcome",
    "TrialStore",
    "PREPARED_STEM",
    "MaterializeData",
    "PrepareData",
    "prepare_data",
    "run_sweep",
    "sweep_lock",
    "build_market",
    "run_trial",
    "sweep_code_version",
    "trial_key",
    "CODE_VERSION_ENV",
    "TRIAL_METRICS",
    "ray_available",
    "start_local_ray",
    "write_json",
]


STORE_BATCH = 16
"""Finished trials stored together (one file pair, :meth:`TrialStore.save_batch`): a variant
pass's worth (:data:`ml4t_pipeline.lib.sweep.variants.DEFAULT_CHUNK`)."""
BATCH_SECONDS = 1.0
"""A batch is stored once its first trial has waited this long, full or not (slow trials are
stored, and reported to ``on_trial``, within about a second)."""


@dataclass
class SweepRun:
    """What :func:`run_sweep` did.

    Attributes
    ----------
    records : list[dict]
        One record per trial, in trial order (see :meth:`TrialStore.save`).
    keys : list[str]
        Each trial's key, in trial order.
    computed, reused : int
        Trials run now and trials whose stored result was used.
    data : dict[str, PreparedData]
        Prepared data by data key.
    backend : str
    workers : int
    seconds : float
        Wall time of the fan-out (data preparation excluded).
    prepare_seconds : float
        Wall time before the fan-out: the data preparation, the trials' keys and, on the
        ``serial`` backend, the engine arrays of each data section.
    code_version : str
    variant_trials : int
        Trials computed in passes of the compiled variant driver (the others were backtests of
        their own).
    startup_seconds : float
        Part of ``seconds`` spent starting the backend before the first trial could run (Ray:
        actors started, each with the data fetched and the backtest code imported); 0 for
        ``serial`` and not separated for ``processes``.
    """

    records: list[dict[str, Any]]
    keys: list[str]
    computed: int
    reused: int
    data: dict[str, PreparedData]
    backend: str
    workers: int
    seconds: float
    prepare_seconds: float
    code_version: str
    startup_seconds: float = 0.0
    variant_trials: int = 0


@contextlib.contextmanager
def sweep_lock(output: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of sweep folder ``output`` (``<output>.lock`` beside it).

    The same lock as an ``ml4t run`` output folder's (:func:`ml4t_pipeline.lib.output.
    output_lock`, on the resolved path, so two spellings of one folder share it); yields the
    resolved folder. Non-blocking.

    Raises
    ------
    ml4t_pipeline.lib.output.OutputInUseError
        Another process holds it (its pid is in the message).
    ml4t_pipeline.lib.output.OutputError
        The folder's parent or the lock file cannot be created.
    """
    from ml4t_pipeline.lib import output as output_lib

    final = output_lib.resolve_output(Path(output))
    with output_lib.output_lock(final):
        yield final


def run_sweep(
    sweep: SweepFile,
    output: str | Path,
    *,
    backend: str = "serial",
    workers: int = 1,
    ray_address: str | None = None,
    retry_failed: bool = False,
    on_prepared: Callable[[int, int], None] | None = None,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
    prepared: dict[str, PreparedData] | None = None,
    hold_lock: bool = True,
    prepare: PrepareData | None = None,
    variants: bool = True,
) -> SweepRun:
    """Run (or resume) every trial of ``sweep`` and store the results in batches as they finish
    (up to :data:`STORE_BATCH` trials, or what came within :data:`BATCH_SECONDS`).

    Parameters
    ----------
    sweep : SweepFile
        From :func:`~ml4t_pipeline.lib.sweep.spec.load_sweep_file`.
    output : path
        The sweep's folder ``DIR``.
    backend : {"serial", "processes", "ray"}
    workers : int
        Parallel workers (processes or Ray actors); ignored by ``serial``.
    ray_address : str, optional
        Ray cluster address; default ``RAY_ADDRESS``, else a local Ray.
    retry_failed : bool
        Run trials again whose stored record is ``failed``.
    on_prepared : callable, optional
        ``f(pending, total)`` once the data is ready and the pending trials are known.
    on_trial : callable, optional
        ``f(record)`` after each computed trial is stored.
    prepared : dict, optional
        Already prepared data by data key (skips preparation; tests and the Dagster asset).
    prepare : callable, optional
        :data:`PrepareData` for the data sections not in ``prepared`` (the faces hand in
        :func:`ml4t_pipeline.sweeps.prepare_data`, which runs the Dagster data assets); without
        it a data section that is not prepared is an error.
    variants : bool, default True
        Run the trials that qualify in passes of the compiled variant driver
        (:mod:`~ml4t_pipeline.lib.sweep.variants`; serial and Ray backends); False: every trial
        is a backtest of its own. The results are the same.
    hold_lock : bool, default True
        Take the folder's lock ``DIR.lock`` for the run. False only when the caller holds it
        already (:meth:`ml4t_pipeline.sweeps.Sweep.run` holds it while it also writes the
        outputs).

    Returns
    -------
    SweepRun

    Raises
    ------
    SweepError
        Data preparation failed, an unknown backend, or Ray is not installed.
    ml4t_pipeline.lib.output.OutputInUseError
        Another process runs a sweep (or a run) into the same folder; its pid is in the message.
    ml4t_pipeline.lib.output.OutputError
        The lock file beside the folder cannot be created.
    """
    if backend not in BACKENDS:
        raise SweepError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    if workers < 1:
        raise SweepError(f"workers must be >= 1, got {workers}")
    if hold_lock:
        with sweep_lock(output):
            return run_sweep(
                sweep, output, backend=backend, workers=workers, ray_address=ray_address,
                retry_failed=retry_failed, on_prepared=on_prepared, on_trial=on_trial,
                prepared=prepared, hold_lock=False, prepare=prepare, variants=variants,
            )  # fmt: skip
    out = Path(output)
    store = TrialStore(out)
    code = sweep_code_version()
    started = time.perf_counter()
    data: dict[str, PreparedData] = dict(prepared or {})
    for trial in sweep.trials:
        key = data_key(trial.config)
        if key not in data:
            if prepare is None:
                raise SweepError(
                    f"data section {key} is not prepared and run_sweep got no prepare "
                    "callable (ml4t_pipeline.sweeps.prepare_data)"
                )
            raw = dict(sweep.raw) | {"data": trial.config.data.model_dump(mode="json")}
            data[key] = prepare(raw, trial.config, out / "prepared" / key)
    keys: list[str] = []
    jobs: list[_Job] = []
    for trial in sweep.trials:
        prep = data[data_key(trial.config)]
        key = trial_key(trial, prep.versions, code)
        keys.append(key)
        if store.done(key) and not (retry_failed and store.load(key)["status"] == "failed"):
            continue
        jobs.append(_Job(trial, key, prep))
    runner: Callable[..., Iterator[tuple[_Job, TrialOutcome]]]
    runner = {"serial": _run_serial, "processes": _run_processes, "ray": _run_ray}[backend]
    if backend == "serial":
        # the engine arrays of each data section (the last step of preparing the data; Ray
        # and process workers build their own at start-up)
        markets = {key: build_market(data[key].frames()) for key in {j.data.key for j in jobs}}
        runner = functools.partial(_run_serial, markets=markets)
    prepare_seconds = time.perf_counter() - started
    if on_prepared is not None:
        on_prepared(len(jobs), len(sweep.trials))
    fan_started = time.perf_counter()
    timings: dict[str, float] = {}
    variant_trials = 0
    batch: list[tuple[str, Trial, TrialOutcome]] = []
    batch_started = 0.0

    def store_batch() -> None:
        for record in store.save_batch(batch):
            if on_trial is not None:
                on_trial(record)
        batch.clear()

    for job, outcome in runner(jobs, workers, ray_address, timings, variants):
        variant_trials += outcome.driver == "variants"
        if not batch:
            batch_started = time.perf_counter()
        batch.append((job.key, job.trial, outcome))
        if len(batch) >= STORE_BATCH or time.perf_counter() - batch_started >= BATCH_SECONDS:
            store_batch()
    store_batch()
    seconds = time.perf_counter() - fan_started
    return SweepRun(
        records=[
            store.load(k) | {"trial": t.index, "params": t.params}
            for k, t in zip(keys, sweep.trials, strict=True)
        ],
        keys=keys,
        computed=len(jobs),
        reused=len(sweep.trials) - len(jobs),
        data=data,
        backend=backend,
        workers=1 if backend == "serial" else workers,
        seconds=seconds,
        prepare_seconds=prepare_seconds,
        code_version=code,
        startup_seconds=timings.get("startup", 0.0),
        variant_trials=variant_trials,
    )
