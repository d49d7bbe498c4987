"""``input_files_sensor``: its baseline is the version a run read, and a bad tick forgets nothing.

No experiment is run: the materialization that ``prices_raw`` records when it reads the file
(its ``content_hash`` metadata) is reported as a runless event, and the sensor is evaluated with
Dagster's public ``build_sensor_context`` against an ephemeral instance.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from ml4t_pipeline.defs.partitions import EXPERIMENTS, INPUT_FILE_SOURCES
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.defs.sensors import (
    READ_BY,
    SENSOR_INTERVAL_ENV,
    input_files_sensor,
    sensor_interval_s,
    version_read,
)
from ml4t_pipeline.lib.lineage import file_content_hash

CONFIG = """\
name: gamma
data:
  prices: {prices}
  signals: {{model: ridge, horizon: 5, min_train_periods: 252}}
strategy: {{type: TopN, signal: score, n: 2}}
"""

PRICES_V1 = "timestamp,symbol,open,high,low,close,volume\n2020-01-02,AAA,1,1,1,1,100\n"
PRICES_V2 = PRICES_V1 + "2020-01-03,AAA,2,2,2,2,100\n"


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("ML4T_DATA_ROOT", str(tmp_path))
    configs, prices = tmp_path / "configs", tmp_path / "prices.csv"
    configs.mkdir()
    prices.write_text(PRICES_V1)
    (configs / "gamma.yaml").write_text(CONFIG.format(prices=prices))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(EXPERIMENTS, ["gamma"])
    return {"configs": configs, "prices": prices, "instance": instance}


def _tick(lab: dict, cursor: str | None = None) -> dg.SensorResult:
    resources = {"experiments": ExperimentsResource(configs_dir=str(lab["configs"]))}
    context = dg.build_sensor_context(instance=lab["instance"], resources=resources, cursor=cursor)
    return input_files_sensor(context)


def _run_read_prices(lab: dict) -> str:
    """Record what ``prices_raw`` records when a run reads the prices file; return its hash."""
    version = file_content_hash(lab["prices"])
    lab["instance"].report_runless_asset_event(
        dg.AssetMaterialization(
            "prices_raw",
            partition="gamma",
            metadata={"content_hash": dg.MetadataValue.text(version)},
        )
    )
    return version


def _observed(result: dg.SensorResult) -> list[tuple[str, str | None, str]]:
    return [
        (e.asset_key.to_user_string(), e.partition, e.tags[DATA_VERSION_TAG])
        for e in result.asset_events or []
    ]


DATA_VERSION_TAG = "dagster/data_version"


def test_input_files_sensor_file_changed_after_run_before_first_tick_observes_new_version(
    lab: dict,
) -> None:
    """The run read v1; the file became v2 before the sensor first looked at the experiment.
    The first tick must report v2 (the old sensor took v2 as its baseline: never rerun)."""
    read = _run_read_prices(lab)
    lab["prices"].write_text(PRICES_V2)
    new = file_content_hash(lab["prices"])
    assert new != read
    first = _tick(lab)
    assert _observed(first) == [("prices_file", "gamma", new)]
    assert first.asset_events[0].metadata["previous"].value == read
    # reported once: the next tick compares against what it observed
    assert _observed(_tick(lab, first.cursor)) == []


def test_input_files_sensor_file_unchanged_since_run_observes_nothing(lab: dict) -> None:
    read = _run_read_prices(lab)
    first = _tick(lab)
    assert _observed(first) == []
    assert json.loads(first.cursor or "{}") == {"gamma": {"prices_file": read}}


def test_input_files_sensor_never_run_experiment_takes_current_file_as_baseline(
    lab: dict,
) -> None:
    """No run has read the file yet: the first run will read it as it is now, so the first tick
    reports nothing, and a later change is reported (a first run that failed on a bad file
    reruns once the file is fixed)."""
    assert version_read(lab["instance"], "prices_file", "gamma") is None
    first = _tick(lab)
    assert _observed(first) == []
    lab["prices"].write_text(PRICES_V2)
    assert _observed(_tick(lab, first.cursor)) == [
        ("prices_file", "gamma", file_content_hash(lab["prices"]))
    ]


def test_input_files_sensor_config_unreadable_for_a_tick_keeps_its_cursor_entry(
    lab: dict,
) -> None:
    """A tick where the config cannot be loaded keeps the experiment's previous entry, so the
    change made meanwhile is reported once the config loads again (the old sensor dropped the
    entry and took the changed file as a new first sight's baseline)."""
    first = _tick(lab)
    baseline = json.loads(first.cursor or "{}")
    assert set(baseline) == {"gamma"}
    config = lab["configs"] / "gamma.yaml"
    good = config.read_text()
    config.write_text("name: gamma\ndata: [not, a, mapping]\n")
    broken = _tick(lab, first.cursor)
    assert _observed(broken) == []
    assert json.loads(broken.cursor or "{}") == baseline
    lab["prices"].write_text(PRICES_V2)
    config.write_text(good)
    assert _observed(_tick(lab, broken.cursor)) == [
        ("prices_file", "gamma", file_content_hash(lab["prices"]))
    ]


def test_input_files_sensor_missing_input_for_a_tick_keeps_its_cursor_entry(lab: dict) -> None:
    first = _tick(lab)
    lab["prices"].unlink()
    missing = _tick(lab, first.cursor)
    assert json.loads(missing.cursor or "{}") == json.loads(first.cursor or "{}")
    lab["prices"].write_text(PRICES_V2)
    assert [e[0] for e in _observed(_tick(lab, missing.cursor))] == ["prices_file"]


def test_input_files_sensor_every_input_source_has_its_reader_recording_the_hash() -> None:
    """Each input source maps to an asset downstream of it (the one that reads the file)."""
    from ml4t_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    assert set(READ_BY) == {k.to_user_string() for k in INPUT_FILE_SOURCES.resolve(graph)}
    for source, (reader, _field) in READ_BY.items():
        assert dg.AssetKey(source) in graph.get(dg.AssetKey(reader)).parent_keys, source


def test_sensor_interval_env_sets_seconds_and_refuses_non_positive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SENSOR_INTERVAL_ENV, raising=False)
    assert sensor_interval_s() == 30
    monkeypatch.setenv(SENSOR_INTERVAL_ENV, "10")
    assert sensor_interval_s() == 10
    for bad in ("0", "-5", "2.5", "soon"):
        monkeypatch.setenv(SENSOR_INTERVAL_ENV, bad)
        with pytest.raises(ValueError, match=f"ML4T_SENSOR_INTERVAL_S={bad!r}"):
            sensor_interval_s()
