"""The run's ephemeral instance (``defs/instance.py``) stores and answers what Dagster's own
ephemeral instance does, on one held SQLite connection.

The storage subclasses a private Dagster class: these tests run one small partitioned job with
asset checks, data versions and lineage on ``DagsterInstance.ephemeral()`` and on
:func:`ephemeral_instance` and compare what both stored and answer; they fail if a Dagster
upgrade changes what the subclass relies on.
"""

import re
import threading
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as db
from dagster._core.storage.event_log import InMemoryEventLogStorage

from ml4t_pipeline.defs.instance import (
    HeldConnectionEventLogStorage,
    ephemeral_instance,
    run_instance,
)

PARTS = dg.DynamicPartitionsDefinition(name="probe_experiments")
KEY = "exp_a"
DURATION = re.compile(r"\b\d+(\.\d+)?(ms|s)\b")


@dg.asset(partitions_def=PARTS, code_version="1")
def raw(context: dg.AssetExecutionContext) -> int:
    context.add_output_metadata({"rows": 3, "table": dg.MetadataValue.md("| a |\n|---|\n| 1 |")})
    return 3


@dg.asset(partitions_def=PARTS, code_version="2")
def clean(raw: int) -> dg.Output[int]:
    return dg.Output(raw * 2, metadata={"doubled": raw * 2}, data_version=dg.DataVersion("v-c"))


@dg.asset_check(asset=raw, blocking=True, partitions_def=PARTS)
def raw_positive(raw: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=raw > 0, metadata={"value": raw})


@dg.asset_check(asset=clean, partitions_def=PARTS)
def clean_small(clean: int) -> dg.AssetCheckResult:
    offending = dg.TableMetadataValue(
        records=[dg.TableRecord({"value": clean})],
        schema=dg.TableSchema(columns=[dg.TableColumn("value", "int")]),
    )
    return dg.AssetCheckResult(passed=clean < 5, metadata={"offending": offending})


JOB = dg.Definitions(
    assets=[raw, clean], asset_checks=[raw_positive, clean_small]
).resolve_implicit_global_asset_job_def()


def _run(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    if not instance.has_dynamic_partition(PARTS.name, KEY):
        instance.add_dynamic_partitions(PARTS.name, [KEY])
    return JOB.execute_in_process(
        partition_key=KEY,
        instance=instance,
        resources={"io_manager": dg.InMemoryIOManager()},
        tags={"ml4t/probe": "yes"},
        raise_on_error=False,
    )


def _plain(value: Any, run_ids: dict[str, str]) -> Any:
    """Stored values with the run ids named by their order (two instances make two ids) and
    durations in messages masked."""
    if isinstance(value, str):
        for run_id, name in run_ids.items():
            value = value.replace(run_id, name)
        return DURATION.sub("<duration>", value)
    if isinstance(value, dict):
        return {_plain(k, run_ids): _plain(v, run_ids) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, run_ids) for v in value]
    return value


def _stored(instance: dg.DagsterInstance, run_ids: list[str]) -> dict[str, Any]:
    """What the instance answers about the runs: every stored event (type, step, asset,
    partition, storage id, message), materializations with metadata and tags (data versions,
    input lineage), check evaluations, the latest records per asset and dynamic partitions."""
    names = {run_id: f"run{i}" for i, run_id in enumerate(run_ids)}
    out: dict[str, Any] = {"events": [], "materializations": [], "checks": []}
    for run_id in run_ids:
        for record in instance.get_records_for_run(run_id, limit=10_000).records:
            entry = record.event_log_entry
            event = entry.dagster_event
            out["events"].append(
                (
                    record.storage_id,
                    entry.dagster_event_type.value if entry.dagster_event_type else None,
                    entry.step_key,
                    event.asset_key.to_user_string() if event and event.asset_key else None,
                    event.partition if event else None,
                    _plain(entry.user_message, names),
                )
            )
            if entry.asset_materialization is not None:
                mat = entry.asset_materialization
                out["materializations"].append(
                    (
                        mat.asset_key.to_user_string(),
                        mat.partition,
                        {k: _plain(repr(v), names) for k, v in mat.metadata.items()},
                        _plain(dict(mat.tags or {}), names),
                    )
                )
            if event is not None and event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                evaluation = event.asset_check_evaluation_data
                target = evaluation.target_materialization_data
                out["checks"].append(
                    (
                        evaluation.asset_check_key.to_user_string(),
                        evaluation.passed,
                        {k: repr(v) for k, v in evaluation.metadata.items()},
                        None if target is None else (names.get(target.run_id), target.storage_id),
                    )
                )
    for asset in ("raw", "clean"):
        key = dg.AssetKey(asset)
        latest = instance.get_latest_materialization_event(key)
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[KEY]), limit=10
        ).records
        out[f"latest_{asset}"] = None if latest is None else names[latest.run_id]
        out[f"fetched_{asset}"] = [(r.storage_id, names[r.run_id]) for r in records]
        out[f"partitions_{asset}"] = sorted(instance.get_materialized_partitions(key))
    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("clean"), "clean_small"), limit=10
    )
    out["check_history"] = [(names[r.run_id], r.status.value) for r in history]
    out["runs"] = [
        (names[r.run_id], r.status.value, r.tags.get("ml4t/probe"))
        for r in instance.get_runs(filters=dg.RunsFilter(run_ids=run_ids))
    ]
    out["partitions"] = list(instance.get_dynamic_partitions(PARTS.name))
    return out


