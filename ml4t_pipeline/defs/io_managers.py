"""The IO manager: every asset value lives as a file (or folder) under one storage folder.

Layout: ``<base_dir>/<asset_name>/<partition_key>[.<ext>]`` holds the asset's **current** value
(the last one that passed its blocking checks), in the form its type selects:

- a *prepared table* (an asset or output whose definition metadata is :func:`by_month_metadata`:
  prices, prices_quarantine, features, market_context, signals, market_panel) → a folder of zstd
  Parquet files hive-partitioned by the UTC year and month of ``timestamp``::

      <base_dir>/market_panel/<experiment>/_schema.parquet          (0 rows: the column types)
      <base_dir>/market_panel/<experiment>/year=2016/month=05/data.parquet

  written with :func:`ml4t_pipeline.lib.storage.write_partitioned` (each month atomically, fixed
  row order and settings, so a rerun of the same data writes byte-identical files). ``symbol`` is
  stored as String and read back as Categorical. An asset partitioned by experiment × month
  (``prepared_panel``) writes only its own month's folder under ``<asset>/<experiment>/``.
  An empty table is refused (an error naming the asset; the stored months stay), except for an
  output declared ``by_month_metadata(allow_empty=True)`` (``prices_quarantine``, empty when no
  row was set aside).
- any other ``polars.DataFrame`` → ``.parquet`` (zstd)
- ``dict`` whose values are all DataFrames → a folder of ``<name>.parquet`` files
- any other ``dict`` / ``list`` → ``.json``
- ``str`` → ``.html`` (reports)

**Last good value.** A value that fails a blocking check never replaces the current one. The
assets whose blocking checks run inside the asset (``prices``, ``features``, ``signals``,
``market_context``, ``market_panel``, ``prepared_panel``, ``trades``, ``portfolio_states``)
compute their check results *before*
yielding the value and put the verdict in the output metadata (:func:`checks_verdict_metadata`:
``ml4t/checks_passed``, ``ml4t/failed_checks``). The IO manager then:

- verdict passed, or no verdict (an asset without blocking checks): writes the value in place
  as the current one and records it in ``<asset>/.ml4t/<key>.current.json`` (run id, time,
  verdict, path);
- verdict failed: writes the value as a *rejected candidate* under
  ``<asset>/.ml4t/candidates/<key>/<run_id>[...]`` (kept for inspection, the latest one per key)
  and leaves the current value and its record untouched;
- an asset judged by a downstream asset's checks (definition metadata
  :func:`judged_by_metadata`; ``prices_raw`` is judged by ``prices``' row checks) is written as a
  *pending candidate*. Loading it reads that run's pending candidate (else the newest pending one,
  else the current value); when the judge's value passes, the judge's output
  (:func:`promotes_metadata`) promotes the candidate it read to current (an atomic rename); when
  it fails, the candidate is marked rejected.

So a downstream-only rerun after a refused input reads the last value that passed. The
materialization shows which version is current: ``ml4t/version`` says "current: run X" or
"candidate rejected (...); current stays run Y", with ``path`` (the current value) and
``candidate_path``. :func:`read_value` on ``<asset>/<key>`` reads the current value, as before.

Reads of Parquet are lazy scans: a downstream asset that declares
``dg.AssetIn(metadata={"columns": [...]})`` gets only those columns, and only those are read from
disk (projection pushdown); ``metadata={"lazy": True}`` hands over the ``pl.LazyFrame`` itself so
the asset can filter months before anything is read.

**Hand-off in memory.** With ``hand_off_to`` (set by ``ml4t run``, which executes every step
in one process, to the data-preparation assets) a table or folder of tables is still stored as
above, and the frame that storage would give back (month files concatenated in their order,
``symbol`` Categorical) is also kept in memory until each of the run's downstream assets named
in ``hand_off_to`` has loaded it: those loads take it from memory, with the same columns, types,
rows and errors as a read, instead of reading the files again. Other loads, lazy ones and JSON
or HTML values read the files; pending candidates are handed off like current values.

Writes are atomic per file: a temporary sibling is written first, then renamed over the old file,
so a failure while writing leaves the previous version readable. A prepared table is replaced
month by month; a failure part-way leaves every month readable, some old and some new, and the
failed run says so.

**Locks.** Every write of a storage key (asset × partition; for ``prepared_panel`` asset ×
experiment × month) holds an exclusive ``flock`` on ``<asset>/.ml4t/locks/<key>.lock`` (see
``storage.exclusive_lock``), so two runs writing the same key never interleave their files. A
second writer waits up to ``lock_timeout_s`` (default 60 s, ``$ML4T_LOCK_TIMEOUT``), then fails
with "in use by pid N". Reads take no lock (every file is replaced atomically).

**Published folder.** A storage folder written in a staging place and moved afterwards (``ml4t
run`` materializes into ``DIR.tmp-*/assets`` and renames it to ``DIR/assets``) sets
``published_dir`` to the folder's final place: the paths this IO manager records (``path`` and
``candidate_path`` metadata, its log lines, the ``path`` of ``.current.json`` records) name that
place, so they stay true after the move. Candidate status files keep the staging path, which the
run itself uses to read, promote and remove its candidates.

**Built from.** Every record of a stored value (``.current.json``, a candidate's status) also
holds ``built_from``: the version (the run id that wrote it) of every stored value it was
computed from, its inputs and, transitively, theirs, keyed ``asset[partition]``. A step whose
inputs were built from *different* versions of one upstream value is refused before it runs
(:class:`MixedVersionsError`, naming the inputs, the upstream value and both versions). This
is what a downstream-only rerun after a run killed mid-way would otherwise do: run A stores
every asset; run B rewrites ``prices`` and ``features`` and is killed; a rerun of ``backtest``
alone would read a panel built from A's prices beside B's. Values stored before versions were
recorded, and reads of several partitions at once, carry no such record and are not judged.

**Keys.** Partition keys become path parts, so the IO manager refuses to build a path from an
unsafe key (``partitions.check_partition_key``: ``[A-Za-z0-9_.-]+``, no ``..``, no leading
``.``) with an error naming the key.

The metadata helpers named here and :class:`MixedVersionsError` live in ``storage_metadata``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from ml4t_pipeline.defs.partitions import check_partition_key
from ml4t_pipeline.defs.storage_metadata import (
    ALLOW_EMPTY_KEY,
    BY_MONTH,
    FAILED_CHECKS_KEY,
    JUDGED_BY_KEY,
    PROMOTES_KEY,
    STORAGE_KEY,
    VERDICT_KEY,
    VERSION_KEY,
    MixedVersionsError,
)
from ml4t_pipeline.lib import formats, storage

# File formats: ml4t_pipeline.lib.formats (these four re-exported for tests and assets).
month_bounds = formats.month_bounds
read_value = formats.read_value
write_month = formats.write_month
write_value = formats.write_value

STORAGE_ENV = "ML4T_STORAGE_DIR"
LOCK_TIMEOUT_ENV = "ML4T_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_S = 60.0
MONTH_DIMENSION = "month"
"""Name of the monthly dimension of a multi-partitioned prepared table."""
CONTROL_DIR = ".ml4t"
"""Per-asset folder of current-version records, candidates and lock files (never a key)."""
BUILT_FROM = "built_from"
"""Record key: ``{asset[partition]: run id}`` of every stored value a value was computed from."""

_STEP_INPUTS: dict[tuple[str, str, str], dict[str, tuple[str, str]]] = {}
"""Per (storage folder, run, step): each upstream value's version as the step's inputs saw it,
with the input that brought it: ``{asset[partition]: (run id, input)}``."""
_STEP_INPUTS_KEPT = 10_000
"""Past this many steps, the bookkeeping of runs other than the current one is dropped."""
_HANDED: dict[tuple[str, str], dict[str, list[Any]]] = {}
"""Values handed off in memory (``hand_off_to``): per (storage folder, run id), per stored stem,
``[value as read back, loads left, only some columns kept]``; an entry goes once its last load
took it."""


def _step_inputs(base_dir: str, run_id: str, step_key: str | None) -> dict[str, str]:
    """``built_from`` for an output of step ``step_key``: what its inputs were built from."""
    seen = _STEP_INPUTS.get((base_dir, run_id, step_key or ""), {})
    return {upstream: version for upstream, (version, _) in sorted(seen.items())}


def default_storage_dir() -> str:
    """``$ML4T_STORAGE_DIR`` or ``.ml4t_storage`` in the current directory."""
    return os.environ.get(STORAGE_ENV, str(Path.cwd() / ".ml4t_storage"))


def default_lock_timeout() -> float:
    """``$ML4T_LOCK_TIMEOUT`` (seconds a writer waits for a busy key) or 60."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{LOCK_TIMEOUT_ENV}={raw!r} must be a finite number of seconds >= 0")
    return value


