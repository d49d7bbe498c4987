"""The backtest window from the config, the Python API and a sweep grid (issue 24.6):
``backtest: {start, end}`` restricts the engine run, not the data preparation."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal

from ml4t_pipeline import Experiment, api
from ml4t_pipeline.config import ConfigError, ExperimentConfig, load_config
from ml4t_pipeline.lib import reconcile
from ml4t_pipeline.lib.experiment import (
    build_engine,
    market_data,
    restrict_to_window,
    run_experiment,
)
from ml4t_pipeline.lib.sweep import spec
from ml4t_pipeline.lib.sweep.runner import run_trial

T0 = datetime(2024, 1, 1, 21, tzinfo=UTC)  # bar k closes at T0 + k days


def _panel(n_bars: int = 40) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Three symbols on a seeded random walk with a score that changes the ranking."""
    rng = np.random.default_rng(7)
    rows: list[dict[str, Any]] = []
    for symbol in ("AAA", "BBB", "CCC"):
        closes = 50.0 * np.cumprod(1 + rng.normal(0, 0.02, n_bars))
        scores = rng.normal(size=n_bars)
        for k in range(n_bars):
            c = float(closes[k])
            rows.append(
                {
                    "timestamp": T0 + timedelta(days=k),
                    "symbol": symbol,
                    "open": c,
                    "high": c * 1.01,
                    "low": c * 0.99,
                    "close": c,
                    "volume": 1e6,
                    "score": float(scores[k]),
                }
            )
    panel = pl.DataFrame(rows).with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))
    context = panel.select("timestamp").unique().sort("timestamp")
    return panel, context


def _cfg(**backtest: Any) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "name": "w",
            "strategy": {"type": "TopN", "signal": "score", "n": 1},
            "risk_rules": [{"type": "PriceBasedStopLoss", "stop_pct": 0.03}],
            "execution": {"initial_cash": 100_000, "close_at_end": True},
            "backtest": backtest,
        }
    )


# --- YAML ---------------------------------------------------------------------------------------


