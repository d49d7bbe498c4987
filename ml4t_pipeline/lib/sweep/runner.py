"""Running a sweep: prepare data once per distinct ``data`` section, fan out the backtests,
store each trial's result the moment it finishes.

Layout of a sweep's output folder ``DIR``::

    DIR/prepared/<data_key>/        the data assets of one data section (Dagster IO-manager
                                    storage) and prepared.json (input hashes, data versions)
    DIR/trials/<trial_key>.parquet  one trial's per-bar ``timestamp``, ``return``, ``equity``
    DIR/trials/<trial_key>.json     its parameters, metrics, status, seconds, error: written
                                    last, so its presence marks the trial as done
    DIR/sweep_results.parquet, DIR/sweep_summary.json, DIR/sweep_report.html

**Resuming.** A trial's key is the SHA-256 of (its config's canonical JSON, the content hashes
of the prepared panel and context, the code version of :func:`ml4t_pipeline.lib.lineage.
code_version`). Rerunning a sweep computes only the trials whose key has no ``.json`` yet; a
changed input file changes the prepared data's hash and therefore every key, so those trials
are recomputed, and the old files stay beside them (unused). Files are written to a temporary
name and renamed, so a killed sweep leaves whole files or none.

**Backends.** ``serial`` runs the trials one after another in this process; ``processes``
uses a :class:`concurrent.futures.ProcessPoolExecutor` whose workers receive the prepared
frames once, at start-up; ``ray`` puts each prepared data set into the Ray object store once
(``ray.put``) and runs the trials on ``workers`` actors that fetch it once each. Ray connects to
``RAY_ADDRESS`` (or the given address) when set, and the prepared data and the trials then go
to that cluster's hosts; otherwise it starts a private local instance with ``num_cpus =
workers`` whose processes listen on 127.0.0.1 only (:func:`start_local_ray`). An already
connected Ray (e.g. by dagster-ray's resource for a KubeRay cluster) is used as it is.

Failed trials are recorded with their error (``status = "failed"``) and the sweep goes on.

**One sweep per folder.** A sweep holds the exclusive lock ``DIR.lock`` beside its folder for
its whole run (the lock ``ml4t run`` takes on its output folder,
:func:`ml4t_pipeline.lib.output.output_lock`); a second sweep into the same folder is refused at
once with :class:`~ml4t_pipeline.lib.output.OutputInUseError` ("output folder DIR is in use by
pid N"), instead of computing the same trials again beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from ml4t_pipeline.config import ExperimentConfig
from ml4t_pipeline.lib.lineage import code_version, experiment_input_hashes, frame_content_hash
from ml4t_pipeline.lib.sweep.spec import SweepFile, Trial, canonical_json, data_key

if TYPE_CHECKING:
    from engine import MarketData

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
]

CODE_VERSION_ENV = "ML4T_CODE_VERSION"

Backend = Literal["serial", "processes", "ray"]
BACKENDS: tuple[str, ...] = ("serial", "processes", "ray")
TRIAL_METRICS = (
    "sharpe",
    "cagr",
    "max_drawdown",
    "n_trades",
    "turnover",
    "total_return",
    "annual_volatility",
    "sortino",
    "calmar",
    "win_rate",
    "exposure",
    "final_equity",
    "total_costs",
)
"""Metrics kept per trial (formulas: :func:`ml4t_pipeline.lib.performance.compute_performance`)."""


class SweepError(RuntimeError):
    """A sweep could not start: its data could not be prepared, or the backend is unusable."""


@dataclass
class PreparedData:
    """Prepared inputs shared by every trial with the same ``data`` section.

    Attributes
    ----------
    key : str
        :func:`~ml4t_pipeline.lib.sweep.spec.data_key` of the data section.
    panel, context : pl.DataFrame
        The ``market_panel`` and ``market_context`` assets' values.
    signal_columns, indicator_columns : list[str]
        Value columns of the ``signals`` and ``features`` assets.
    versions : dict[str, str]
        Content hashes of ``market_panel`` and ``market_context`` (the data versions).
    """

    key: str
    panel: pl.DataFrame
    context: pl.DataFrame
    signal_columns: list[str]
    indicator_columns: list[str]
    versions: dict[str, str]

    def frames(self) -> tuple[pl.DataFrame, pl.DataFrame, list[str], list[str]]:
        """What a worker needs: (panel, context, signal columns, indicator columns)."""
        return self.panel, self.context, self.signal_columns, self.indicator_columns


def build_market(frames: tuple[pl.DataFrame, pl.DataFrame, list[str], list[str]]) -> MarketData:
    """The engine's arrays of :meth:`PreparedData.frames`, built once per worker and data set.

    Building them is most of a trial's cost when done per trial (about 80 % on the S&P
    top-25 sweep); the engine only reads them, so every trial of a worker shares one.
    """
    from ml4t_pipeline.lib.experiment import market_data

    return market_data(*frames)


@dataclass
class TrialOutcome:
    """What one trial produced (picklable; crosses process and Ray boundaries).

    ``seconds`` is the trial's own time in its worker (backtest + metrics), without scheduling
    or transfer; ``cpu_seconds`` the worker process's CPU time over the same span (below
    ``seconds`` when other processes compete for the cores). ``timestamps`` are microseconds
    since the epoch (UTC), ``returns`` the per-bar portfolio returns (fractions), ``equity`` in
    currency.
    """

    status: Literal["ok", "failed"]
    seconds: float
    cpu_seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    timestamps: np.ndarray | None = None
    returns: np.ndarray | None = None
    equity: np.ndarray | None = None


def sweep_code_version() -> str:
    """The code version in trial keys: ``$ML4T_CODE_VERSION`` if set, else the git commit.

    Pin it (e.g. to a release tag) when the code runs from an installed package without a git
    checkout, or to resume a sweep across commits that do not touch the engine; unset, any new
    commit recomputes every trial (:func:`ml4t_pipeline.lib.lineage.code_version`).
    """
    return os.environ.get(CODE_VERSION_ENV) or code_version()


def trial_key(trial: Trial, versions: dict[str, str], code: str) -> str:
    """SHA-256 (32 hex digits) of the trial config, the data versions and the code version."""
    text = canonical_json({"config": trial.config_json(), "data": versions, "code": code})
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def run_trial(config_json: str, market: MarketData) -> TrialOutcome:
    """Run one backtest on prepared data and compute its metrics; never raises.

    Parameters
    ----------
    config_json : str
        The trial's experiment config as JSON (``ExperimentConfig.model_dump_json``).
    market : engine.MarketData
        :func:`build_market` of the trial's prepared data (shared by the worker's trials).

    Returns
    -------
    TrialOutcome
        ``status="failed"`` with the exception's type, message and last frames on error.
    """
    from ml4t_pipeline.lib.experiment import build_engine, experiment_metrics

    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        cfg = ExperimentConfig.model_validate_json(config_json)
        result = build_engine(cfg, market).run()
        states = result.portfolio_states
        metrics = experiment_metrics(cfg, states, result.trades, result.fills)
        returns = states["return"].fill_null(0.0).fill_nan(0.0).to_numpy().astype(np.float64)
        outcome = TrialOutcome(
            status="ok",
            seconds=0.0,
            metrics={k: metrics[k] for k in TRIAL_METRICS if k in metrics},
            timestamps=states["timestamp"].dt.epoch("us").to_numpy(),
            returns=returns,
            equity=states["equity"].to_numpy().astype(np.float64),
        )
    except Exception as exc:  # a failed trial is data, not the end of the sweep
        tail = "".join(traceback.format_exception(exc)[-3:]).strip()
        outcome = TrialOutcome(
            status="failed", seconds=0.0, error=f"{type(exc).__name__}: {exc}\n{tail}"
        )
    outcome.seconds = time.perf_counter() - started
    outcome.cpu_seconds = time.process_time() - cpu_started
    return outcome


# --- storage ------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, value: Any) -> None:
    """Write strict JSON (NaN/inf become null) atomically."""
    text = json.dumps(_strict(value), indent=2, sort_keys=True, allow_nan=False)
    _atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


def _strict(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class TrialStore:
    """One small file pair per finished trial under ``DIR/trials``.

    Parameters
    ----------
    folder : Path
        The sweep's output folder ``DIR``.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder) / "trials"

    def record_path(self, key: str) -> Path:
        """``trials/<key>.json``."""
        return self.folder / f"{key}.json"

    def returns_path(self, key: str) -> Path:
        """``trials/<key>.parquet``."""
        return self.folder / f"{key}.parquet"

    def done(self, key: str) -> bool:
        """Whether the trial's record exists (its returns are written before it)."""
        return self.record_path(key).is_file()

    def load(self, key: str) -> dict[str, Any]:
        """The trial's JSON record."""
        return dict(json.loads(self.record_path(key).read_text()))

    def load_returns(self, key: str) -> pl.DataFrame:
        """``timestamp``, ``return``, ``equity`` of an ``ok`` trial."""
        return pl.read_parquet(self.returns_path(key))

    def save(self, key: str, trial: Trial, outcome: TrialOutcome) -> dict[str, Any]:
        """Write the returns (ok trials), then the record; return the record."""
        if outcome.status == "ok":
            assert outcome.timestamps is not None
            frame = pl.DataFrame(
                {
                    "timestamp": pl.Series(outcome.timestamps, dtype=pl.Int64).cast(
                        pl.Datetime("us", "UTC")
                    ),
                    "return": outcome.returns,
                    "equity": outcome.equity,
                }
            )
            _atomic_write(
                self.returns_path(key), lambda tmp: frame.write_parquet(tmp, compression="zstd")
            )
        record = {
            "hash": key,
            "trial": trial.index,
            "params": trial.params,
            "status": outcome.status,
            "seconds": outcome.seconds,
            "cpu_seconds": outcome.cpu_seconds,
            "error": outcome.error,
            "metrics": outcome.metrics,
        }
        write_json(self.record_path(key), record)
        return record


