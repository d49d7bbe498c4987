"""The Dagster instance of a run without ``DAGSTER_HOME``: Dagster's ephemeral instance, with an
event log storage that keeps one SQLite connection.

:func:`run_instance` is the instance :func:`~ml4t_pipeline.defs.execution.execute_experiment`
runs in: ``DagsterInstance.get()`` when ``DAGSTER_HOME`` is set (unchanged), otherwise
:func:`ephemeral_instance`, which builds what ``DagsterInstance.ephemeral()`` builds (in-memory
run storage, no compute-log capture, temporary artifact folder, synchronous launcher) except
that its event log is a :class:`HeldConnectionEventLogStorage`.

Why: Dagster's ``InMemoryEventLogStorage`` opens a new SQLAlchemy connection (``NullPool``) to
its shared-cache in-memory SQLite database for every read and write and runs two ``PRAGMA``
statements each time; a run of ``configs/sp500_top25.yaml`` opened ~1,300 connections to store
its ~300 events and answer Dagster's per-step lookups (input data versions, 253 dynamic-partition
existence checks). The subclass runs the same SQL on the one connection the storage already
holds for its lifetime (on the thread that built it; other threads get Dagster's own new
connection) and remembers which dynamic partitions it has seen: only this process can reach an
in-memory database named by a random uuid, so a key it has once seen stays until this storage
deletes it (a delete or a wipe forgets them all). The schema, the rows, the events and every
query are Dagster's.

This relies on private Dagster internals, as of dagster 1.13 (checked on 1.13.27):
``dagster._core.storage.event_log.InMemoryEventLogStorage`` with its ``_connect`` context
manager (a lock, then a new connection in a transaction), the ``_held_conn`` and ``_db_lock``
attributes, ``run_connection``/``index_connection`` returning ``_connect()``, and the factory
``dagster._core.instance.factory.create_ephemeral_instance``'s list of parts.
``tests/pipeline/defs/test_instance.py`` runs a small job on the stock ephemeral instance and
on this one and compares what both stored; it fails if Dagster changes these.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
from dagster._core.instance.types import InstanceType
from dagster._core.launcher.sync_in_memory_run_launcher import SyncInMemoryRunLauncher
from dagster._core.run_coordinator import DefaultRunCoordinator
from dagster._core.storage.event_log import InMemoryEventLogStorage
from dagster._core.storage.noop_compute_log_manager import NoOpComputeLogManager
from dagster._core.storage.root import TemporaryLocalArtifactStorage
from dagster._core.storage.runs import InMemoryRunStorage

__all__ = ["HeldConnectionEventLogStorage", "ephemeral_instance", "run_instance"]


class HeldConnectionEventLogStorage(InMemoryEventLogStorage):
    """Dagster's in-memory event log storage, its SQL run on the one connection it holds.

    Same tables, rows and queries as ``InMemoryEventLogStorage``; each read or write takes the
    storage's lock and runs in a transaction on the held connection instead of a new one (from
    another thread than the one that built the storage: a new connection, as Dagster does).
    ``has_dynamic_partition`` answers from the keys it has seen exist (deleting a dynamic
    partition or wiping the storage forgets them), ``has_table`` from the tables it has seen.
    """

    def __init__(self) -> None:
        self._owner = threading.get_ident()
        self._partitions_seen: dict[str, set[str]] = {}
        self._tables_seen: set[str] = set()
        super().__init__()
        # per connection, what Dagster's _connect sets on each new one (journal_mode=WAL is a
        # no-op on an in-memory database)
        self._held_conn.exec_driver_sql("PRAGMA foreign_keys=ON;").close()
        self._held_conn.commit()

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        if threading.get_ident() != self._owner:
            with super()._connect() as conn:
                yield conn
            return
        with self._db_lock, self._held_conn.begin():
            yield self._held_conn

    def has_table(self, table_name: str) -> bool:
        # asked before each asset check's and asset event's rows are written; the tables are
        # made once in __init__ and never dropped (no migrations of an in-memory database)
        if table_name in self._tables_seen:
            return True
        found = super().has_table(table_name)
        if found:
            self._tables_seen.add(table_name)
        return found

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
        seen = self._partitions_seen.get(partitions_def_name)
        if seen is not None and partition_key in seen:
            return True
        found = super().has_dynamic_partition(partitions_def_name, partition_key)
        if found:
            self._partitions_seen.setdefault(partitions_def_name, set()).add(partition_key)
        return found

    def add_dynamic_partitions(
        self, partitions_def_name: str, partition_keys: Sequence[str]
    ) -> None:
        super().add_dynamic_partitions(partitions_def_name, partition_keys)
        self._partitions_seen.setdefault(partitions_def_name, set()).update(partition_keys)

    def delete_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> None:
        self._partitions_seen.clear()
        super().delete_dynamic_partition(partitions_def_name, partition_key)

    def wipe(self) -> None:
        self._partitions_seen.clear()
        super().wipe()


def ephemeral_instance() -> dg.DagsterInstance:
    """An ephemeral Dagster instance (``instance.is_ephemeral``) whose event log is a
    :class:`HeldConnectionEventLogStorage`; otherwise the parts of
    ``DagsterInstance.ephemeral()``. Nothing outlives the process."""
    return dg.DagsterInstance(
        instance_type=InstanceType.EPHEMERAL,
        local_artifact_storage=TemporaryLocalArtifactStorage(),
        run_storage=InMemoryRunStorage(),
        event_storage=HeldConnectionEventLogStorage(),
        compute_log_manager=NoOpComputeLogManager(),
        run_coordinator=DefaultRunCoordinator(),
        run_launcher=SyncInMemoryRunLauncher(),
    )


def run_instance() -> dg.DagsterInstance:
    """The instance a run is recorded in: ``DAGSTER_HOME``'s when that is set
    (``DagsterInstance.get()``), otherwise a new :func:`ephemeral_instance`."""
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return ephemeral_instance()
