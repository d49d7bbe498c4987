"""Stored values record what they were built from; a step whose inputs come from different
versions of one upstream value is refused, naming them (issue 25 item 7: a downstream-only
rerun after a run killed mid-way)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from ml4t_pipeline.defs import io_managers
from ml4t_pipeline.defs.io_managers import BUILT_FROM, Ml4tIOManager, current_record
from ml4t_pipeline.defs.storage_metadata import MixedVersionsError

# A diamond: `source` feeds `left` and `right`, and `joined` reads both (as `prices` feeds
# `features` and `signals`, and `market_panel` reads them). `source` returns the run's
# `version` tag so that each run writes a distinguishable value.


@dg.asset
def source(context) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"version": context.run.tags.get("version", "")}


@dg.asset
def left(source: dict[str, str]) -> dict[str, str]:
    return {"left": source["version"]}


@dg.asset
def right(source: dict[str, str]) -> dict[str, str]:
    return {"right": source["version"]}


@dg.asset
def joined(left: dict[str, str], right: dict[str, str]) -> dict[str, str]:
    return left | right


ASSETS = [source, left, right, joined]


def _run(
    base: Path, selection: list[str], version: str, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ASSETS,
        selection=selection,
        resources={"io_manager": Ml4tIOManager(base_dir=str(base))},
        instance=instance,
        tags={"version": version},
        raise_on_error=False,
    )


def _run_id(base: Path, asset: str) -> str:
    record = current_record(base / asset, "__all__")
    assert record is not None
    return str(record["run_id"])


def test_built_from_records_every_upstream_version_transitively(tmp_path: Path) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        result = _run(tmp_path, ["*"], "A", instance)
    assert result.success
    run = result.run_id
    record = current_record(tmp_path / "joined", "__all__")
    assert record is not None
    assert record[BUILT_FROM] == {"left": run, "right": run, "source": run}
    assert current_record(tmp_path / "left", "__all__")[BUILT_FROM] == {"source": run}  # type: ignore[index]
    assert current_record(tmp_path / "source", "__all__")[BUILT_FROM] == {}  # type: ignore[index]


def test_downstream_only_rerun_after_partial_run_refused_naming_inputs_and_versions(
    tmp_path: Path,
) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        assert _run(tmp_path, ["*"], "A", instance).success
        run_a = _run_id(tmp_path, "right")
        # run B rewrites source and left, then stops (killed) before right and joined
        assert _run(tmp_path, ["source", "left"], "B", instance).success
        run_b = _run_id(tmp_path, "left")
        before = current_record(tmp_path / "joined", "__all__")
        rerun = _run(tmp_path, ["joined"], "C", instance)
        assert not rerun.success
        (failure,) = [e for e in rerun.all_events if e.event_type_value == "STEP_FAILURE"]
        text = str(failure.event_specific_data.error)  # type: ignore[union-attr]
        assert "MixedVersionsError" in text
        assert "joined: its inputs were built from different versions of source" in text
        assert f"left was built from source version {run_b}" in text
        assert f"right was built from source version {run_a}" in text
        # nothing was written: joined still holds run A's value
        assert current_record(tmp_path / "joined", "__all__") == before
        # rebuilding the stale branch with its downstream makes the set consistent again
        fixed = _run(tmp_path, ["right", "joined"], "D", instance)
        assert fixed.success
        assert current_record(tmp_path / "joined", "__all__")[BUILT_FROM]["source"] == run_b  # type: ignore[index]


def test_downstream_only_rerun_of_a_consistent_set_runs(tmp_path: Path) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        first = _run(tmp_path, ["*"], "A", instance)
        again = _run(tmp_path, ["joined"], "B", instance)
    assert again.success
    record = current_record(tmp_path / "joined", "__all__")
    assert record is not None and record["run_id"] == again.run_id
    assert record[BUILT_FROM] == dict.fromkeys(("left", "right", "source"), first.run_id)


def test_mixed_versions_error_names_an_input_read_directly() -> None:
    err = MixedVersionsError(
        "backtest", "prices[demo]", ("r1", "market_panel[demo]"), ("r2", "prices[demo]")
    )
    assert str(err).startswith(
        "backtest: its inputs were built from different versions of prices[demo]: "
        "market_panel[demo] was built from prices[demo] version r1; "
        "prices[demo] itself is version r2"
    )
    assert err.versions == [("r1", "market_panel[demo]"), ("r2", "prices[demo]")]


def test_value_stored_before_versions_were_recorded_is_not_judged(tmp_path: Path) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        assert _run(tmp_path, ["*"], "A", instance).success
        assert _run(tmp_path, ["source", "left"], "B", instance).success
        # an old storage folder: right's record predates versions
        (tmp_path / "right" / ".ml4t" / "__all__.current.json").unlink()
        assert _run(tmp_path, ["joined"], "C", instance).success


def test_step_bookkeeping_of_other_runs_dropped_past_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(io_managers, "_STEP_INPUTS_KEPT", 0)
    with dg.DagsterInstance.ephemeral() as instance:
        _run(tmp_path, ["*"], "A", instance)
        second = _run(tmp_path, ["*"], "B", instance)
    runs = {run for base, run, _ in io_managers._STEP_INPUTS if base == str(tmp_path)}
    assert runs == {second.run_id}
    # the records are complete all the same
    assert current_record(tmp_path / "joined", "__all__")[BUILT_FROM] == dict.fromkeys(  # type: ignore[index]
        ("left", "right", "source"), second.run_id
    )
