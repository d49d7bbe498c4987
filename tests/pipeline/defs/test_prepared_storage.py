"""Prepared tables in Dagster: hive storage by year/month, projection, one-month rematerialization,
input files as observable sources, features/context checks.

One experiment (demo prices, a sparse signal file, ``max_fill_bars: 2`` so the fill limit crosses
month boundaries) is materialized once per module; ``prepared_panel`` months are then
(re)materialized on the same storage.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pyarrow.parquet as pq
import pytest

from ml4t_pipeline.config import load_config
from ml4t_pipeline.defs import assets_data, sources
from ml4t_pipeline.defs.assets_monthly import experiment_months_partitions, prepared_panel
from ml4t_pipeline.defs.io_managers import Ml4tIOManager, read_value
from ml4t_pipeline.defs.metadata import table_text
from ml4t_pipeline.defs.partitions import EXPERIMENTS, experiments_partitions
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.defs.sensors import input_files_sensor
from ml4t_pipeline.lib.features import compute_features
from ml4t_pipeline.lib.io import load_demo_prices
from ml4t_pipeline.lib.lineage import experiment_input_hashes


@pytest.fixture(autouse=True, scope="module")
def _data_root_is_basetemp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The configs here name data files under pytest's temporary folders: make that the data
    root (data paths must stay inside ``ML4T_DATA_ROOT``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ML4T_DATA_ROOT", str(tmp_path_factory.getbasetemp()))
        yield


PREPARED = ("prices", "prices_quarantine", "features", "market_context", "signals", "market_panel")
DATA_ASSETS = ["prices_raw", *PREPARED]

EXPERIMENT_YAML = """\
name: {name}
data:
  prices: demo
  signals:
    path: {signals}
  features: {features}
  context: {context}
  max_fill_bars: 2
strategy: {{type: TopN, signal: score, n: 2, rebalance_every: 5}}
execution:
  initial_cash: 100000
"""


def _sparse_signals() -> pl.DataFrame:
    """A 20-bar momentum score on every 5th bar of each symbol (so fills and staleness occur)."""
    return (
        load_demo_prices()
        .sort("symbol", "timestamp")
        .with_columns(
            (pl.col("close") / pl.col("close").shift(20) - 1).over("symbol").alias("score"),
            pl.int_range(pl.len()).over("symbol").alias("bar"),
        )
        .filter(pl.col("score").is_not_null() & (pl.col("bar") % 5 == 0))
        .select("timestamp", "symbol", "score")
    )


def _write_config(
    configs: Path, name: str, signals: Path, features: str = "computed", context: str = "{}"
) -> Path:
    path = configs / f"{name}.yaml"
    path.write_text(
        EXPERIMENT_YAML.format(name=name, signals=signals, features=features, context=context)
    )
    return path


def _resources(lab: dict[str, Any]) -> dict[str, Any]:
    return {
        "experiments": ExperimentsResource(configs_dir=str(lab["configs"])),
        "io_manager": Ml4tIOManager(base_dir=str(lab["storage"])),
    }


def _materialize_data(lab: dict[str, Any], key: str) -> dg.ExecuteInProcessResult:
    if not lab["instance"].has_dynamic_partition(EXPERIMENTS, key):
        lab["instance"].add_dynamic_partitions(EXPERIMENTS, [key])
    return dg.materialize(
        dg.load_assets_from_modules([sources, assets_data]),
        selection=DATA_ASSETS,
        partition_key=key,
        instance=lab["instance"],
        resources=_resources(lab),
        raise_on_error=False,
    )


_UPSTREAM = [dg.AssetSpec(name, partitions_def=experiments_partitions) for name in PREPARED]


def _materialize_month(lab: dict[str, Any], month: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [prepared_panel, *_UPSTREAM],
        partition_key=dg.MultiPartitionKey({EXPERIMENTS: "lab", "month": month}),
        instance=lab["instance"],
        resources=_resources(lab),
        raise_on_error=False,
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("prepared")
    configs, data = root / "configs", root / "data"
    configs.mkdir()
    data.mkdir()
    _sparse_signals().write_parquet(data / "signals.parquet")
    _write_config(configs, "lab", data / "signals.parquet")
    out = {
        "root": root,
        "configs": configs,
        "data": data,
        "storage": root / "storage",
        "instance": dg.DagsterInstance.ephemeral(),
    }
    result = _materialize_data(out, "lab")
    assert result.success
    out["result"] = result
    for month in ("2010-01-01", "2010-02-01", "2010-03-01"):
        assert _materialize_month(out, month).success
    return out


def _files(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """relative path -> (inode, mtime_ns, bytes) of every file under ``folder``."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            out[path.relative_to(folder).as_posix()] = (
                stat.st_ino,
                stat.st_mtime_ns,
                path.read_bytes(),
            )
    return out


