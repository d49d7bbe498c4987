"""Asset checks are recorded per experiment partition (issue 26).

Two experiments read their own price files; one file has a bar whose high is below its low.
That experiment's blocking check fails on its own partition, while the other experiment's
result for the same check passes, and a clean run of one never overwrites the other's verdict.
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import polars as pl
import pytest
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecordStatus,
)

from ml4t_pipeline.lib.io import load_demo_prices
from ml4t_pipeline.runner import materialize_experiment

CONFIG = """\
name: {name}
data:
  prices: {prices}
  signals: {{path: {signals}}}
  features: computed
  context: {{source: market}}
strategy: {{type: TopN, signal: score, n: 2, rebalance_every: 5}}
execution:
  initial_cash: 100000
"""

CHECK = dg.AssetCheckKey(dg.AssetKey("prices"), "prices_high_at_or_above_low")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("checks_per_experiment")
    configs, data = root / "configs", root / "data"
    configs.mkdir()
    data.mkdir()
    prices = (
        load_demo_prices()
        .filter(pl.col("timestamp").dt.year() == 2012)
        .with_columns(pl.col("timestamp").dt.convert_time_zone("America/New_York").dt.date())
    )
    signals = prices.select(
        "timestamp", "symbol", (pl.col("close") / pl.col("open") - 1).alias("score")
    )
    signals.write_parquet(data / "signals.parquet")
    prices.write_parquet(data / "good.parquet")
    bad_row = pl.int_range(pl.len()) == 10
    prices.with_columns(
        pl.when(bad_row).then(pl.col("low") * 0.9).otherwise(pl.col("high")).alias("high")
    ).write_parquet(data / "bad.parquet")
    for name in ("good", "bad"):
        (configs / f"{name}.yaml").write_text(
            CONFIG.format(
                name=name, prices=data / f"{name}.parquet", signals=data / "signals.parquet"
            )
        )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ML4T_DATA_ROOT", str(root))
        yield {"root": root, "configs": configs, "instance": dg.DagsterInstance.ephemeral()}


def _latest(instance: dg.DagsterInstance, key: str) -> AssetCheckExecutionRecordStatus:
    history = instance.event_log_storage.get_asset_check_execution_history(
        CHECK, limit=10, partition_filter=PartitionKeyFilter(key=key)
    )
    assert history, f"no execution of {CHECK} recorded for partition {key}"
    assert {record.partition for record in history} == {key}
    return history[0].status


def test_failing_check_shows_on_its_experiment_only(lab: dict) -> None:
    instance, storage = lab["instance"], lab["root"] / "storage"
    bad = materialize_experiment(lab["configs"] / "bad.yaml", storage, instance=instance)
    assert not bad.success
    good = materialize_experiment(lab["configs"] / "good.yaml", storage, instance=instance)
    assert good.success
    failed = AssetCheckExecutionRecordStatus.FAILED
    succeeded = AssetCheckExecutionRecordStatus.SUCCEEDED
    assert _latest(instance, "bad") == failed  # the good run did not turn it green
    assert _latest(instance, "good") == succeeded
