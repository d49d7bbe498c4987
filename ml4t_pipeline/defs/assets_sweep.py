"""The ``sweep_results`` asset: one partition per sweep file, trials fanned out on Ray.

Sweep files live in their own folder (``$ML4T_SWEEPS_DIR``, default ``configs/sweeps``) because
every YAML in ``configs/`` is an experiment partition. ``sweep_files_sensor`` adds a partition of
the ``sweeps`` dynamic partitions definition per file stem. Materializing a partition runs
:func:`ml4t_pipeline.lib.sweep.runner.run_sweep` (resumable: trials stored by an earlier or
killed run are reused) into ``<output_dir>/<sweep>`` and stores the result table; its
materialization shows trials done/total, DSR, PBO, PSR and the minimum track record length,
Hansen's SPA, White's Reality Check and StepM, the Holm/BY counts, the walk-forward results
(with ``sweep.walk_forward``), the best trials and the report's plots. The run's log shows the
progress (every tenth of the trials). Three asset checks gate the result
(:data:`~ml4t_pipeline.lib.sweep.results.GATES`, thresholds in ``sweep.gates``): failures warn,
or block with ``sweep.gates.blocking: true``. With ``tracking.mlflow`` in the base experiment,
the sweep is logged to MLflow as a parent run with a child per trial, and the parent's run id
is in the metadata (``mlflow_run_id``).

With the ``ray`` extra installed, the asset carries dagster-ray's ``LocalRay`` resource as
``ray_cluster`` (:func:`local_ray`: created when a run initializes it, so loading the code
location does not import dagster-ray). With run config ``backend: ray`` and no
``RAY_ADDRESS``, the sweep starts its own local Ray with ``num_cpus = workers`` whose
processes listen on 127.0.0.1 only
(:func:`ml4t_pipeline.lib.sweep.backends.start_local_ray`) and stops it at the end. With
``RAY_ADDRESS`` set, or with the resource replaced by ``dagster_ray.kuberay``'s for a KubeRay
cluster (deploy/README.md), the resource connects to that cluster and the prepared data and the
trials go to its hosts.
"""

import functools
import importlib.util
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
import polars as pl

from ml4t_pipeline.defs.execution import DATA_ASSETS, execute_experiment, failure_text
from ml4t_pipeline.defs.io_managers import default_storage_dir
from ml4t_pipeline.defs.storage_metadata import asset_checks_verdict
from ml4t_pipeline.lib.report import png_markdown

if TYPE_CHECKING:
    from ml4t_pipeline.lib.sweep.runner import PrepareData

GROUP = "sweeps"
SWEEPS = "sweeps"
SWEEPS_ENV = "ML4T_SWEEPS_DIR"
_SAFE_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

sweeps_partitions = dg.DynamicPartitionsDefinition(name=SWEEPS)
"""One partition per sweep file (its stem), kept in sync by ``sweep_files_sensor``."""


def default_sweeps_dir() -> str:
    """``$ML4T_SWEEPS_DIR``, else ``configs/sweeps`` in the current directory, else the repo's."""
    env = os.environ.get(SWEEPS_ENV)
    if env:
        return env
    here = Path.cwd() / "configs" / "sweeps"
    if here.is_dir():
        return str(here)
    return str(Path(__file__).resolve().parents[2] / "configs" / "sweeps")


def sweep_keys(folder: str | Path) -> list[str]:
    """Stems of the sweep files (``.yaml``, ``.yml``, ``.json``) in ``folder``, sorted."""
    base = Path(folder)
    suffixes = (".yaml", ".yml", ".json")
    return sorted({p.stem for p in base.glob("*") if p.suffix in suffixes and p.is_file()})


def sweep_path(folder: str | Path, key: str) -> Path:
    """The sweep file of partition ``key``.

    Raises
    ------
    ValueError
        ``key`` is not a safe file stem (``[A-Za-z0-9_.-]``, no ``..``).
    FileNotFoundError
        No such file in ``folder``.
    """
    if not _SAFE_KEY.fullmatch(key) or ".." in key:
        raise ValueError(f"sweep partition key {key!r} is not a safe file stem")
    for suffix in (".yaml", ".yml", ".json"):
        path = Path(folder) / f"{key}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"sweep {key!r}: no {key}.yaml/.json in {Path(folder).resolve()}")


