"""One experiment run into one output folder: the code path of ``ml4t run`` and the Python API.

:func:`run_to_folder` materializes the whole asset graph for one experiment file in-process
(Dagster) and publishes the output files as one atomic set (:mod:`ml4t_pipeline.lib.output`).
It prints nothing; :func:`ml4t_pipeline.cli.cmd_run` and :mod:`ml4t_pipeline.api` present the
:class:`RunOutcome`.

Faults with a clear end:

- a full disk (``ENOSPC``/``EDQUOT``, or a failed write while the disk is nearly full) raises
  :class:`DiskFullError` naming the folder and its free space (``ml4t`` exits 2);
- a failed run writes its full Dagster traces to ``<output>.error.log`` beside the output folder
  (:func:`error_log_path`); the command prints only the cause and that path;
- a Dagster run whose process died (``kill -9``, a crash) stays ``STARTED`` in a persistent
  instance; the next run on the same host marks it failed (:func:`mark_stale_runs`);
- an experiment file whose stem is not a safe partition key is refused before any partition is
  registered (:func:`ml4t_pipeline.defs.partitions.check_config_stem`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import dagster as dg
import polars as pl

from ml4t_pipeline.config import ExperimentConfig, load_config
from ml4t_pipeline.definitions import defs as code_location
from ml4t_pipeline.defs.execution import (
    DATA_ASSETS,
    HOST_TAG,
    PROCESS_TAG,
    execute_experiment,
    failed_checks,
    failure_text,
    failure_trace,
    mark_stale_runs,
    process_gone,
    process_identity,
)
from ml4t_pipeline.defs.partitions import check_config_stem
from ml4t_pipeline.defs.resources import BUILT_IN_CODE
from ml4t_pipeline.lib import attribution as attribution_lib
from ml4t_pipeline.lib import output as output_lib
from ml4t_pipeline.lib import report as report_lib
from ml4t_pipeline.lib.attribution import ATTRIBUTION_FILES
from ml4t_pipeline.lib.comparison import LINEAGE_FIELDS
from ml4t_pipeline.lib.formats import read_value
from ml4t_pipeline.lib.keys import check_partition_key

__all__ = [
    "DATA_ASSETS",
    "DISK_FULL_ERRNOS",
    "HOST_TAG",
    "LOW_SPACE_BYTES",
    "OUTPUT_FOLDER_TAG",
    "PROCESS_TAG",
    "DiskFullError",
    "RunOutcome",
    "disk_full_error",
    "error_log_path",
    "failed_checks",
    "failure_text",
    "failure_trace",
    "is_disk_full",
    "mark_stale_runs",
    "materialize_experiment",
    "process_gone",
    "process_identity",
    "rebuild_report_in_place",
    "run_lineage",
    "run_prices",
    "run_to_folder",
]


OUTPUT_FOLDER_TAG = "ml4t/output_folder"
"""Run tag of an ``ml4t run``: the output folder its values are published in (on success)."""
ZERO_TRADES_WARNING = "no trades"
"""Start of the warning text of a run that made no trades."""
ERROR_LOG_SUFFIX = ".error.log"
"""Suffix of the failure log written beside a failed run's output folder."""
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""``errno`` values of a full disk or an exhausted quota."""
LOW_SPACE_BYTES = 64 * 2**20
"""Below this much free space a failed write whose error names no errno (polars: "Invalid
thrift: transport error") is reported as a full disk. 64 MiB: a full disk has a few blocks
free, and the partial file a failed write removes again is at most one stored value (the demo's
largest is 0.7 MB, its whole output set 15 MB)."""

_DISK_FULL_TEXT = re.compile(
    rf"No space left on device|Disk quota exceeded|\b(?:os error|errno) ?\[?(?:{errno.ENOSPC}"
    rf"|{errno.EDQUOT})\b|\bENOSPC\b|\bEDQUOT\b",
    re.IGNORECASE,
)
_IO_FAILURE_TEXT = re.compile(
    r"\bI/?O error|transport error|thrift|\berrno\b|os error|cannot write|failed to write|"
    r"write error|short write",
    re.IGNORECASE,
)


_READ_ERRORS = ("InputFileError",)
"""Error classes of unreadable input files: their I/O errors are not failed writes."""


class DiskFullError(output_lib.OutputError):
    """The disk (or quota) holding the output is full; the message names the folder and the
    free space. ``ml4t`` exits 2; the previous output is untouched.

    Attributes
    ----------
    path : Path
        The folder whose disk is full.
    free_bytes : int or None
        Free bytes on that disk when the write failed (None when it could not be measured).
    """

    def __init__(self, path: Path, message: str, free_bytes: int | None) -> None:
        super().__init__(path, message)
        self.free_bytes = free_bytes


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [item.__cause__, item.__context__]


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) reports a full disk or quota.

    True for an ``OSError`` with ``errno`` ``ENOSPC``/``EDQUOT`` and for errors whose text says so
    (polars: "No space left on device (os error 28)").
    """
    for item in _exception_chain(exc):
        if isinstance(item, OSError) and item.errno in DISK_FULL_ERRNOS:
            return True
        if _DISK_FULL_TEXT.search(str(item)):
            return True
    return False


def _looks_like_io_failure(exc: BaseException) -> bool:
    return any(
        isinstance(item, OSError) or bool(_IO_FAILURE_TEXT.search(str(item)))
        for item in _exception_chain(exc)
    )


def _disk_usage(folder: Path) -> tuple[int, int] | None:
    """(free, total) bytes of the disk holding ``folder`` (or its nearest existing parent)."""
    for candidate in [folder, *folder.parents]:
        try:
            usage = shutil.disk_usage(candidate)
        except OSError:
            continue
        return usage.free, usage.total
    return None


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"  # pragma: no cover - the loop returns


def disk_full_error(folder: Path, detail: str, *, output: Path | None = None) -> DiskFullError:
    """A :class:`DiskFullError` for ``folder``, with the disk's free space measured now.

    ``detail`` says what failed (the step or file and its error); ``output``, when given, is
    named as left unchanged.
    """
    usage = _disk_usage(Path(folder))
    free = "free space unknown" if usage is None else f"{_size(usage[0])} free of {_size(usage[1])}"
    message = (
        f"no space left on the disk holding {folder} ({free}): {detail.strip()}. Free some "
        "space there (or choose another --output) and rerun"
    )
    if output is not None:
        message += f"; output folder {output} left unchanged"
    return DiskFullError(Path(folder), message, None if usage is None else usage[0])


def _write_failure(exc: BaseException, where: Path, final: Path) -> output_lib.OutputError:
    """The error for a failed write of the output set in ``where`` (the staging folder)."""
    usage = _disk_usage(where)
    low = usage is not None and usage[0] < LOW_SPACE_BYTES
    if is_disk_full(exc) or (low and _looks_like_io_failure(exc)):
        return disk_full_error(final.parent, f"writing the output set failed: {exc}", output=final)
    return output_lib.OutputError(where, f"cannot write the output set for {final}: {exc}")


def materialize_experiment(
    config_path: Path | ExperimentConfig,
    storage_dir: Path,
    *,
    selection: Sequence[str] | None = None,
    instance: dg.DagsterInstance | None = None,
    validate: bool = False,
    published_dir: Path | None = None,
    tags: dict[str, str] | None = None,
    trigger: str = "python",
    config_hash: str | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize the graph (or ``selection``) for one experiment file in-process.

    Executes the code location's own ``experiment_job`` (``validated_experiment_job`` with
    ``validate``, which adds the cross-framework validation assets, VectorBT and Backtrader):
    the job of :data:`ml4t_pipeline.definitions.defs`, built once, so the graph is stated once.
    The rest is :func:`~ml4t_pipeline.defs.execution.execute_experiment`: the partition key is
    the file stem, its folder the configs folder, values stored under ``storage_dir``
    (``published_dir``: where that folder is moved afterwards), stale runs of this host marked
    failed on a persistent instance, and the run tagged (``ml4t/experiment``, ``trigger``,
    code version, ``config_hash``, host, process, ``tags``).

    Raises
    ------
    ml4t_pipeline.defs.partitions.UnsafePartitionKeyError
        The file stem is not a safe partition key; nothing is registered.
    """
    job = code_location.resolve_job_def(
        "validated_experiment_job" if validate else "experiment_job"
    )
    experiment = config_path if isinstance(config_path, ExperimentConfig) else Path(config_path)
    return execute_experiment(
        job, experiment, Path(storage_dir), selection=selection, instance=instance,
        published_dir=published_dir, tags=tags, trigger=trigger, config_hash=config_hash,
    )  # fmt: skip


def _disk_full_step(result: dg.ExecuteInProcessResult, folder: Path) -> str | None:
    """``"step X failed: <cause>"`` of the first step that failed for a full disk, or None.

    A step failed for a full disk when its error (or a cause) names ENOSPC/EDQUOT, or when it
    is an I/O failure without an errno (polars: "Invalid thrift: transport error") while the disk
    holding ``folder`` has less than :data:`LOW_SPACE_BYTES` free.
    """
    usage = _disk_usage(folder)
    low = usage is not None and usage[0] < LOW_SPACE_BYTES
    for event in result.all_events:
        if not (event.is_step_failure and event.step_failure_data.error is not None):
            continue
        err = event.step_failure_data.error
        texts = []
        todo = [err]
        while todo:
            item = todo.pop()
            if item is None:
                continue
            texts.append(f"{item.cls_name}: {item.message}")
            todo += [item.cause, item.context]
        full = any(_DISK_FULL_TEXT.search(t) for t in texts)
        io = any(_IO_FAILURE_TEXT.search(t) or t.startswith("OSError") for t in texts)
        if any(t.split(":", 1)[0].rsplit(".", 1)[-1] in _READ_ERRORS for t in texts):
            io = False  # an unreadable input file (truncated: "Invalid thrift"), not a write
        if full or (low and io):
            return f"step {event.step_key} failed: {(err.cause or err).message.strip()}"
    return None


def error_log_path(output: Path) -> Path:
    """The failure log of output folder ``output``: ``<output>.error.log`` beside it.

    Written by a failed run (the failure, then every failed step's full trace), removed by the
    next successful run into the same folder.
    """
    return output.with_name(output.name + ERROR_LOG_SUFFIX)


def _write_error_log(path: Path, header: dict[str, Any], failure: str, trace: str) -> Path | None:
    lines = [f"{k}: {v}" for k, v in header.items()]
    text = "\n".join([*lines, "", failure, "", trace, ""])
    try:
        output_lib.write_text_atomic(path, text)
    except OSError:
        return None  # a log that cannot be written must not hide the run's own failure
    return path


def canonical_config_json(cfg: ExperimentConfig) -> str:
    """The config as canonical JSON text (sorted keys, the file's key names): what
    ``config_sha256`` hashes for a config handed in as an object."""
    return json.dumps(cfg.model_dump(mode="json", by_alias=True), sort_keys=True)


def run_lineage(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """Lineage of a run: experiment, config hash, code version, input versions, run id."""
    lineage: dict[str, Any] = {"run_id": result.run_id}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key.to_user_string() != "backtest":
            continue
        for name, value in materialization.metadata.items():
            if name in LINEAGE_FIELDS:
                lineage[name] = getattr(value, "value", value)
    return lineage


@dataclass
class RunOutcome:
    """What :func:`run_to_folder` did.

    Attributes
    ----------
    success : bool
        True when the graph materialized and the new output set is in place.
    output : Path
        The output folder (absolute). On failure it holds the previous complete set, unchanged
        (or does not exist).
    metrics : dict
        The run's metrics (``metrics.json``; non-finite values are None). Empty on failure.
    failure : str or None
        On failure: the failed checks with their offending rows and the failed steps, as text.
    elapsed : float
        Seconds of the Dagster materialization.
    result : dagster.ExecuteInProcessResult or None
        The Dagster result (events, run id).
    experiment : str
        The config's ``name``.
    warnings : list of str
        Warnings also recorded in ``run.json`` (e.g. a run that made no trades).
    manifest : dict
        The ``run.json`` written (empty on failure).
    trace : str or None
        On a failed step: every failed step's full error with stack traces
        (:func:`failure_trace`).
    log_path : Path or None
        On failure: the log file holding ``failure`` and ``trace`` (:func:`error_log_path`), or
        None when it could not be written.
    """

    success: bool
    output: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None
    elapsed: float = 0.0
    result: dg.ExecuteInProcessResult | None = None
    experiment: str = ""
    warnings: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    trace: str | None = None
    log_path: Path | None = None


def _write_outputs(
    staging: Path, storage: Path, key: str, result: dg.ExecuteInProcessResult, cfg: Any, *,
    final: Path, validate: bool,
) -> dict[str, Any]:  # fmt: skip
    backtest = read_value(storage / "backtest" / key)
    for name in ("trades", "portfolio_states", "fills", "rejections"):
        backtest[name].write_parquet(staging / f"{name}.parquet")
    output_lib.pause_at("writing")
    for name in ("signals", "prices_quarantine"):
        frame = read_value(storage / name / key)
        frame = frame.with_columns(pl.col("symbol").cast(pl.String))
        frame.write_parquet(staging / f"{name}.parquet")
    metrics = output_lib.to_json_safe(read_value(storage / "metrics" / key))
    output_lib.write_text_atomic(staging / "metrics.json", output_lib.dumps_strict(metrics))
    # report.html IS the performance_report asset's HTML; the attribution tables are the
    # attribution assets' values (computed once, in the graph)
    shutil.copyfile(storage / "performance_report" / f"{key}.html", staging / "report.html")
    (staging / "report.html").chmod(0o644)
    trades = backtest["trades"]
    tables = attribution_lib.from_tables(
        trades,
        by_exit_reason=read_value(storage / "attribution_by_exit_reason" / key),
        cost_attribution=read_value(storage / "cost_attribution" / key),
        by_signal=read_value(storage / "attribution_by_signal" / key),
        by_regime=read_value(storage / "attribution_by_regime" / key),
    )
    attribution_lib.add_mechanics(  # market mechanics: carry lines, corporate actions
        tables, backtest["portfolio_states"], backtest.get("corporate_actions")
    )
    attribution_lib.write_attribution(tables, staging)
    # output_folder: the report's lineage names the final folder, not the staging folder.
    lineage = run_lineage(result) | {"output_folder": str(final)}
    output_lib.write_text_atomic(staging / "lineage.json", output_lib.dumps_strict(lineage))
    settings = report_lib.report_settings(cfg)  # what the performance_report asset used
    output_lib.write_text_atomic(
        staging / report_lib.REPORT_SETTINGS_FILE, output_lib.dumps_strict(settings)
    )
    if validate:
        table = read_value(storage / "cross_framework_validation" / key)["summary"]
        table.write_parquet(staging / "cross_framework_validation.parquet")
    return {"metrics": metrics, "lineage": lineage, "n_fills": backtest["fills"].height,
            "n_trades": backtest["trades"].height}  # fmt: skip


def run_to_folder(
    config_path: Path | ExperimentConfig,
    output: Path,
    *,
    validate: bool = False,
    trigger: str = "python",
) -> RunOutcome:
    """Run one experiment and publish its output files in ``output`` as one atomic set.

    ``trigger`` (``"cli"`` from ``ml4t run``) becomes the run's ``ml4t/trigger`` tag.

    Steps, all under the exclusive lock ``<output>.lock`` (:func:`output_lib.output_lock`):

    1. tidy leftovers of killed runs beside ``output`` (:func:`output_lib.recover_output`);
    2. create the staging folder ``<output>.tmp-<pid>-<hex>`` beside ``output``;
    3. materialize the asset graph with its Dagster storage in ``<staging>/assets``, **from
       scratch**: the previous ``assets/`` is not copied in, so the set depends only on the
       config and the data, never on what an earlier run (another config, ``--validate``) left
       in the folder. Measured on ``configs/demo.yaml`` (in-process, 3 interleaved rounds,
       shared 2-core machine): 7.40 s median from scratch vs 6.95 s for copying the previous
       14 MB / 824-file ``assets/`` (0.13 s) and materializing over it; determinism was
       judged worth the 0.45 s, and a copy grows with the experiment's stored tables;
    4. write the top-level files (trades, portfolio_states, fills, rejections, signals,
       prices_quarantine Parquet; metrics.json, lineage.json, report_settings.json), all from
       the assets' stored values: ``report.html`` is the ``performance_report`` asset's HTML
       and the attribution tables are the attribution assets' values (computed once, in the
       graph); with ``validate`` cross_framework_validation.parquet; every JSON strict
       (NaN/inf → null);
    5. write ``run.json`` last (every file with SHA-256 and size, config hashes, times,
       warnings);
    6. swap the staging folder with ``output`` (:func:`output_lib.swap_into_place`) and remove
       the previous set.

    A run that fails at any step leaves ``output`` exactly as it was (the staging folder is
    removed) and writes the failure with every failed step's full trace to
    ``<output>.error.log`` (:func:`error_log_path`; a successful run removes it); a killed run
    leaves ``output`` as the previous or the new complete set. This is
    the one run function: ``ml4t run`` and :meth:`ml4t_pipeline.api.Experiment.run` call it, so
    its signature is kept stable.

    The Dagster run (kept in the instance when ``DAGSTER_HOME`` is set) is tagged
    ``ml4t/output_folder`` with ``output``, and the paths it records (``path`` and
    ``candidate_path`` metadata, the IO manager's log lines and ``.current.json`` records) name
    ``<output>/assets``, where the values are once the set is swapped in, not the staging folder,
    which is gone by then. A run that did not publish (a failed check or step, a failed write)
    names the same paths, which then hold the previous set: ``<output>/run.json``'s ``run_id``
    says which run's values are there.

    Parameters
    ----------
    config_path : Path or ExperimentConfig
        The experiment YAML/JSON file (its stem is the Dagster partition key and its folder the
        configs folder), or a validated config object (the Python API's configs built in code),
        handed to the run as it is: its ``name`` is the partition key, ``run.json`` records
        ``config_path: null`` and ``config_sha256`` of the config's canonical JSON, and the
        report's lineage names it "built in code". No file is written.
    output : Path
        The output folder (created with its parents). Must be missing, empty, or an earlier
        ``ml4t run`` output folder (a valid ``run.json``); any other folder is refused.
    validate : bool, default False
        Also run the cross-framework validation assets (needs the ``validation`` extra).

    Returns
    -------
    RunOutcome
        ``success`` False when a blocking check or a step failed (``failure`` says which, with
        the offending rows); the previous output set is then untouched.

    Raises
    ------
    ml4t_pipeline.config.ConfigError
        The config is invalid (the message names the key).
    FileNotFoundError
        The config file does not exist.
    ml4t_pipeline.defs.partitions.UnsafePartitionKeyError
        The file's stem is not a safe partition key (checked before anything is registered).
    DiskFullError
        The disk holding ``output`` is full (a step or the output files could not be written);
        the message names the folder and its free space. ``output`` is unchanged.
    ml4t_pipeline.lib.output.OutputInUseError
        Another process is writing ``output`` (its pid is in the message).
    ml4t_pipeline.lib.output.OutputError
        ``output`` cannot be created, replaced or written (the message names the path).

    Examples
    --------
    >>> outcome = run_to_folder(Path("configs/demo.yaml"), Path("out"))  # doctest: +SKIP
    >>> outcome.success, outcome.metrics["n_trades"], outcome.warnings  # doctest: +SKIP
    (True, 266, [])
    """
    source: Path | None
    if isinstance(config_path, ExperimentConfig):
        cfg, source = config_path, None
        key = check_partition_key(cfg.name, what="experiment name")
        config_bytes = canonical_config_json(cfg).encode()
    else:
        source = Path(config_path)
        key = check_config_stem(source)
        cfg = load_config(source)
        config_bytes = source.read_bytes()
    final = output_lib.resolve_output(Path(output))
    output_lib.check_replaceable(final)
    with output_lib.output_lock(final):
        output_lib.recover_output(final)
        output_lib.check_replaceable(final)
        started_at = output_lib.utc_now()
        staging = output_lib.make_staging(final)
        old: Path | None = None
        try:
            output_lib.pause_at("staged")
            storage = staging / "assets"
            started = time.perf_counter()
            result = materialize_experiment(
                cfg if source is None else source, storage, validate=validate,
                published_dir=final / "assets",
                tags={OUTPUT_FOLDER_TAG: str(final)}, trigger=trigger,
                config_hash=cfg.config_hash(),
            )  # fmt: skip
            elapsed = time.perf_counter() - started
            if not result.success:
                full = _disk_full_step(result, staging)
                if full is not None:
                    raise disk_full_error(final.parent, full, output=final)
                failure, trace = failure_text(result), failure_trace(result)
                header = {
                    "experiment": cfg.name,
                    "config": BUILT_IN_CODE if source is None else source.resolve(),
                    "output": final,
                    "run_id": result.run_id,
                    "at": output_lib.utc_now(),
                }
                log = _write_error_log(error_log_path(final), header, failure, trace)
                return RunOutcome(
                    success=False, output=final, failure=failure, elapsed=elapsed,
                    result=result, experiment=cfg.name, trace=trace, log_path=log,
                )  # fmt: skip
            output_lib.pause_at("materialized")
            try:
                written = _write_outputs(
                    staging, storage, key, result, cfg, final=final, validate=validate
                )
            except (OSError, pl.exceptions.PolarsError) as exc:
                raise _write_failure(exc, staging, final) from exc
            warnings = []
            if written["n_trades"] == 0:
                warnings.append(
                    f"{ZERO_TRADES_WARNING}: experiment {cfg.name!r} made no round-trip trades "
                    f"({written['n_fills']} fills); check the strategy's parameters (n, "
                    "threshold, rebalance_every), the signals and initial_cash"
                )
            lineage = written["lineage"]
            fields = {
                "experiment": cfg.name,
                "config_path": None if source is None else str(source.resolve()),
                "partition_key": key,
                "config_sha256": hashlib.sha256(config_bytes).hexdigest(),
                "config_hash": lineage.get("config_hash"),
                "code_version": lineage.get("code_version"),
                "run_id": result.run_id,
                "started_at": started_at,
                "finished_at": output_lib.utc_now(),
                "materialize_seconds": round(elapsed, 3),
                "validate": validate,
                "n_trades": written["n_trades"],
                "n_fills": written["n_fills"],
                "warnings": warnings,
            }
            try:
                manifest = output_lib.write_manifest(staging, fields)
            except OSError as exc:
                raise _write_failure(exc, staging, final) from exc
            output_lib.pause_at("marked")
            old = output_lib.swap_into_place(staging, final)
            output_lib.pause_at("swapped")
            error_log_path(final).unlink(missing_ok=True)  # an earlier failure's log is stale
            return RunOutcome(
                success=True, output=final, metrics=written["metrics"], elapsed=elapsed,
                result=result, experiment=cfg.name, warnings=warnings, manifest=manifest,
            )  # fmt: skip
        finally:
            output_lib.remove_tree(old)
            if staging.exists() and staging != final:
                output_lib.remove_tree(staging)


def run_prices(folder: Path, manifest: dict[str, Any]) -> pl.DataFrame | None:
    """The prepared prices (``timestamp``, ``symbol`` as String, ``close``) an ``ml4t run``
    folder stores under ``assets/`` for its experiment (the stem of ``run.json``'s
    ``partition_key``, or for older folders the stem of its ``config_path``); None when they are
    not there (the report then says so)."""
    key = manifest.get("partition_key")
    if not isinstance(key, str):
        config_path = manifest.get("config_path")
        if not isinstance(config_path, str):
            return None
        key = Path(config_path).stem
    try:
        frame = read_value(
            folder / "assets" / "prices" / key,
            columns=["timestamp", "symbol", "close"],
        )
    except (FileNotFoundError, ValueError):
        return None
    return cast("pl.DataFrame", frame).with_columns(pl.col("symbol").cast(pl.String))


def rebuild_report_in_place(folder: Path) -> Path:
    """Rebuild ``report.html`` and the attribution tables of a complete output folder, atomically.

    The folder must carry a valid ``run.json`` and its input files must match their recorded
    hashes. The unchanged files are hard-linked (copied where links fail) into a staging folder,
    the report is rebuilt there by :func:`ml4t_pipeline.lib.report.rebuild_report`, which calls
    the ``performance_report`` asset's function (:func:`~ml4t_pipeline.lib.report.build_report`)
    with the settings the asset used (``report_settings.json``) and the run's stored prices
    (:func:`run_prices`), ``run.json`` is rewritten with the new hashes (plus
    ``report_rebuilt_at``) and the set is swapped in, under the folder's lock.

    Returns
    -------
    Path
        The absolute path of the new ``report.html``.

    Raises
    ------
    ml4t_pipeline.lib.output.IncompleteOutputError
        No valid ``run.json``, or a file differs from it.
    ml4t_pipeline.lib.output.OutputInUseError
        A run is writing the folder.
    ml4t_pipeline.lib.output.OutputError
        The folder cannot be replaced.
    """
    final = Path(folder).resolve()
    with output_lib.output_lock(final):
        output_lib.recover_output(final)
        manifest = output_lib.read_manifest(final)
        output_lib.verify_files(final, manifest)
        settings_file = final / report_lib.REPORT_SETTINGS_FILE
        settings = (
            output_lib.loads_strict(settings_file.read_text()) if settings_file.is_file() else {}
        )
        prices = run_prices(final, manifest)
        regenerated = set(ATTRIBUTION_FILES.values()) | {
            "report.html",
            "attribution_summary.json",
        }
        staging = output_lib.make_staging(final)
        old: Path | None = None
        try:
            for rel in manifest["files"]:
                if rel in regenerated:
                    continue
                src, dst = final / rel, staging / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
            report_lib.rebuild_report(staging, prices=prices, **settings)
            fields = {k: v for k, v in manifest.items() if k not in ("format", "files")}
            fields["report_rebuilt_at"] = output_lib.utc_now()
            output_lib.write_manifest(staging, fields)
            old = output_lib.swap_into_place(staging, final)
        except OSError as exc:
            raise output_lib.OutputError(
                final, f"cannot rebuild the report in {final}: {exc}"
            ) from exc
        finally:
            output_lib.remove_tree(old)
            if staging.exists():
                output_lib.remove_tree(staging)
    return final / "report.html"
