"""The backends a sweep fans its trials out on: serial, processes, Ray.

``serial`` runs the trials in this process: the trials of one data section in one pass of the
compiled variant driver when they qualify (:mod:`~ml4t_pipeline.lib.sweep.variants`), else one
after another; ``processes``
uses a :class:`concurrent.futures.ProcessPoolExecutor` whose workers receive the prepared
frames once, at start-up; ``ray`` puts each prepared data set into the Ray object store once
(``ray.put``) and runs the trials on ``workers`` actors that fetch it once each, in batches;
an actor runs a batch that qualifies as one variant pass on one thread. Ray connects to
``RAY_ADDRESS`` (or the given address) when set, and the prepared data and the trials then go
to that cluster's hosts; otherwise it starts a private local instance with ``num_cpus =
workers`` whose processes listen on 127.0.0.1 only (:func:`start_local_ray`). An already
connected Ray (e.g. by dagster-ray's resource for a KubeRay cluster) is used as it is.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ml4t_pipeline.lib.sweep.prepare import PreparedData, build_market
from ml4t_pipeline.lib.sweep.spec import Trial
from ml4t_pipeline.lib.sweep.trials import SweepError, TrialOutcome, run_trial
from ml4t_pipeline.lib.sweep.variants import run_trials

if TYPE_CHECKING:
    from engine import MarketData

Backend = Literal["serial", "processes", "ray"]
BACKENDS: tuple[str, ...] = ("serial", "processes", "ray")


@dataclass
class _Job:
    trial: Trial
    key: str
    data: PreparedData


def _run_serial(
    jobs: Sequence[_Job],
    workers: int,
    ray_address: str | None,
    timings: dict[str, float],
    variants: bool = True,
    markets: dict[str, MarketData] | None = None,
) -> Iterator[tuple[_Job, TrialOutcome]]:
    # the trials of each data section together: one variant pass when they qualify;
    # ``markets``: the engine arrays of the data sections, when built beforehand
    by_data: dict[str, list[_Job]] = {}
    for job in jobs:
        by_data.setdefault(job.data.key, []).append(job)
    for key, group in by_data.items():
        market = (markets or {}).get(key) or build_market(group[0].data.frames())
        configs = [job.trial.config.model_dump_json() for job in group]
        validated = [job.trial.config for job in group]
        for k, outcome in run_trials(configs, market, variants=variants, configs=validated):
            yield group[k], outcome


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
    jobs: Sequence[_Job],
    workers: int,
    ray_address: str | None,
    timings: dict[str, float],
    variants: bool = True,
) -> Iterator[tuple[_Job, TrialOutcome]]:
    # one trial per task (the variant pass runs on the serial and Ray backends)
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
    jobs: Sequence[_Job],
    workers: int,
    ray_address: str | None,
    timings: dict[str, float],
    variants: bool = True,
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
            actor.warm.remote([ref], key, first[key].trial.config.model_dump_json(), variants)
            for actor in actors
            for key, ref in refs.items()
        ]
        ray.get(warm)
        timings["startup"] = time.perf_counter() - started
        queue = _batches(jobs, workers, VARIANT_BATCH if variants else MAX_BATCH)
        running: dict[Any, tuple[list[_Job], Any]] = {}

        def submit(actor: Any) -> None:
            batch = queue.pop(0)
            key = batch[0].data.key
            # the ref travels inside a list so Ray does not resolve (copy) it on every call
            ref = actor.run_batch.remote(
                [refs[key]], key, [job.trial.config.model_dump_json() for job in batch], variants
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

    def warm(self, ref: list[Any], key: str, config_json: str, variants: bool = True) -> int:
        # results discarded: a warm-up (the same trial twice is a variant pass when it
        # qualifies, which loads that kernel too)
        market = self._market(ref, key)
        run_trial(config_json, market)
        if variants:
            list(run_trials([config_json, config_json], market, threads=1))
        return os.getpid()

    def run_batch(
        self, ref: list[Any], key: str, configs: list[str], variants: bool = True
    ) -> list[TrialOutcome]:
        """The batch's outcomes, in order: one variant pass on one numba thread (the actor
        has one CPU) when the batch qualifies, else one trial at a time."""
        market = self._market(ref, key)
        return [o for _, o in run_trials(configs, market, variants=variants, threads=1)]


# a batch of trials per Ray call: each call costs the driver a submit, a wait and a get
# (~1 ms of its CPU, on the same cores as the actors when Ray is local)
MAX_BATCH = 4

# ... but at least this many batches per worker, or the last batches leave workers idle
MIN_BATCHES_PER_WORKER = 8


# a batch that may run as one variant pass: larger, as its trials share the ranking and a
# pass per batch; at least MIN_BATCHES_PER_WORKER batches per worker still apply
VARIANT_BATCH = 32


def _batches(jobs: Sequence[_Job], workers: int, most: int = MAX_BATCH) -> list[list[_Job]]:
    """``jobs`` in order, cut into batches of one data set each: up to ``most`` trials
    (default :data:`MAX_BATCH`), fewer when that would leave a worker under
    :data:`MIN_BATCHES_PER_WORKER`."""
    size = max(1, min(most, len(jobs) // (MIN_BATCHES_PER_WORKER * workers)))
    batches: list[list[_Job]] = []
    for job in jobs:
        last = batches[-1] if batches else None
        if last is not None and len(last) < size and last[0].data.key == job.data.key:
            last.append(job)
        else:
            batches.append([job])
    return batches
