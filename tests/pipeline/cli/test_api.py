"""The Python API: ``Experiment(...).run()`` gives what ``ml4t run`` gives, read as frames."""

from __future__ import annotations

import base64
import gc
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from ml4t_pipeline import Experiment, ExperimentResult
from ml4t_pipeline.api import HEADLINE_METRICS, ExperimentFailed
from ml4t_pipeline.config import ConfigError, ExperimentConfig
from ml4t_pipeline.defs.resources import BUILT_IN_CODE, ExperimentsResource
from ml4t_pipeline.lib import progress as progress_lib
from ml4t_pipeline.lib.report import PNG_MAGIC, format_metric
from ml4t_pipeline.runner import run_prices
from tests.pipeline.helpers import SMALL

FRAMES = ("trades", "fills", "portfolio_states", "rejections")


@pytest.fixture(scope="module")
def cli_run(api_small_cli_output: Path) -> Path:
    """``ml4t run`` on the SMALL config written as a YAML file (``configs/api_small.yaml``).

    Run as the console command in a niced, untraced child started at collection
    (``tests/background.py``); it exited 0. The tests only read the folder.
    """
    return api_small_cli_output


@pytest.fixture(scope="module")
def api_result() -> ExperimentResult:
    """The same config built in code, run into a temporary folder."""
    return Experiment.from_dict(SMALL).run()


def test_api_run_outputs_equal_cli_run_outputs(cli_run: Path, api_result: ExperimentResult):
    for name in FRAMES:
        from_cli = pl.read_parquet(cli_run / f"{name}.parquet")
        assert getattr(api_result, name).equals(from_cli), name
    assert api_result.trades.height > 0
    cli_metrics = json.loads((cli_run / "metrics.json").read_text())
    assert api_result.metrics.keys() == cli_metrics.keys()
    for key, value in cli_metrics.items():
        if value is None:
            assert np.isnan(api_result.metrics[key]), key
        else:
            assert api_result.metrics[key] == value, key
    cli_lineage = json.loads((cli_run / "lineage.json").read_text())
    assert api_result.lineage["config_hash"] == cli_lineage["config_hash"]


def test_api_run_result_reads_the_output_folder_files(api_result: ExperimentResult):
    out = api_result.output
    assert (out / "run.json").is_file()
    assert api_result.portfolio_states.equals(pl.read_parquet(out / "portfolio_states.parquet"))
    assert api_result.metrics["n_trades"] == api_result.trades.height
    assert api_result.metrics["final_equity"] == pytest.approx(
        api_result.portfolio_states["equity"][-1]
    )


def test_api_report_returns_the_html_or_its_path(api_result: ExperimentResult):
    text = api_result.report()
    assert isinstance(text, str) and text.lstrip().lower().startswith("<!doctype html")
    path = api_result.report(as_path=True)
    assert path == api_result.output / "report.html" and path.read_text() == text


def test_api_plot_equity_draws_the_equity_column(api_result: ExperimentResult):
    fig = api_result.plot_equity()
    (line,) = fig.axes[0].get_lines()
    assert np.array_equal(line.get_ydata(), api_result.portfolio_states["equity"].to_numpy())


def test_api_plot_drawdown_draws_the_drawdown_column_into_given_axes(api_result):
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    assert api_result.plot_drawdown(ax=ax) is fig
    (line,) = ax.get_lines()
    drawdown = api_result.portfolio_states["drawdown"].to_numpy()
    assert np.array_equal(line.get_ydata(), drawdown)
    assert drawdown.max() <= 0.0 and drawdown.min() == pytest.approx(
        api_result.metrics["max_drawdown"]
    )


def test_api_repr_html_shows_headline_metrics_and_an_equity_png(api_result):
    markup = api_result._repr_html_()
    for name in HEADLINE_METRICS:
        shown = format_metric(name, api_result.metrics[name])
        assert f"<th style='text-align:left'>{name}</th>" in markup
        assert f"<td style='text-align:right'>{shown}</td>" in markup
    (payload,) = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", markup)
    assert base64.b64decode(payload).startswith(PNG_MAGIC)


def test_api_run_without_output_writes_into_a_folder_the_result_keeps(api_result):
    kept = [Path(folder.name) for folder in api_result._keep]
    assert len(kept) == 1 and api_result.output.is_relative_to(kept[0])
    # no config file was written for the in-code config, in the kept folder or beside it
    assert not [p for p in kept[0].rglob("*") if p.suffix in (".yaml", ".yml")]