# --- data preparation ---------------------------------------------------------------------------


PrepareData = Callable[[dict[str, Any], ExperimentConfig, Path], PreparedData]
"""``prepare(raw, cfg, folder)``: the prepared data of one data section (what
:func:`run_sweep` is handed; ``ml4t_pipeline.sweeps.prepare_data`` runs the data assets)."""

MaterializeData = Callable[[ExperimentConfig, Path], None]
"""``materialize(config, storage_dir)``: store the data assets of one validated experiment
config under ``storage_dir`` (raises :class:`SweepError` naming what failed)."""

PREPARED_STEM = "sweep_data"
"""Stem of the experiment file (and partition key) a sweep's data is prepared under."""


def prepare_data(
    raw: dict[str, Any], cfg: ExperimentConfig, folder: Path, *, materialize: MaterializeData
) -> PreparedData:
    """Materialize the data assets of ``cfg.data`` into ``folder`` (or reuse them).

    The stored tables are reused when ``folder/prepared.json`` records the same input-file
    hashes (:func:`~ml4t_pipeline.lib.lineage.experiment_input_hashes`), data section and code
    version; otherwise ``materialize`` stores them again (the Dagster data assets, run by
    :func:`ml4t_pipeline.sweeps.prepare_data`) and they are read back with
    :func:`ml4t_pipeline.lib.formats.read_value`.

    Parameters
    ----------
    raw : dict
        The trial's experiment mapping (the data section's source; ``cfg`` is what runs).
    cfg : ExperimentConfig
        The same, validated.
    folder : Path
        ``DIR/prepared/<data_key>``.
    materialize : callable
        ``materialize(config, storage_dir)`` (:data:`MaterializeData`): the data assets of
        ``cfg`` (named ``prepared``) stored under ``storage_dir``.

    Raises
    ------
    SweepError
        A data asset or a blocking check failed (the message lists them).
    FileNotFoundError
        An input file is missing.
    """
    from ml4t_pipeline.config import DATA_ROOT_ENV
    from ml4t_pipeline.lib.experiment import attach_quotes, experiment_quotes, value_columns
    from ml4t_pipeline.lib.formats import read_value

    stem = PREPARED_STEM
    folder = Path(folder)
    storage = folder / "assets"
    marker = folder / "prepared.json"
    fingerprint = {
        "data": cfg.data.model_dump(mode="json"),
        "inputs": experiment_input_hashes(cfg, os.environ.get(DATA_ROOT_ENV)),
        "code_version": sweep_code_version(),
    }
    stored = json.loads(marker.read_text()) if marker.is_file() else {}
    fresh = stored.get("fingerprint") != fingerprint
    if fresh:
        # the validated config itself (no experiment file written and read back)
        materialize(cfg.model_copy(update={"name": stem}), storage)
    panel = read_value(storage / "market_panel" / stem)
    quotes = experiment_quotes(cfg, os.environ.get(DATA_ROOT_ENV))
    if quotes is not None:  # bid/ask for spread-aware slippage, as in the backtest asset
        panel = attach_quotes(panel, quotes)
    context = read_value(storage / "market_context" / stem)
    signals = read_value(storage / "signals" / stem, lazy=True).head(0).collect()
    features = read_value(storage / "features" / stem, lazy=True).head(0).collect()
    if fresh or "versions" not in stored:
        versions = {
            "market_panel": frame_content_hash(panel),
            "market_context": frame_content_hash(context),
        }
        write_json(marker, {"fingerprint": fingerprint, "versions": versions})
    else:
        versions = dict(stored["versions"])
    return PreparedData(
        key=data_key(cfg),
        panel=panel,
        context=context,
        signal_columns=value_columns(signals),
        indicator_columns=value_columns(features),
        versions=versions,
    )