def _month_file(lab: dict[str, Any], asset: str, year: int, month: int) -> Path:
    return lab["storage"] / asset / "lab" / f"year={year}" / f"month={month:02d}" / "data.parquet"


# ---------------------------------------------------------------------------------------------
# storage layout


def test_prepared_tables_stored_as_lz4_hive_partitions_by_year_month(lab: dict) -> None:
    for asset in PREPARED:
        table = lab["storage"] / asset / "lab"
        assert table.is_dir() and (table / "_schema.parquet").is_file(), asset
        assert not (lab["storage"] / asset / "lab.parquet").exists()
    year_2010 = lab["storage"] / "market_panel" / "lab" / "year=2010"
    panel_months = sorted(p.parent.name for p in year_2010.glob("month=*/data.parquet"))
    assert panel_months == [f"month={m:02d}" for m in range(1, 13)]
    meta = pq.ParquetFile(_month_file(lab, "market_panel", 2010, 5)).metadata
    assert meta.row_group(0).column(0).compression == "LZ4"  # LZ4_RAW (storage.MONTH_COMPRESSION)
    # the month file holds exactly that month's rows (UTC), symbol stored as String
    month = pl.read_parquet(_month_file(lab, "market_panel", 2010, 5))
    assert month["timestamp"].dt.month().unique().to_list() == [5]
    assert month.schema["symbol"] == pl.String
    # the demo prices are clean: the quarantine is an empty table that still reads with types
    quarantine = read_value(lab["storage"] / "prices_quarantine" / "lab")
    assert quarantine.height == 0 and "reason" in quarantine.columns


def test_read_value_reads_hive_table_with_categorical_symbol(lab: dict) -> None:
    panel = read_value(lab["storage"] / "market_panel" / "lab")
    assert panel.schema["symbol"] == pl.Categorical
    prices = read_value(lab["storage"] / "prices" / "lab")
    assert panel.height == prices.height == load_demo_prices().height == 12_154
    assert panel.select("timestamp", "symbol").is_duplicated().sum() == 0
    assert "year" not in panel.columns and "month" not in panel.columns


def test_read_value_columns_pushes_projection_into_the_scan(lab: dict) -> None:
    stem = lab["storage"] / "market_panel" / "lab"
    lazy = read_value(stem, columns=["timestamp", "close"], lazy=True)
    plan = lazy.explain()
    assert "PROJECT 2/" in plan, plan  # only two columns are read from the files
    frame = lazy.collect()
    assert frame.columns == ["timestamp", "close"] and frame.height == 12_154
    with pytest.raises(ValueError, match=r"\['nope'\] requested but not stored"):
        read_value(stem, columns=["timestamp", "nope"])


def test_asset_input_metadata_columns_reads_only_those_columns(lab: dict) -> None:
    seen: dict[str, Any] = {}

    @dg.asset(
        partitions_def=experiments_partitions,
        ins={"market_panel": dg.AssetIn(metadata={"columns": ["timestamp", "symbol", "close"]})},
    )
    def probe(market_panel: pl.DataFrame) -> None:
        seen["schema"] = market_panel.schema

    result = dg.materialize(
        [probe, dg.AssetSpec("market_panel", partitions_def=experiments_partitions)],
        partition_key="lab",
        instance=lab["instance"],
        resources=_resources(lab),
    )
    assert result.success
    assert list(seen["schema"]) == ["timestamp", "symbol", "close"]
    assert seen["schema"]["symbol"] == pl.Categorical


