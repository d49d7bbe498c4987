"""Hostile inputs and surroundings (issue 25, items 2-5): lock files planted as links, a user's
folder given as --output, unbounded config files, and the network exposure of a local Ray.

Each case is refused with a message naming the path (and the line, for config files) and exit
code 2 from the ``ml4t`` command, leaving every file it was pointed at as it was.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from ml4t_pipeline.cli import main
from ml4t_pipeline.config import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_NODES,
    ConfigError,
    load_config,
)
from ml4t_pipeline.lib import output as output_lib
from ml4t_pipeline.lib import storage
from ml4t_pipeline.lib.lockfile import UnsafeLockFileError
from ml4t_pipeline.lib.sweep import backends, runner
from ml4t_pipeline.lib.sweep.spec import load_sweep_file
from ml4t_pipeline.sweeps import prepare_data
from tests.conftest import REPO_ROOT

VICTIM_TEXT = "a file of the user's that no run may truncate\n"


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``main(argv)`` with stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def demo_config(folder: Path, text: str | None = None) -> Path:
    """``configs/demo.yaml`` copied into ``folder`` (or ``text`` written as ``demo.yaml``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "demo.yaml"
    path.write_text(text if text is not None else (REPO_ROOT / "configs/demo.yaml").read_text())
    return path


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM_TEXT)
    return path


# --- item 3: lock files never followed through a link -----------------------------------------


def test_output_lock_symlink_at_lock_path_refused_target_untouched(
    tmp_path: Path, victim: Path
) -> None:
    final = tmp_path / "out"
    output_lib.lock_path(final).symlink_to(victim)
    with (
        pytest.raises(output_lib.OutputError, match=r"out\.lock is a symbolic link"),
        output_lib.output_lock(final),
    ):
        pytest.fail("the lock was taken through a link")
    assert victim.read_text() == VICTIM_TEXT
    assert output_lib.lock_path(final).is_symlink()  # left for the user to look at


def test_output_lock_dangling_symlink_refused_creates_nothing(tmp_path: Path) -> None:
    final, target = tmp_path / "out", tmp_path / "elsewhere" / "created.txt"
    target.parent.mkdir()
    output_lib.lock_path(final).symlink_to(target)
    with (
        pytest.raises(output_lib.OutputError, match="symbolic link"),
        output_lib.output_lock(final),
    ):
        pass
    assert not target.exists()


def test_output_lock_foreign_file_at_lock_path_refused_untouched(tmp_path: Path) -> None:
    final = tmp_path / "out"
    notes = output_lib.lock_path(final)
    notes.write_text("my notes about the out folder\n")
    with (
        pytest.raises(output_lib.OutputError, match="holds something other than a process id"),
        output_lib.output_lock(final),
    ):
        pass
    assert notes.read_text() == "my notes about the out folder\n"


def test_output_lock_hard_link_to_another_file_refused(tmp_path: Path, victim: Path) -> None:
    final = tmp_path / "out"
    os.link(victim, output_lib.lock_path(final))
    with pytest.raises(output_lib.OutputError, match="2 hard links"), output_lib.output_lock(final):
        pass
    assert victim.read_text() == VICTIM_TEXT


def test_output_lock_fifo_at_lock_path_refused(tmp_path: Path) -> None:
    final = tmp_path / "out"
    os.mkfifo(output_lib.lock_path(final))
    with (
        pytest.raises(output_lib.OutputError, match="is not a regular file"),
        output_lib.output_lock(final),
    ):
        pass


def test_cli_run_symlinked_output_lock_exits_2_naming_it(tmp_path: Path, victim: Path) -> None:
    config = demo_config(tmp_path / "configs")
    out = tmp_path / "out"
    lock = output_lib.lock_path(out)
    lock.symlink_to(victim)
    code, _, err = run_cli("run", str(config), "--output", str(out))
    assert code == 2
    assert f"lock file {lock} is a symbolic link" in err and "Traceback" not in err
    assert victim.read_text() == VICTIM_TEXT and not out.exists()


def test_storage_lock_symlink_at_lock_path_refused_target_untouched(
    tmp_path: Path, victim: Path
) -> None:
    lock = tmp_path / "prices" / ".ml4t" / "locks" / "demo.lock"
    lock.parent.mkdir(parents=True)
    lock.symlink_to(victim)
    with (
        pytest.raises(UnsafeLockFileError, match=r"locks/demo\.lock is a symbolic link"),
        storage.exclusive_lock(lock, timeout=0),
    ):
        pytest.fail("the lock was taken through a link")
    assert victim.read_text() == VICTIM_TEXT


