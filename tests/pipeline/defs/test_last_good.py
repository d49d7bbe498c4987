"""A value that fails a blocking check never replaces the last value that passed.

A small experiment reads a prices file and a signals file from a temporary data root. It is
materialized once with good prices; then the prices file is overwritten with a row whose high is
below its low (``invalid_rows: fail``) and the graph is materialized again: the blocking checks
fail, the stored ``prices`` and ``prices_raw`` still hold the first run's rows, and a rerun of
only the downstream assets backtests those good prices and reproduces the first run's outputs.

The engine's tables are judged the same way: when the stored ``backtest`` tables hold a
look-ahead trade and an equity that does not reconcile, ``trades`` and ``portfolio_states`` fail
their blocking checks, keep the refused tables as rejected candidates and leave the first run's
tables current (and ``metrics`` is not recomputed from them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from ml4t_pipeline.defs import assets_attribution, assets_backtest, assets_data, sources
from ml4t_pipeline.defs.io_managers import (
    CONTROL_DIR,
    Ml4tIOManager,
    current_record,
    read_value,
    write_value,
)
from ml4t_pipeline.defs.partitions import EXPERIMENTS
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.defs.storage_metadata import VERSION_KEY
from ml4t_pipeline.lib.io import load_demo_prices

KEY = "lab"
CONFIG = """\
name: lab
data:
  prices: prices.parquet
  signals: {path: signals.parquet}
  invalid_rows: fail
strategy: {type: TopN, signal: score, n: 2, rebalance_every: 5}
execution: {initial_cash: 100000}
"""
ASSETS = dg.load_assets_from_modules([sources, assets_data, assets_backtest, assets_attribution])
DOWNSTREAM_OF_PRICES = dg.AssetSelection.assets("prices").downstream() - dg.AssetSelection.assets(
    "prices", "prices_quarantine"
)
BACKTEST_AND_AFTER = dg.AssetSelection.assets("backtest").downstream()


def _good_prices() -> pl.DataFrame:
    """Two years of the demo stocks' daily bars, dated (a daily file stores plain dates)."""
    return (
        load_demo_prices()
        .filter(pl.col("timestamp").dt.year().is_between(2010, 2011))
        .with_columns(pl.col("timestamp").dt.date())
    )


def _bad_prices(good: pl.DataFrame) -> pl.DataFrame:
    """The same rows, except row 5 whose high is set 1.0 below its low (rule high >= low)."""
    return good.with_columns(
        pl.when(pl.int_range(pl.len()) == 5)
        .then(pl.col("low") - 1.0)
        .otherwise(pl.col("high"))
        .alias("high")
    )


def _momentum_scores(prices: pl.DataFrame) -> pl.DataFrame:
    return (
        prices.sort("symbol", "timestamp")
        .with_columns(
            (pl.col("close") / pl.col("close").shift(20) - 1).over("symbol").alias("score")
        )
        .drop_nulls("score")
        .select("timestamp", "symbol", "score")
    )


class Lab:
    """A data root, a configs folder, a storage folder and one Dagster instance."""

    def __init__(self, root: Path) -> None:
        self.data, self.configs, self.storage = root / "data", root / "configs", root / "storage"
        self.data.mkdir()
        self.configs.mkdir()
        self.instance = dg.DagsterInstance.ephemeral()
        self.instance.add_dynamic_partitions(EXPERIMENTS, [KEY])
        (self.configs / f"{KEY}.yaml").write_text(CONFIG)

    def write_prices(self, frame: pl.DataFrame) -> None:
        frame.write_parquet(self.data / "prices.parquet")

    def materialize(self, selection: Any = None) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            ASSETS,
            selection=selection,
            partition_key=KEY,
            instance=self.instance,
            resources={
                "experiments": ExperimentsResource(configs_dir=str(self.configs)),
                "io_manager": Ml4tIOManager(base_dir=str(self.storage)),
            },
            raise_on_error=False,
        )

    def value(self, asset: str) -> Any:
        return read_value(self.storage / asset / KEY)