def test_rerun_of_same_inputs_writes_identical_parquet(lab: dict) -> None:
    before = {a: _files(lab["storage"] / a / "lab") for a in PREPARED}
    assert _materialize_data(lab, "lab").success
    for asset in PREPARED:
        after = _files(lab["storage"] / asset / "lab")
        assert after.keys() == before[asset].keys(), asset
        assert all(after[k][2] == before[asset][k][2] for k in after), asset


# ---------------------------------------------------------------------------------------------
# one month alone


def test_prepared_panel_month_equals_that_month_of_market_panel(lab: dict) -> None:
    panel = read_value(lab["storage"] / "market_panel" / "lab")
    for month in (1, 2, 3):
        expected = panel.filter(
            (pl.col("timestamp").dt.year() == 2010) & (pl.col("timestamp").dt.month() == month)
        )
        got = pl.read_parquet(_month_file(lab, "prepared_panel", 2010, month))
        assert got.height == expected.height > 0
        assert got.equals(expected.with_columns(pl.col("symbol").cast(pl.String)))
    # the fill limit crosses the month boundary: some first bars of February are stale (null)
    feb = pl.read_parquet(_month_file(lab, "prepared_panel", 2010, 2))
    assert feb["score"].null_count() > 0


def test_prepared_panel_rematerializing_one_month_rewrites_only_that_month(lab: dict) -> None:
    folder = lab["storage"] / "prepared_panel" / "lab"
    before = _files(folder)
    feb = "year=2010/month=02/data.parquet"
    assert set(before) >= {feb, "year=2010/month=01/data.parquet", "_schema.parquet"}
    result = _materialize_month(lab, "2010-02-01")
    assert result.success
    after = _files(folder)
    assert after.keys() == before.keys()
    for name in before:
        if name == feb:
            continue
        assert after[name] == before[name], f"{name} was touched"  # inode, mtime, bytes
    assert after[feb][0] != before[feb][0]  # a new file was renamed into place ...
    assert after[feb][2] == before[feb][2]  # ... with identical content