def test_storage_lock_symlinked_lock_folder_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    (elsewhere / "demo.lock").write_text(VICTIM_TEXT)  # a user's file that happens to match
    control = tmp_path / "prices" / ".ml4t"
    control.mkdir(parents=True)
    (control / "locks").symlink_to(elsewhere)
    with (
        pytest.raises(UnsafeLockFileError, match=r"lock folder .*locks is a symbolic link"),
        storage.exclusive_lock(control / "locks" / "demo.lock", timeout=0),
    ):
        pass
    assert (elsewhere / "demo.lock").read_text() == VICTIM_TEXT


def test_storage_lock_foreign_content_refused_untouched(tmp_path: Path) -> None:
    lock = tmp_path / "k.lock"
    lock.write_text(VICTIM_TEXT)
    with (
        pytest.raises(UnsafeLockFileError, match="holds something other than a process id"),
        storage.exclusive_lock(lock, timeout=0),
    ):
        pass
    assert lock.read_text() == VICTIM_TEXT


def test_storage_lock_stale_pid_file_reused_and_emptied(tmp_path: Path) -> None:
    lock = tmp_path / "k.lock"
    lock.write_text("999999\n")  # left by a killed run
    with storage.exclusive_lock(lock, timeout=0):
        assert lock.read_text() == f"{os.getpid()}\n"
    assert lock.read_text() == ""


def test_cli_validate_symlinked_storage_lock_exits_2_naming_it(
    tmp_path: Path, victim: Path
) -> None:
    config = demo_config(tmp_path / "configs")
    store = tmp_path / "storage"
    lock = store / "prices_raw" / ".ml4t" / "locks" / "demo.lock"  # the first value written
    lock.parent.mkdir(parents=True)
    lock.symlink_to(victim)
    code, _, err = run_cli("validate", str(config), "--storage", str(store))
    assert code == 2, err
    assert f"lock file {lock} is a symbolic link" in err
    assert victim.read_text() == VICTIM_TEXT


# --- item 4: only an empty or run.json-marked folder is replaced ------------------------------


def test_cli_run_folder_with_only_output_like_names_refused_nothing_deleted(
    tmp_path: Path,
) -> None:
    config = demo_config(tmp_path / "configs")
    out = tmp_path / "site"
    (out / "assets" / "img").mkdir(parents=True)
    (out / "assets" / "img" / "logo.png").write_bytes(b"\x89PNG user logo")
    (out / "report.html").write_text("<h1>my own report</h1>")
    code, _, err = run_cli("run", str(config), "--output", str(out))
    assert code == 2
    assert f"output folder {out} exists and is not an `ml4t run` output folder" in err
    assert "nothing was deleted" in err
    assert (out / "assets" / "img" / "logo.png").read_bytes() == b"\x89PNG user logo"
    assert (out / "report.html").read_text() == "<h1>my own report</h1>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs", "site"]  # no lock left


@pytest.mark.parametrize(
    ("marker", "replaceable"),
    [
        (None, False),
        ("not json", False),
        ('{"format": "ml4t-run/1"}', False),  # no file list
        ('{"format": "other/1", "files": {}}', False),
        ('{"format": "ml4t-run/1", "files": {}}', True),
    ],
)
def test_check_replaceable_needs_a_valid_run_json(
    tmp_path: Path, marker: str | None, replaceable: bool
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "report.html").write_text("x")
    if marker is not None:
        (folder / output_lib.MANIFEST).write_text(marker)
    if replaceable:
        output_lib.check_replaceable(folder)
    else:
        with pytest.raises(output_lib.OutputError, match="no valid run.json"):
            output_lib.check_replaceable(folder)
    assert (folder / "report.html").read_text() == "x"


