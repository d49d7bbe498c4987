"""Faults with a clear end: full disk, concurrent sweeps, unsafe file stems, killed runs, and
what a failed ``ml4t run`` prints.

- A full disk (``ENOSPC``, or polars' errno-less "Invalid thrift: transport error" while the disk
  is nearly full) exits 2 naming the folder and its free space; the previous output is unchanged.
- A second sweep into a folder whose lock is held is refused at once ("in use by pid N", exit 2).
- An experiment file whose stem is not a safe partition key (``exp_ü.yaml``) exits 2 before any
  partition is registered; the configs sensor skips it with the reason in its log.
- A Dagster run whose ``ml4t`` process was killed is marked failed by the next run.
- A failed run prints its cause first, in a few lines; the traces go to ``DIR.error.log`` and,
  with ``--verbose``, to stderr.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from ml4t_pipeline import runner
from ml4t_pipeline.cli import main
from ml4t_pipeline.defs.partitions import EXPERIMENTS, SAFE_KEY_PATTERN
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.defs.sensors import experiment_configs_sensor
from tests.conftest import REPO_ROOT
from tests.pipeline.helpers import DemoCliRun

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock, /proc and SIGKILL")

FREE_SPACE = r"\(\d[\d,.]* (?:bytes|KiB|MiB|GiB) free of \d[\d,.]* (?:bytes|KiB|MiB|GiB)\)"


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``main(argv)`` with stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def demo_copy(folder: Path, name: str = "demo") -> Path:
    """configs/demo.yaml copied to ``folder/<name>.yaml``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_bytes((REPO_ROOT / "configs" / "demo.yaml").read_bytes())
    return path


@pytest.fixture
def broken_prices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An experiment whose prices file is zero bytes: its first step (prices_raw) fails."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "prices.parquet").write_bytes(b"")
    (data / "signals.parquet").write_bytes(b"")
    monkeypatch.setenv("ML4T_DATA_ROOT", str(data))
    cfg = {
        "name": "broken",
        "data": {"prices": "prices.parquet", "signals": {"path": "signals.parquet"}},
        "strategy": {"type": "TopN", "signal": "score", "n": 2, "rebalance_every": 5},
    }
    path = tmp_path / "configs" / "broken.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(cfg))
    return path


# --- disk full -------------------------------------------------------------------------------


