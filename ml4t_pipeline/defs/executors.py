"""The executor of ``experiment_job``, chosen by environment variable (no code change to scale out).

``ML4T_EXECUTOR`` selects where the steps of one run execute:

==================  ==================================================================
``multiprocess``    (default) one OS process per step on this machine; at most
                    ``ML4T_MAX_CONCURRENT`` steps at once (default: the CPU count).
``in_process``      every step in the run's own process (debugging, tiny experiments).
``k8s``             one Kubernetes job per step (``dagster_k8s.k8s_job_executor``);
                    needs the ``dagster-k8s`` package and a cluster.
``celery``          steps are Celery tasks picked up by workers
                    (``dagster_celery.celery_executor``); needs ``dagster-celery`` and a broker.
==================  ==================================================================

The executor parallelises the steps *inside* one run. A parameter sweep is several experiment
partitions, i.e. several runs: their parallelism comes from the instance's run coordinator
(``deploy/dagster.yaml``: ``QueuedRunCoordinator`` with ``max_concurrent_runs``) and, on a
cluster, from the run launcher. ``deploy/README.md`` shows both set-ups.

The k8s and Celery executors keep their full config schema, so cluster details (image,
namespace, broker URL...) are given as run config (``execution: config: ...``), never in code.
"""

from __future__ import annotations

import os

import dagster as dg

EXECUTOR_ENV = "ML4T_EXECUTOR"
MAX_CONCURRENT_ENV = "ML4T_MAX_CONCURRENT"
DEFAULT_EXECUTOR = "multiprocess"
EXECUTOR_NAMES = ("multiprocess", "in_process", "k8s", "celery")

_OPTIONAL_PACKAGES = {
    "k8s": ("dagster_k8s", "k8s_job_executor", "dagster-k8s"),
    "celery": ("dagster_celery", "celery_executor", "dagster-celery"),
}


class ExecutorSelectionError(ValueError):
    """``ML4T_EXECUTOR`` / ``ML4T_MAX_CONCURRENT`` hold a value that selects no executor."""


def max_concurrent_from_env(env: dict[str, str] | None = None) -> int | None:
    """Read ``ML4T_MAX_CONCURRENT``: a positive number of steps, or None when unset/empty.

    Parameters
    ----------
    env : dict[str, str], optional
        Environment to read (default: ``os.environ``).

    Raises
    ------
    ExecutorSelectionError
        If the value is not a positive integer (the message quotes it).
    """
    raw = (os.environ if env is None else env).get(MAX_CONCURRENT_ENV, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ExecutorSelectionError(
            f"{MAX_CONCURRENT_ENV}={raw!r}: expected a positive integer (number of steps run "
            "at the same time), or leave it unset for the CPU count"
        )
    return value


def _multiprocess(max_concurrent: int | None) -> dg.ExecutorDefinition:
    if max_concurrent is None:
        return dg.multiprocess_executor
    # Keep max_concurrent overridable from run config; the env var only sets its default.
    return dg.multiprocess_executor.configured(
        lambda cfg: {
            "max_concurrent": cfg["max_concurrent"],
            "tag_concurrency_limits": cfg.get("tag_concurrency_limits", []),
        },
        config_schema={
            "max_concurrent": dg.Field(int, default_value=max_concurrent, is_required=False),
            "tag_concurrency_limits": dg.Field(
                [dg.Permissive()], is_required=False, description="As multiprocess_executor."
            ),
        },
    )


def _optional(name: str) -> dg.ExecutorDefinition:
    module_name, attribute, package = _OPTIONAL_PACKAGES[name]
    try:
        module = __import__(module_name, fromlist=[attribute])
    except ImportError as exc:
        raise ExecutorSelectionError(
            f"{EXECUTOR_ENV}={name!r} needs the {package!r} package, which is not installed: "
            f'pip install "{package}==0.29.27" (or pip install -e ".[{name}]")'
        ) from exc
    executor: dg.ExecutorDefinition = getattr(module, attribute)
    return executor


def experiment_executor(env: dict[str, str] | None = None) -> dg.ExecutorDefinition:
    """Return the executor definition selected by ``ML4T_EXECUTOR`` (default ``multiprocess``).

    Parameters
    ----------
    env : dict[str, str], optional
        Environment to read (default: ``os.environ``); tests pass a dict.

    Returns
    -------
    dagster.ExecutorDefinition
        ``multiprocess_executor`` (with ``max_concurrent`` defaulting to
        ``ML4T_MAX_CONCURRENT`` when set), ``in_process_executor``,
        ``dagster_k8s.k8s_job_executor`` or ``dagster_celery.celery_executor``.
        The k8s and Celery packages are imported only when selected.

    Raises
    ------
    ExecutorSelectionError
        If ``ML4T_EXECUTOR`` names no known executor, if the package of the selected executor
        is not installed, or if ``ML4T_MAX_CONCURRENT`` is not a positive integer.
    """
    source = os.environ if env is None else env
    name = source.get(EXECUTOR_ENV, "").strip().lower() or DEFAULT_EXECUTOR
    if name == "multiprocess":
        return _multiprocess(max_concurrent_from_env(dict(source)))
    if name == "in_process":
        return dg.in_process_executor
    if name in _OPTIONAL_PACKAGES:
        return _optional(name)
    raise ExecutorSelectionError(
        f"{EXECUTOR_ENV}={source.get(EXECUTOR_ENV)!r} is not a known executor; "
        f"choose one of {', '.join(EXECUTOR_NAMES)}"
    )