def _materialization_meta(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    events = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset
    ]
    assert len(events) == 1, asset
    meta = events[0].materialization.metadata
    return {k: getattr(v, "value", v) for k, v in meta.items()}


def _failed(result: dg.ExecuteInProcessResult) -> set[str]:
    return {c.check_name for c in result.get_asset_check_evaluations() if not c.passed}


def _first_good_run(env: Lab) -> tuple[pl.DataFrame, dg.ExecuteInProcessResult]:
    """Write good prices and momentum signals, materialize the whole graph once; it passes."""
    good = _good_prices()
    env.write_prices(good)
    _momentum_scores(good).write_parquet(env.data / "signals.parquet")
    first = env.materialize()
    assert first.success, _failed(first)
    return good, first


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run 1 (good prices), run 2 (bad prices), as a module fixture shared by the tests."""
    root = tmp_path_factory.mktemp("last_good")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ML4T_DATA_ROOT", str(root / "data"))
        env = Lab(root)
        good, first = _first_good_run(env)
        stored = {
            name: env.value(name)
            for name in ("prices_raw", "prices", "market_panel", "trades", "metrics")
        }
        stored["backtest"] = env.value("backtest")
        env.write_prices(_bad_prices(good))
        second = env.materialize()
        yield {"env": env, "first": first, "second": second, "stored": stored, "good": good}


def test_last_good_bad_prices_fail_blocking_checks(lab: dict[str, Any]) -> None:
    second = lab["second"]
    assert not second.success
    assert {"prices_valid", "prices_high_at_or_above_low"} <= _failed(second)
    done = {e.asset_key.to_user_string() for e in second.get_asset_materialization_events()}
    assert "market_panel" not in done and "backtest" not in done  # blocked downstream


def test_last_good_refused_prices_leave_first_values_current(lab: dict[str, Any]) -> None:
    env, stored = lab["env"], lab["stored"]
    assert env.value("prices").equals(stored["prices"])
    assert env.value("prices_raw").equals(stored["prices_raw"])
    bad_high = _bad_prices(lab["good"])["high"][5]
    assert bad_high not in env.value("prices_raw")["high"].to_list()
    for asset in ("prices", "prices_raw"):
        record = current_record(env.storage / asset, KEY)
        assert record is not None and record["run_id"] == lab["first"].run_id, asset


def test_last_good_ui_metadata_names_rejected_candidate_and_current_run(
    lab: dict[str, Any],
) -> None:
    first, second = lab["first"], lab["second"]
    meta = _materialization_meta(second, "prices")
    assert meta["ml4t/checks_passed"] is False
    assert meta[VERSION_KEY].startswith("candidate rejected (failed blocking checks: ")
    assert "prices_high_at_or_above_low" in meta[VERSION_KEY]
    assert meta[VERSION_KEY].endswith(f"current stays run {first.run_id}")
    assert meta["ml4t/current_run_id"] == first.run_id
    assert Path(meta["path"]) == lab["env"].storage / "prices" / KEY
    # the refused rows are kept beside the current value, for inspection
    candidate = read_value(Path(meta["candidate_path"]))
    assert candidate.height == lab["stored"]["prices"].height
    assert candidate["high"].to_list() != lab["stored"]["prices"]["high"].to_list()
    raw_meta = _materialization_meta(second, "prices_raw")
    assert raw_meta[VERSION_KEY].startswith("pending: becomes current when `prices` passes")
    assert meta["ml4t/prices_raw"] == (
        f"candidate of run {second.run_id} rejected; current stays run {first.run_id}"
    )
    first_meta = _materialization_meta(first, "prices")
    assert first_meta[VERSION_KEY] == f"current: run {first.run_id} (blocking checks passed)"


@pytest.mark.parametrize(
    "selection", [DOWNSTREAM_OF_PRICES, BACKTEST_AND_AFTER], ids=["after_prices", "backtest_on"]
)
def test_last_good_downstream_rerun_reproduces_first_run(
    lab: dict[str, Any], selection: dg.AssetSelection
) -> None:
    env, stored = lab["env"], lab["stored"]
    rerun = env.materialize(selection)
    assert rerun.success, _failed(rerun)
    done = {e.asset_key.to_user_string() for e in rerun.get_asset_materialization_events()}
    assert "backtest" in done and "prices" not in done
    assert env.value("market_panel").equals(stored["market_panel"])
    for name, table in stored["backtest"].items():
        assert env.value("backtest")[name].equals(table), name
    assert env.value("trades").equals(stored["trades"])
    assert env.value("metrics") == stored["metrics"]


def test_last_good_fixed_file_becomes_current_and_candidates_are_cleared(
    lab: dict[str, Any],
) -> None:
    env = lab["env"]
    fixed = lab["good"].with_columns(pl.col("volume") + 1.0)  # new, valid data
    env.write_prices(fixed)
    try:
        third = env.materialize(["prices_raw", "prices", "prices_quarantine"])
        assert third.success, _failed(third)
        for asset in ("prices", "prices_raw"):
            record = current_record(env.storage / asset, KEY)
            assert record is not None and record["run_id"] == third.run_id, asset
        assert (
            env.value("prices_raw")["volume"] - lab["stored"]["prices_raw"]["volume"]
        ).to_list() == [1.0] * fixed.height
        candidates = env.storage / "prices_raw" / CONTROL_DIR / "candidates" / KEY
        assert sorted(p.name for p in candidates.iterdir()) == []
        meta = _materialization_meta(third, "prices")
        assert meta["ml4t/prices_raw"] == f"candidate of run {third.run_id} promoted to current"
    finally:
        env.write_prices(lab["good"])


def test_last_good_prices_raw_alone_stays_pending_until_prices_passes(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ML4T_DATA_ROOT", str(tmp_path / "data"))
        env = Lab(tmp_path)
        good = _good_prices().filter(pl.col("symbol").is_in(["AAPL", "IBM"]))
        env.write_prices(good)
        alone = env.materialize(["prices_raw"])
        assert alone.success
        with pytest.raises(FileNotFoundError):
            env.value("prices_raw")  # pending: nothing current yet
        judged = env.materialize(["prices", "prices_quarantine"])
        assert judged.success, _failed(judged)
        record = current_record(env.storage / "prices_raw", KEY)
        assert record is not None and record["run_id"] == alone.run_id
        assert record["promoted_in_run"] == judged.run_id
        assert env.value("prices_raw").height == good.height
        assert env.value("prices").height == good.height
        status_files = list((env.storage / "prices_raw" / CONTROL_DIR).rglob("*.status.json"))
        assert status_files == []
        assert json.loads(
            (env.storage / "prices" / CONTROL_DIR / f"{KEY}.current.json").read_text()
        )["checks_passed"]


# ---------------------------------------------------------------------------------------------
# trades and portfolio_states: their blocking checks judge the engine's tables before storing

TRADES_AND_AFTER = dg.AssetSelection.assets("trades", "portfolio_states").downstream()
EQUITY_BUMP = 1_000.0


def _faulty_engine_tables(tables: dict[str, pl.DataFrame], first_bar: Any) -> dict:
    """The stored engine tables with two faults an engine bug could make.

    Trade 0 claims its decision on the first bar, before any 20-bar momentum score exists (a
    look-ahead: ``trades_entered_after_signal_available``); the equity of bar 10 is
    ``EQUITY_BUMP`` above cash + marked positions (``equity_equals_cash_plus_marked_positions``).
    """
    trades = tables["trades"].with_columns(
        pl.when(pl.col("trade_id") == tables["trades"]["trade_id"].min())
        .then(pl.lit(first_bar, dtype=tables["trades"].schema["decision_timestamp"]))
        .otherwise(pl.col("decision_timestamp"))
        .alias("decision_timestamp")
    )
    states = tables["portfolio_states"].with_columns(
        pl.when(pl.int_range(pl.len()) == 10)
        .then(pl.col("equity") + EQUITY_BUMP)
        .otherwise(pl.col("equity"))
        .alias("equity")
    )
    return {**tables, "trades": trades, "portfolio_states": states}


@pytest.fixture(scope="module")
def engine_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run 1: the whole graph on good data. Run 2: trades onwards on faulty stored engine tables."""
    root = tmp_path_factory.mktemp("last_good_engine")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ML4T_DATA_ROOT", str(root / "data"))
        env = Lab(root)
        _, first = _first_good_run(env)
        stored = {name: env.value(name) for name in ("trades", "portfolio_states", "metrics")}
        first_bar = env.value("market_panel")["timestamp"].min()
        faulty = _faulty_engine_tables(env.value("backtest"), first_bar)
        write_value(faulty, env.storage / "backtest" / KEY)  # as a faulty engine run stores it
        second = env.materialize(TRADES_AND_AFTER)
        yield {"env": env, "first": first, "second": second, "stored": stored, "faulty": faulty}