class SweepRunConfig(dg.Config):
    """Run config of ``sweep_results`` (the file's ``sweep:`` block gives the defaults).

    Attributes
    ----------
    backend : {"", "serial", "processes", "ray"}
        Empty: the file's ``sweep.backend``, else ``ray`` when installed, else ``serial``.
    workers : int
        Parallel workers (0: the file's, else the CPU count).
    sweeps_dir : str
        Folder of sweep files (empty: :func:`default_sweeps_dir`).
    output_dir : str
        Parent of each sweep's folder (empty: ``<storage>/sweeps``).
    """

    backend: Literal["", "serial", "processes", "ray"] = ""
    workers: int = 0
    sweeps_dir: str = ""
    output_dir: str = ""


@dg.resource(
    description="dagster-ray's LocalRay (lifecycle connect=False), built when a run of "
    "sweep_results starts: dagster-ray is imported only by the runs that use it"
)
def local_ray(init_context: dg.InitResourceContext) -> Iterator[Any]:
    """dagster-ray's ``LocalRay`` resource, created (and its lifecycle run) when a run that needs
    it initializes its resources, so that loading the code location (every ``ml4t run``) does
    not import dagster-ray (about 0.3 s CPU). It connects only when the sweep asks for the ray
    backend (``Lifecycle(connect=False)``; ray.init takes seconds)."""
    from dagster_ray import Lifecycle, LocalRay

    with LocalRay(lifecycle=Lifecycle(connect=False)).yield_for_execution(init_context) as ray:
        yield ray


def _ray_resources() -> dict[str, Any]:
    # the ray extra is optional: without dagster-ray the asset runs serial/processes
    return {"ray_cluster": local_ray} if importlib.util.find_spec("dagster_ray") else {}


RAY_RESOURCES = _ray_resources()


def _data_job(context: dg.AssetExecutionContext) -> dg.JobDefinition:
    """The job that prepares a sweep's data: the code location's ``experiment_job`` (run for
    its data assets), or, when the asset is materialized on its own (``dg.materialize``, no code
    location around it), a job of the data asset modules alone (``sources``, ``assets_data``)."""
    try:
        return context.repository_def.get_job("experiment_job")
    except Exception:  # dagster's CheckError: "No repository definition was set"
        from ml4t_pipeline.defs import assets_data, sources
        from ml4t_pipeline.defs.io_managers import Ml4tIOManager
        from ml4t_pipeline.defs.resources import ExperimentsResource
        from ml4t_pipeline.defs.versions import versioned_assets

        defs = dg.Definitions(
            assets=versioned_assets([sources, assets_data]),
            jobs=[dg.define_asset_job("sweep_data_job", selection=list(DATA_ASSETS))],
            # placeholders: execute_experiment hands in the data section's own resources
            resources={
                "experiments": ExperimentsResource(configs_dir="."),
                "io_manager": Ml4tIOManager(base_dir="."),
            },
        )
        return defs.resolve_job_def("sweep_data_job")


def _prepare(context: dg.AssetExecutionContext) -> "PrepareData":
    """The sweep's ``prepare`` callable: this code location's ``experiment_job`` executed for
    its data assets on each data section's experiment file (looked up only when a data section
    is not prepared yet)."""
    from ml4t_pipeline.lib.sweep.runner import SweepError, prepare_data

    def materialize(config_path: Path, storage: Path) -> None:
        job = _data_job(context)
        result = execute_experiment(job, config_path, storage, selection=DATA_ASSETS)
        if not result.success:
            text = failure_text(result).replace("\n", "\n  ")
            raise SweepError(f"preparing the sweep's data ({storage.parent}) failed:\n  {text}")

    return functools.partial(prepare_data, materialize=materialize)


