"""The ``sweep:`` block: grid and random expansion, paths, validation before any trial runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ml4t_pipeline.cli import main
from ml4t_pipeline.config import ConfigError
from ml4t_pipeline.lib.sweep import spec
from tests.conftest import REPO_ROOT


def _base(sweep: dict[str, Any]) -> dict[str, Any]:
    raw = yaml.safe_load((REPO_ROOT / "configs" / "demo.yaml").read_text())
    raw["sweep"] = sweep
    return raw


def _write(tmp_path: Path, sweep: dict[str, Any], name: str = "s.yaml") -> Path:
    path = tmp_path / name
    raw = _base(sweep)
    path.write_text(
        json.dumps(raw) if name.endswith(".json") else yaml.safe_dump(raw, sort_keys=False)
    )
    return path


GRID = {
    "grid": {
        "strategy.n": [1, 2, 3],
        "risk_rules[0].stop_pct": [0.03, 0.05],
        "execution.commission.rate": [0.0, 0.002],
    }
}


def test_load_sweep_file_grid_is_cartesian_product_in_file_order(tmp_path: Path) -> None:
    sweep = spec.load_sweep_file(_write(tmp_path, GRID))
    assert len(sweep.trials) == 3 * 2 * 2
    first, last = sweep.trials[0], sweep.trials[-1]
    assert first.params == {
        "strategy.n": 1,
        "risk_rules[0].stop_pct": 0.03,
        "execution.commission.rate": 0.0,
    }
    assert last.config.strategy.n == 3
    assert last.config.risk_rules[0]["stop_pct"] == 0.05
    assert last.config.execution.commission == {"type": "Percentage", "rate": 0.002}
    # untouched fields keep the base's values; the sweep block is gone from the configs
    assert last.config.risk_rules[1] == sweep.base.risk_rules[1]
    assert sweep.base.strategy.n == 2 and "sweep" not in sweep.raw
    assert [t.index for t in sweep.trials] == list(range(12))
    assert len({t.config_json() for t in sweep.trials}) == 12


def test_load_sweep_file_json_equals_yaml(tmp_path: Path) -> None:
    from_yaml = spec.load_sweep_file(_write(tmp_path, GRID, "s.yaml"))
    from_json = spec.load_sweep_file(_write(tmp_path, GRID, "s.json"))
    assert [t.config_json() for t in from_json.trials] == [
        t.config_json() for t in from_yaml.trials
    ]


def test_load_sweep_file_random_is_seeded_and_within_bounds(tmp_path: Path) -> None:
    block = {
        "random": {
            "n_trials": 30,
            "seed": 7,
            "params": {
                "strategy.n": {"type": "int", "low": 1, "high": 3},
                "risk_rules[0].stop_pct": {"type": "uniform", "low": 0.02, "high": 0.1},
                "execution.commission.rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
                "strategy.rebalance_every": [1, 5, 21],
            },
        }
    }
    a = spec.load_sweep_file(_write(tmp_path, block, "a.yaml"))
    b = spec.load_sweep_file(_write(tmp_path, block, "b.yaml"))
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    ns = {t.params["strategy.n"] for t in a.trials}
    assert ns <= {1, 2, 3} and 3 in ns  # inclusive upper bound is reached
    for t in a.trials:
        assert 0.02 <= t.params["risk_rules[0].stop_pct"] < 0.1
        assert 1e-4 <= t.params["execution.commission.rate"] < 1e-2
        assert t.params["strategy.rebalance_every"] in (1, 5, 21)
    block["random"]["seed"] = 8
    c = spec.load_sweep_file(_write(tmp_path, block, "c.yaml"))
    assert [t.params for t in c.trials] != [t.params for t in a.trials]


def test_load_sweep_file_random_duplicate_draws_kept_once(tmp_path: Path) -> None:
    block = {"random": {"n_trials": 50, "seed": 1, "params": {"strategy.n": [1, 2]}}}
    sweep = spec.load_sweep_file(_write(tmp_path, block))
    assert sorted(t.params["strategy.n"] for t in sweep.trials) == [1, 2]


@pytest.mark.parametrize(
    "path, message",
    [
        ("strategy.nn", "unknown field 'strategy.nn'"),
        ("risk_rules[5].stop_pct", "risk_rules[5] does not exist"),
        ("strategy[0]", "strategy is not a list"),
        ("risk_rules[0].stop_pct.x", "risk_rules[0].stop_pct is not a mapping"),
        ("sweeps.x", "unknown field 'sweeps'"),
        ("strategy..n", "malformed"),
    ],
)
def test_load_sweep_file_unknown_path_refused_naming_it(
    tmp_path: Path, path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        spec.load_sweep_file(_write(tmp_path, {"grid": {path: [1]}}))
    assert path in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(
    "path, values, message",
    [
        ("strategy.n", [2, 0], "strategy.n=0"),
        ("execution.fill", ["next_open", "tomorrow"], "execution.fill='tomorrow'"),
        ("execution.commission.rat", [0.1], "execution.commission"),
        ("risk_rules[0].stop_pct", [0.05, -1.0], "risk_rules[0].stop_pct=-1.0"),
    ],
)
def test_load_sweep_file_bad_value_refused_naming_path(
    tmp_path: Path, path: str, values: list[Any], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        spec.load_sweep_file(_write(tmp_path, {"grid": {path: values}}))
    assert message in str(err.value)


@pytest.mark.parametrize(
    "block, message",
    [
        ({}, "exactly one of 'grid' and 'random'"),
        (
            {"grid": {"strategy.n": [1]}, "random": {"n_trials": 2, "params": {"strategy.n": [1]}}},
            "exactly one",
        ),  # fmt: skip
        ({"grid": {"strategy.n": []}}, "strategy.n: needs at least one value"),
        ({"grid": {"strategy.n": [1]}, "axes": ["strategy.rebalance_every"]}, "not a swept path"),
        ({"grid": {"strategy.n": [1]}, "pbo_splits": 5}, "even"),
        ({"grid": {"strategy.n": [1]}, "bogus": 1}, "sweep.bogus"),
        (
            {
                "random": {
                    "n_trials": 3,
                    "params": {"strategy.n": {"type": "int", "low": 5, "high": 1}},
                }
            },
            "at least low",
        ),  # fmt: skip
    ],
)
def test_load_sweep_file_bad_block_refused(
    tmp_path: Path, block: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match="sweep") as err:
        spec.load_sweep_file(_write(tmp_path, block))
    assert message in str(err.value)


def test_load_sweep_file_without_block_or_missing_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no 'sweep:' block"):
        spec.load_sweep_file(REPO_ROOT / "configs" / "demo.yaml")
    with pytest.raises(ConfigError, match="not found"):
        spec.load_sweep_file(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        spec.load_sweep_file(bad)


def test_shipped_sweep_configs_expand() -> None:
    files = sorted((REPO_ROOT / "configs" / "sweeps").glob("*.y*ml"))
    assert files, "configs/sweeps/ has no example sweep"
    for path in files:
        sweep = spec.load_sweep_file(path)
        assert sweep.trials and sweep.name == path.stem


def test_cli_sweep_bad_file_exits_2_naming_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, {"grid": {"strategy.nn": [1]}})
    assert main(["sweep", str(path), "--output", str(tmp_path / "out")]) == 2
    assert "strategy.nn" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_monthly_stream_refused_in_a_sweep(tmp_path: Path) -> None:
    path = _write(tmp_path, {"grid": {"data.stream": ["whole", "monthly"]}})
    with pytest.raises(ConfigError, match=r"trial 1 \(data.stream='monthly'\).*not available"):
        spec.load_sweep_file(path)


def test_cli_run_on_sweep_file_refused_naming_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, GRID)
    assert main(["run", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "is a sweep file" in err and f"ml4t sweep {path}" in err
    assert "Extra inputs" not in err  # not pydantic's message about an unknown key
    assert not (tmp_path / "out").exists()


def test_parse_path_tokens() -> None:
    assert spec.parse_path("risk_rules[0].stop_pct") == ["risk_rules", 0, "stop_pct"]
    assert spec.parse_path("execution.commission.rate") == ["execution", "commission", "rate"]
    for bad in ("", "[0].x", "a.", "a b"):
        with pytest.raises(ValueError):
            spec.parse_path(bad)


def test_sweep_stats_gates_walk_forward_defaults_and_values(tmp_path: Path) -> None:
    plain = spec.load_sweep_file(_write(tmp_path, GRID)).spec
    assert (plain.stats.bootstrap_reps, plain.stats.seed, plain.stats.alpha) == (1000, 0, 0.05)
    assert plain.gates.best_trial_dsr_at_least == 0.95 and plain.gates.pbo_at_most == 0.5
    assert plain.gates.spa_pvalue_at_most == 0.05 and plain.gates.blocking is False
    assert plain.walk_forward is None
    block = GRID | {
        "stats": {"bootstrap_reps": 200, "seed": 3, "block_size": 10},
        "gates": {"pbo_at_most": 0.3, "blocking": True},
        "walk_forward": {"train": "3y", "test": "1y", "select": "dsr", "embargo": 2},
    }
    loaded = spec.load_sweep_file(_write(tmp_path, block, "b.yaml")).spec
    assert loaded.stats.block_size == 10 and loaded.gates.blocking is True
    assert loaded.walk_forward is not None
    assert loaded.walk_forward.offsets() == ((3, "years"), (1, "years"), (1, "years"))
    assert loaded.walk_forward.purge is None and loaded.walk_forward.embargo == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"stats": {"bootstrap_reps": 5}}, "bootstrap_reps must be 0"),
        ({"gates": {"pbo_at_most": 1.5}}, "sweep.gates.pbo_at_most"),
        ({"gates": {"dsr_min": 0.9}}, "sweep.gates.dsr_min"),
        ({"walk_forward": {"train": 100}}, "sweep.walk_forward.test"),
        ({"walk_forward": {"train": "3y", "test": 50}}, "all be bar counts or all calendar"),
    ],
)
def test_sweep_block_bad_statistics_settings_refused(
    tmp_path: Path, extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        spec.load_sweep_file(_write(tmp_path, GRID | extra))


def test_walk_forward_refuses_swept_backtest_window(tmp_path: Path) -> None:
    block = {
        "grid": {"strategy.n": [1, 2], "backtest.start": ["2012-01-03"]},
        "walk_forward": {"train": 100, "test": 50},
    }
    with pytest.raises(ConfigError, match=r"do not also sweep \['backtest.start'\]"):
        spec.load_sweep_file(_write(tmp_path, block))