# --- execution ----------------------------------------------------------------------------------


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
        Wall time of the data preparation.
    code_version : str
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


@dataclass
class _Job:
    trial: Trial
    key: str
    data: PreparedData


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
) -> SweepRun:
    """Run (or resume) every trial of ``sweep`` and store each result as it finishes.

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
                prepared=prepared, hold_lock=False, prepare=prepare,
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
    prepare_seconds = time.perf_counter() - started
    keys: list[str] = []
    jobs: list[_Job] = []
    for trial in sweep.trials:
        prep = data[data_key(trial.config)]
        key = trial_key(trial, prep.versions, code)
        keys.append(key)
        if store.done(key) and not (retry_failed and store.load(key)["status"] == "failed"):
            continue
        jobs.append(_Job(trial, key, prep))
    if on_prepared is not None:
        on_prepared(len(jobs), len(sweep.trials))
    fan_started = time.perf_counter()
    runner = {"serial": _run_serial, "processes": _run_processes, "ray": _run_ray}[backend]
    timings: dict[str, float] = {}
    for job, outcome in runner(jobs, workers, ray_address, timings):
        record = store.save(job.key, job.trial, outcome)
        if on_trial is not None:
            on_trial(record)
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
    )


def _run_serial(
    jobs: Sequence[_Job], workers: int, ray_address: str | None, timings: dict[str, float]
) -> Iterator[tuple[_Job, TrialOutcome]]:
    markets: dict[str, MarketData] = {}
    for job in jobs:
        if job.data.key not in markets:
            markets[job.data.key] = build_market(job.data.frames())
        yield job, run_trial(job.trial.config.model_dump_json(), markets[job.data.key])


# process workers keep the prepared frames they were started with, by data key, and the
# engine arrays built from them on first use
_WORKER_DATA: dict[str, tuple[Any, ...]] = {}
_WORKER_MARKETS: dict[str, MarketData] = {}


def _init_worker(data: dict[str, tuple[Any, ...]]) -> None:
    _WORKER_DATA.update(data)


def _process_trial(data_key_: str, config_json: str) -> TrialOutcome:
    if data_key_ not in _WORKER_MARKETS:
        _WORKER_MARKETS[data_key_] = build_market(_WORKER_DATA[data_key_])  # type: ignore[arg-type]
    return run_trial(config_json, _WORKER_MARKETS[data_key_])


def _run_processes(
    jobs: Sequence[_Job], workers: int, ray_address: str | None, timings: dict[str, float]
) -> Iterator[tuple[_Job, TrialOutcome]]:
    if not jobs:
        return
    import multiprocessing

    shared = {job.data.key: job.data.frames() for job in jobs}
    # spawn, not fork: polars' and numba's thread pools do not survive a fork
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(shared,)
    ) as pool:
        queue = list(jobs)
        running: dict[Any, _Job] = {}
        while queue or running:
            while queue and len(running) < 2 * workers:
                job = queue.pop(0)
                future = pool.submit(
                    _process_trial, job.data.key, job.trial.config.model_dump_json()
                )
                running[future] = job
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # a worker that died takes only its trial with it
                    outcome = TrialOutcome(
                        status="failed", seconds=0.0, error=f"{type(exc).__name__}: {exc}"
                    )
                yield job, outcome


def ray_available() -> bool:
    """Whether ``ray`` can be imported (the ``ray`` extra is installed)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