def test_last_good_backtest_outputs_first_run_records_passed_verdict(
    engine_lab: dict[str, Any],
) -> None:
    first = engine_lab["first"]
    for asset in ("trades", "portfolio_states"):
        meta = _materialization_meta(first, asset)
        assert meta["ml4t/checks_passed"] is True, asset
        assert meta[VERSION_KEY] == f"current: run {first.run_id} (blocking checks passed)"


def test_last_good_faulty_engine_tables_fail_blocking_checks_and_block_metrics(
    engine_lab: dict[str, Any],
) -> None:
    second = engine_lab["second"]
    assert not second.success
    assert _failed(second) == {
        "trades_entered_after_signal_available",
        "equity_equals_cash_plus_marked_positions",
        "portfolio_states_match_schema",
    }
    done = {e.asset_key.to_user_string() for e in second.get_asset_materialization_events()}
    assert {"trades", "portfolio_states"} <= done
    assert "metrics" not in done and "performance_report" not in done


@pytest.mark.parametrize(
    ("asset", "failed"),
    [
        ("trades", "trades_entered_after_signal_available"),
        ("portfolio_states", "equity_equals_cash_plus_marked_positions, "
         "portfolio_states_match_schema"),
    ],
)  # fmt: skip
def test_last_good_faulty_engine_tables_keep_first_run_current(
    engine_lab: dict[str, Any], asset: str, failed: str
) -> None:
    env, first, second = engine_lab["env"], engine_lab["first"], engine_lab["second"]
    assert env.value(asset).equals(engine_lab["stored"][asset])
    record = current_record(env.storage / asset, KEY)
    assert record is not None and record["run_id"] == first.run_id
    meta = _materialization_meta(second, asset)
    assert meta["ml4t/checks_passed"] is False
    assert meta[VERSION_KEY] == (
        f"candidate rejected (failed blocking checks: {failed}); current stays run {first.run_id}"
    )
    assert meta["ml4t/current_run_id"] == first.run_id
    assert Path(meta["path"]) == env.storage / asset / f"{KEY}.parquet"
    # the refused table is kept beside the current one, with its status, for inspection
    candidate = read_value(Path(meta["candidate_path"]).with_suffix(""))
    assert candidate.equals(engine_lab["faulty"][asset])
    assert not candidate.equals(engine_lab["stored"][asset])
    status = json.loads(
        (
            env.storage / asset / CONTROL_DIR / "candidates" / KEY / f"{second.run_id}.status.json"
        ).read_text()
    )
    assert status["status"] == "rejected"
    assert status["failed_checks"] == failed.split(", ")
    assert env.value("metrics") == engine_lab["stored"]["metrics"]


def test_last_good_engine_rerun_replaces_rejected_tables(engine_lab: dict[str, Any]) -> None:
    env = engine_lab["env"]
    rerun = env.materialize(BACKTEST_AND_AFTER)
    assert rerun.success, _failed(rerun)
    for asset in ("trades", "portfolio_states"):
        record = current_record(env.storage / asset, KEY)
        assert record is not None and record["run_id"] == rerun.run_id, asset
        assert env.value(asset).equals(engine_lab["stored"][asset]), asset
    assert env.value("metrics") == engine_lab["stored"]["metrics"]