def test_run_disk_full_during_materialization_exits_2_naming_folder_and_free_space(
    demo_cli_run: DemoCliRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    shutil.copytree(demo_cli_run.out, out)
    before = files_of(out)

    def disk_full(self: pl.DataFrame, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", disk_full)  # every stored value
    code, _, err = run_cli("run", str(demo_copy(tmp_path / "configs")), "--output", str(out))
    assert code == 2, err
    assert f"error: no space left on the disk holding {tmp_path.resolve()} " in err
    assert re.search(FREE_SPACE, err) and "No space left on device" in err
    assert f"output folder {out.resolve()} left unchanged" in err
    assert "Traceback" not in err and len(err.splitlines()) <= 3
    assert files_of(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs", "out"]  # no staging, no lock


def test_run_polars_write_error_without_errno_on_nearly_full_disk_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # polars reports a failed footer write as "Invalid thrift: transport error", without errno;
    # with under LOW_SPACE_BYTES free on the output's disk that is a full disk
    def thrift(self: pl.DataFrame, *args: object, **kwargs: object) -> None:
        raise pl.exceptions.ComputeError("parquet: Invalid thrift: transport error")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", thrift)
    monkeypatch.setattr(runner, "_disk_usage", lambda folder: (2 * 2**20, 50 * 2**30))
    cfg = demo_copy(tmp_path / "configs")
    code, _, err = run_cli("run", str(cfg), "--output", str(tmp_path / "out"))
    assert code == 2, err
    assert "no space left on the disk holding" in err
    assert "(2.0 MiB free of 50.0 GiB)" in err and "Invalid thrift: transport error" in err
    assert not (tmp_path / "out").exists()


def test_run_polars_write_error_with_space_left_is_a_failed_step_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def thrift(self: pl.DataFrame, *args: object, **kwargs: object) -> None:
        raise pl.exceptions.ComputeError("parquet: Invalid thrift: transport error")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", thrift)
    monkeypatch.setattr(runner, "_disk_usage", lambda folder: (20 * 2**30, 50 * 2**30))
    cfg = demo_copy(tmp_path / "configs")
    code, _, err = run_cli("run", str(cfg), "--output", str(tmp_path / "out"))
    assert code == 1, err
    assert err.startswith(
        "FAILED step prices_raw: polars.exceptions.ComputeError: parquet: Invalid thrift"
    )
    assert "no space left" not in err


def test_run_polars_disk_full_while_writing_outputs_exits_2_previous_set_unchanged(
    demo_cli_run: DemoCliRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # after the materialization: a polars error (not an OSError) from the output writer
    out = tmp_path / "out"
    shutil.copytree(demo_cli_run.out, out)
    before = files_of(out)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise pl.exceptions.ComputeError(
            "parquet: File out of specification: underlying IO error: No space left on device "
            "(os error 28)"
        )

    monkeypatch.setattr(runner.attribution_lib, "write_attribution", disk_full)
    code, _, err = run_cli("run", str(demo_copy(tmp_path / "configs")), "--output", str(out))
    assert code == 2, err
    assert f"no space left on the disk holding {tmp_path.resolve()} " in err
    assert re.search(FREE_SPACE, err) and "Traceback" not in err
    assert files_of(out) == before


def test_compare_output_on_full_device_exits_2_naming_folder(
    demo_cli_run: DemoCliRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # polars' writer raising what it raises on a full device in the versions that name the
    # errno (others say only "Invalid thrift: transport error", which counts as a full disk
    # only below 64 MiB free: a private /dev/full-like device cannot show that)
    target = tmp_path / "full.parquet"

    def full(self: pl.DataFrame, *args: object, **kwargs: object) -> None:
        raise pl.exceptions.ComputeError(
            "parquet: File out of specification: underlying IO error: No space left on "
            "device (os error 28)"
        )

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full)
    code, _, err = run_cli("compare", str(demo_cli_run.out), "--output", str(target))
    assert code == 2, err
    assert err.startswith(f"error: no space left on the disk holding {tmp_path.resolve()} ")
    assert re.search(FREE_SPACE, err) and "os error 28" in err and "Traceback" not in err


def test_is_disk_full_reads_errno_and_polars_text_through_causes() -> None:
    inner = OSError(errno.EDQUOT, "Disk quota exceeded")
    try:
        try:
            raise inner
        except OSError as exc:
            raise RuntimeError("writing trades.parquet failed") from exc
    except RuntimeError as outer:
        assert runner.is_disk_full(outer)
    polars_text = pl.exceptions.ComputeError("IO error: No space left on device (os error 28)")
    assert runner.is_disk_full(polars_text)
    assert not runner.is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not runner.is_disk_full(ValueError("errno 2800 is not a thing"))


# --- sweeps take the output lock -------------------------------------------------------------


def sweep_file(folder: Path) -> Path:
    cfg = yaml.safe_load((REPO_ROOT / "configs" / "demo.yaml").read_text())
    cfg["sweep"] = {"grid": {"strategy.n": [1, 2]}}
    path = folder / "demo_sweep.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@contextlib.contextmanager
def sweep_lock_held_by_child(out: Path):  # type: ignore[no-untyped-def]
    """A child process holding the folder's lock ``<out>.lock``, as a running sweep (or run)
    into ``out`` does."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from ml4t_pipeline.lib.output import output_lock, resolve_output\n"
        "with output_lock(resolve_output(Path(sys.argv[1]))):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(120)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(out)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        yield child
    finally:
        child.kill()
        child.wait()


def test_sweep_into_folder_in_use_exits_2_naming_holder_pid(tmp_path: Path) -> None:
    out = tmp_path / "sweep_out"
    with sweep_lock_held_by_child(out) as child:
        code, _, err = run_cli("sweep", str(sweep_file(tmp_path / "sweeps")), "--output", str(out))
    assert code == 2, err
    assert f"error: output folder {out.resolve()} is in use by pid {child.pid}" in err
    assert not out.exists()  # nothing prepared or computed beside the running sweep


def test_sweep_api_into_folder_in_use_raises_in_use(tmp_path: Path) -> None:
    from ml4t_pipeline import Sweep
    from ml4t_pipeline.lib.output import OutputInUseError

    out = tmp_path / "sweep_out"
    sweep = Sweep.from_file(sweep_file(tmp_path / "sweeps"))
    with sweep_lock_held_by_child(out) as child, pytest.raises(OutputInUseError) as info:
        sweep.run(out)
    assert info.value.pid == child.pid and f"in use by pid {child.pid}" in str(info.value)
    assert not out.exists()


# --- unsafe config stems ---------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "validate"])
def test_unsafe_config_stem_exits_2_before_registering_a_partition(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    config = demo_copy(tmp_path / "configs", "exp_ü")
    where = "--output" if command == "run" else "--storage"
    code, _, err = run_cli(command, str(config), where, str(tmp_path / "out"))
    assert code == 2, err
    assert f"error: experiment file {config}: its stem 'exp_ü'" in err
    assert SAFE_KEY_PATTERN.pattern in err and "Traceback" not in err
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions(EXPERIMENTS) == []
        assert instance.get_runs() == []
    assert not (tmp_path / "out").exists()


def test_configs_sensor_skips_non_ascii_stem_with_logged_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    configs = tmp_path / "configs"
    demo_copy(configs, "exp_ü")
    demo_copy(configs, "exp_ok")
    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(
        instance=instance,
        resources={"experiments": ExperimentsResource(configs_dir=str(configs))},
    )
    context.log.addHandler(caplog.handler)  # the sensor log is its own logger
    with caplog.at_level(logging.WARNING):
        result = experiment_configs_sensor(context)
    assert [r.partition_key for r in result.run_requests or []] == ["exp_ok"]
    added = [k for r in result.dynamic_partitions_requests or [] for k in r.partition_keys or []]
    assert added == ["exp_ok"]
    assert f"experiment config 'exp_ü' in {configs} skipped" in caplog.text
    assert "not a safe partition key (it contains ['ü']" in caplog.text


# --- killed runs -----------------------------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _run(instance: dg.DagsterInstance, identity: str) -> str:
    run = dg.DagsterRun(
        job_name="__ephemeral_asset_job__",
        run_id=str(uuid.uuid4()),
        status=dg.DagsterRunStatus.STARTED,
        tags={runner.HOST_TAG: identity.split("|")[0], runner.PROCESS_TAG: identity},
    )
    instance.add_run(run)
    return run.run_id


def test_mark_stale_runs_fails_runs_of_dead_processes_only() -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        dead = _run(instance, runner.process_identity(_dead_pid()))
        alive = _run(instance, runner.process_identity())
        reused = _run(instance, runner.process_identity().rsplit("|", 1)[0] + "|1")  # other start
        assert sorted(runner.mark_stale_runs(instance)) == sorted([dead, reused])
        status = {r.run_id: r.status for r in instance.get_runs()}
        assert status[dead] == status[reused] == dg.DagsterRunStatus.FAILURE
        assert status[alive] == dg.DagsterRunStatus.STARTED
        assert runner.mark_stale_runs(instance) == []  # marked once


def test_run_killed_mid_way_is_marked_failed_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken_prices: Path
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = dict(os.environ, DAGSTER_HOME=str(home))  # the demo's prices ship in a package
    config = demo_copy(tmp_path / "configs")
    child = subprocess.Popen(
        [sys.executable, "-m", "ml4t_pipeline.cli", "run", str(config), "-o", str(tmp_path / "o")],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    started = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
    try:
        with dg.DagsterInstance.get() as instance:
            while not instance.get_runs(filters=started):  # the demo runs for seconds
                assert child.poll() is None, "the run ended before it could be killed"
                time.sleep(0.05)
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            (killed,) = instance.get_runs(filters=started)
            assert killed.tags[runner.PROCESS_TAG].split("|")[2] == str(child.pid)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    code, _, err = run_cli("run", str(broken_prices), "--output", str(tmp_path / "out"))
    assert code == 1, err
    with dg.DagsterInstance.get() as instance:
        record = instance.get_run_by_id(killed.run_id)
        assert record is not None and record.status == dg.DagsterRunStatus.FAILURE
        events = instance.all_logs(killed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert f"pid {child.pid}" in events[-1].message


# --- what a failed run prints ----------------------------------------------------------------


def test_failed_run_prints_cause_first_short_and_points_to_trace_log(
    broken_prices: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, stdout, err = run_cli("run", str(broken_prices), "--output", str(out))
    assert code == 1
    lines = err.splitlines()
    assert lines[0].startswith("FAILED step prices_raw: ml4t_pipeline.lib.io.InputFileError: ")
    assert "prices.parquet: cannot read the Parquet file" in lines[0]
    assert len(lines) < 20 and "Stack Trace" not in err and "Traceback" not in err
    log = tmp_path / "out.error.log"
    assert lines[-1] == f"full trace: {log} (or rerun with --verbose)"
    text = log.read_text()
    assert "Stack Trace:" in text and "--- step prices_raw failed ---" in text
    assert not out.exists()


def test_failed_run_verbose_prints_cause_then_trace(broken_prices: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("run", str(broken_prices), "--output", str(tmp_path / "o"), "--verbose")
    assert code == 1
    assert err.startswith("FAILED step prices_raw: ml4t_pipeline.lib.io.InputFileError: ")
    assert err.index("run failed for experiment 'broken'") < err.index("Stack Trace:")
    assert "--- step prices_raw failed ---" in err and "load_prices_file" in err