# ---------------------------------------------------------------------------------------------
# The IO manager


def _dimension_keys(
    partitions_def: dg.PartitionsDefinition | None, key: str
) -> Mapping[str, str] | None:
    """``{dimension: key}`` of a multi-partition key with a monthly dimension, else None."""
    if not isinstance(partitions_def, dg.MultiPartitionsDefinition):
        return None
    names = [d.name for d in partitions_def.partitions_defs]
    if MONTH_DIMENSION not in names:
        return None
    return partitions_def.get_partition_key_from_str(key).keys_by_dimension


def _table_folder(base: Path, dims: Mapping[str, str]) -> Path:
    # the month is a hive folder inside; the other dimensions (the experiment) name the table
    others = [dims[name] for name in sorted(dims) if name != MONTH_DIMENSION]
    return base.joinpath(*others)


@dataclass(frozen=True)
class _Target:
    """One storage key (asset × partition): where its current value and control files live."""

    asset_dir: Path
    label: str
    """The key as a file name: ``demo``, ``__all__``, ``demo@2016-05-01`` (experiment@month)."""
    what: str
    """``asset[partition]`` for messages."""
    stem: Path
    """The current value: the stem of a file, or a table folder."""
    month: str | None = None
    """The monthly partition key of a month of an experiment × month table."""

    @property
    def control(self) -> Path:
        return self.asset_dir / CONTROL_DIR

    @property
    def record_path(self) -> Path:
        return self.control / f"{self.label}.current.json"

    @property
    def lock_path(self) -> Path:
        return self.control / "locks" / f"{self.label}.lock"

    @property
    def candidates(self) -> Path:
        return self.control / "candidates" / self.label


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _write_json_atomic(payload: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        out = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return out if isinstance(out, dict) else None


def current_record(asset_dir: Path, key: str) -> dict[str, Any] | None:
    """The record of the current value of ``asset_dir``/``key`` (run id, time, verdict, path).

    None when no value was stored through the IO manager yet (or only rejected candidates).
    """
    return _read_json(asset_dir / CONTROL_DIR / f"{key}.current.json")


def _raw(value: Any) -> Any:
    return getattr(value, "value", value)


def _verdict(output_metadata: Mapping[str, Any]) -> tuple[bool | None, list[str]]:
    if VERDICT_KEY not in output_metadata:
        return None, []
    failed = _raw(output_metadata.get(FAILED_CHECKS_KEY)) or []
    return bool(_raw(output_metadata[VERDICT_KEY])), [str(name) for name in failed]


def _statuses(target: _Target) -> list[dict[str, Any]]:
    if not target.candidates.is_dir():
        return []
    out = [_read_json(p) for p in sorted(target.candidates.glob("*.status.json"))]
    return sorted((s for s in out if s), key=lambda s: str(s.get("written_at", "")))


def _remove_candidate(target: _Target, status: Mapping[str, Any]) -> None:
    run = str(status["run_id"])
    path = Path(str(status.get("path", "")))
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
    for extra in target.candidates.glob(f"{run}.*"):
        if extra.is_dir():
            shutil.rmtree(extra, ignore_errors=True)
        else:
            extra.unlink(missing_ok=True)


def _stored_path(target: _Target) -> Path | None:
    if target.month is not None:
        return target.stem if target.stem.is_dir() else None
    return formats.stored_path(target.stem)


def _describe_current(record: Mapping[str, Any] | None, target: _Target) -> str:
    if record is not None:
        return f"run {record['run_id']}"
    if _stored_path(target) is not None:
        return "the value stored before versions were recorded"
    return "none (no value has passed yet)"


class Ml4tIOManager(dg.ConfigurableIOManager):
    """Stores asset values as Parquet/JSON/HTML under ``base_dir`` (see the module docstring).

    Input metadata understood (``dg.AssetIn(metadata=...)``): ``columns`` (list of str: read only
    these columns of a table) and ``lazy`` (bool: pass a ``pl.LazyFrame``).

    Attributes
    ----------
    base_dir : str
        The storage folder.
    lock_timeout_s : float, optional
        Seconds a writer waits for a storage key another run is writing (default
        ``$ML4T_LOCK_TIMEOUT`` or 60), then fails naming that run's pid.
    published_dir : str, optional
        Where ``base_dir`` will be moved once the run is over (``ml4t run``'s output
        ``DIR/assets``). Recorded paths under ``base_dir`` name this folder instead (metadata,
        logs, current-version records); reads and writes still go to ``base_dir``. Default:
        paths are recorded as written.
    hand_off_to : list of str, default []
        Assets (node names) whose non-lazy loads take a table stored earlier in the same run
        from memory, as storage would give it back (see the module docstring); each table is
        kept until the last of them loaded it. Only for a run whose steps all execute in this
        process (``ml4t run``: the data-preparation assets, whose loads are every input's whole
        table, so what is kept is what the next of them loads anyway); released by
        :func:`release_handed` after the run.
    release_outputs : bool, default False
        Drop the in-memory copy ``execute_in_process`` keeps of each output (for
        ``ExecuteInProcessResult.output_for_node``) once the value is stored. ``ml4t run``
        (:func:`~ml4t_pipeline.defs.execution.execute_experiment`) sets it: it reads every
        value back from storage, and holding all of them to the end of the run raised its peak
        memory by the panel, features, prices and signals (~270 MB on the S&P file).
    """

    base_dir: str
    lock_timeout_s: float | None = None
    published_dir: str | None = None
    hand_off_to: list[str] = []
    release_outputs: bool = False

    def _shown(self, path: Path) -> Path:
        """``path`` as it will be after ``base_dir`` is moved to ``published_dir``."""
        if self.published_dir is None:
            return path
        try:
            rel = path.relative_to(self.base_dir)
        except ValueError:
            return path
        return Path(self.published_dir) / rel

    def _asset_dir(self, context: dg.InputContext | dg.OutputContext) -> Path:
        return Path(self.base_dir).joinpath(*context.asset_key.path)

    def _target(
        self,
        asset_key: dg.AssetKey,
        key: str | None,
        partitions_def: dg.PartitionsDefinition | None = None,
    ) -> _Target:
        """The storage key of ``asset_key`` × ``key``; refuses unsafe partition keys."""
        asset_dir = Path(self.base_dir).joinpath(*asset_key.path)
        name = asset_key.to_user_string()
        if key is None:
            return _Target(asset_dir, "__all__", name, asset_dir / "__all__")
        dims = _dimension_keys(partitions_def, key)
        what = f"{name}[{key}]"
        if dims is not None:
            for value in dims.values():
                check_partition_key(value, what=f"{name}: partition key")
            others = [dims[d] for d in sorted(dims) if d != MONTH_DIMENSION]
            label = "@".join([*others, dims[MONTH_DIMENSION]])
            month = dims[MONTH_DIMENSION]
            return _Target(asset_dir, label, what, _table_folder(asset_dir, dims), month)
        check_partition_key(key, what=f"{name}: partition key")
        return _Target(asset_dir, key, what, asset_dir / key)

    def _lock(self, target: _Target) -> Any:
        timeout = self.lock_timeout_s if self.lock_timeout_s is not None else None
        return storage.exclusive_lock(
            target.lock_path,
            timeout=default_lock_timeout() if timeout is None else timeout,
            what=f"storage key {target.what}",
        )

    def _stem(self, context: dg.InputContext | dg.OutputContext) -> Path:
        key = context.asset_partition_key if context.has_asset_partitions else None
        partitions_def = context.asset_partitions_def if key is not None else None
        return self._target(context.asset_key, key, partitions_def).stem

    # --- writing -------------------------------------------------------------------------

    def _write(
        self,
        target: _Target,
        obj: Any,
        dest: Path,
        *,
        by_month: bool,
        allow_empty: bool,
        keep: bool = False,
    ) -> tuple[Path, int | None, Any]:
        """Write ``obj`` at ``dest`` in its storage form; (path, month files written, with
        ``keep`` the value as a read would give it back, else None)."""
        if target.month is not None:
            frame = formats.require_frame(obj, dest)
            written = write_month(
                frame, dest, target.month, allow_empty=allow_empty, what=target.what
            )
            return (written[0].path if written else dest), len(written), None
        if by_month:
            frame = formats.require_frame(obj, dest)
            parts: list[pl.DataFrame] | None = [] if keep else None
            written = formats.write_table_by_month(
                frame, dest, allow_empty=allow_empty, what=target.what, stored=parts
            )
            return dest, len(written), None if parts is None else formats.table_as_read(parts)
        path = write_value(obj, dest)
        return path, None, formats.value_as_read(obj) if keep else None

    def _hand_off(
        self, context: dg.OutputContext, stem: Path, value: Any, loads: tuple[int, set[str] | None]
    ) -> None:
        """Keep ``value`` (stored at ``stem``) for ``loads`` (:meth:`_handed_loads`); only the
        columns they ask for when each asks for some."""
        count, columns = loads
        if value is None or not count:
            return
        pruned = columns is not None and isinstance(value, pl.DataFrame)
        if pruned:
            value = value.select([c for c in value.columns if c in columns])
        held = _HANDED.setdefault((self.base_dir, context.run_id), {})
        held[str(stem)] = [value, count, pruned]

    def _handed_loads(self, context: dg.OutputContext) -> tuple[int, set[str] | None]:
        """The loads of this output by the run's downstream assets in ``hand_off_to`` that are
        not lazy (input metadata ``lazy``), and the columns they ask for (None: all, when one of
        them asks for no ``columns``). ``(0, None)`` without ``hand_off_to`` or a job (a bare
        output context)."""
        if not self.hand_off_to:
            return 0, None
        try:
            graph = context.step_context.job_def.asset_layer.asset_graph
            children = graph.get(context.asset_key).child_keys
            nodes = {id(d): d for d in (graph.get(child).assets_def for child in children)}
        except (dg.DagsterInvariantViolationError, KeyError, AttributeError):
            return 0, None
        count, columns = 0, set()
        for assets_def in nodes.values():
            if assets_def.node_def.name not in self.hand_off_to:
                continue
            for name, key in assets_def.keys_by_input_name.items():
                if key != context.asset_key:
                    continue
                metadata = assets_def.node_def.input_def_named(name).metadata or {}
                if metadata.get("lazy"):
                    continue
                count += 1
                wanted = metadata.get("columns")
                columns = None if wanted is None or columns is None else columns | set(wanted)
        return count, columns

    def _read(
        self,
        context: dg.InputContext,
        stem: Path,
        columns: Sequence[str] | None,
        lazy: bool,
    ) -> Any:
        """:func:`read_value` of ``stem``, from memory when the run handed it off (lazy loads
        scan the files: they read only what their query needs)."""
        step = _input_step(context)
        held = _HANDED.get((self.base_dir, "" if step is None else step.run_id), {})
        mine = step is not None and step.step.key in self.hand_off_to
        entry = held.get(str(stem)) if mine and not lazy else None
        if entry is not None and entry[2]:  # only some columns kept
            kept = entry[0].columns
            if columns is None or any(c not in kept for c in columns):
                entry = None  # not kept in memory: read_value gives the rows or the error
        if entry is None:
            return read_value(stem, columns=columns, lazy=lazy)
        entry[1] -= 1
        if entry[1] <= 0:
            del held[str(stem)]
        return formats.handed_copy(entry[0], stem, columns, lazy)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        key = context.asset_partition_key if context.has_asset_partitions else None
        partitions_def = context.asset_partitions_def if key is not None else None
        target = self._target(context.asset_key, key, partitions_def)
        by_month = context.definition_metadata.get(STORAGE_KEY) == BY_MONTH
        allow_empty = bool(context.definition_metadata.get(ALLOW_EMPTY_KEY, False))
        verdict, failed = _verdict(context.output_metadata)
        judge = context.definition_metadata.get(JUDGED_BY_KEY)
        run_id = context.run_id
        built_from = _step_inputs(self.base_dir, run_id, _output_step_key(context))
        loads = self._handed_loads(context)
        meta: dict[str, Any] = {}
        with self._lock(target):
            record = _read_json(target.record_path)
            if verdict is False or judge:
                status = "rejected" if verdict is False else "pending"
                dest = target.candidates / run_id
                path, n_files, as_read = self._write(
                    target, obj, dest, by_month=by_month, allow_empty=allow_empty,
                    keep=status == "pending" and loads[0] > 0,
                )  # fmt: skip
                self._hand_off(context, dest, as_read, loads)
                del as_read
                if by_month or target.month is not None:
                    path = dest  # the candidate table's folder
                for old in _statuses(target):
                    if old["run_id"] != run_id and old.get("status") == "rejected":
                        _remove_candidate(target, old)
                _write_json_atomic(
                    {
                        "status": status,
                        "run_id": run_id,
                        "written_at": _now(),
                        "failed_checks": failed,
                        "judged_by": judge,
                        "path": str(path),
                        BUILT_FROM: built_from,
                    },
                    target.candidates / f"{run_id}.status.json",
                )
                meta["candidate_path"] = dg.MetadataValue.path(str(self._shown(path)))
                current = _describe_current(record, target)
                if status == "rejected":
                    meta[VERSION_KEY] = dg.MetadataValue.text(
                        f"candidate rejected (failed blocking checks: {', '.join(failed)}); "
                        f"current stays {current}"
                    )
                else:
                    meta[VERSION_KEY] = dg.MetadataValue.text(
                        f"pending: becomes current when `{judge}` passes its blocking checks; "
                        f"current stays {current}"
                    )
                if record is not None:
                    meta["ml4t/current_run_id"] = dg.MetadataValue.text(str(record["run_id"]))
            else:
                path, n_files, as_read = self._write(
                    target, obj, target.stem, by_month=by_month, allow_empty=allow_empty,
                    keep=loads[0] > 0,
                )  # fmt: skip
                self._hand_off(context, target.stem, as_read, loads)
                del as_read
                _write_json_atomic(
                    {
                        "run_id": run_id,
                        "written_at": _now(),
                        "checks_passed": verdict,
                        "asset": context.asset_key.to_user_string(),
                        "partition": key,
                        "path": str(self._shown(path)),
                        BUILT_FROM: built_from,
                    },
                    target.record_path,
                )
                meta[VERSION_KEY] = dg.MetadataValue.text(
                    f"current: run {run_id}"
                    + (" (blocking checks passed)" if verdict else " (no blocking checks)")
                )
                meta["ml4t/current_run_id"] = dg.MetadataValue.text(run_id)
            current_path = _stored_path(target)
            if current_path is not None:
                meta["path"] = dg.MetadataValue.path(str(self._shown(current_path)))
        if key is not None:  # the Overview tab shows the latest materialization of any partition
            meta["partition"] = dg.MetadataValue.text(str(key))
        if n_files is not None:
            meta["partition_files"] = dg.MetadataValue.int(n_files)
        for upstream in context.definition_metadata.get(PROMOTES_KEY) or []:
            done = self._judge_candidate(
                dg.AssetKey(upstream), key, partitions_def, run_id, verdict, failed
            )
            if done is not None:
                meta[f"ml4t/{upstream}"] = dg.MetadataValue.text(done)
                context.log.info(f"{upstream}[{key}]: {done}")
        context.add_output_metadata(meta)
        if self.release_outputs:
            _release_captured_output(context)

    def _judge_candidate(
        self,
        asset_key: dg.AssetKey,
        key: str | None,
        partitions_def: dg.PartitionsDefinition | None,
        run_id: str,
        verdict: bool | None,
        failed: list[str],
    ) -> str | None:
        """Promote (or reject) the pending candidate of ``asset_key`` that run ``run_id`` read."""
        target = self._target(asset_key, key, partitions_def)
        with self._lock(target):
            chosen = None
            for status in _statuses(target):
                if status.get("status") != "pending":
                    continue
                marker = target.candidates / f"{status['run_id']}.read_by.{run_id}"
                if status["run_id"] == run_id or marker.exists():
                    chosen = status
            if chosen is None:
                return None
            cand_run = str(chosen["run_id"])
            if verdict is False:
                chosen = {**chosen, "status": "rejected", "failed_checks": failed}
                _write_json_atomic(chosen, target.candidates / f"{cand_run}.status.json")
                current = _describe_current(_read_json(target.record_path), target)
                return f"candidate of run {cand_run} rejected; current stays {current}"
            source = Path(str(chosen["path"]))
            final = (
                target.stem
                if source.is_dir()
                else formats.with_ext(target.stem, source.name[len(cand_run) :])
            )
            formats.atomic_replace(source, final)
            _write_json_atomic(
                {
                    "run_id": cand_run,
                    "written_at": chosen.get("written_at"),
                    "checks_passed": True,
                    "judged_by": chosen.get("judged_by"),
                    "promoted_in_run": run_id,
                    "asset": asset_key.to_user_string(),
                    "partition": key,
                    "path": str(self._shown(final)),
                    BUILT_FROM: chosen.get(BUILT_FROM) or {},
                },
                target.record_path,
            )
            _remove_candidate(target, chosen)
            return f"candidate of run {cand_run} promoted to current"

    # --- reading -------------------------------------------------------------------------

    def _pending_for(self, target: _Target, run_id: str | None) -> dict[str, Any] | None:
        """The status of the pending candidate a run reads: its own, else the newest one newer
        than current."""
        if run_id is None:
            return None
        pending = [s for s in _statuses(target) if s.get("status") == "pending"]
        if not pending:
            return None
        own = [s for s in pending if s["run_id"] == run_id]
        if own:
            return own[-1]
        record = _read_json(target.record_path)
        newer = [
            s
            for s in pending
            if record is None or str(s.get("written_at", "")) > str(record.get("written_at", ""))
        ]
        if not newer:
            return None
        chosen = newer[-1]
        (target.candidates / f"{chosen['run_id']}.read_by.{run_id}").touch()
        return chosen

    def load_input(self, context: dg.InputContext) -> Any:
        columns = context.definition_metadata.get("columns")
        lazy = bool(context.definition_metadata.get("lazy", False))
        if context.has_asset_partitions:
            upstream_def = context.asset_partitions_def
            keys = list(context.asset_partition_keys)
            dims = [_dimension_keys(upstream_def, k) for k in keys]
            if keys and all(d is not None for d in dims):
                for k in keys:
                    self._target(context.asset_key, k, upstream_def)  # refuses unsafe keys
                return self._load_months(context, dims, columns, lazy)  # type: ignore[arg-type]
            if not _downstream_partitioned(context):
                # an unpartitioned asset reading every experiment: {partition_key: value} for
                # the partitions that were materialized (the caller reports the missing ones)
                out = {}
                for key in keys:
                    stem = self._target(context.asset_key, key, upstream_def).stem
                    try:
                        out[key] = read_value(stem, columns=columns, lazy=lazy)
                    except FileNotFoundError:
                        context.log.warning(
                            f"{context.asset_key.to_user_string()}[{key}] not stored"
                        )
                return out
        key = context.asset_partition_key if context.has_asset_partitions else None
        partitions_def = context.asset_partitions_def if key is not None else None
        target = self._target(context.asset_key, key, partitions_def)
        status = self._pending_for(target, _input_run_id(context))
        if status is not None:
            pending = Path(str(status["path"]))
            self._note_input(context, target, status)
            context.log.info(
                f"{target.what}: reading the pending candidate {self._shown(pending)} "
                "(judged in this run)"
            )
            return self._read(context, _candidate_stem(pending), columns, lazy)
        self._note_input(context, target, _read_json(target.record_path))
        return self._read(context, target.stem, columns, lazy)

    def _note_input(
        self, context: dg.InputContext, target: _Target, record: Mapping[str, Any] | None
    ) -> None:
        """Add an input's version and ``built_from`` to its step's; refuse a mixed set."""
        step = _input_step(context)
        if step is None or record is None or "run_id" not in record:
            return  # no step (a bare input context) or a value stored before versions
        versions = {target.what: str(record["run_id"])}
        versions |= {str(k): str(v) for k, v in (record.get(BUILT_FROM) or {}).items()}
        if len(_STEP_INPUTS) > _STEP_INPUTS_KEPT:  # a long-lived process: forget other runs
            for old in [k for k in _STEP_INPUTS if k[1] != step.run_id]:
                del _STEP_INPUTS[old]
        seen = _STEP_INPUTS.setdefault((self.base_dir, step.run_id, step.step.key), {})
        via = target.what
        for upstream, version in versions.items():
            known = seen.get(upstream)
            if known is not None and known[0] != version:
                raise MixedVersionsError(step.step.key, upstream, known, (version, via))
        for upstream, version in versions.items():
            seen.setdefault(upstream, (version, via))

    def _load_months(
        self,
        context: dg.InputContext,
        dims: list[Mapping[str, str]],
        columns: Sequence[str] | None,
        lazy: bool,
    ) -> Any:
        """Months of a month-partitioned table: one frame per table folder (experiment)."""
        base = self._asset_dir(context)
        by_table: dict[Path, list[str]] = {}
        for d in dims:
            by_table.setdefault(_table_folder(base, d), []).append(d[MONTH_DIMENSION])
        out: dict[str, Any] = {}
        for root, months in by_table.items():
            if not root.is_dir():
                raise FileNotFoundError(f"no stored value for {root} (materialize it first)")
            lf = formats.select_columns(
                formats.scan_table(root, months=sorted(months)), columns, root
            )
            out[root.relative_to(base).as_posix()] = lf if lazy else lf.collect()
        return next(iter(out.values())) if len(out) == 1 else out


def release_handed(base_dir: str) -> None:
    """Drop every value kept in memory for runs storing under ``base_dir`` (``hand_off_to``)."""
    for key in [k for k in _HANDED if k[0] == base_dir]:
        del _HANDED[key]


def _candidate_stem(path: Path) -> Path:
    """The stem :func:`read_value` takes for a candidate file or folder."""
    if path.is_dir():
        return path
    return path.with_name(path.name.split(".", 1)[0])


def _input_step(context: dg.InputContext) -> Any:
    """The step context of an input (None when the context was built without one)."""
    try:
        return context.step_context
    except dg.DagsterInvariantViolationError:
        return None


def _output_step_key(context: dg.OutputContext) -> str | None:
    """The step of an output (None when the context was built without one)."""
    try:
        return context.step_key
    except dg.DagsterInvariantViolationError:
        return None


def _release_captured_output(context: dg.OutputContext) -> None:
    """Forget ``execute_in_process``'s captured value of this output (see ``release_outputs``);
    nothing happens where no value is captured."""
    try:
        capture = getattr(context.step_context, "output_capture", None)
    except dg.DagsterInvariantViolationError:
        return  # a bare output context (no step)
    if not isinstance(capture, dict):
        return
    for handle in [
        h
        for h in capture
        if getattr(h, "step_key", None) == context.step_key
        and getattr(h, "output_name", None) == context.name
    ]:
        del capture[handle]


def _input_run_id(context: dg.InputContext) -> str | None:
    step = _input_step(context)
    return None if step is None else step.run_id


def _downstream_partitioned(context: dg.InputContext) -> bool:
    step = _input_step(context)
    return step is not None and step.has_partition_key
