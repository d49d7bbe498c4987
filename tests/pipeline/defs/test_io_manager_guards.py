"""The IO manager's guards: per-key write locks, safe partition keys, no empty-table wipe-out.

- Two writers of one storage key never interleave: the second waits for the lock, or fails with
  "in use by pid N" after its timeout (threads and a separate process).
- A partition key that could name a path outside its folder (``../../esc``) is refused by the
  configs sensor (skipped and logged), by ``ExperimentsResource.config_path`` and by the IO
  manager, before any path is built.
- An empty prepared table is refused with the asset named, and the stored months stay.
- Experiment files may be JSON.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from ml4t_pipeline.defs.io_managers import CONTROL_DIR, Ml4tIOManager, read_value
from ml4t_pipeline.defs.partitions import (
    EXPERIMENTS,
    UnsafePartitionKeyError,
    check_partition_key,
    experiments_partitions,
)
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.defs.sensors import experiment_configs_sensor
from ml4t_pipeline.defs.storage_metadata import by_month_metadata
from ml4t_pipeline.lib import storage
from tests.conftest import REPO_ROOT

UNSAFE_KEYS = ["../../esc", "..", "a/b", "/abs", ".hidden", "a..b", "a b", "", "x\\y", "é"]
SAFE_KEYS = ["demo", "sp500_top25", "exp-2.v3", "A_1", "2016-05-01"]


def _table(months: list[int]) -> pl.DataFrame:
    stamps = [datetime(2016, m, d, 21, tzinfo=UTC) for m in months for d in (4, 5)]
    return pl.DataFrame(
        {"timestamp": stamps, "symbol": ["A", "B"] * len(months), "close": [1.0] * len(stamps)},
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )


_INSTANCE = dg.DagsterInstance.ephemeral()


def _partitioned(key: str) -> dict[str, Any]:
    """Context arguments for partition ``key`` of the experiments (added to the instance)."""
    if not _INSTANCE.has_dynamic_partition(EXPERIMENTS, key):
        _INSTANCE.add_dynamic_partitions(EXPERIMENTS, [key])
    return {
        "partition_key": key,
        "asset_partitions_def": experiments_partitions,
        "instance": _INSTANCE,
    }


def _output_context(
    asset: str, key: str, *, meta: dict[str, Any] | None = None, run_id: str = "run-1"
) -> dg.OutputContext:
    return dg.build_output_context(
        asset_key=dg.AssetKey(asset),
        definition_metadata=meta or {},
        run_id=run_id,
        **_partitioned(key),
    )


# ---------------------------------------------------------------------------------------------
# locks


def test_exclusive_lock_second_thread_times_out_naming_pid(tmp_path: Path) -> None:
    lock = tmp_path / "k.lock"
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with storage.exclusive_lock(lock, timeout=1.0, what="storage key prices[demo]"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        with (
            pytest.raises(
                storage.StorageKeyInUseError,
                match=rf"storage key prices\[demo\]: in use by pid {os.getpid()} ",
            ),
            storage.exclusive_lock(lock, timeout=0.1, what="storage key prices[demo]"),
        ):
            pass
    finally:
        release.set()
        thread.join()
    with storage.exclusive_lock(lock, timeout=0):  # free again once released
        assert lock.read_text().strip() == str(os.getpid())
    assert lock.read_text() == ""  # the pid is cleared on release


def test_exclusive_lock_waiting_writer_runs_after_holder(tmp_path: Path) -> None:
    lock = tmp_path / "k.lock"
    order: list[str] = []
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with storage.exclusive_lock(lock, timeout=1.0):
            held.set()
            release.wait(10)
            order.append("holder done")

    def waiter() -> None:
        with storage.exclusive_lock(lock, timeout=30.0):
            order.append("waiter in")

    first = threading.Thread(target=holder)
    first.start()
    assert held.wait(10)
    second = threading.Thread(target=waiter)
    second.start()
    second.join(0.3)
    assert order == []  # still waiting while the holder has the key
    release.set()
    first.join()
    second.join(30)
    assert order == ["holder done", "waiter in"]


HOLD_LOCK = """
import sys, time
from ml4t_pipeline.lib import storage
with storage.exclusive_lock(sys.argv[1], timeout=5):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_io_manager_write_refused_while_another_process_holds_the_key(tmp_path: Path) -> None:
    manager = Ml4tIOManager(base_dir=str(tmp_path), lock_timeout_s=0.2)
    lock = tmp_path / "prices" / CONTROL_DIR / "locks" / "lab.lock"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(
            storage.StorageKeyInUseError,
            match=rf"storage key prices\[lab\]: in use by pid {child.pid} ",
        ):
            manager.handle_output(
                _output_context("prices", "lab", meta=by_month_metadata()), _table([5])
            )
        assert not (tmp_path / "prices" / "lab").exists()  # nothing written
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    # a killed holder leaves no stale lock: the kernel dropped it
    manager.handle_output(_output_context("prices", "lab", meta=by_month_metadata()), _table([5]))
    assert read_value(tmp_path / "prices" / "lab").height == 2


def test_io_manager_concurrent_writers_of_one_key_never_mix(tmp_path: Path) -> None:
    """Eight threads write different two-month tables to one key; the result is one of them."""
    manager = Ml4tIOManager(base_dir=str(tmp_path), lock_timeout_s=60)
    frames = [_table([5, 6]).with_columns(pl.lit(float(i)).alias("close")) for i in range(8)]
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            ctx = _output_context("prices", "lab", meta=by_month_metadata(), run_id=f"run-{i}")
            manager.handle_output(ctx, frames[i])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    stored = read_value(tmp_path / "prices" / "lab")
    assert stored["close"].n_unique() == 1  # both months from the same writer
    record = json.loads((tmp_path / "prices" / CONTROL_DIR / "lab.current.json").read_text())
    assert record["run_id"] == f"run-{int(stored['close'][0])}"