LOOPBACK = "127.0.0.1"
"""The only address a local Ray started by a sweep listens on."""


@contextlib.contextmanager
def _loopback_node_address() -> Iterator[None]:
    """While a local Ray starts, make Ray take 127.0.0.1 as this node's address.

    On Linux Ray 2.60 replaces a loopback ``_node_ip_address`` by the machine's routable address
    (``services.resolve_ip_for_localhost``) unless ``ray_constants.ENABLE_RAY_CLUSTER`` is off,
    the setting Ray itself uses on macOS and Windows (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``, read
    once when ray is imported). The GCS, the raylet, the workers and the driver then bind their
    gRPC servers to 127.0.0.1 instead of every interface (measured with ``/proc/net/tcp*``:
    without this they listen on ``::`` and the runtime-env agent on the routable address). The
    setting is restored once ``ray.init`` returns; :func:`start_local_ray` checks the result.
    """
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def start_local_ray(workers: int) -> None:
    """Start a private local Ray for one sweep, reachable from this machine only.

    Every Ray process listens on 127.0.0.1 (:func:`_loopback_node_address`), the dashboard is
    not started and the workers' logs stay in Ray's session folder. ``address="local"`` starts a
    new instance even when a ``ray start`` cluster runs on this machine (connect to one with
    ``--ray-address``/``RAY_ADDRESS``).

    Parameters
    ----------
    workers : int
        CPUs the instance offers (one per actor).

    Raises
    ------
    SweepError
        Ray did not take the loopback address (an unsupported Ray version); the instance is
        shut down before any data is sent to it.
    """
    import ray

    with _loopback_node_address():
        ray.init(
            address="local",
            num_cpus=workers,
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address=LOOPBACK,
        )
    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:
        ray.shutdown()
        raise SweepError(
            f"the local Ray took address {node_ip}, not {LOOPBACK}: it would accept connections "
            "from other machines, so the sweep stopped before sending it any data (Ray "
            f"{ray.__version__}; the pinned version is in pyproject.toml's ray extra)"
        )


