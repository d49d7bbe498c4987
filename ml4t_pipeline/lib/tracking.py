"""Experiment tracking in MLflow: one MLflow run per backtest, for comparing hundreds of runs.

Dagster keeps the lineage of each materialization; MLflow is where users of Qlib (whose
recorder is MLflow) and most ML teams compare runs over weeks: sortable params and metrics,
artifacts, search. :func:`log_backtest` writes one run through ``MlflowClient`` (no global
``mlflow`` state, so parallel steps cannot mix runs):

- **params**: the resolved experiment config, flattened to dotted keys
  (``strategy.n = 25``, ``risk_rules.0.stop_pct = 0.05``);
- **metrics**: the headline metrics (finite numbers only);
- **artifacts**: the files given (the HTML report, the trades as Parquet);
- **tags**: whatever the caller passes (Dagster run id, partition, config hash, code version,
  data versions).

MLflow is an optional dependency (``pip install -e ".[tracking]"``, ``mlflow-skinny``). Its file
store is in maintenance mode since MLflow 3.x, so the default store is a SQLite file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

MLFLOW_DB = "mlflow.db"
_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE = 6000
"""MLflow's limit on a param value's length (characters); longer values are cut with ``...``."""


class TrackingError(RuntimeError):
    """MLflow is not installed, or the tracking store refused the run."""


@dataclass(frozen=True)
class TrackedRun:
    """Where a backtest was logged.

    Attributes
    ----------
    run_id, experiment_id : str
        MLflow identifiers.
    tracking_uri : str
        The store the run lives in.
    artifact_uri : str
        Where its artifacts are.
    """

    run_id: str
    experiment_id: str
    tracking_uri: str
    artifact_uri: str


def default_tracking_uri(storage_dir: str | Path) -> str:
    """``sqlite:///<storage_dir>/mlflow.db`` (absolute path; the folder is created)."""
    folder = Path(storage_dir).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / MLFLOW_DB}"


def artifact_root(tracking_uri: str) -> str | None:
    """Where a new experiment's artifacts go: ``<folder of the SQLite file>/mlartifacts`` for a
    ``sqlite:///`` store (MLflow's own default is ``./mlruns`` in the working directory), the
    server's choice (None) otherwise."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return (Path(tracking_uri[len(prefix) :]).parent / "mlartifacts").as_uri()


def flatten_params(value: Any, prefix: str = "") -> dict[str, str]:
    """Flatten nested dicts/lists into ``{"a.b.0.c": "value"}`` (values as text, ``None`` as
    ``"null"``, cut to :data:`MAX_PARAM_VALUE` characters)."""
    out: dict[str, str] = {}
    if isinstance(value, Mapping):
        for key, item in value.items():
            out |= flatten_params(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list | tuple):
        if not value and prefix:
            out[prefix] = "[]"
        for i, item in enumerate(value):
            out |= flatten_params(item, f"{prefix}.{i}" if prefix else str(i))
    else:
        text = "null" if value is None else str(value)
        if len(text) > MAX_PARAM_VALUE:
            text = text[: MAX_PARAM_VALUE - 3] + "..."
        out[prefix or "value"] = text
    return out


@cache
def _client(tracking_uri: str) -> Any:
    """One ``MlflowClient`` per store for the process: opening a SQLite store builds an engine
    and checks its schema, which a sweep would otherwise repeat for every trial's run."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:  # the optional extra is missing
        raise TrackingError(
            'tracking.mlflow is set but MLflow is not installed: pip install -e ".[tracking]"'
        ) from exc
    return MlflowClient(tracking_uri=tracking_uri)


def log_backtest(
    *,
    tracking_uri: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    artifacts: Sequence[Path] = (),
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
) -> TrackedRun:
    """Log one backtest as a finished MLflow run.

    Parameters
    ----------
    tracking_uri : str
        MLflow store (:func:`default_tracking_uri` for the local default).
    experiment : str
        MLflow experiment name; created when missing.
    run_name : str
        The run's display name (e.g. the Dagster partition and run id).
    params : mapping
        Nested config; flattened with :func:`flatten_params`.
    metrics : mapping
        Name to number; booleans, ``None`` and non-finite values are left out.
    artifacts : sequence of Path
        Files copied into the run's artifacts.
    tags : mapping, optional
        String tags set on the run.
    parent_run_id : str, optional
        Makes this a child run (a sweep's trial under the sweep's run).

    Returns
    -------
    TrackedRun

    Raises
    ------
    TrackingError
        MLflow is not installed, or the store failed (the message names the URI).
    """
    client = _client(tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found
            else client.create_experiment(experiment, artifact_location=artifact_root(tracking_uri))
        )
        all_tags = dict(tags or {}) | {"mlflow.runName": run_name}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(experiment_id, tags=all_tags)
        run_id = run.info.run_id
        from mlflow.entities import Metric, Param

        flat = flatten_params(params)
        numbers = {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in sorted(numbers.items())])
        items = sorted(flat.items())
        for start in range(0, len(items), _PARAMS_PER_BATCH):  # MLflow takes 100 per call
            chunk = items[start : start + _PARAMS_PER_BATCH]
            client.log_batch(run_id, params=[Param(k, v) for k, v in chunk])
        for path in artifacts:
            client.log_artifact(run_id, str(path))
        client.set_terminated(run_id)
        return TrackedRun(run_id, experiment_id, tracking_uri, run.info.artifact_uri)
    except TrackingError:
        raise
    except Exception as exc:  # the store's own errors: name the store
        raise TrackingError(f"MLflow store {tracking_uri} refused the run: {exc}") from exc