def test_yaml_backtest_window_dates_and_datetimes_parse(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("name: w\nbacktest:\n  start: 2015-01-02\n  end: 2016-06-30T20:00:00Z\n")
    cfg = load_config(path)
    assert cfg.backtest.start == date(2015, 1, 2)
    assert cfg.backtest.end == datetime(2016, 6, 30, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("backtest:\n  start: 2015-01-02 21:00\n", r"backtest\.start.*no timezone"),
        ("backtest:\n  start: 2016-01-01\n  end: 2015-01-01\n", "start 2016-01-01 is after end"),
        ("backtest:\n  begin: 2015-01-01\n", r"backtest\.begin"),
    ],
)
def test_yaml_bad_backtest_window_names_the_key(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("name: w\n" + text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_config_hash_unchanged_without_a_window() -> None:
    assert (
        ExperimentConfig(name="w").config_hash()
        == ExperimentConfig(name="w", backtest={}).config_hash()
    )
    assert ExperimentConfig(name="w").config_hash() != _cfg(start="2024-01-10").config_hash()


# --- the run ------------------------------------------------------------------------------------


def test_run_experiment_window_equals_engine_run_on_cut_panel() -> None:
    panel, context = _panel()
    start, end = T0 + timedelta(days=10), (T0 + timedelta(days=29)).date()
    result = run_experiment(_cfg(start=start, end=end), panel, context, ["score"], [])
    last = T0 + timedelta(days=29)
    cut = panel.filter(pl.col("timestamp").is_between(start, last))
    plain = build_engine(_cfg(), market_data(cut, context, ["score"], [])).run()
    for name in ("trades", "fills", "portfolio_states"):
        assert_frame_equal(getattr(result, name), getattr(plain, name))
    states = result.portfolio_states
    assert states["timestamp"].to_list()[0] == start and states["timestamp"].to_list()[-1] == last
    assert result.trades["exit_timestamp"].max() == last  # close_at_end at the window's end


def test_run_experiment_window_with_no_bar_raises() -> None:
    panel, context = _panel()
    with pytest.raises(ValueError, match="holds no bar"):
        run_experiment(_cfg(start="2030-01-01"), panel, context, ["score"], [])


def test_equity_reconciliation_of_a_window_run_uses_the_window_rows() -> None:
    """The ``portfolio_states`` check rebuilds equity from the fills and the panel: over the
    window's rows it matches; over the whole panel every bar outside the window would not."""
    panel, context = _panel()
    cfg = _cfg(start="2024-01-11", end="2024-01-30")
    result = run_experiment(cfg, panel, context, ["score"], [])
    states, fills = result.portfolio_states, result.fills
    window = restrict_to_window(panel, cfg)
    assert window["timestamp"].unique().sort().to_list() == states["timestamp"].to_list()
    assert reconcile.equity_mismatches(states, fills, window, initial_cash=100_000).height == 0
    outside = reconcile.equity_mismatches(states, fills, panel, initial_cash=100_000)
    assert outside.height == 40 - states.height
    assert restrict_to_window(panel, _cfg()) is panel


# --- Python API ---------------------------------------------------------------------------------


def test_experiment_run_start_end_run_the_config_with_that_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[ExperimentConfig] = []

    def fake_run(experiment: Path | ExperimentConfig, output: Path, *, validate: bool) -> Path:
        assert isinstance(experiment, ExperimentConfig)  # handed over as the object, no file
        seen.append(experiment)
        return output

    monkeypatch.setattr(api, "_run_to_folder", fake_run)
    exp = Experiment(_cfg(end="2024-02-01"))
    result = exp.run(tmp_path / "out", start="2024-01-10")
    assert seen[0].backtest.start == date(2024, 1, 10)
    assert seen[0].backtest.end == date(2024, 2, 1)  # kept from the config
    assert result.config.backtest == seen[0].backtest
    assert exp.config.backtest.start is None  # the experiment itself is unchanged
    with pytest.raises(ConfigError, match="after end"):
        exp.run(tmp_path / "bad", start="2024-03-01")


# --- sweep grid ---------------------------------------------------------------------------------


def test_sweep_grid_over_windows_runs_each_window_on_one_panel() -> None:
    raw = _cfg().model_dump(mode="json")
    raw["sweep"] = {
        "grid": {
            "backtest": [
                {"start": date(2024, 1, 5), "end": date(2024, 1, 20)},
                {"start": date(2024, 1, 21), "end": date(2024, 2, 5)},
            ],
            "strategy.n": [1, 2],
        }
    }
    sweep = spec.sweep_from_mapping(yaml.safe_load(yaml.safe_dump(raw)), "walk.yaml")
    assert len(sweep.trials) == 4
    first = sweep.trials[0]
    assert first.params["backtest"] == {"start": "2024-01-05", "end": "2024-01-20"}
    assert first.config.backtest.start == date(2024, 1, 5)
    assert len({spec.data_key(t.config) for t in sweep.trials}) == 1  # one prepared panel
    panel, context = _panel()
    market = market_data(panel, context, ["score"], [])
    for trial in sweep.trials:
        outcome = run_trial(trial.config.model_dump_json(), market)  # as the runner does
        assert outcome.status == "ok", outcome.error
        assert outcome.timestamps is not None
        stamps = pl.Series(outcome.timestamps).cast(pl.Datetime("us", "UTC")).dt.date()
        window = trial.config.backtest
        assert stamps.min() == window.start and stamps.max() == window.end


def test_sweep_path_backtest_start_is_sweepable() -> None:
    raw = _cfg(end="2024-02-05").model_dump(mode="json")
    raw["sweep"] = {"grid": {"backtest.start": ["2024-01-05", "2024-01-21"]}}
    sweep = spec.sweep_from_mapping(raw, "starts.yaml")
    assert [t.config.backtest.start for t in sweep.trials] == [date(2024, 1, 5), date(2024, 1, 21)]
    assert all(t.config.backtest.end == date(2024, 2, 5) for t in sweep.trials)