def _run_ray(
    jobs: Sequence[_Job], workers: int, ray_address: str | None, timings: dict[str, float]
) -> Iterator[tuple[_Job, TrialOutcome]]:
    if not jobs:
        return
    if not ray_available():
        raise SweepError("backend 'ray' needs the ray extra: pip install -e '.[ray]'")
    import ray

    started = time.perf_counter()
    started_here = False
    if not ray.is_initialized():
        address = ray_address or os.environ.get("RAY_ADDRESS")
        if address:  # a cluster the user named: the data and the trials go to its hosts
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:  # a new local Ray for this sweep, even if a `ray start` cluster runs here
            start_local_ray(workers)
        started_here = True
    try:
        # the actors' processes start while the data goes into the object store
        # one CPU per actor, so each actor's polars runs on one thread: its default pool (a
        # thread per core) in every actor oversubscribes the cores (+30 % CPU per trial on 2)
        actor_cls = ray.remote(num_cpus=1, runtime_env={"env_vars": {"POLARS_MAX_THREADS": "1"}})(
            _TrialActor
        )
        actors = [actor_cls.remote() for _ in range(workers)]
        # each distinct prepared data set enters the object store once
        refs = {job.data.key: None for job in jobs}
        for key in refs:
            refs[key] = ray.put(next(j for j in jobs if j.data.key == key).data.frames())
        # start-up, timed apart from the trials: each actor fetches every data set it will need
        # once and runs one trial of it unrecorded, which imports the backtest code and loads
        # the engine's compiled kernels (numba's first call) before the timed trials start
        first = {key: next(j for j in jobs if j.data.key == key) for key in refs}
        warm = [
            actor.warm.remote([ref], key, first[key].trial.config.model_dump_json())
            for actor in actors
            for key, ref in refs.items()
        ]
        ray.get(warm)
        timings["startup"] = time.perf_counter() - started
        queue = _batches(jobs, workers)
        running: dict[Any, tuple[list[_Job], Any]] = {}

        def submit(actor: Any) -> None:
            batch = queue.pop(0)
            key = batch[0].data.key
            # the ref travels inside a list so Ray does not resolve (copy) it on every call
            ref = actor.run_batch.remote(
                [refs[key]], key, [job.trial.config.model_dump_json() for job in batch]
            )
            running[ref] = (batch, actor)

        for actor in actors:
            for _ in range(2):
                if queue:
                    submit(actor)
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                batch, actor = running.pop(ref)
                try:
                    outcomes = ray.get(ref)
                except Exception as exc:  # an actor that died takes only its batch with it
                    error = f"{type(exc).__name__}: {exc}"
                    outcomes = [
                        TrialOutcome(status="failed", seconds=0.0, error=error) for _ in batch
                    ]
                if queue:
                    submit(actor)
                yield from zip(batch, outcomes, strict=True)
    finally:
        if started_here:
            ray.shutdown()