def test_prepared_panel_failed_write_leaves_previous_month_readable(
    lab: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = lab["storage"] / "prepared_panel" / "lab"
    before = _files(folder)
    real_write = pl.DataFrame.write_parquet

    def broken_write(self: pl.DataFrame, file: Any, *args: Any, **kwargs: Any) -> None:
        Path(file).write_bytes(b"PAR1 half a file")  # the crash happens mid-write
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", broken_write)
    result = _materialize_month(lab, "2010-02-01")
    monkeypatch.setattr(pl.DataFrame, "write_parquet", real_write)
    assert not result.success
    assert _files(folder) == before  # no temporary file left, nothing replaced
    month = read_value(folder).filter(pl.col("timestamp").dt.month() == 2)
    assert month.height > 0


def test_prepared_panel_month_without_prices_fails_naming_the_range(lab: dict) -> None:
    result = _materialize_month(lab, "1995-01-01")
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.step_failure_data.error
    message = (error.cause or error).message
    assert "no validated price rows in 1995-01" in message and "2000-03" in message


def test_experiment_months_partitions_have_experiment_and_month_dimensions() -> None:
    dims = {d.name: d.partitions_def for d in experiment_months_partitions.partitions_defs}
    assert set(dims) == {EXPERIMENTS, "month"}
    assert dims["month"].get_first_partition_key() == "1990-01-01"


# ---------------------------------------------------------------------------------------------
# features / context: schemas and checks


def _check(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    return next(c for c in result.get_asset_check_evaluations() if c.check_name == name)


def test_features_and_context_publish_column_descriptions_and_pass_checks(lab: dict) -> None:
    result = lab["result"]
    for asset, column in (("features", "rsi_14"), ("market_context", "market_vol_20")):
        event = next(
            e
            for e in result.get_asset_materialization_events()
            if e.asset_key.to_user_string() == asset
        )
        schema = event.materialization.metadata["dagster/column_schema"].value
        descriptions = {c.name: c.description for c in schema.columns}
        assert descriptions[column], (asset, descriptions)
        assert descriptions["timestamp"]
    for name in ("features_valid", "context_valid"):
        check = _check(result, name)
        assert check.passed and check.metadata["n_violations"].value == 0


def test_bad_features_and_context_files_fail_blocking_checks(lab: dict) -> None:
    data = lab["data"]
    features = compute_features(load_demo_prices())
    bad_row = features.filter(pl.col("symbol") == "AAPL").slice(100, 1)
    features = pl.concat([features, bad_row]).with_columns(  # a duplicate key and an inf
        pl.when((pl.col("symbol") == "IBM") & (pl.int_range(pl.len()).over("symbol") == 500))
        .then(float("inf"))
        .otherwise(pl.col("rsi_14"))
        .alias("rsi_14")
    )
    features.write_parquet(data / "bad_features.parquet")
    stamps = load_demo_prices().select("timestamp").unique().sort("timestamp")
    regime = stamps.with_row_index("i").select(
        "timestamp",
        pl.when(pl.col("i") == 7).then(None).otherwise(1.0).alias("regime"),
    )
    regime.write_parquet(data / "regime.parquet")
    _write_config(
        lab["configs"],
        "bad",
        data / "signals.parquet",
        features=str(data / "bad_features.parquet"),
        context=f"{{source: file, path: {data / 'regime.parquet'}, columns: [regime]}}",
    )
    result = _materialize_data(lab, "bad")
    assert not result.success  # blocking checks stop the panel
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "market_panel" not in materialized and {"features", "market_context"} <= materialized
    feats = _check(result, "features_valid")
    assert not feats.passed
    assert feats.metadata["violations_by_rule"].value == {
        "key_unique": 2,
        "values_finite_or_null": 1,
        "symbol_known": 0,
    }
    listed = table_text(feats.metadata["first_offending_rows"])
    assert "AAPL" in listed and "IBM" in listed and "key_unique" in listed
    ctx = _check(result, "context_valid")
    assert not ctx.passed and ctx.metadata["n_violations"].value == 1
    assert ctx.metadata["violations_by_rule"].value["required_not_null"] == 1
    assert str(regime["timestamp"][7])[:10] in table_text(ctx.metadata["first_offending_rows"])


# ---------------------------------------------------------------------------------------------
# features and context files as observable inputs


def test_features_and_context_files_are_observed_and_their_changes_reported(
    lab: dict, tmp_path: Path
) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    features_path, context_path = tmp_path / "features.parquet", tmp_path / "ctx.parquet"
    compute_features(load_demo_prices()).write_parquet(features_path)
    ctx = load_demo_prices().select("timestamp").unique().sort("timestamp")
    ctx.with_columns(pl.lit(1.0).alias("regime")).write_parquet(context_path)
    cfg = _write_config(
        configs,
        "obs",
        lab["data"] / "signals.parquet",
        features=str(features_path),
        context=f"{{source: file, path: {context_path}, columns: [regime]}}",
    )
    hashes = experiment_input_hashes(load_config(cfg), None)
    assert set(hashes) == {"signals_file", "features_file", "context_file"}

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(EXPERIMENTS, ["obs"])
    resources = {"experiments": ExperimentsResource(configs_dir=str(configs))}
    first = input_files_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    ctx.with_columns(pl.lit(2.0).alias("regime")).write_parquet(context_path)
    second = input_files_sensor(
        dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor)
    )
    assert [(e.asset_key.to_user_string(), e.partition) for e in second.asset_events] == [
        ("context_file", "obs")
    ]
    # the observable source assets report the content hashes as data versions
    observe = dg.define_asset_job(
        "observe_inputs", selection=dg.AssetSelection.all(include_sources=True)
    )
    defs = dg.Definitions(
        assets=[sources.context_file, sources.features_file], jobs=[observe], resources=resources
    )
    observed = defs.resolve_job_def("observe_inputs").execute_in_process(instance=instance)
    assert observed.success
    for asset in ("context_file", "features_file"):
        records = instance.fetch_observations(dg.AssetKey(asset), limit=5).records
        versions = {
            (r.partition_key, r.event_log_entry.asset_observation.tags["dagster/data_version"])
            for r in records
        }
        assert versions == {("obs", experiment_input_hashes(load_config(cfg), None)[asset])}