def test_api_run_in_code_config_recorded_as_object_not_file(api_result):
    manifest = json.loads((api_result.output / "run.json").read_text())
    assert manifest["config_path"] is None and manifest["partition_key"] == "api_small"
    canonical = json.dumps(api_result.config.model_dump(mode="json", by_alias=True), sort_keys=True)
    assert manifest["config_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert BUILT_IN_CODE in api_result.report()  # the report's lineage: no file to name
    # the stored prices are found by the partition key (the report rebuild reads them)
    prices = run_prices(api_result.output, manifest)
    assert prices is not None and prices.height > 0


def test_api_run_hands_the_validated_config_object_to_the_runner(monkeypatch, tmp_path):
    handed: list[object] = []

    def fake_run(experiment, output, *, validate):
        handed.append(experiment)
        return output

    monkeypatch.setattr("ml4t_pipeline.api._run_to_folder", fake_run)
    exp = Experiment.from_dict(SMALL)
    exp.run(tmp_path / "out")
    exp.run(tmp_path / "out", start="2012-01-03")  # a window: a new object, still no file
    assert handed[0] is exp.config
    assert isinstance(handed[1], ExperimentConfig)
    assert str(handed[1].backtest.start) == "2012-01-03" and handed[1].name == "api_small"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written by the API


def test_experiments_resource_inline_config_loads_without_a_file():
    cfg = ExperimentConfig.model_validate(SMALL)
    resource = ExperimentsResource(
        configs_dir="/nonexistent", inline={"api_small": cfg.model_dump_json(by_alias=True)}
    )
    assert resource.load("api_small") == cfg
    assert resource.source("api_small") == BUILT_IN_CODE
    with pytest.raises(FileNotFoundError, match="built in code"):
        resource.config_path("api_small")
    with pytest.raises(FileNotFoundError, match="no other"):
        resource.load("other")


def test_api_save_writes_a_yaml_record_that_runs_as_the_same_config(tmp_path: Path):
    exp = Experiment.from_dict(SMALL)
    path = exp.save(tmp_path / "records" / "api_small.yaml")
    assert path.is_file()
    again = Experiment.from_file(path)
    assert again.path == path and again.config == exp.config
    assert again.config.config_hash() == exp.config.config_hash()


def test_api_save_refuses_a_non_yaml_suffix(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"\.yaml or \.yml"):
        Experiment.from_dict(SMALL).save(tmp_path / "api_small.json")
    assert not (tmp_path / "api_small.json").exists()


def test_api_from_dict_without_name_is_refused_naming_the_field():
    raw = {k: v for k, v in SMALL.items() if k != "name"}
    with pytest.raises(ConfigError, match=r"from_dict: invalid experiment config:\n  name:"):
        Experiment.from_dict(raw)


def test_api_cleanup_removes_the_temporary_folders(tmp_path: Path):
    import tempfile

    holder = tempfile.TemporaryDirectory(dir=tmp_path)
    result = ExperimentResult(Path(holder.name), ExperimentConfig(name="x"), _keep=[holder])
    assert Path(holder.name).is_dir()
    result.cleanup()
    assert not Path(holder.name).exists()


def test_api_temporary_folder_deleted_when_result_is_collected(tmp_path: Path):
    import tempfile

    holder = tempfile.TemporaryDirectory(dir=tmp_path)
    path = Path(holder.name)
    result = ExperimentResult(path, ExperimentConfig(name="x"), _keep=[holder])
    del holder, result
    gc.collect()
    assert not path.exists()


def test_api_from_dict_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"execution\.fil") as info:
        Experiment.from_dict(SMALL | {"execution": {"fil": "close"}})
    assert "ml4t-config-" not in str(info.value)  # the temporary file is not what is named


def test_api_from_dict_bad_rule_parameter_is_named():
    bad = SMALL | {"risk_rules": [{"type": "PriceBasedStopLoss", "stop_pct": -1}]}
    with pytest.raises(ConfigError, match=r"risk_rules\[0\]"):
        Experiment.from_dict(bad)


def test_api_from_dict_refuses_non_plain_values():
    with pytest.raises(ConfigError, match="not plain data"):
        Experiment.from_dict(SMALL | {"description": object()})


def test_api_config_object_and_dict_give_the_same_experiment():
    from_dict = Experiment.from_dict(SMALL)
    from_object = Experiment(ExperimentConfig.model_validate(SMALL))
    assert from_object.config == from_dict.config
    assert from_object.config.config_hash() == from_dict.config.config_hash()
    assert yaml.safe_load(from_object.to_yaml())["strategy"]["n"] == 1


def test_api_config_object_with_unbuildable_rule_refused():
    cfg = ExperimentConfig.model_validate(SMALL | {"risk_rules": [{"type": "NoSuchRule"}]})
    with pytest.raises(ConfigError, match="NoSuchRule"):
        Experiment(cfg)


