"""``ml4t run`` publishes one complete output set: run.json, strict JSON, swap, lock, refusals."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import sys
from pathlib import Path

import pytest

from ml4t_pipeline import runner
from ml4t_pipeline.lib import output as output_lib
from tests.conftest import REPO_ROOT
from tests.pipeline.helpers import DemoCliRun, demo_config, run_cli, snapshot


@pytest.fixture(scope="module")
def demo_run(demo_cli_run: DemoCliRun) -> Path:
    """One complete ``ml4t run`` of the demo experiment (its output folder; copy to change it)."""
    return demo_cli_run.out


@pytest.fixture(scope="module")
def zero_trade_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    """The demo with 1 unit of cash: no share is affordable, so the run makes no trades.

    It runs into an earlier output folder (a valid ``run.json``) whose top-level entries cannot
    be written in place (``metrics.json`` is a folder, ``report.html`` is read-only): the run
    replaces the whole set instead of writing into it.
    """
    base = tmp_path_factory.mktemp("zero_trades")
    config = demo_config(base / "configs", ("initial_cash: 100000", "initial_cash: 1"))
    legacy = base / "out"
    (legacy / "metrics.json").mkdir(parents=True)
    (legacy / "report.html").write_text("old report")
    (legacy / "report.html").chmod(0o444)
    (legacy / output_lib.MANIFEST).write_text('{"format": "ml4t-run/1", "files": {}}\n')
    code, _, err = run_cli("run", str(config), "--output", str(base / "out"))
    return code, err, base / "out"


def copy_of(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "out"
    shutil.copytree(folder, target)
    return target


# --- the complete set ------------------------------------------------------------------------


def test_run_output_set_matches_run_json_file_list_and_hashes(demo_run: Path) -> None:
    manifest = output_lib.read_manifest(demo_run)
    assert sorted(manifest["files"]) == output_lib.list_files(demo_run)
    assert {"trades.parquet", "fills.parquet", "metrics.json", "report.html"} <= set(
        manifest["files"]
    )
    assert any(name.startswith("assets/backtest/") for name in manifest["files"])
    output_lib.verify_files(demo_run, manifest)  # raises on any difference
    assert manifest["config_sha256"] == output_lib.sha256_file(
        Path(manifest["config_path"])
    )  # the config that was run
    assert manifest["started_at"] <= manifest["finished_at"]
    assert manifest["warnings"] == [] and manifest["n_trades"] > 0


def test_run_leaves_no_staging_or_lock_beside_output(demo_run: Path) -> None:
    assert sorted(p.name for p in demo_run.parent.iterdir()) == ["configs", "out"]


def test_run_lineage_names_final_folder_not_staging(demo_run: Path) -> None:
    lineage = json.loads((demo_run / "lineage.json").read_text())
    assert lineage["output_folder"] == str(demo_run.resolve())
    assert ".tmp-" not in (demo_run / "report.html").read_text()


def test_verify_files_edited_output_names_the_file(demo_run: Path, tmp_path: Path) -> None:
    out = copy_of(demo_run, tmp_path)
    manifest = output_lib.read_manifest(out)
    data = bytearray((out / "trades.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    (out / "trades.parquet").write_bytes(bytes(data))
    with pytest.raises(output_lib.IncompleteOutputError, match="trades.parquet"):
        output_lib.verify_files(out, manifest)


# --- strict JSON and the zero-trade warning --------------------------------------------------


def test_run_zero_trades_warns_on_stderr_and_exits_0(
    zero_trade_run: tuple[int, str, Path],
) -> None:
    code, err, out = zero_trade_run
    assert code == 0
    assert "warning: no trades" in err
    manifest = output_lib.read_manifest(out)
    assert manifest["n_trades"] == 0
    assert len(manifest["warnings"]) == 1 and manifest["warnings"][0].startswith("no trades")


def test_run_marked_folder_with_unwritable_entries_replaced_whole(
    zero_trade_run: tuple[int, str, Path],
) -> None:
    code, err, out = zero_trade_run
    assert code == 0, err
    assert (out / "metrics.json").is_file()
    assert "old report" not in (out / "report.html").read_text()
    output_lib.verify_files(out, output_lib.read_manifest(out))


@pytest.mark.parametrize("which", ["demo", "zero_trades"])
def test_run_every_json_output_parses_as_strict_json(
    which: str, demo_run: Path, zero_trade_run: tuple[int, str, Path]
) -> None:
    folder = demo_run if which == "demo" else zero_trade_run[2]
    files = sorted(folder.rglob("*.json"))
    assert {"metrics.json", "lineage.json", "run.json", "attribution_summary.json"} <= {
        p.name for p in files
    }
    for path in files:
        output_lib.loads_strict(path.read_text())  # raises on a bare NaN/Infinity


def test_run_zero_trades_undefined_metric_is_null(zero_trade_run: tuple[int, str, Path]) -> None:
    metrics = output_lib.loads_strict((zero_trade_run[2] / "metrics.json").read_text())
    assert metrics["n_trades"] == 0
    assert None in metrics.values()  # e.g. the benchmark correlation of a flat equity curve


def test_dumps_strict_non_finite_becomes_null_and_loads_strict_refuses_nan() -> None:
    import numpy as np

    text = output_lib.dumps_strict(
        {
            "a": math.nan,
            "b": [math.inf, -math.inf, 1.5],
            "c": np.float64("nan"),
            "d": np.int64(3),
            "e": np.array([2.5, np.nan]),
        }
    )
    assert json.loads(text) == {
        "a": None,
        "b": [None, None, 1.5],
        "c": None,
        "d": 3,
        "e": [2.5, None],
    }
    with pytest.raises(ValueError, match="NaN"):
        output_lib.loads_strict('{"x": NaN}')
    with pytest.raises(ValueError, match="Infinity"):
        output_lib.loads_strict("[-Infinity]")


# --- report and compare refuse incomplete folders --------------------------------------------


@pytest.mark.parametrize("command", ["report", "compare"])
def test_cli_incomplete_folder_without_run_json_exits_2(
    command: str, demo_run: Path, tmp_path: Path
) -> None:
    out = copy_of(demo_run, tmp_path)
    (out / "run.json").unlink()
    before = snapshot(out)
    code, _, err = run_cli(command, str(out))
    assert code == 2
    assert "run.json" in err and "interrupted" in err and str(out) in err
    assert snapshot(out) == before


@pytest.mark.parametrize("command", ["report", "compare"])
def test_cli_folder_with_changed_file_exits_2_naming_it(
    command: str, demo_run: Path, tmp_path: Path
) -> None:
    out = copy_of(demo_run, tmp_path)
    (out / "metrics.json").write_text("{}")  # torn / other run's file
    code, _, err = run_cli(command, str(out))
    assert code == 2 and "metrics.json" in err


def test_cli_compare_run_folder_and_storage_folder_exit_0(demo_run: Path) -> None:
    code, printed, err = run_cli("compare", str(demo_run), str(demo_run / "assets"))
    assert code == 0, err
    rows = [line.split()[0] for line in printed.splitlines()[1:] if line.strip()]
    assert {"out", "demo"} <= set(rows)


def test_cli_report_rebuilds_and_keeps_run_json_valid(demo_run: Path, tmp_path: Path) -> None:
    out = copy_of(demo_run, tmp_path)
    before = snapshot(out)
    code, printed, err = run_cli("report", str(out))
    assert code == 0, err
    manifest = output_lib.read_manifest(out)
    output_lib.verify_files(out, manifest)
    assert "report_rebuilt_at" in manifest
    after = snapshot(out)
    unchanged = [n for n in before if n not in ("report.html", "run.json")]
    assert all(after[n] == before[n] for n in unchanged)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- unusable output locations ----------------------------------------------------------------


def test_run_output_parent_is_a_file_exits_2_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    config = demo_config(tmp_path / "configs")
    code, _, err = run_cli("run", str(config), "--output", str(blocker / "sub" / "out"))
    assert code == 2
    assert f"{blocker} is a file, not a folder" in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux sysfs")
@pytest.mark.parametrize(
    ("output", "named"),
    [
        ("/sys/ml4t-test-not-writable/out", "/sys/ml4t-test-not-writable"),  # mkdir fails
        ("/sys/ml4t-test-out", "/sys/ml4t-test-out.lock"),  # parent exists, not writable
    ],
)
def test_run_output_under_read_only_sysfs_exits_2_naming_it(
    output: str, named: str, tmp_path: Path
) -> None:
    probe = Path("/sys/ml4t-test-probe")
    try:  # sysfs refuses new entries, even for root: a real read-only parent
        probe.mkdir()
    except OSError:
        pass
    else:
        probe.rmdir()
        pytest.skip("/sys accepts mkdir here")
    config = demo_config(tmp_path / "configs")
    code, _, err = run_cli("run", str(config), "--output", output)
    assert code == 2
    assert named in err and "Traceback" not in err
    assert not Path(output).exists()


def test_run_output_folder_with_other_files_exits_2_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    config = demo_config(tmp_path / "configs")
    code, _, err = run_cli("run", str(config), "--output", str(out))
    assert code == 2 and "notes.txt" in err
    assert snapshot(out) == {"notes.txt": b"mine"}


def test_run_staging_folder_not_creatable_exits_2_previous_set_unchanged(
    demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = copy_of(demo_run, tmp_path)
    before = snapshot(out)
    real_mkdir = Path.mkdir

    def refuse_staging(self: Path, *args: object, **kwargs: object) -> None:
        if ".tmp-" in self.name:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", refuse_staging)
    config = demo_config(tmp_path / "configs")
    code, _, err = run_cli("run", str(config), "--output", str(out))
    assert code == 2
    assert "Permission denied" in err and str(out) in err and "Traceback" not in err
    assert snapshot(out) == before


def test_run_write_failure_after_materialize_exits_2_previous_set_unchanged(
    demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = copy_of(demo_run, tmp_path)
    before = snapshot(out)

    def disk_full(*args: object, **kwargs: object) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runner.attribution_lib, "write_attribution", disk_full)
    config = demo_config(tmp_path / "configs", ("rate: 0.001", "rate: 0.002"))
    code, _, err = run_cli("run", str(config), "--output", str(out))
    assert code == 2
    assert "No space left on device" in err and "Traceback" not in err
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs", "out"]  # staging removed


def test_run_blocking_check_failure_exits_1_previous_set_unchanged(
    demo_run: Path, tmp_path: Path, data_root: Path
) -> None:
    out = copy_of(demo_run, tmp_path)
    before = snapshot(out)
    text = (REPO_ROOT / "configs" / "sp500_top25.yaml").read_text()
    config = tmp_path / "configs" / "strict.yaml"
    config.parent.mkdir()
    config.write_text(text.replace("invalid_rows: quarantine", "invalid_rows: fail"))
    code, _, err = run_cli("run", str(config), "--output", str(out))
    assert code == 1
    assert "prices_valid" in err and "left unchanged" in err
    assert snapshot(out) == before


# --- lib.output: lock, swap, recovery ---------------------------------------------------------


def test_output_lock_second_holder_gets_in_use_error_with_pid(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with output_lib.output_lock(final) as lock:
        assert lock.read_text().strip() == str(os.getpid())
        with (
            pytest.raises(output_lib.OutputInUseError, match=f"in use by pid {os.getpid()}"),
            output_lib.output_lock(final),
        ):
            pass
    assert not lock.exists()
    with output_lib.output_lock(final):  # free again after release
        pass


def test_output_lock_stale_lock_file_does_not_block(tmp_path: Path) -> None:
    final = tmp_path / "out"
    output_lib.lock_path(final).write_text("999999\n")  # left by a killed process
    with output_lib.output_lock(final) as lock:
        assert lock.read_text().strip() == str(os.getpid())


def _complete_set(folder: Path, content: str) -> Path:
    folder.mkdir()
    (folder / "metrics.json").write_text(content)
    output_lib.write_manifest(folder, {"experiment": content})
    return folder


def test_swap_into_place_exchange_makes_new_set_visible(tmp_path: Path) -> None:
    final = _complete_set(tmp_path / "out", "old")
    staging = _complete_set(tmp_path / "out.tmp-1-0123abcd", "new")
    previous = output_lib.swap_into_place(staging, final)
    assert (final / "metrics.json").read_text() == "new"
    assert previous is not None and (previous / "metrics.json").read_text() == "old"


def test_swap_into_place_fallback_without_exchange_gives_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output_lib, "exchange", lambda a, b: False)
    final = _complete_set(tmp_path / "out", "old")
    staging = _complete_set(tmp_path / "out.tmp-1-0123abcd", "new")
    previous = output_lib.swap_into_place(staging, final)
    assert (final / "metrics.json").read_text() == "new"
    assert previous is not None and ".old-" in previous.name
    output_lib.verify_files(final, output_lib.read_manifest(final))


def test_recover_output_killed_between_fallback_renames_restores_previous_set(
    tmp_path: Path,
) -> None:
    # State of a fallback swap killed between "final -> .old" and "staging -> final".
    _complete_set(tmp_path / "out.old-7-89abcdef", "old")
    _complete_set(tmp_path / "out.tmp-7-01234567", "new")
    final = tmp_path / "out"
    output_lib.recover_output(final)
    assert (final / "metrics.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_recover_output_removes_only_its_own_leftovers(tmp_path: Path) -> None:
    final = _complete_set(tmp_path / "out", "current")
    (tmp_path / "out.tmp-12-deadbeef").mkdir()
    (tmp_path / "out.tmp-notes").mkdir()  # not a staging name
    (tmp_path / "out2.tmp-12-deadbeef").mkdir()  # another folder's staging
    output_lib.recover_output(final)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out",
        "out.tmp-notes",
        "out2.tmp-12-deadbeef",
    ]


def test_read_manifest_truncated_listed_file_names_it(tmp_path: Path) -> None:
    final = _complete_set(tmp_path / "out", "content")
    (final / "metrics.json").write_text("c")
    with pytest.raises(output_lib.IncompleteOutputError, match=r"metrics\.json"):
        output_lib.read_manifest(final)


def test_read_manifest_not_strict_json_refused(tmp_path: Path) -> None:
    final = _complete_set(tmp_path / "out", "content")
    (final / "run.json").write_text('{"format": "ml4t-run/1", "files": {}, "x": NaN}')
    with pytest.raises(output_lib.IncompleteOutputError, match="not valid JSON"):
        output_lib.read_manifest(final)


def test_cli_report_while_folder_locked_exits_2_in_use_untouched(
    demo_run: Path, tmp_path: Path
) -> None:
    out = copy_of(demo_run, tmp_path)
    before = snapshot(out)
    with output_lib.output_lock(out.resolve()):  # as a run into the folder holds it
        code, _, err = run_cli("report", str(out))
    assert code == 2
    assert f"output folder {out.resolve()} is in use by pid {os.getpid()}" in err
    assert snapshot(out) == before


def test_swap_into_place_fallback_second_rename_fails_restores_previous_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output_lib, "exchange", lambda a, b: False)
    final = _complete_set(tmp_path / "out", "old")
    staging = _complete_set(tmp_path / "out.tmp-1-0123abcd", "new")
    real_rename = Path.rename

    def refuse_staging(self: Path, target: Path) -> Path:
        if self == staging:
            raise OSError(errno.EIO, "Input/output error")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", refuse_staging)
    with pytest.raises(output_lib.OutputError, match=f"cannot replace output folder {final}"):
        output_lib.swap_into_place(staging, final)
    assert (final / "metrics.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.tmp-1-0123abcd"]