def test_check_replaceable_empty_or_missing_folder_accepted(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    output_lib.check_replaceable(tmp_path / "empty")
    output_lib.check_replaceable(tmp_path / "missing")


# --- item 5: config files are bounded ---------------------------------------------------------


def alias_bomb(levels: int, width: int = 10) -> str:
    """A ``strategy:`` block whose ``params.bomb`` expands to ``width ** levels`` numbers.

    Aliases share nodes, so the YAML loads in milliseconds; the loader before the fix then
    walked the expanded tree while checking ``strategy.params`` (each number must be finite):
    measured on it (commit 245b3c7, loaded 2-core machine) 0.8 s at 5 levels and 7.5 s at 6,
    x10 per level, so the 9 levels used here would take about two hours (issue 25: 73 s at 7).
    """
    lines = ["strategy:", "  class: my_strategies.Custom", "  params:", "    l0: &l0 [1]"]
    for i in range(1, levels + 1):
        lines.append(f"    l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    lines.append(f"    bomb: *l{levels}")
    return "\n".join(lines) + "\n"


def demo_with(tmp_path: Path, extra: str, name: str = "demo.yaml") -> Path:
    """``configs/demo.yaml`` with its strategy block replaced by ``extra``."""
    text = (REPO_ROOT / "configs/demo.yaml").read_text()
    head, rest = text.split("strategy:\n", 1)
    tail = rest[rest.index("risk_rules:") :]
    path = tmp_path / name
    path.write_text(head + extra + tail)
    return path


def test_load_config_yaml_alias_bomb_refused_naming_file_and_line(tmp_path: Path) -> None:
    path = demo_with(tmp_path, alias_bomb(9))
    line = path.read_text().splitlines().index("    l1: &l1 [" + ", ".join(["*l0"] * 10) + "]")
    with pytest.raises(ConfigError, match=rf"^{path}:{line + 1}: YAML alias \*l0 is not allowed"):
        load_config(path)


def test_cli_run_yaml_alias_bomb_exits_2(tmp_path: Path) -> None:
    path = demo_with(tmp_path, alias_bomb(9))
    code, _, err = run_cli("run", str(path), "--output", str(tmp_path / "out"))
    assert code == 2 and "YAML alias *l0 is not allowed" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_load_config_yaml_merge_key_refused(tmp_path: Path) -> None:
    text = (REPO_ROOT / "configs/demo.yaml").read_text()
    text = text.replace("  commission:\n", "  commission: &c\n").replace(
        "  slippage:\n    type: NoSlippage\n", "  slippage:\n    <<: *c\n"
    )
    path = tmp_path / "merge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"merge.yaml:\d+: YAML alias \*c is not allowed"):
        load_config(path)


def test_load_config_oversized_sparse_file_refused_without_reading(tmp_path: Path) -> None:
    """A 1 GiB file (sparse: no disk used) is refused from its size alone.

    The loader before the fix read the whole file into memory and parsed it (issue 25: a 1 GB
    config held 2.4 GB RSS after 300 s).
    """
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as fh:
        fh.write(b"name: huge\n# ")
        fh.truncate(1 << 30)
    with pytest.raises(
        ConfigError,
        match=rf"huge.yaml: 1,073,741,824 bytes is larger than the {MAX_CONFIG_BYTES:,}-byte",
    ):
        load_config(path)


def test_load_config_just_over_the_size_cap_refused_at_the_cap_accepted(tmp_path: Path) -> None:
    base = (REPO_ROOT / "configs/demo.yaml").read_bytes()
    at_cap = tmp_path / "at_cap.yaml"
    at_cap.write_bytes(base + b"#" * (MAX_CONFIG_BYTES - len(base)))
    assert load_config(at_cap).strategy.n == 2
    over = tmp_path / "over.yaml"
    over.write_bytes(base + b"#" * (MAX_CONFIG_BYTES - len(base) + 1))
    with pytest.raises(ConfigError, match="larger than the"):
        load_config(over)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("flow.yaml", "strategy:\n  params:\n    x: " + "[" * 5000 + "]" * 5000 + "\n"),
        (
            "block.yaml",
            "strategy:\n  params:\n"
            + "".join("  " * (i + 2) + f"k{i}:\n" for i in range(300))
            + "  " * 302
            + "v: 1\n",
        ),
        ("deep.json", '{"strategy": {"params": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}}"),
    ],
)
def test_load_config_deep_nesting_short_config_error_and_cli_exit_2(
    tmp_path: Path, name: str, text: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:") and f"nested deeper than {MAX_CONFIG_DEPTH}" in message
    assert "\n" not in message and len(message) < 200
    code, _, err = run_cli("run", str(path), "--output", str(tmp_path / "out"))
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err


def test_load_config_too_many_values_refused(tmp_path: Path) -> None:
    values = ", ".join(["1"] * (MAX_CONFIG_NODES + 1))
    path = demo_with(tmp_path, f"strategy:\n  type: TopN\n  params:\n    x: [{values}]\n")
    with pytest.raises(ConfigError, match=f"more than {MAX_CONFIG_NODES:,} values"):
        load_config(path)


def test_load_config_nesting_at_the_limit_reaches_the_schema(tmp_path: Path) -> None:
    # root mapping, strategy, params, then lists up to the limit: parsed, then the schema speaks
    inner = MAX_CONFIG_DEPTH - 3
    path = demo_with(
        tmp_path, "strategy:\n  type: TopN\n  params:\n    x: " + "[" * inner + "]" * inner + "\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "strategy" in str(info.value) and "nested deeper" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "text", "line", "needle"),
    [
        ("syntax.yaml", "name: x\ndata:\n  prices: [demo\nstrategy: {}\n", 4, "not valid YAML"),
        ("syntax.json", '{"name": "x",\n "data": }\n', 2, "not valid JSON"),
        ("tabs.yaml", "name: x\n\tdata: 1\n", 2, "not valid YAML"),
    ],
)
def test_load_config_syntax_error_names_file_and_line(
    tmp_path: Path, name: str, text: str, line: int, needle: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{path}:{line}: {needle}"):
        load_config(path)


def test_load_config_not_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: x\ndescription: caf\xe9\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2: not UTF-8"):
        load_config(path)


def test_sweep_file_alias_bomb_refused_and_cli_exit_2(tmp_path: Path) -> None:
    path = demo_with(tmp_path, alias_bomb(9), name="bomb_sweep.yaml")  # in the base experiment
    path.write_text(path.read_text() + "sweep:\n  grid:\n    strategy.params.l0: [[1], [2]]\n")
    with pytest.raises(ConfigError, match=r"bomb_sweep.yaml:\d+: YAML alias \*l0 is not allowed"):
        load_sweep_file(path)
    code, _, err = run_cli("sweep", str(path), "--output", str(tmp_path / "sw"))
    assert code == 2 and "YAML alias *l0" in err and not (tmp_path / "sw").exists()


def test_sweep_file_oversized_refused(tmp_path: Path) -> None:
    path = tmp_path / "big_sweep.yaml"
    with open(path, "wb") as fh:
        fh.write(b"sweep: {}\n# ")
        fh.truncate(MAX_CONFIG_BYTES + 1)
    with pytest.raises(ConfigError, match="larger than the"):
        load_sweep_file(path)


# --- item 2: a local Ray listens on 127.0.0.1 only --------------------------------------------


def _address(hex_address: str, v6: bool) -> tuple[str, int]:
    ip, port = hex_address.split(":")
    raw = bytes.fromhex(ip)
    if v6:  # four host-order 32-bit words
        raw = b"".join(
            struct.pack("<I", *struct.unpack(">I", raw[i : i + 4])) for i in (0, 4, 8, 12)
        )
        return socket.inet_ntop(socket.AF_INET6, raw), int(port, 16)
    return socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(ip, 16))), int(port, 16)


def listening_sockets() -> dict[int, tuple[str, int]]:
    """Every listening TCP socket of the machine: inode -> (address, port)."""
    out = {}
    for name, v6 in (("tcp", False), ("tcp6", True)):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    out[int(fields[9])] = _address(fields[1], v6)
    return out


def process_tree(root: int) -> set[int]:
    """``root`` and every process descending from it (Ray's GCS, raylet, workers, actors)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(children.get(pid, []))
    return tree


def socket_owners(pids: set[int]) -> dict[int, int]:
    """Socket inode -> owning pid, over the open files of ``pids``."""
    owners = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        owners[int(link[8:-1])] = pid
    return owners


def is_loopback(address: str) -> bool:
    return address in ("127.0.0.1", "::1", "::ffff:127.0.0.1") or address.startswith("127.")


class ListenWatch:
    """Samples the listening sockets owned by this process tree that were not there before."""

    def __init__(self) -> None:
        self.before = set(listening_sockets())
        self.seen: dict[tuple[str, int], int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        found = listening_sockets()
        owners = socket_owners(process_tree(os.getpid()))
        for inode, address in found.items():
            if inode in owners and inode not in self.before:
                self.seen[address] = owners[inode]
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            self.sample()

    @contextlib.contextmanager
    def running(self) -> Iterator[ListenWatch]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(10)


def tiny_sweep(root: Path, data_root: Path) -> Path:
    """Two trials of a top-N experiment on 6 symbols x 220 days of the shared S&P data."""
    raw = pl.read_parquet(data_root / "sp500_5yr_daily_ohlcv.parquet")
    symbols = sorted(raw["symbol"].unique().to_list())[:6]
    dates = sorted(raw["timestamp"].unique().to_list())[:220]
    (root / "data").mkdir(parents=True)
    raw.filter(pl.col("symbol").is_in(symbols) & pl.col("timestamp").is_in(dates)).write_parquet(
        root / "data" / "slice.parquet"
    )
    experiment: dict[str, Any] = {
        "data": {
            "prices": "slice.parquet",
            "signals": {"model": "ridge", "horizon": 5, "min_train_periods": 60},
            "context": {"source": "market"},
            "invalid_rows": "quarantine",
            "max_fill_bars": 0,
        },
        "strategy": {"type": "TopN", "signal": "score", "n": 2, "rebalance_every": 5},
        "execution": {"initial_cash": 1e5},
        "sweep": {"grid": {"strategy.n": [1, 2]}},
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    return path


@pytest.mark.skipif(
    not runner.ray_available(), reason="ray not installed (pip install -e '.[ray]')"
)
def test_local_ray_sweep_listens_on_loopback_only(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    path = tiny_sweep(tmp_path, data_root)
    monkeypatch.setenv("ML4T_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv(runner.CODE_VERSION_ENV, "test-security")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sweep = load_sweep_file(path)
    watch = ListenWatch()
    during: list[int] = []

    def on_trial(record: dict[str, Any]) -> None:
        # Ray, its actors and the driver's own server are up: watch a few seconds longer
        deadline = time.monotonic() + (3.0 if not during else 0.0)
        watch.sample()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            watch.sample()
        during.append(len(watch.seen))

    with watch.running():
        run = runner.run_sweep(
            sweep, tmp_path / "sweep", backend="ray", workers=1, on_trial=on_trial,
            prepare=prepare_data,
        )  # fmt: skip
    assert run.backend == "ray" and [r["status"] for r in run.records] == ["ok", "ok"]
    assert not ray.is_initialized()
    assert during and min(during) >= 3, watch.seen  # the GCS, the raylet and workers were seen
    exposed = {addr: pid for addr, pid in watch.seen.items() if not is_loopback(addr[0])}
    assert exposed == {}, f"listening beyond 127.0.0.1: {exposed}"


@pytest.mark.skipif(
    not runner.ray_available(), reason="ray not installed (pip install -e '.[ray]')"
)
def test_sweep_results_asset_ray_backend_starts_loopback_ray_not_local_ray_resource(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The asset's LocalRay resource would call ``ray.init()`` listening on every interface (or
    join a ``ray start`` cluster found on the machine): without ``RAY_ADDRESS`` the asset leaves
    it alone and the sweep starts its loopback-only Ray (stopped here at that call)."""
    import dagster as dg
    from dagster_ray import LocalRay

    from ml4t_pipeline.defs import assets_sweep
    from ml4t_pipeline.defs.io_managers import Ml4tIOManager

    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    tiny_sweep(tmp_path, data_root).rename(sweeps / "tiny.yaml")
    monkeypatch.setenv("ML4T_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv(runner.CODE_VERSION_ENV, "test-security")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    started: list[int] = []

    def start_local_ray(workers: int) -> None:
        started.append(workers)
        raise runner.SweepError("stopped by the test at start_local_ray")

    def connect(self: Any, context: Any) -> None:
        pytest.fail("LocalRay.connect was called for a local sweep")

    monkeypatch.setattr(backends, "start_local_ray", start_local_ray)
    monkeypatch.setattr(LocalRay, "connect", connect)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(assets_sweep.SWEEPS, ["tiny"])
    run_config = {"sweeps_dir": str(sweeps), "output_dir": str(tmp_path / "out"),
                  "backend": "ray", "workers": 1}  # fmt: skip
    result = dg.materialize(
        [assets_sweep.sweep_results],
        partition_key="tiny",
        instance=instance,
        resources={"io_manager": Ml4tIOManager(base_dir=str(tmp_path / "storage"))},
        run_config={"ops": {"sweep_results": {"config": run_config}}},
        raise_on_error=False,
    )
    assert not result.success and started == [1]
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "stopped by the test at start_local_ray" in str(failure.step_failure_data.error)


@pytest.mark.skipif(
    not runner.ray_available(), reason="ray not installed (pip install -e '.[ray]')"
)
def test_start_local_ray_other_node_address_shut_down_and_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should a Ray version ignore the loopback setting, the sweep stops before sending data."""
    import ray

    calls: list[str] = []
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs["_node_ip_address"]))
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "192.0.2.2")
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    with pytest.raises(runner.SweepError, match="took address 192.0.2.2, not 127.0.0.1"):
        backends.start_local_ray(2)
    assert calls == ["127.0.0.1", "shutdown"]
