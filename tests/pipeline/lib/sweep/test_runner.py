"""Running sweeps on a real S&P slice (10 symbols x 400 days): outputs, resuming after a kill,
recomputing on new data, failed trials, and the processes/Ray backends against serial."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml

from ml4t_pipeline.cli import main
from ml4t_pipeline.config import ConfigError, ExperimentConfig
from ml4t_pipeline.lib.experiment import (
    experiment_metrics,
    quotes_from_prices_file,
    run_experiment,
)
from ml4t_pipeline.lib.sweep import backends, runner
from ml4t_pipeline.lib.sweep.results import write_outputs
from ml4t_pipeline.lib.sweep.runner import TRIAL_METRICS, PreparedData, TrialStore, run_sweep
from ml4t_pipeline.lib.sweep.spec import data_key, load_sweep_file
from ml4t_pipeline.sweeps import prepare_data

CODE_VERSION = "test-sweep"


def _strict_json(path: Path) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"{path}: bare {name} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _write_slice(source: Path, target: Path, *, days: int = 400) -> None:
    raw = pl.read_parquet(source)
    symbols = sorted(raw["symbol"].unique().to_list())[:10]
    dates = sorted(raw["timestamp"].unique().to_list())[:days]
    raw.filter(pl.col("symbol").is_in(symbols) & pl.col("timestamp").is_in(dates)).write_parquet(
        target
    )


def experiment(sweep: dict[str, Any]) -> dict[str, Any]:
    """A small top-N experiment on the slice, with a sweep block."""
    return {
        "data": {
            "prices": "slice.parquet",
            "signals": {"model": "ridge", "horizon": 5, "min_train_periods": 100},
            "context": {"source": "market"},
            "invalid_rows": "quarantine",
            "max_fill_bars": 0,
        },
        "strategy": {"type": "TopN", "signal": "score", "n": 3, "rebalance_every": 5},
        "risk_rules": [
            {"type": "PriceBasedStopLoss", "stop_pct": 0.05, "priority": 100},
            {"type": "TimeBasedExit", "max_bars": 60, "priority": 90},
        ],
        "execution": {"commission": {"type": "Percentage", "rate": 0.001}, "initial_cash": 1e5},
        "sweep": sweep,
    }


@dataclass
class Lab:
    root: Path
    data: Path
    seed: Path
    prepared: PreparedData

    def write(self, name: str, sweep: dict[str, Any]) -> Path:
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(experiment(sweep), sort_keys=False))
        return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("sweep_lab")
    data = root / "data"
    data.mkdir()
    _write_slice(data_root / "sp500_5yr_daily_ohlcv.parquet", data / "slice.parquet")
    patch = pytest.MonkeyPatch()
    patch.setenv("ML4T_DATA_ROOT", str(data))
    patch.setenv(runner.CODE_VERSION_ENV, CODE_VERSION)
    patch.setenv("ML4T_PROGRESS", "0")
    path = root / "seed.yaml"
    path.write_text(yaml.safe_dump(experiment({"grid": {"strategy.n": [3]}}), sort_keys=False))
    seed = root / "seed"
    run = run_sweep(load_sweep_file(path), seed, prepare=prepare_data)
    (prepared,) = run.data.values()
    yield Lab(root=root, data=data, seed=seed, prepared=prepared)
    patch.undo()


GRID = {"grid": {"strategy.n": [1, 3, 5], "risk_rules[0].stop_pct": [0.03, 0.08]}}


def test_run_sweep_serial_writes_one_row_per_trial_and_strict_outputs(
    lab: Lab, tmp_path: Path
) -> None:
    sweep = load_sweep_file(lab.write("grid", GRID))
    run = run_sweep(sweep, tmp_path, prepared={lab.prepared.key: lab.prepared})
    outputs = write_outputs(sweep, run, tmp_path)

    table = pl.read_parquet(tmp_path / "sweep_results.parquet")
    assert table.height == 6 and table["trial"].to_list() == list(range(6))
    assert table["strategy.n"].to_list() == [1, 1, 3, 3, 5, 5]
    assert table["risk_rules[0].stop_pct"].to_list() == [0.03, 0.08] * 3
    assert set(table["status"]) == {"ok"} and table["hash"].n_unique() == 6
    assert (table["seconds"] > 0).all() and table["error"].null_count() == 6
    assert table["n_trades"].n_unique() > 1  # the parameters reached the engine

    # every stored row equals a backtest of its trial's config run directly on fresh engine
    # arrays (the sweep's trials share one MarketData: no trial may leave a trace for the next)
    panel, context, sig, ind = lab.prepared.frames()
    for trial in sweep.trials:
        direct = run_experiment(trial.config, panel, context, sig, ind)
        states = direct.portfolio_states
        metrics = experiment_metrics(trial.config, states, direct.trades, direct.fills)
        row = table.row(trial.index, named=True)
        assert row["sharpe"] == metrics["sharpe"]
        # every kept metric is experiment_metrics' value (NaN stored as null)
        for name in TRIAL_METRICS:
            assert row[name] == metrics[name] or (row[name] is None and np.isnan(metrics[name]))
        assert row["n_trades"] == metrics["n_trades"] == direct.trades.height
        stored = TrialStore(tmp_path).load_returns(row["hash"])
        assert stored["return"].to_list() == states["return"].fill_null(0.0).to_list()

    summary = _strict_json(tmp_path / "sweep_summary.json")
    assert summary == json.loads(json.dumps(outputs["summary"], allow_nan=False))
    assert (summary["n_trials"], summary["n_ok"], summary["n_failed"]) == (6, 6, 0)
    assert (summary["n_computed"], summary["n_reused"]) == (6, 0)
    best = table.sort("sharpe", descending=True).row(0, named=True)
    assert summary["best_trial"]["trial"] == best["trial"]
    assert summary["deflated_sharpe"]["best_trial"] == best["trial"]
    assert 0.0 <= summary["deflated_sharpe"]["dsr"] <= 1.0
    assert 0.0 <= summary["pbo"]["pbo"] <= 1.0
    assert summary["data_versions"] == {lab.prepared.key: lab.prepared.versions}
    assert summary["code_version"] == CODE_VERSION

    # the multiple-testing statistics: per trial and across the trials
    ok = table.filter(pl.col("status") == "ok")
    assert ok["psr"].to_numpy() == pytest.approx(1.0 - ok["sharpe_pvalue"].to_numpy())
    assert (ok["sharpe_pvalue_holm"] >= ok["sharpe_pvalue"]).all()
    assert (ok["sharpe_pvalue_by"] >= ok["sharpe_pvalue"]).all()
    psr, spa, mt = summary["psr"], summary["spa"], summary["multiple_testing"]
    assert psr["best_trial"] == summary["deflated_sharpe"]["best_trial"]
    assert psr["psr"] == pytest.approx(table.row(psr["best_trial"], named=True)["psr"])
    assert psr["track_record_sufficient"] == (
        psr["min_track_record_length"] is not None
        and psr["n_periods"] >= psr["min_track_record_length"]
    )
    assert 0.0 <= spa["spa_pvalue_lower"] <= spa["spa_pvalue"] <= spa["spa_pvalue_upper"] <= 1.0
    assert (spa["reps"], spa["seed"]) == (1000, 0)
    assert set(spa["stepm_superior_trials"]) <= set(range(6))
    assert mt["n_tested"] == 6 and mt["n_significant_holm"] <= mt["n_significant"]
    assert [g["name"] for g in summary["gates"]] == [
        "best_trial_dsr_at_least", "pbo_at_most", "spa_pvalue_at_most"
    ]  # fmt: skip
    dsr_gate = summary["gates"][0]
    assert dsr_gate["passed"] == (summary["deflated_sharpe"]["dsr"] >= 0.95)
    assert not dsr_gate["blocking"]
    for gate in summary["gates"]:
        assert gate["name"] in summary["verdict"]

    page = (tmp_path / "sweep_report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3
    assert "Deflated Sharpe Ratio" in page and "PBO" in page
    assert "Hansen SPA p-value" in page and summary["verdict"] in page


def _array_digest(market: Any) -> str:
    parts = [market.timestamps, market.offsets, market.sym_id, market.open, market.high]
    parts += [market.low, market.close, market.volume, market.ordinal, market.prev_row]
    parts += [market.columns[c] for c in sorted(market.columns)]
    parts += [market.context[c] for c in sorted(market.context)]
    digest = hashlib.sha256()
    for array in parts:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def test_trials_sharing_market_data_leave_it_unchanged(lab: Lab) -> None:
    sweep = load_sweep_file(lab.write("grid", GRID))
    market = runner.build_market(lab.prepared.frames())
    before = _array_digest(market)
    first, other = (sweep.trials[i].config.model_dump_json() for i in (0, 5))
    a = runner.run_trial(first, market)
    b = runner.run_trial(other, market)
    again = runner.run_trial(first, market)
    assert a.status == b.status == again.status == "ok"
    assert a.metrics != b.metrics  # a different trial really ran in between
    assert again.metrics == a.metrics
    assert again.returns is not None and a.returns is not None
    assert again.returns.tobytes() == a.returns.tobytes()
    assert _array_digest(market) == before  # the engine only read the shared arrays


def test_run_sweep_with_quotes_fills_at_the_quoted_spread(lab: Lab, tmp_path: Path) -> None:
    prices = pl.read_parquet(lab.data / "slice.parquet")
    half = pl.col("open") * 0.01  # a 2 % quoted spread around the open
    prices.with_columns(
        (pl.col("open") - half).alias("best_bid"), (pl.col("open") + half).alias("best_ask")
    ).write_parquet(lab.data / "slice_quotes.parquet")
    body = experiment({"grid": {"strategy.n": [2, 4]}})
    body["data"] |= {
        "prices": "slice_quotes.parquet",
        "quotes": {"bid": "best_bid", "ask": "best_ask"},
    }
    body["execution"]["slippage"] = {"type": "SpreadAware", "spread_fraction": 0.5}
    path = lab.root / "quotes.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    sweep = load_sweep_file(path)
    run = run_sweep(sweep, tmp_path, prepare=prepare_data)
    (prepared,) = run.data.values()
    assert {"bid", "ask"} <= set(prepared.panel.columns)
    # the data assets ran from the validated config object: no experiment file written
    assert not list((tmp_path / "prepared").rglob("*.yaml"))
    for trial, record in zip(sweep.trials, run.records, strict=True):
        quotes = quotes_from_prices_file(
            lab.data / "slice_quotes.parquet", trial.config.data.quotes
        )
        panel, context, sig, ind = prepared.frames()
        direct = run_experiment(
            trial.config, panel.drop("bid", "ask"), context, sig, ind, quotes=quotes
        )
        metrics = experiment_metrics(
            trial.config, direct.portfolio_states, direct.trades, direct.fills
        )
        assert record["status"] == "ok" and record["metrics"]["sharpe"] == metrics["sharpe"]
        # the fills paid half the quoted spread known at the open: the quote stamped at the
        # symbol's previous close (the fill bar's own quote comes only at its close)
        fill = direct.fills.row(0, named=True)
        bars = panel.filter(pl.col("symbol") == fill["symbol"]).sort("timestamp")
        k = bars["timestamp"].to_list().index(fill["timestamp"])
        bar, before = bars.row(k, named=True), bars.row(k - 1, named=True)
        assert abs(fill["price"] - bar["open"]) == pytest.approx(
            0.5 * (before["ask"] - before["bid"])
        )


def test_run_sweep_rerun_computes_only_missing_trials(lab: Lab, tmp_path: Path) -> None:
    sweep = load_sweep_file(lab.write("grid", GRID))
    prepared = {lab.prepared.key: lab.prepared}
    first = run_sweep(sweep, tmp_path, prepared=prepared)
    # the six trials were stored as one batch: take two records out of its JSON file
    [batch] = (tmp_path / "trials").glob("batch-*.json")
    kept = [r for r in json.loads(batch.read_text()) if r["hash"] not in first.keys[1:3]]
    batch.write_text(json.dumps(kept))
    assert not TrialStore(tmp_path).done(first.keys[1]) and TrialStore(tmp_path).done(first.keys[0])
    again = run_sweep(sweep, tmp_path, prepared=prepared)
    assert (again.computed, again.reused) == (2, 4)
    assert again.keys == first.keys
    timing = ("seconds", "cpu_seconds")
    strip = [{k: v for k, v in r.items() if k not in timing} for r in first.records]
    assert [{k: v for k, v in r.items() if k not in timing} for r in again.records] == strip
    third = run_sweep(sweep, tmp_path, prepared=prepared)
    assert (third.computed, third.reused) == (0, 6)


def test_run_sweep_changed_data_recomputes_every_trial(lab: Lab, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(lab.data, data)
    sweep = load_sweep_file(lab.write("small", {"grid": {"strategy.n": [2, 4]}}))
    out = tmp_path / "out"
    shutil.copytree(lab.seed / "prepared", out / "prepared")  # prepared from the same file
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ML4T_DATA_ROOT", str(data))
        first = run_sweep(sweep, out, prepare=prepare_data)
        assert first.computed == 2 and first.prepare_seconds < 5  # the stored tables reused
        assert first.data[lab.prepared.key].versions == lab.prepared.versions
        prices = pl.read_parquet(data / "slice.parquet")
        last = prices["timestamp"].max()
        prices.filter(pl.col("timestamp") < last).write_parquet(data / "slice.parquet")
        second = run_sweep(sweep, out, prepare=prepare_data)
    assert second.data[lab.prepared.key].versions != lab.prepared.versions
    assert (second.computed, second.reused) == (2, 0)
    assert set(second.keys).isdisjoint(first.keys)


def test_run_sweep_failed_trial_recorded_and_sweep_continues(lab: Lab, tmp_path: Path) -> None:
    sweep = load_sweep_file(
        lab.write("fail", {"grid": {"strategy.signal": ["score", "nosuch", "ret_20"]}})
    )
    run = run_sweep(sweep, tmp_path, prepared={lab.prepared.key: lab.prepared})
    write_outputs(sweep, run, tmp_path)
    table = pl.read_parquet(tmp_path / "sweep_results.parquet")
    assert table["status"].to_list() == ["ok", "failed", "ok"]
    assert "nosuch" in table["error"][1] and table["sharpe"][1] is None
    summary = _strict_json(tmp_path / "sweep_summary.json")
    assert (summary["n_ok"], summary["n_failed"]) == (2, 1)
    # a failed trial is a result: a rerun does not repeat it unless asked
    assert run_sweep(sweep, tmp_path, prepared={lab.prepared.key: lab.prepared}).computed == 0
    retried = run_sweep(
        sweep, tmp_path, prepared={lab.prepared.key: lab.prepared}, retry_failed=True
    )
    assert retried.computed == 1


def test_run_sweep_data_prepared_once_per_data_section(lab: Lab, tmp_path: Path) -> None:
    calls: list[str] = []

    def fake_prepare(raw: dict[str, Any], cfg: Any, folder: Path) -> PreparedData:
        calls.append(data_key(cfg))
        return PreparedData(data_key(cfg), *lab.prepared.frames(), versions=lab.prepared.versions)

    grid = {"grid": {"strategy.n": [1, 2, 3], "data.max_fill_bars": [0, 2]}}
    run = run_sweep(load_sweep_file(lab.write("data", grid)), tmp_path, prepare=fake_prepare)
    assert len(calls) == 2 and len(set(calls)) == 2
    assert run.computed == 6


def test_cli_sweep_killed_midway_rerun_computes_only_missing(lab: Lab, tmp_path: Path) -> None:
    grid = {
        "grid": {
            "strategy.n": [1, 2, 3, 4, 5],
            "risk_rules[0].stop_pct": [0.02, 0.04, 0.06, 0.08],
            "strategy.rebalance_every": [1, 5, 10],
        }
    }
    path = lab.write("kill", grid)
    out = tmp_path / "out"
    shutil.copytree(lab.seed / "prepared", out / "prepared")
    trials = out / "trials"
    # one backtest per trial (--no-variants): with variant passes the 60 trials are done a few
    # milliseconds after the first batch is stored, sooner than the kill lands
    cmd = ["sweep", str(path), "--output", str(out), "--no-variants"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ml4t_pipeline.cli", *cmd],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if trials.is_dir() and any(trials.glob("*.json")):  # a first batch is stored
                break
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    files = {p.name: p.read_bytes() for p in trials.glob("*.json")}
    store = TrialStore(out)
    done = store.keys()
    assert 5 <= len(done) < 60
    for key in done:  # every record is whole, and its returns were written before it
        assert store.load(key)["status"] == "ok"
        assert store.load_returns(key).height > 0

    assert main(["sweep", str(path), "--output", str(out)]) == 0  # the rerun: variant passes
    summary = _strict_json(out / "sweep_summary.json")
    assert (summary["n_trials"], summary["n_ok"]) == (60, 60)
    assert (summary["n_reused"], summary["n_computed"]) == (len(done), 60 - len(done))
    for name, before in files.items():  # stored results were not recomputed
        assert (trials / name).read_bytes() == before
    assert len(TrialStore(out).keys()) == 60


def test_run_sweep_processes_backend_equals_serial(lab: Lab, tmp_path: Path) -> None:
    sweep = load_sweep_file(lab.write("grid", GRID))
    prepared = {lab.prepared.key: lab.prepared}
    serial = run_sweep(sweep, tmp_path / "serial", prepared=prepared)
    procs = run_sweep(sweep, tmp_path / "procs", backend="processes", workers=2, prepared=prepared)
    assert procs.keys == serial.keys and procs.workers == 2
    assert [r["metrics"] for r in procs.records] == [r["metrics"] for r in serial.records]


@pytest.mark.skipif(
    not runner.ray_available(), reason="ray not installed (pip install -e '.[ray]')"
)
def test_run_sweep_ray_backend_equals_serial(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    sweep = load_sweep_file(lab.write("grid", GRID))
    prepared = {lab.prepared.key: lab.prepared}
    serial = run_sweep(sweep, tmp_path / "serial", prepared=prepared)
    # batches of 3 trials per Ray call (6 trials, 2 workers, one batch each)
    monkeypatch.setattr(backends, "MIN_BATCHES_PER_WORKER", 1)
    on_ray = run_sweep(sweep, tmp_path / "ray", backend="ray", workers=2, prepared=prepared)
    assert on_ray.keys == serial.keys and on_ray.backend == "ray"
    assert [r["metrics"] for r in on_ray.records] == [r["metrics"] for r in serial.records]
    assert on_ray.variant_trials == serial.variant_trials == 6  # each batch in one pass
    assert not ray.is_initialized()  # the local Ray it started is shut down


VARIANT_GRID = {
    "grid": {
        "strategy.n": [1, 3],
        "risk_rules[0].stop_pct": [0.03, 0.08],
        "strategy.rebalance_every": [1, 5],
        "execution.commission.rate": [0.0, 0.002],
        "execution.initial_cash": [5e4, 1e5],
    }
}


def test_run_sweep_qualifying_trials_take_the_variant_pass_and_equal_one_at_a_time(
    lab: Lab, tmp_path: Path
) -> None:
    sweep = load_sweep_file(lab.write("variants", VARIANT_GRID))
    prepared = {lab.prepared.key: lab.prepared}
    passed = run_sweep(sweep, tmp_path / "pass", prepared=prepared)
    single = run_sweep(sweep, tmp_path / "single", prepared=prepared, variants=False)
    assert (passed.variant_trials, single.variant_trials) == (32, 0)
    assert {r["driver"] for r in passed.records} == {"variants"}
    assert {r["driver"] for r in single.records} == {"single"}
    assert passed.keys == single.keys
    assert [r["metrics"] for r in passed.records] == [r["metrics"] for r in single.records]
    assert len({r["metrics"]["n_trades"] for r in passed.records}) > 8
    for key in passed.keys:
        a = TrialStore(tmp_path / "pass").load_returns(key)
        assert a.equals(TrialStore(tmp_path / "single").load_returns(key))


def test_run_sweep_variants_whose_buffers_fill_up_run_alone_and_equal_one_at_a_time(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.compiled import topn
    from engine.compiled import variants as compiled_variants

    plan_variants = compiled_variants.plan_variants

    def small(data: Any, runs: Any, **options: Any) -> list[Any]:
        # record buffers of 64 rows: every variant's pass ends ST_FULL
        plans = plan_variants(data, runs, **options)
        return [dataclasses.replace(p, capacity=64) for p in plans]

    alone: list[int] = []
    compiled_run = topn.CompiledRun

    def counted(data: Any, plan: Any) -> Any:
        alone.append(plan.capacity)
        return compiled_run(data, plan)

    monkeypatch.setattr(compiled_variants, "plan_variants", small)
    monkeypatch.setattr(topn, "CompiledRun", counted)
    sweep = load_sweep_file(lab.write("full", {"grid": {"strategy.n": [2, 4, 5]}}))
    prepared = {lab.prepared.key: lab.prepared}
    passed = run_sweep(sweep, tmp_path / "pass", prepared=prepared)
    monkeypatch.undo()
    single = run_sweep(sweep, tmp_path / "single", prepared=prepared, variants=False)
    assert alone == [64, 64, 64]  # each variant ran again alone, from its small plan
    assert {r["driver"] for r in passed.records} == {"variants"}
    assert [r["metrics"] for r in passed.records] == [r["metrics"] for r in single.records]
    for key in passed.keys:
        a = TrialStore(tmp_path / "pass").load_returns(key)
        assert a.equals(TrialStore(tmp_path / "single").load_returns(key))


def test_variant_reason_sends_windows_and_bad_trials_one_at_a_time(lab: Lab) -> None:
    from ml4t_pipeline.lib.sweep.prepare import build_market
    from ml4t_pipeline.lib.sweep.variants import run_trials, variant_reason

    sweep = load_sweep_file(lab.write("variants", VARIANT_GRID))
    market = build_market(lab.prepared.frames())
    configs = [t.config for t in sweep.trials[:3]]
    assert variant_reason(configs, market) is None
    window = configs[1].model_copy(
        update={"backtest": configs[1].backtest.model_copy(update={"end": "2014-01-01"})}
    )
    assert variant_reason([configs[0], window], market) == "trial 1 has a backtest window"
    bad = configs[2].model_copy(
        update={"strategy": configs[2].strategy.model_copy(update={"n": 0})}
    )
    assert variant_reason([configs[0], bad], market).startswith("trial 1: ValueError")  # type: ignore[union-attr]
    outcomes = dict(run_trials([configs[0].model_dump_json(), bad.model_dump_json()], market))
    assert [o.driver for o in outcomes.values()] == ["single", "single"]
    assert outcomes[0].status == "ok" and outcomes[1].status == "failed"


def test_ray_batches_keep_order_and_one_data_set_each() -> None:
    from types import SimpleNamespace

    keys = ["a"] * 70 + ["b"] * 3 + ["a"] * 5
    jobs: Any = [SimpleNamespace(index=i, data=SimpleNamespace(key=k)) for i, k in enumerate(keys)]
    batches = backends._batches(jobs, workers=2)
    assert [job.index for batch in batches for job in batch] == list(range(len(keys)))
    assert all(len({job.data.key for job in batch}) == 1 for batch in batches)
    # 78 trials // (8 batches x 2 workers) = 4 per batch; cut early where the data set changes
    assert [len(b) for b in batches] == [4] * 17 + [2, 3, 4, 1]
    assert [len(b) for b in backends._batches(jobs[:20], workers=2)] == [1] * 20


def test_run_sweep_unknown_backend_refused(lab: Lab, tmp_path: Path) -> None:
    sweep = load_sweep_file(lab.write("grid", GRID))
    with pytest.raises(runner.SweepError, match="unknown backend 'dask'"):
        run_sweep(sweep, tmp_path, backend="dask")


def test_sweep_results_asset_materializes_partition_with_metadata(lab: Lab, tmp_path: Path) -> None:
    import dagster as dg

    from ml4t_pipeline.defs import assets_sweep
    from ml4t_pipeline.defs.io_managers import Ml4tIOManager, read_value

    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    path = sweeps / "asset_grid.yaml"
    shutil.copy(lab.write("asset_grid", GRID), path)
    out = tmp_path / "out"
    shutil.copytree(lab.seed / "prepared", out / "asset_grid" / "prepared")
    instance = dg.DagsterInstance.ephemeral()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(assets_sweep.SWEEPS_ENV, str(sweeps))
        sensor = assets_sweep.sweep_files_sensor(dg.build_sensor_context(instance=instance))
    (request,) = sensor.dynamic_partitions_requests
    assert list(request.partition_keys) == ["asset_grid"]
    instance.add_dynamic_partitions(assets_sweep.SWEEPS, ["asset_grid"])
    run_config = {"sweeps_dir": str(sweeps), "output_dir": str(out), "backend": "serial"}
    result = dg.materialize(
        [assets_sweep.sweep_results],
        partition_key="asset_grid",
        instance=instance,
        resources={"io_manager": Ml4tIOManager(base_dir=str(tmp_path / "storage"))},
        run_config={"ops": {"sweep_results": {"config": run_config}}},
    )
    assert result.success
    (event,) = result.get_asset_materialization_events()
    meta = event.step_materialization_data.materialization.metadata
    assert meta["trials_done"].value == "6/6"
    assert meta["n_reused"].value == 0 and meta["n_ok"].value == 6
    assert 0.0 <= meta["pbo"].value <= 1.0
    assert meta["best_trials"].value.startswith("| trial | strategy.n |")
    assert meta["sharpe_heatmap"].value.startswith("![heatmap](data:image/png;base64,")
    summary = _strict_json(out / "asset_grid" / "sweep_summary.json")
    assert meta["spa_pvalue"].value == summary["spa"]["spa_pvalue"]
    mintrl = summary["psr"]["min_track_record_length"]
    expected = "n/a: no edge" if mintrl is None else pytest.approx(mintrl)
    assert meta["min_track_record_bars"].value == expected
    assert meta["verdict"].value == summary["verdict"]
    # the gates warn by default: the run succeeds whatever they say
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {g["name"] for g in summary["gates"]}
    for gate in summary["gates"]:
        assert checks[gate["name"]].passed == gate["passed"]
        assert checks[gate["name"]].severity == dg.AssetCheckSeverity.WARN
    stored = read_value(tmp_path / "storage" / "sweep_results" / "asset_grid")
    assert stored.equals(pl.read_parquet(out / "asset_grid" / "sweep_results.parquet"))


def _materialize_sweep(lab: Lab, tmp_path: Path, name: str, body: dict[str, Any]) -> Any:
    """Materialize the ``sweep_results`` partition of sweep file ``name`` (data reused from
    the lab's seed run); the Dagster result, without raising on failure."""
    import dagster as dg

    from ml4t_pipeline.defs import assets_sweep
    from ml4t_pipeline.defs.io_managers import Ml4tIOManager

    sweeps = tmp_path / "sweeps"
    sweeps.mkdir(exist_ok=True)
    (sweeps / f"{name}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    out = tmp_path / "out"
    shutil.copytree(lab.seed / "prepared", out / name / "prepared")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(assets_sweep.SWEEPS, [name])
    run_config = {"sweeps_dir": str(sweeps), "output_dir": str(out), "backend": "serial"}
    return dg.materialize(
        [assets_sweep.sweep_results],
        partition_key=name,
        instance=instance,
        resources={"io_manager": Ml4tIOManager(base_dir=str(tmp_path / "storage"))},
        run_config={"ops": {"sweep_results": {"config": run_config}}},
        raise_on_error=False,
    )


def test_sweep_results_gates_blocking_fail_the_step_and_mlflow_logs_the_sweep(
    lab: Lab, tmp_path: Path
) -> None:
    import dagster as dg

    client_module = pytest.importorskip("mlflow.tracking", reason="the tracking extra is absent")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    body = experiment({"grid": {"strategy.n": [1, 3]}})
    body["sweep"]["gates"] = {"best_trial_dsr_at_least": 1.0, "pbo_at_most": 1.0,
                              "blocking": True}  # fmt: skip
    body["sweep"]["walk_forward"] = {"train": 150, "test": 100}
    body["tracking"] = {"mlflow": {"uri": uri, "experiment": "gated"}}
    result = _materialize_sweep(lab, tmp_path, "gated", body)
    assert not result.success  # a blocking gate failed with ERROR severity
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {"best_trial_dsr_at_least", "pbo_at_most", "spa_pvalue_at_most"}
    dsr = checks["best_trial_dsr_at_least"]
    assert not dsr.passed and dsr.severity == dg.AssetCheckSeverity.ERROR
    assert checks["pbo_at_most"].passed  # PBO <= 1 always holds
    (event,) = result.get_asset_materialization_events()  # the results are still stored
    meta = event.step_materialization_data.materialization.metadata
    assert "failed: best_trial_dsr_at_least" in meta["verdict"].value
    summary = _strict_json(tmp_path / "out" / "gated" / "sweep_summary.json")
    wf = summary["walk_forward"]
    assert meta["walk_forward_oos_sharpe"].value == pytest.approx(wf["oos"]["sharpe"])
    assert meta["walk_forward_folds"].value.count("\n") == 2 + wf["n_folds"]
    assert meta["walk_forward_oos_equity"].value.startswith("![walk-forward")
    run_id = meta["mlflow_run_id"].value
    client = client_module.MlflowClient(tracking_uri=uri)
    parent = client.get_run(run_id)
    assert parent.data.tags["dagster.run_id"] == result.run_id
    assert parent.data.tags["dagster.partition"] == "gated"
    assert parent.data.metrics["n_trials"] == 2
    assert parent.data.metrics["spa.spa_pvalue"] == pytest.approx(meta["spa_pvalue"].value)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'"
    )
    assert sorted(int(c.data.tags["ml4t.trial"]) for c in children) == [0, 1]


def test_walk_forward_picks_is_best_and_stitches_its_own_oos_runs(lab: Lab, tmp_path: Path) -> None:
    from datetime import datetime

    from ml4t_pipeline.lib.sweep.walkforward import OOS_FILE

    body = dict(GRID) | {"walk_forward": {"train": 120, "test": 60, "select": "sharpe"}}
    sweep = load_sweep_file(lab.write("wf", body))
    prepared = {lab.prepared.key: lab.prepared}
    run = run_sweep(sweep, tmp_path, prepared=prepared)
    outputs = write_outputs(sweep, run, tmp_path)
    wf = outputs["summary"]["walk_forward"]
    assert wf["purge"] == 5 and wf["embargo"] == 0  # the signal model's horizon
    assert wf["n_folds"] == len(wf["folds"]) >= 3

    store = TrialStore(tmp_path)
    pairs = zip(run.keys, run.records, strict=True)
    returns = {record["trial"]: store.load_returns(key) for key, record in pairs}
    bars = returns[0]["timestamp"]
    assert all(frame["timestamp"].equals(bars) for frame in returns.values())
    oos = pl.read_parquet(tmp_path / OOS_FILE)
    panel, context, sig, ind = lab.prepared.frames()

    def stamp(text: str) -> datetime:
        return datetime.fromisoformat(text)

    for fold in wf["folds"]:
        seen = (bars >= stamp(fold["train_start"])) & (bars <= stamp(fold["select_end"]))
        # the in-sample best by Sharpe, recomputed from each trial's stored returns (the
        # risk-free rate is 0 here, so excess returns are the returns)
        sharpes = {}
        for trial, frame in returns.items():
            r = frame.filter(seen)["return"].to_numpy()
            sharpes[trial] = r.mean() / r.std(ddof=1) if r.std() > 0 else 0.0
        assert fold["trial"] == max(sharpes, key=lambda t: (sharpes[t], -t))
        assert fold["is_score"] == pytest.approx(sharpes[fold["trial"]], rel=1e-9)
        # no out-of-sample bar was seen by the fold's selection; purge bars lie between them
        piece = oos.filter(pl.col("fold") == fold["fold"])
        assert piece["timestamp"].min() > bars.filter(seen).max()
        between = bars.filter(
            (bars > stamp(fold["select_end"])) & (bars < stamp(fold["test_start"]))
        )
        assert between.len() == wf["purge"]
        assert piece["timestamp"].min() == stamp(fold["test_start"])
        assert piece["timestamp"].max() == stamp(fold["test_end"])
        # the out-of-sample piece is the chosen variant run alone on the test window
        raw = sweep.trials[fold["trial"]].config.model_dump(mode="json")
        raw["backtest"] = {"start": fold["test_start"], "end": fold["test_end"]}
        direct = run_experiment(ExperimentConfig.model_validate(raw), panel, context, sig, ind)
        states = direct.portfolio_states
        assert piece["return"].to_list() == states["return"].fill_null(0.0).to_list()
        assert piece["timestamp"].equals(states["timestamp"])
    assert oos["timestamp"].is_sorted() and oos["timestamp"].n_unique() == oos.height
    growth = np.cumprod(1.0 + oos["return"].to_numpy())
    assert oos["equity"].to_numpy() == pytest.approx(growth, rel=1e-12)
    assert wf["oos"]["total_return"] == pytest.approx(growth[-1] - 1.0, rel=1e-12)
    page = (tmp_path / "sweep_report.html").read_text()
    assert "Walk-forward: stitched out-of-sample" in page
    assert page.count('src="data:image/png;base64,') == 4

    # a rerun reuses the stored out-of-sample runs
    files = sorted(p.name for p in (tmp_path / "trials").glob("*.json"))
    # the grid's trials and one run per test window
    assert len(TrialStore(tmp_path).keys()) == 6 + wf["n_folds"]
    again = write_outputs(sweep, run_sweep(sweep, tmp_path, prepared=prepared), tmp_path)
    assert again["summary"]["walk_forward"] == wf
    assert sorted(p.name for p in (tmp_path / "trials").glob("*.json")) == files


def test_cpcv_summary_on_the_sweeps_stored_trials(lab: Lab, tmp_path: Path) -> None:
    pytest.importorskip("skfolio", reason="the research extra (skfolio) is not installed")
    from ml4t_pipeline.lib.sweep.cpcv import cpcv_paths
    from ml4t_pipeline.lib.sweep.results import excess_matrix, returns_matrix

    body = dict(GRID) | {"cpcv": {"n_folds": 6, "n_test_folds": 2}}
    sweep = load_sweep_file(lab.write("cpcv", body))
    run = run_sweep(sweep, tmp_path, prepared={lab.prepared.key: lab.prepared})
    section = write_outputs(sweep, run, tmp_path)["summary"]["cpcv"]
    assert section["purge"] == 5  # the signal model's horizon
    assert (section["n_splits"], section["n_paths"]) == (15, 5)
    matrix, trials, _ = returns_matrix(run, tmp_path)
    direct = cpcv_paths(
        excess_matrix(sweep, matrix), n_folds=6, n_test_folds=2, purge=5, embargo=0,
        select="sharpe",
    )  # fmt: skip
    assert section["path_sharpe_annual"] == pytest.approx(
        (direct["path_sharpe"] * np.sqrt(252)).tolist()
    )
    assert "Combinatorial purged cross-validation" in (tmp_path / "sweep_report.html").read_text()


def test_sweep_path_refuses_unsafe_partition_key(tmp_path: Path) -> None:
    from ml4t_pipeline.defs import assets_sweep

    with pytest.raises(ValueError, match="not a safe file stem"):
        assets_sweep.sweep_path(tmp_path, "../../etc/x")
    with pytest.raises(FileNotFoundError, match="absent"):
        assets_sweep.sweep_path(tmp_path, "absent")


def test_python_sweep_api_equals_cli_and_resumes(lab: Lab, tmp_path: Path) -> None:
    from ml4t_pipeline import Sweep, SweepResult

    path = lab.write("api", GRID)
    out_cli, out_api = tmp_path / "cli", tmp_path / "api"
    for out in (out_cli, out_api):  # the data prepared once, as in the lab's seed run
        shutil.copytree(lab.seed / "prepared", out / "prepared")
    assert main(["sweep", str(path), "--output", str(out_cli)]) == 0

    sweep = Sweep.from_file(path)
    assert len(sweep) == 6 and sweep.name == "api"
    assert sweep.trials.columns == ["trial", "strategy.n", "risk_rules[0].stop_pct"]
    result = sweep.run(out_api)
    assert isinstance(result, SweepResult)
    timing = ["seconds", "cpu_seconds"]
    cli_table = pl.read_parquet(out_cli / "sweep_results.parquet").drop(timing)
    assert result.table.drop(timing).equals(cli_table)  # same trials, same metrics
    assert result.best is not None
    assert result.best["sharpe"] == result.table["sharpe"].max()
    assert (
        result.deflated_sharpe
        == _strict_json(out_api / "sweep_summary.json")["deflated_sharpe"]["dsr"]
    )
    assert result.report_path.is_file()
    row = result.table.row(2, named=True)
    assert result.returns(2).equals(TrialStore(out_api).load_returns(row["hash"]))
    with pytest.raises(KeyError, match="no trial 99"):
        result.returns(99)
    assert "Sweep api" in result._repr_html_() and "PBO" in result._repr_html_()
    assert result.verdict in result._repr_html_()
    assert result.spa_pvalue == result.summary["spa"]["spa_pvalue"]
    assert result.walk_forward is None  # no walk_forward in the file

    again = Sweep.from_file(path).run(out_api)  # resumed: nothing recomputed
    assert (again.summary["n_computed"], again.summary["n_reused"]) == (0, 6)

    body = experiment(GRID)
    in_memory = Sweep.from_dict(body, name="api")
    assert in_memory.trials.equals(sweep.trials)
    assert body["sweep"] == GRID  # the caller's mapping is not changed
    with pytest.raises(ConfigError, match="strategy.nn"):
        Sweep.from_dict(experiment({"grid": {"strategy.nn": [1]}}))
    with pytest.raises(ValueError, match="unknown backend"):
        sweep.run(tmp_path / "x", backend="dask")