class _TrialActor:
    """A Ray actor that fetches each prepared data set once, builds its engine arrays once
    (:func:`build_market`) and runs trials on them."""

    def __init__(self) -> None:
        self.markets: dict[str, MarketData] = {}

    def _market(self, ref: list[Any], key: str) -> MarketData:
        import ray

        if key not in self.markets:
            self.markets[key] = build_market(ray.get(ref[0]))
        return self.markets[key]

    def warm(self, ref: list[Any], key: str, config_json: str) -> int:
        run_trial(config_json, self._market(ref, key))  # result discarded: a warm-up
        return os.getpid()

    def run_batch(self, ref: list[Any], key: str, configs: list[str]) -> list[TrialOutcome]:
        market = self._market(ref, key)
        return [run_trial(config_json, market) for config_json in configs]


# a batch of trials per Ray call: each call costs the driver a submit, a wait and a get
# (~1 ms of its CPU, on the same cores as the actors when Ray is local)
MAX_BATCH = 4
# ... but at least this many batches per worker, or the last batches leave workers idle
MIN_BATCHES_PER_WORKER = 8


def _batches(jobs: Sequence[_Job], workers: int) -> list[list[_Job]]:
    """``jobs`` in order, cut into batches of one data set each: up to :data:`MAX_BATCH`
    trials, fewer when that would leave a worker under :data:`MIN_BATCHES_PER_WORKER`."""
    size = max(1, min(MAX_BATCH, len(jobs) // (MIN_BATCHES_PER_WORKER * workers)))
    batches: list[list[_Job]] = []
    for job in jobs:
        last = batches[-1] if batches else None
        if last is not None and len(last) < size and last[0].data.key == job.data.key:
            last.append(job)
        else:
            batches.append([job])
    return batches