def _two_runs(instance: dg.DagsterInstance) -> tuple[list[dg.ExecuteInProcessResult], dict]:
    results = [_run(instance), _run(instance)]
    return results, _stored(instance, [r.run_id for r in results])


def test_ephemeral_instance_two_runs_store_what_dagsters_ephemeral_instance_stores() -> None:
    stock_results, stock = _two_runs(dg.DagsterInstance.ephemeral())
    ours_results, ours = _two_runs(ephemeral_instance())

    assert stock["events"] and stock["materializations"] and stock["checks"]
    assert [r.success for r in ours_results] == [r.success for r in stock_results] == [True] * 2
    for part in stock:
        assert ours[part] == stock[part], part
    data_versions = [tags["dagster/data_version"] for _, _, _, tags in ours["materializations"]]
    assert data_versions.count("v-c") == 2
    assert [passed for _, passed, _, _ in ours["checks"]] == [True, False] * 2


def test_ephemeral_instance_result_api_same_as_dagsters() -> None:
    stock = _run(dg.DagsterInstance.ephemeral())
    ours = _run(ephemeral_instance())

    def view(result: dg.ExecuteInProcessResult) -> Any:
        return (
            [e.event_type_value for e in result.all_events],
            [
                (e.asset_key.to_user_string(), e.check_name, e.passed, sorted(e.metadata))
                for e in result.get_asset_check_evaluations()
            ],
            [
                (m.materialization.asset_key.to_user_string(), sorted(m.materialization.metadata))
                for m in result.get_asset_materialization_events()
            ],
        )

    assert view(ours) == view(stock)


def test_ephemeral_instance_second_run_opens_no_sqlite_connection() -> None:
    instance = ephemeral_instance()
    storage = instance.event_log_storage
    assert isinstance(storage, HeldConnectionEventLogStorage)
    assert instance.is_ephemeral
    _run(instance)  # the first asks once per table whether it exists (a connection each)
    opened: list[object] = []
    db.event.listen(storage._engine, "connect", lambda *_: opened.append(1))  # noqa: SLF001

    result = _run(instance)

    assert result.success
    assert opened == []
    stock = dg.DagsterInstance.ephemeral()
    _run(stock)
    stock_opened: list[object] = []
    db.event.listen(stock.event_log_storage._engine, "connect", lambda *_: stock_opened.append(1))  # type: ignore[attr-defined]  # noqa: SLF001
    _run(stock)
    assert len(stock_opened) > 50  # what the held connection saves: one per read or write


def test_held_connection_storage_forgets_deleted_dynamic_partition() -> None:
    instance = ephemeral_instance()
    instance.add_dynamic_partitions(PARTS.name, ["a", "b"])
    assert instance.has_dynamic_partition(PARTS.name, "a")

    instance.delete_dynamic_partition(PARTS.name, "a")

    assert not instance.has_dynamic_partition(PARTS.name, "a")
    assert instance.has_dynamic_partition(PARTS.name, "b")
    instance.wipe()
    assert not instance.has_dynamic_partition(PARTS.name, "b")
    assert instance.get_dynamic_partitions(PARTS.name) == []


def test_held_connection_storage_from_another_thread_uses_its_own_connection() -> None:
    instance = ephemeral_instance()
    instance.add_dynamic_partitions(PARTS.name, [KEY])
    seen: list[Any] = []

    def other() -> None:
        seen.append(_run(instance).success)
        seen.append(instance.get_dynamic_partitions(PARTS.name))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()

    assert seen == [True, [KEY]]
    assert instance.get_latest_materialization_event(dg.AssetKey("clean")) is not None


def test_held_connection_storage_failed_write_rolls_back_and_keeps_working() -> None:
    storage = HeldConnectionEventLogStorage()
    storage.add_dynamic_partitions(PARTS.name, ["x"])
    with pytest.raises(RuntimeError, match="boom"), storage.index_connection() as conn:
        conn.execute(db.text("DELETE FROM dynamic_partitions"))
        raise RuntimeError("boom")

    assert storage.get_dynamic_partitions(PARTS.name) == ["x"]
    storage.add_dynamic_partitions(PARTS.name, ["y"])
    assert storage.get_dynamic_partitions(PARTS.name) == ["x", "y"]


def test_held_connection_storage_is_dagsters_in_memory_storage() -> None:
    storage = HeldConnectionEventLogStorage()
    assert isinstance(storage, InMemoryEventLogStorage)
    assert not storage.is_persistent


def test_run_instance_with_dagster_home_is_that_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dagster.yaml").write_text("")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with run_instance() as instance:
        assert instance.is_persistent
        assert not isinstance(instance.event_log_storage, HeldConnectionEventLogStorage)


def test_run_instance_without_dagster_home_is_ephemeral(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    instance = run_instance()
    assert instance.is_ephemeral
    assert isinstance(instance.event_log_storage, HeldConnectionEventLogStorage)