def test_lock_timeout_env_must_be_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    from ml4t_pipeline.defs.io_managers import LOCK_TIMEOUT_ENV, default_lock_timeout

    monkeypatch.setenv(LOCK_TIMEOUT_ENV, "2.5")
    assert default_lock_timeout() == 2.5
    for bad in ("soon", "-1", "inf", "nan"):
        monkeypatch.setenv(LOCK_TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=LOCK_TIMEOUT_ENV):
            default_lock_timeout()


# ---------------------------------------------------------------------------------------------
# safe partition keys


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_check_partition_key_unsafe_refused_with_key_quoted(key: str) -> None:
    with pytest.raises(UnsafePartitionKeyError, match=re.escape(f"partition key {key!r} refused")):
        check_partition_key(key)


@pytest.mark.parametrize("key", SAFE_KEYS)
def test_check_partition_key_safe_returned(key: str) -> None:
    assert check_partition_key(key) == key


def test_config_path_unsafe_key_refused_before_any_lookup(tmp_path: Path) -> None:
    configs = tmp_path / "a" / "configs"
    configs.mkdir(parents=True)
    (tmp_path / "esc.yaml").write_text("name: esc\n")  # what ../../esc would reach
    resource = ExperimentsResource(configs_dir=str(configs))
    with pytest.raises(UnsafePartitionKeyError, match="'../../esc' refused"):
        resource.config_path("../../esc")


@pytest.mark.parametrize("key", ["../../esc", ".hidden", "a/b"])
def test_io_manager_unsafe_key_refused_and_nothing_written(tmp_path: Path, key: str) -> None:
    storage_dir = tmp_path / "store"
    manager = Ml4tIOManager(base_dir=str(storage_dir))
    with pytest.raises(
        UnsafePartitionKeyError, match=re.escape(f"prices_raw: partition key {key!r}")
    ):
        manager.handle_output(_output_context("prices_raw", key), _table([5]))
    with pytest.raises(
        UnsafePartitionKeyError, match=re.escape(f"prices_raw: partition key {key!r}")
    ):
        manager.load_input(
            dg.build_input_context(asset_key=dg.AssetKey("prices_raw"), **_partitioned(key))
        )
    assert sorted(p.name for p in tmp_path.rglob("*")) == []  # no file anywhere


def test_configs_sensor_skips_and_logs_unsafe_file_stems(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    for name in ("good.yaml", "also_good.json", "a b.yaml", ".hidden.yaml", "x..y.yml"):
        (configs / name).write_text("{}")
    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(
        instance=instance, resources={"experiments": ExperimentsResource(configs_dir=str(configs))}
    )
    context.log.addHandler(caplog.handler)  # the sensor log is its own logger
    with caplog.at_level(logging.WARNING):
        result = experiment_configs_sensor(context)
    assert [r.partition_key for r in result.run_requests] == ["also_good", "good"]
    (request,) = result.dynamic_partitions_requests
    assert list(request.partition_keys) == ["also_good", "good"]
    logged = caplog.text
    for stem in ("a b", ".hidden", "x..y"):
        assert f"experiment config {stem!r}" in logged and "not a safe partition key" in logged


# ---------------------------------------------------------------------------------------------
# empty tables and JSON experiments


def test_io_manager_empty_prepared_table_refused_naming_asset_months_kept(tmp_path: Path) -> None:
    manager = Ml4tIOManager(base_dir=str(tmp_path))
    meta = by_month_metadata()
    manager.handle_output(_output_context("prices", "lab", meta=meta), _table([5, 6]))
    root = tmp_path / "prices" / "lab"
    before = {p: p.read_bytes() for p in sorted(root.rglob("*.parquet"))}
    with pytest.raises(ValueError, match=r"prices\[lab\]: refusing to store an empty table"):
        manager.handle_output(
            _output_context("prices", "lab", meta=meta, run_id="run-2"), _table([5]).clear()
        )
    assert {p: p.read_bytes() for p in sorted(root.rglob("*.parquet"))} == before
    # a table that is empty by design (the quarantine) may become empty
    quarantine = by_month_metadata(allow_empty=True)
    manager.handle_output(_output_context("prices_quarantine", "lab", meta=quarantine), _table([5]))
    manager.handle_output(
        _output_context("prices_quarantine", "lab", meta=quarantine, run_id="run-2"),
        _table([5]).clear(),
    )
    assert read_value(tmp_path / "prices_quarantine" / "lab").height == 0


def test_experiments_resource_reads_json_experiment(tmp_path: Path) -> None:
    import yaml

    configs = tmp_path / "configs"
    configs.mkdir()
    spec = yaml.safe_load((REPO_ROOT / "configs" / "demo.yaml").read_text())
    (configs / "demo_json.json").write_text(json.dumps(spec | {"name": "demo_json"}))
    resource = ExperimentsResource(configs_dir=str(configs))
    assert resource.experiment_keys() == ["demo_json"]
    assert resource.config_path("demo_json").suffix == ".json"
    cfg = resource.load("demo_json")
    assert cfg.name == "demo_json" and cfg.strategy.n == spec["strategy"]["n"]
    with pytest.raises(FileNotFoundError, match=r"no missing\.yaml, missing\.yml or missing\.json"):
        resource.config_path("missing")


def test_experiments_partitions_name_is_experiments() -> None:
    assert experiments_partitions.name == EXPERIMENTS
