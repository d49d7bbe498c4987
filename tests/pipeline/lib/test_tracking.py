"""MLflow tracking (issue 26): a backtest logged as an MLflow run, read back via MlflowClient."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from ml4t_pipeline.config import load_config
from ml4t_pipeline.lib import tracking
from ml4t_pipeline.runner import materialize_experiment
from tests.pipeline.helpers import demo_config

mlflow_client = pytest.importorskip("mlflow.tracking", reason="the tracking extra is not installed")


def test_flatten_params_dotted_keys_lists_and_nulls() -> None:
    flat = tracking.flatten_params(
        {"strategy": {"n": 25, "signal": "score"}, "risk_rules": [{"stop_pct": 0.05}], "x": None}
    )
    assert flat == {
        "strategy.n": "25",
        "strategy.signal": "score",
        "risk_rules.0.stop_pct": "0.05",
        "x": "null",
    }
    assert tracking.flatten_params({"long": "a" * 7000})["long"].endswith("...")


def test_log_backtest_reads_back_params_metrics_tags_artifacts(tmp_path: Path) -> None:
    uri = tracking.default_tracking_uri(tmp_path / "store")
    report = tmp_path / "report.html"
    report.write_text("<html>report</html>")
    params = {f"section.key{i}": i for i in range(150)}  # more than one MLflow batch
    run = tracking.log_backtest(
        tracking_uri=uri,
        experiment="demo",
        run_name="demo abc",
        params=params,
        metrics={"sharpe": 0.5, "n_trades": 12, "flag": True, "bad": float("nan")},
        artifacts=[report],
        tags={"dagster.partition": "demo"},
    )
    client = mlflow_client.MlflowClient(tracking_uri=uri)
    stored = client.get_run(run.run_id)
    assert stored.data.metrics == {"sharpe": 0.5, "n_trades": 12.0}
    assert len(stored.data.params) == 150
    assert stored.data.params["section.key7"] == "7"
    assert stored.data.tags["dagster.partition"] == "demo"
    assert stored.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["report.html"]
    # the artifacts sit beside the SQLite file, not in ./mlruns of the working directory
    assert (tmp_path / "store" / "mlartifacts").is_dir()
    assert run.artifact_uri.startswith((tmp_path / "store" / "mlartifacts").as_uri())
    child = tracking.log_backtest(
        tracking_uri=uri, experiment="demo", run_name="trial 1", params={}, metrics={},
        parent_run_id=run.run_id,
    )  # fmt: skip
    assert client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == run.run_id


def test_tracking_settings_do_not_change_the_config_hash(tmp_path: Path) -> None:
    plain = load_config(demo_config(tmp_path / "a"))
    tracked = load_config(
        demo_config(tmp_path / "b", ("reporting:", "tracking: {mlflow: {}}\nreporting:"))
    )
    assert tracked.tracking.mlflow is not None
    assert tracked.config_hash() == plain.config_hash()


def test_demo_report_asset_logs_run_and_shows_its_id(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = demo_config(
        tmp_path / "configs",
        (
            "reporting:",
            f"tracking: {{mlflow: {{uri: '{uri}', experiment: ml4t-demo}}}}\nreporting:",
        ),
    )
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_experiment(config, tmp_path / "storage", instance=instance)
    assert result.success
    record = instance.fetch_materializations(dg.AssetKey("performance_report"), limit=1).records[0]
    materialization = record.event_log_entry.asset_materialization
    assert materialization is not None
    run_id = materialization.metadata["mlflow_run_id"].value
    client = mlflow_client.MlflowClient(tracking_uri=uri)
    stored = client.get_run(run_id)
    metrics = json.loads((tmp_path / "storage" / "metrics" / "demo.json").read_text())
    assert stored.data.metrics["sharpe"] == pytest.approx(metrics["sharpe"])
    assert stored.data.metrics["n_trades"] == metrics["n_trades"]
    assert stored.data.params["strategy.n"] == "2"
    assert stored.data.tags["dagster.run_id"] == result.run_id
    assert stored.data.tags["dagster.partition"] == "demo"
    assert stored.data.tags["ml4t.config_hash"] == load_config(config).config_hash()
    assert sorted(a.path for a in client.list_artifacts(run_id)) == [
        "report.html",
        "trades.parquet",
    ]
    assert client.get_experiment(stored.info.experiment_id).name == "ml4t-demo"


def test_sweep_logs_a_parent_run_and_a_child_per_trial(tmp_path: Path) -> None:
    from ml4t_pipeline.sweeps import Sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    body = {
        "data": {"prices": "demo", "symbols": ["AAPL", "MSFT", "IBM"], "max_fill_bars": 0},
        "strategy": {"type": "TopN", "signal": "score", "n": 1, "rebalance_every": 5},
        "execution": {"initial_cash": 100000},
        "tracking": {"mlflow": {"uri": uri, "experiment": "sweeps"}},
        "sweep": {"grid": {"strategy.n": [1, 2]}},
    }
    result = Sweep.from_dict(body, name="tiny").run(tmp_path / "sweep", backend="serial")
    assert result.mlflow_run_id is not None
    client = mlflow_client.MlflowClient(tracking_uri=uri)
    parent = client.get_run(result.mlflow_run_id)
    assert parent.data.metrics["n_trials"] == 2
    assert parent.data.params["strategy.rebalance_every"] == "5"
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.mlflow_run_id}'",
    )
    by_trial = {int(run.data.tags["ml4t.trial"]): run for run in children}
    assert sorted(by_trial) == [0, 1]
    for row in result.table.iter_rows(named=True):
        child = by_trial[row["trial"]]
        assert child.data.params["strategy.n"] == str(row["strategy.n"])
        assert child.data.metrics["sharpe"] == pytest.approx(row["sharpe"])
        assert child.data.tags["ml4t.trial_hash"] == row["hash"]