GATE_DESCRIPTIONS = {
    "best_trial_dsr_at_least": "The best trial's Deflated Sharpe Ratio (Bailey & López de "
    "Prado 2014) is at least sweep.gates.best_trial_dsr_at_least (default 0.95).",
    "pbo_at_most": "The probability of backtest overfitting (CSCV) is at most "
    "sweep.gates.pbo_at_most (default 0.5).",
    "spa_pvalue_at_most": "Hansen's SPA p-value (some trial beats cash after the search) is at "
    "most sweep.gates.spa_pvalue_at_most (default 0.05).",
}
"""The ``sweep_results`` checks; warn by default, block with ``sweep.gates.blocking: true``."""


def _gate_checks() -> list[dg.AssetCheckSpec]:
    # blocking specs: a failure of ERROR severity (sweep.gates.blocking) stops the step; the
    # default WARN severity only warns
    return [
        dg.AssetCheckSpec(
            name,
            asset="sweep_results",
            blocking=True,
            description=text,
            partitions_def=sweeps_partitions,
        )
        for name, text in GATE_DESCRIPTIONS.items()
    ]


def gate_results(gates: list[dict[str, Any]]) -> list[dg.AssetCheckResult]:
    """The asset check results of the summary's ``gates`` (severity ERROR when blocking)."""
    return [
        dg.AssetCheckResult(
            check_name=gate["name"],
            passed=gate["passed"],
            severity=dg.AssetCheckSeverity.ERROR
            if gate["blocking"]
            else dg.AssetCheckSeverity.WARN,
            metadata={
                "value": dg.MetadataValue.float(float(gate["value"]))
                if gate["value"] is not None
                else dg.MetadataValue.text("n/a"),
                "threshold": dg.MetadataValue.float(float(gate["threshold"])),
                "detail": dg.MetadataValue.text(gate["detail"]),
            },
        )
        for gate in gates
    ]


def _number(value: Any, reason: Any = None) -> dg.MetadataValue:
    if value is None:
        return dg.MetadataValue.text(f"n/a: {reason}" if reason else "n/a")
    if isinstance(value, bool | str):
        return dg.MetadataValue.text(str(value))
    return dg.MetadataValue.float(float(value))


def statistics_metadata(summary: dict[str, Any]) -> dict[str, dg.MetadataValue]:
    """The multiple-testing statistics and the walk-forward headline as asset metadata."""
    psr, spa = summary.get("psr") or {}, summary.get("spa") or {}
    mt, wf = summary.get("multiple_testing") or {}, summary.get("walk_forward")
    meta: dict[str, dg.MetadataValue] = {
        "psr_best_trial": _number(psr.get("psr"), psr.get("reason")),
        "min_track_record_bars": _number(psr.get("min_track_record_length"), "no edge"),
        "min_track_record_years": _number(psr.get("min_track_record_years"), "no edge"),
        "spa_pvalue": _number(spa.get("spa_pvalue"), spa.get("reason")),
        "reality_check_pvalue": _number(spa.get("reality_check_pvalue"), spa.get("reason")),
        "stepm_superior_trials": dg.MetadataValue.json(spa.get("stepm_superior_trials", [])),
        "n_significant_holm": dg.MetadataValue.int(int(mt.get("n_significant_holm", 0))),
        "n_significant_by": dg.MetadataValue.int(int(mt.get("n_significant_by", 0))),
        "verdict": dg.MetadataValue.text(str(summary.get("verdict", ""))),
    }
    cpcv = summary.get("cpcv")
    if cpcv is not None:
        if cpcv.get("reason"):
            meta["cpcv"] = dg.MetadataValue.text(f"n/a: {cpcv['reason']}")
        else:
            meta["cpcv_oos_sharpe_median"] = _number(cpcv["sharpe_quantiles"]["0.5"])
            meta["cpcv_paths_positive"] = _number(cpcv["share_positive"])
    if wf is not None:
        if wf.get("reason"):
            meta["walk_forward"] = dg.MetadataValue.text(f"n/a: {wf['reason']}")
        else:
            meta["walk_forward_oos_sharpe"] = _number(wf["oos"].get("sharpe"))
            meta["walk_forward_degradation_ratio"] = _number(wf.get("degradation_ratio"))
            meta["walk_forward_folds"] = dg.MetadataValue.md(
                _markdown(
                    pl.DataFrame(
                        [
                            {
                                "fold": f["fold"],
                                "test": f"{f['test_start'][:10]}..{f['test_end'][:10]}",
                                "trial": f["trial"],
                                "is_sharpe": f["is_sharpe"],
                                "oos_sharpe": f["oos_sharpe"],
                            }
                            for f in wf["folds"]
                        ]
                    )
                )
            )
    return meta