def test_api_from_file_runs_the_file_unless_a_sibling_shadows_it(tmp_path: Path):
    json_alone = tmp_path / "alone" / "api_small.json"
    json_alone.parent.mkdir()
    json_alone.write_text(json.dumps(SMALL))
    assert Experiment.from_file(json_alone).path == json_alone  # runs as it is
    yaml_file = tmp_path / "api_small.yaml"
    yaml_file.write_text(yaml.safe_dump(SMALL))
    json_file = tmp_path / "api_small.json"
    json_file.write_text(json.dumps(SMALL))
    from_yaml = Experiment.from_file(yaml_file)
    from_json = Experiment.from_file(json_file)
    assert from_yaml.path == yaml_file
    # `ml4t run`'s lookup of stem api_small finds the YAML first: the JSON's config is handed
    # to the run as an object instead of running the wrong file
    assert from_json.path is None
    assert from_json.config == from_yaml.config


def test_api_from_file_missing_file_raises_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        Experiment.from_file(tmp_path / "nope.yaml")


def test_api_run_with_invalid_prices_raises_naming_the_row(tmp_path, monkeypatch):
    from ml4t_pipeline.lib.io import load_demo_prices

    prices = load_demo_prices().filter(pl.col("symbol").is_in(["AAPL", "MSFT"]))
    bad_day = prices["timestamp"][100]
    prices = prices.with_columns(
        pl.when((pl.col("symbol") == "MSFT") & (pl.col("timestamp") == bad_day))
        .then(pl.col("low") - 1.0)
        .otherwise(pl.col("high"))
        .alias("high"),
        pl.col("timestamp").dt.convert_time_zone("America/New_York").dt.date(),
    )
    prices.write_parquet(tmp_path / "prices.parquet")
    monkeypatch.setenv("ML4T_DATA_ROOT", str(tmp_path))
    exp = Experiment.from_dict(SMALL | {"name": "api_bad", "data": {"prices": "prices.parquet"}})
    out = tmp_path / "out"
    with pytest.raises(ExperimentFailed, match="high_at_or_above_low") as info:
        exp.run(out)
    assert "MSFT" in str(info.value)
    assert not (out / "trades.parquet").exists()


# --- progress ---------------------------------------------------------------------------------


def test_progress_silent_under_pytest_writes_nothing():
    stream = io.StringIO()
    with progress_lib.progress("x", total=2, stream=stream) as bar:
        bar.advance(2)
    assert stream.getvalue() == "" and not bar.shown and bar.completed == 2


def test_progress_forced_draws_description_and_count_on_the_stream():
    stream = io.StringIO()
    with progress_lib.progress("trials", total=3, force=True, stream=stream) as bar:
        bar.advance()
        bar.update("trials (cached)")
        bar.advance(2)
    text = stream.getvalue()
    assert bar.shown and "trials (cached)" in text and "3/3" in text


@pytest.mark.parametrize(
    ("env", "tty", "expected"),
    [
        ({"ML4T_PROGRESS": "1", "CI": "true"}, False, True),
        ({"ML4T_PROGRESS": "0"}, True, False),
        ({"CI": "true"}, True, False),
        ({}, True, True),
        ({}, False, False),
    ],
)
def test_progress_enabled_follows_env_and_tty(monkeypatch, env, tty, expected):
    for name in ("ML4T_PROGRESS", "CI", "PYTEST_CURRENT_TEST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    assert progress_lib.progress_enabled(stream=Stream()) is expected


def test_api_from_folder_opens_a_cli_output_folder(cli_run: Path, api_result):
    opened = ExperimentResult.from_folder(cli_run, api_result.config)
    assert opened.trades.equals(api_result.trades)
    assert repr(opened).startswith("ExperimentResult('api_small', total_return=")


def test_api_from_folder_refuses_a_folder_without_outputs(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no trades.parquet"):
        ExperimentResult.from_folder(tmp_path, ExperimentConfig(name="x"))


def test_api_figure_renders_itself_as_png(api_result):
    png = api_result.plot_equity()._repr_png_()
    assert png.startswith(PNG_MAGIC)


def test_api_in_code_user_strategy_class_survives_the_round_trip():
    # `class` is an alias (`class_` in Python): the plain data must use the file's key.
    strategy = {
        "class": "engine.strategies.TopNStrategy",
        "signal": "score",
        "params": {"signal": "score", "n": 1},
    }
    exp = Experiment(ExperimentConfig.model_validate(SMALL | {"strategy": strategy}))
    assert exp.config.strategy.class_ == "engine.strategies.TopNStrategy"
    assert yaml.safe_load(exp.to_yaml())["strategy"]["class"] == strategy["class"]