def _numbers(value: Any, prefix: str = "") -> dict[str, float]:
    """Finite numbers of a nested mapping under dotted keys (booleans and text left out)."""
    out: dict[str, float] = {}
    if isinstance(value, Mapping):
        for key, item in value.items():
            out |= _numbers(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        out[prefix] = float(value)
    return out


def log_sweep(
    *,
    tracking_uri: str,
    experiment: str,
    sweep_name: str,
    summary: Mapping[str, Any],
    trials: Any,
    swept: Sequence[str],
    base_params: Mapping[str, Any],
    tags: Mapping[str, str] | None = None,
) -> tuple[TrackedRun, list[TrackedRun]]:
    """Log a sweep as one parent MLflow run with a child run per trial.

    Parameters
    ----------
    tracking_uri, experiment : str
        As for :func:`log_backtest`.
    sweep_name : str
        The sweep's name (tag ``ml4t.sweep`` on every run).
    summary : mapping
        ``sweep_summary.json``'s content: its numbers become the parent's metrics under dotted
        keys (``n_ok``, ``deflated_sharpe.dsr``, ``pbo.pbo``, ``best_trial.sharpe``, ...).
    trials : polars.DataFrame
        ``sweep_results.parquet``: one row per trial with ``trial``, ``status``, ``hash``, the
        swept paths and the trial metrics.
    swept : sequence of str
        The swept config paths: each child's params.
    base_params : mapping
        The base experiment's config: the parent's params (flattened).
    tags : mapping, optional
        Tags set on the parent and every child.

    Returns
    -------
    tuple of (TrackedRun, list of TrackedRun)
        The parent and the children in trial order.

    Raises
    ------
    TrackingError
        As for :func:`log_backtest`.
    """
    common = dict(tags or {}) | {"ml4t.sweep": sweep_name}
    parent = log_backtest(
        tracking_uri=tracking_uri,
        experiment=experiment,
        run_name=f"sweep {sweep_name}",
        params=base_params,
        metrics=_numbers(summary),
        tags=common,
    )
    skip = {"trial", "status", "hash", "error", *swept}
    children = []
    for row in trials.iter_rows(named=True):
        children.append(
            log_backtest(
                tracking_uri=tracking_uri,
                experiment=experiment,
                run_name=f"{sweep_name} trial {row['trial']}",
                params={path: row[path] for path in swept},
                metrics={k: v for k, v in row.items() if k not in skip},
                tags=common
                | {
                    "ml4t.trial": str(row["trial"]),
                    "ml4t.trial_status": str(row["status"]),
                    "ml4t.trial_hash": str(row["hash"]),
                },
                parent_run_id=parent.run_id,
            )
        )
    return parent, children


def track_sweep(
    sweep: Any,
    summary: Mapping[str, Any],
    trials: Any,
    *,
    storage_dir: str | Path,
    tags: Mapping[str, str] | None = None,
) -> TrackedRun | None:
    """Log a finished sweep to MLflow when its base experiment sets ``tracking.mlflow``.

    The one entry point of :meth:`ml4t_pipeline.sweeps.Sweep.run` (``ml4t sweep``) and the
    ``sweep_results`` asset: :func:`log_sweep` with the store of ``tracking.mlflow.uri`` (else
    :func:`default_tracking_uri` of ``storage_dir``), the experiment ``tracking.mlflow.
    experiment`` (else the base experiment's name), the base config as the parent's params and
    the code version as a tag.

    Parameters
    ----------
    sweep : ml4t_pipeline.lib.sweep.spec.SweepFile
        The loaded sweep.
    summary : mapping
        ``sweep_summary.json``'s content.
    trials : polars.DataFrame
        ``sweep_results``.
    storage_dir : str or Path
        Folder of the default SQLite store.
    tags : mapping, optional
        More tags for the parent and the children (e.g. the Dagster run id).

    Returns
    -------
    TrackedRun or None
        The parent run; None when the sweep does not ask for tracking.

    Raises
    ------
    TrackingError
        As for :func:`log_backtest`.
    """
    settings = sweep.base.tracking.mlflow
    if settings is None:
        return None
    parent, _ = log_sweep(
        tracking_uri=settings.uri or default_tracking_uri(storage_dir),
        experiment=settings.experiment or sweep.base.name,
        sweep_name=sweep.name,
        summary=summary,
        trials=trials,
        swept=sweep.spec.paths(),
        base_params=sweep.base.model_dump(mode="json", exclude={"tracking"}),
        tags={"ml4t.code_version": str(summary.get("code_version", ""))} | dict(tags or {}),
    )
    return parent