@dg.asset(
    partitions_def=sweeps_partitions,
    group_name=GROUP,
    kinds={"ray", "polars"} if RAY_RESOURCES else {"polars"},
    resource_defs=RAY_RESOURCES,
    required_resource_keys=set(RAY_RESOURCES),
    check_specs=_gate_checks(),
)
def sweep_results(context: dg.AssetExecutionContext, config: SweepRunConfig) -> Iterator[Any]:
    """One row per trial of a sweep: parameters, metrics, per-trial p-values, hash, status,
    seconds, error.

    Also writes ``sweep_results.parquet``, ``sweep_summary.json`` (Deflated Sharpe Ratio of the
    best trial, PBO by CSCV, PSR and minimum track record length, SPA / Reality Check / StepM,
    Holm and BY counts, walk-forward, gates) and ``sweep_report.html`` into the sweep's folder
    (:mod:`ml4t_pipeline.lib.sweep`), then yields the three gate checks.
    """
    from ml4t_pipeline.lib.sweep.results import write_outputs
    from ml4t_pipeline.lib.sweep.runner import run_sweep
    from ml4t_pipeline.lib.sweep.spec import load_sweep_file

    key = context.partition_key
    sweep = load_sweep_file(sweep_path(config.sweeps_dir or default_sweeps_dir(), key))
    backend = config.backend or sweep.spec.backend or ("ray" if RAY_RESOURCES else "serial")
    workers = config.workers or sweep.spec.workers or (os.cpu_count() or 1)
    out = Path(config.output_dir or Path(default_storage_dir()) / "sweeps") / key
    connected = False
    if backend == "ray" and RAY_RESOURCES:
        import ray
        from dagster_ray import LocalRay

        cluster = context.resources.ray_cluster
        local = isinstance(cluster, LocalRay) and not os.environ.get("RAY_ADDRESS")
        # a local Ray is started by run_sweep itself, listening on 127.0.0.1 only (LocalRay's
        # ray.init would listen on every interface, or join a `ray start` cluster found here);
        # a cluster (RAY_ADDRESS, or a KubeRay resource put in LocalRay's place) is connected
        if not local and not ray.is_initialized():
            cluster.connect(context)
            connected = True
    total = len(sweep.trials)
    done = {"n": 0}

    def prepared(pending: int, all_trials: int) -> None:
        done["n"] = all_trials - pending
        context.log.info(f"sweep {key}: {all_trials} trials, {pending} to compute on {backend}")

    def finished(record: dict[str, Any]) -> None:
        done["n"] += 1
        if done["n"] % max(1, total // 10) == 0 or done["n"] == total:
            context.log.info(f"sweep {key}: {done['n']}/{total} trials done")

    try:
        run = run_sweep(
            sweep, out, backend=backend, workers=workers, on_prepared=prepared,
            on_trial=finished, prepare=_prepare(context),
        )  # fmt: skip
    finally:
        if connected:
            import ray

            ray.shutdown()
    context.log.info(f"sweep {key}: trials done; computing the statistics and the report")
    outputs = write_outputs(sweep, run, out)
    summary, table, figures = outputs["summary"], outputs["table"], outputs["figures"]
    context.log.info(f"sweep {key}: {summary['verdict']}")
    params = sweep.spec.paths()
    best = (
        table.filter(pl.col("status") == "ok")
        .sort("sharpe", descending=True, nulls_last=True)
        .select(["trial", *params, "sharpe", "cagr", "max_drawdown", "n_trades"])
        .head(10)
    )
    dsr, pbo = summary["deflated_sharpe"], summary["pbo"]
    meta: dict[str, Any] = {
        "trials_done": dg.MetadataValue.text(f"{summary['n_ok'] + summary['n_failed']}/{total}"),
        "n_ok": dg.MetadataValue.int(summary["n_ok"]),
        "n_failed": dg.MetadataValue.int(summary["n_failed"]),
        "n_computed": dg.MetadataValue.int(summary["n_computed"]),
        "n_reused": dg.MetadataValue.int(summary["n_reused"]),
        "backend": dg.MetadataValue.text(f"{run.backend} x{run.workers}"),
        "deflated_sharpe_ratio": dg.MetadataValue.float(dsr["dsr"])
        if dsr.get("dsr") is not None
        else dg.MetadataValue.text(f"n/a: {dsr.get('reason')}"),
        "pbo": dg.MetadataValue.float(pbo["pbo"])
        if pbo.get("pbo") is not None
        else dg.MetadataValue.text(f"n/a: {pbo.get('reason')}"),
        "best_trials": dg.MetadataValue.md(_markdown(best)),
        "sharpe_heatmap": dg.MetadataValue.md(png_markdown(figures["heatmap"], "heatmap")),
        "sharpe_distribution": dg.MetadataValue.md(png_markdown(figures["histogram"], "sharpes")),
        "top_equity": dg.MetadataValue.md(png_markdown(figures["equity"], "equity")),
        "report": dg.MetadataValue.path(str((out / "sweep_report.html").resolve())),
        "code_version": dg.MetadataValue.text(run.code_version),
        "seconds": dg.MetadataValue.float(run.seconds),
    }
    meta |= statistics_metadata(summary)
    if "walk_forward" in figures:
        meta["walk_forward_oos_equity"] = dg.MetadataValue.md(
            png_markdown(figures["walk_forward"], "walk-forward out-of-sample equity")
        )
    if sweep.base.tracking.mlflow is not None:  # a parent MLflow run, a child per trial
        from ml4t_pipeline.lib import tracking

        parent = tracking.track_sweep(
            sweep, summary, table, storage_dir=default_storage_dir(),
            tags={"dagster.run_id": context.run.run_id, "dagster.partition": key},
        )  # fmt: skip
        assert parent is not None
        context.log.info(f"sweep {key}: logged to MLflow as run {parent.run_id}")
        meta |= {
            "mlflow_run_id": dg.MetadataValue.text(parent.run_id),
            "mlflow_experiment_id": dg.MetadataValue.text(parent.experiment_id),
            "mlflow_tracking_uri": dg.MetadataValue.text(parent.tracking_uri),
        }
    checks = gate_results(summary["gates"])
    yield dg.Output(table, metadata=meta | asset_checks_verdict(context, checks))
    yield from checks


def _markdown(frame: pl.DataFrame) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return head + "".join(
        "| " + " | ".join(cell(v) for v in row) + " |\n" for row in frame.iter_rows()
    )


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a `sweeps` partition for every new sweep file in the sweeps folder "
    "(configs/sweeps); runs are launched by hand (a sweep can be long).",
)
def sweep_files_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """Sync the ``sweeps`` dynamic partitions with the sweep files on disk."""
    on_disk = set(sweep_keys(default_sweeps_dir()))
    known = set(context.instance.get_dynamic_partitions(SWEEPS))
    added = sorted(k for k in on_disk - known if _SAFE_KEY.fullmatch(k) and ".." not in k)
    return dg.SensorResult(
        dynamic_partitions_requests=[
            dg.AddDynamicPartitionsRequest(partitions_def_name=SWEEPS, partition_keys=added)
        ]
        if added
        else []
    )
