"""Observing the input files: one refused experiment does not stop the others' observation.

Two experiments share one data root: ``good`` reads a prices file inside it; ``refused`` is
broken in one of three ways (a data path outside the root, a config that breaks the schema, a
prices file that does not exist). Observing ``prices_file`` reports ``good``'s content hash as
its data version and logs a warning that names ``refused`` and why it was skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import pytest

from ml4t_pipeline.config import ALLOW_OUTSIDE_ROOT_ENV, ExperimentConfig, load_config
from ml4t_pipeline.defs import sources
from ml4t_pipeline.defs.partitions import EXPERIMENTS
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.lib.io import load_demo_prices
from ml4t_pipeline.lib.lineage import experiment_input_hashes

CONFIG = """\
name: {name}
data:
  prices: {prices}
strategy: {{type: TopN, signal: ret_20, n: {n}}}
"""
REFUSALS = {
    # the config names a file outside the data root: DataPathError (a ConfigError)
    "outside_data_root": (
        {"prices": "../elsewhere/prices.parquet", "n": 2},
        "outside the data root",
    ),
    # the config breaks the schema (n must be an integer): ConfigError
    "bad_schema": (
        {"prices": "prices.parquet", "n": "two"},
        "strategy.n: Input should be a valid integer",
    ),
    # the config is valid but its prices file is missing: FileNotFoundError
    "missing_file": ({"prices": "gone.parquet", "n": 2}, "gone.parquet"),
}


def _observe(configs: Path) -> tuple[dg.DagsterInstance, dg.ExecuteInProcessResult]:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(EXPERIMENTS, ["good", "refused"])
    job = dg.define_asset_job("observe", selection=dg.AssetSelection.all(include_sources=True))
    defs = dg.Definitions(
        assets=[sources.prices_file],
        jobs=[job],
        resources={"experiments": ExperimentsResource(configs_dir=str(configs))},
    )
    result = defs.resolve_job_def("observe").execute_in_process(instance=instance)
    return instance, result


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_observe_refused_experiment_is_skipped_and_named_good_one_observed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: str
) -> None:
    data, configs = tmp_path / "data", tmp_path / "configs"
    data.mkdir()
    configs.mkdir()
    monkeypatch.setenv("ML4T_DATA_ROOT", str(data))
    monkeypatch.delenv(ALLOW_OUTSIDE_ROOT_ENV, raising=False)
    prices = load_demo_prices()
    prices.filter(prices["symbol"].is_in(["AAPL", "IBM"])).write_parquet(data / "prices.parquet")
    (configs / "good.yaml").write_text(CONFIG.format(name="good", prices="prices.parquet", n=2))
    fields, reason = REFUSALS[refusal]
    (configs / "refused.yaml").write_text(CONFIG.format(name="refused", **fields))

    instance, result = _observe(configs)

    assert result.success
    records = instance.fetch_observations(dg.AssetKey("prices_file"), limit=10).records
    versions = {
        r.partition_key: r.event_log_entry.asset_observation.tags["dagster/data_version"]
        for r in records
    }
    expected = experiment_input_hashes(load_config(configs / "good.yaml"), str(data))
    assert versions == {"good": expected["prices_file"]}
    warnings = [
        e.user_message
        for e in instance.all_logs(result.run_id)
        if e.level == logging.WARNING and "not observed" in e.user_message
    ]
    assert len(warnings) == 1
    assert "prices_file: experiment refused not observed" in warnings[0]
    assert reason in warnings[0]


def test_resource_data_root_is_the_root_configs_are_checked_against(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resource's own ``data_root`` confines its configs' paths, not ``$ML4T_DATA_ROOT``."""
    from ml4t_pipeline.config import DataPathError

    own, other = tmp_path / "own", tmp_path / "other"
    own.mkdir()
    other.mkdir()
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "inside.yaml").write_text(CONFIG.format(name="inside", prices="p.parquet", n=2))
    outside = CONFIG.format(name="outside", prices="../other/p.parquet", n=2)
    (configs / "outside.yaml").write_text(outside)
    monkeypatch.setenv("ML4T_DATA_ROOT", str(other))  # the environment names another root
    monkeypatch.delenv(ALLOW_OUTSIDE_ROOT_ENV, raising=False)
    resource = ExperimentsResource(configs_dir=str(configs), data_root=str(own))
    assert resource.load("inside").data.prices == "p.parquet"
    with pytest.raises(DataPathError, match="outside the data root"):
        resource.load("outside")  # inside $ML4T_DATA_ROOT, but not inside the resource's root


def test_input_hashes_cover_actions_membership_and_benchmark_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    prices = load_demo_prices()
    prices.filter(prices["symbol"] == "AAPL").write_parquet(data / "prices.parquet")
    for name, body in {"actions.csv": "a", "members.csv": "b", "bench.parquet": "c"}.items():
        (data / name).write_text(body)
    (data / "bench_actions.csv").write_text("d")
    cfg = ExperimentConfig.model_validate(
        {
            "name": "x",
            "data": {
                "prices": "prices.parquet",
                "corporate_actions": {"path": "actions.csv"},
                "universe": {"membership": "members.csv"},
            },
            "reporting": {"benchmark": {"symbol": "SPY", "path": "bench.parquet"}},
        }
    )
    hashes = experiment_input_hashes(cfg, str(data))
    assert set(hashes) == {
        "prices_file",
        "corporate_actions_file",
        "membership_file",
        "benchmark_file",
    }
    bench_only = hashes["benchmark_file"]
    # the benchmark's own corporate actions change the benchmark's version, nothing else
    raw = cfg.model_dump(mode="json")
    raw["reporting"]["benchmark"]["corporate_actions"] = {"path": "bench_actions.csv"}
    with_actions = ExperimentConfig.model_validate(raw)
    changed = experiment_input_hashes(with_actions, str(data))
    assert changed["benchmark_file"] != bench_only
    assert {k: v for k, v in changed.items() if k != "benchmark_file"} == {
        k: v for k, v in hashes.items() if k != "benchmark_file"
    }
    (data / "members.csv").write_text("b2")  # a new membership file: a new version
    assert experiment_input_hashes(cfg, str(data))["membership_file"] != hashes["membership_file"]


def test_each_input_file_source_feeds_the_asset_that_reads_it() -> None:
    from ml4t_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    readers = {
        "corporate_actions_file": "prices",
        "membership_file": "market_panel",
        "benchmark_file": "metrics",
        "prices_file": "prices_raw",
    }
    for source, asset in readers.items():
        parents = graph.get(dg.AssetKey(asset)).parent_keys
        assert dg.AssetKey(source) in parents, (source, asset)
