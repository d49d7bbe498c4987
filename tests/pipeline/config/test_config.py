"""Experiment configs: the shipped files validate; bad ones fail with the offending key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from ml4t_pipeline.config import (
    ConfigError,
    DataPathError,
    ExperimentConfig,
    FileSignalsConfig,
    ModelSignalsConfig,
    data_paths,
    load_config,
    resolve_data_path,
    resolve_data_root,
)
from tests.conftest import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_load_config_shipped_files_validate(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.name == path.stem
    assert len(cfg.config_hash()) == 16


def test_load_config_sp500_matches_issue_parameters() -> None:
    cfg = load_config(REPO_ROOT / "configs" / "sp500_top25.yaml")
    assert cfg.strategy.n == 25
    assert cfg.execution.initial_cash == 1_000_000
    assert cfg.execution.commission == {"type": "Percentage", "rate": 0.001}
    assert cfg.data.invalid_rows == "quarantine"
    rules = {r["type"]: r for r in cfg.risk_rules}
    assert rules["PriceBasedStopLoss"]["stop_pct"] == 0.05
    assert rules["TimeBasedExit"]["max_bars"] == 60


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_load_config_unknown_key_names_it(tmp_path: Path) -> None:
    path = _write(tmp_path, "data:\n  prices: demo\nexecution:\n  fil: close\n")
    with pytest.raises(ConfigError, match=r"execution\.fil"):
        load_config(path)


def test_load_config_unknown_rule_names_it(tmp_path: Path) -> None:
    path = _write(tmp_path, "risk_rules:\n  - type: NoSuchRule\n    priority: 1\n")
    with pytest.raises(ConfigError, match=r"risk_rules\[0\].*NoSuchRule"):
        load_config(path)


def test_load_config_bad_rule_parameter_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "risk_rules:\n  - type: PriceBasedStopLoss\n    stop_pct: -0.5\n")
    with pytest.raises(ConfigError, match=r"risk_rules\[0\]"):
        load_config(path)


def test_load_config_rule_without_type_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "risk_rules:\n  - max_bars: 3\n")
    with pytest.raises(ConfigError, match="no 'type'"):
        load_config(path)


def test_load_config_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "data: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))


def test_data_config_signals_union_selects_model_or_file() -> None:
    by_model = ExperimentConfig.model_validate({"name": "a", "data": {"signals": {"horizon": 3}}})
    by_file = ExperimentConfig.model_validate(
        {"name": "b", "data": {"signals": {"path": "s.parquet"}}}
    )
    assert isinstance(by_model.data.signals, ModelSignalsConfig)
    assert by_model.data.signals.horizon == 3
    assert isinstance(by_file.data.signals, FileSignalsConfig)


def test_config_hash_changes_with_content() -> None:
    a = ExperimentConfig(name="a")
    b = ExperimentConfig.model_validate({"name": "a", "strategy": {"n": 3}})
    assert a.config_hash() != b.config_hash()
    assert a.config_hash() == ExperimentConfig(name="a").config_hash()


def test_resolve_data_path_uses_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f.parquet").write_bytes(b"x")
    monkeypatch.setenv("ML4T_DATA_ROOT", str(tmp_path))
    assert resolve_data_path("f.parquet") == (tmp_path / "f.parquet").resolve()
    with pytest.raises(FileNotFoundError, match="ML4T_DATA_ROOT"):
        resolve_data_path("missing.parquet")


# ---------------------------------------------------------------------------------------------
# data paths stay inside the data root (issue 14, point 1)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root holding prices.parquet, with a sibling folder outside it."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "prices.parquet").write_bytes(b"x")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.parquet").write_bytes(b"x")
    monkeypatch.setenv("ML4T_DATA_ROOT", str(data))
    monkeypatch.delenv("ML4T_ALLOW_OUTSIDE_DATA_ROOT", raising=False)
    return data


def _escapes(root: Path) -> dict[str, str]:
    outside = root.parent / "outside" / "secret.parquet"
    (root / "link.parquet").symlink_to(outside)
    (root / "linkdir").symlink_to(root.parent / "outside", target_is_directory=True)
    return {
        "absolute": str(outside),
        "dotdot": "../outside/secret.parquet",
        "dotdot_inside_first": "sub/../../outside/secret.parquet",
        "symlink_file": "link.parquet",
        "symlink_dir": "linkdir/secret.parquet",
    }


ESCAPES = ["absolute", "dotdot", "dotdot_inside_first", "symlink_file", "symlink_dir"]
FIELDS = {
    "data.prices": lambda p: f"data:\n  prices: {p}\n",
    "data.signals.path": lambda p: f"data:\n  signals: {{path: {p}}}\n",
    "data.features": lambda p: f"data:\n  features: {p}\n",
    "data.context.path": lambda p: f"data:\n  context: {{source: vix, path: {p}}}\n",
}


@pytest.mark.parametrize("escape", ESCAPES)
def test_resolve_data_path_escape_is_refused_naming_field_and_root(root: Path, escape: str) -> None:
    value = _escapes(root)[escape]
    with pytest.raises(DataPathError, match=r"data\.prices: .*outside the data root") as info:
        resolve_data_path(value, field="data.prices")
    assert str(root.resolve()) in str(info.value)
    assert "ML4T_ALLOW_OUTSIDE_DATA_ROOT" in str(info.value)


@pytest.mark.parametrize("field", sorted(FIELDS))
@pytest.mark.parametrize("escape", ESCAPES)
def test_load_config_path_escape_in_any_field_is_refused(
    root: Path, tmp_path: Path, field: str, escape: str
) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(FIELDS[field](_escapes(root)[escape]))
    with pytest.raises(DataPathError, match=re.escape(field) + ": .*outside the data root"):
        load_config(path)


def test_resolve_data_path_inside_root_is_accepted(root: Path) -> None:
    (root / "sub").mkdir()
    (root / "sub" / "p.parquet").write_bytes(b"x")
    (root / "inner_link.parquet").symlink_to(root / "sub" / "p.parquet")
    expected = (root / "sub" / "p.parquet").resolve()
    assert resolve_data_path("sub/p.parquet") == expected
    assert resolve_data_path("sub/../sub/p.parquet") == expected
    assert resolve_data_path(str(root / "sub" / "p.parquet")) == expected
    assert resolve_data_path("inner_link.parquet") == expected


def test_resolve_data_path_unset_root_is_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ML4T_DATA_ROOT", raising=False)
    monkeypatch.delenv("ML4T_ALLOW_OUTSIDE_DATA_ROOT", raising=False)
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "p.parquet").write_bytes(b"x")
    (tmp_path / "other.parquet").write_bytes(b"x")
    monkeypatch.chdir(tmp_path / "cwd")
    assert resolve_data_root() == (tmp_path / "cwd").resolve()
    assert resolve_data_path("p.parquet") == (tmp_path / "cwd" / "p.parquet").resolve()
    with pytest.raises(DataPathError, match="ML4T_DATA_ROOT unset: current directory"):
        resolve_data_path("../other.parquet")


def test_resolve_data_path_opt_out_allows_outside(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = root.parent / "outside" / "secret.parquet"
    monkeypatch.setenv("ML4T_ALLOW_OUTSIDE_DATA_ROOT", "1")
    assert resolve_data_path(str(outside)) == outside.resolve()
    assert resolve_data_path("../outside/secret.parquet") == outside.resolve()


def test_load_config_demo_and_computed_need_no_path(root: Path, tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("data:\n  prices: demo\n  features: computed\n  context: {source: market}\n")
    cfg = load_config(path)
    assert data_paths(cfg) == []


def test_cli_validate_and_run_path_escape_exit_2(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ml4t_pipeline.cli import main

    path = tmp_path / "esc.yaml"
    path.write_text(f"data:\n  prices: {root.parent / 'outside' / 'secret.parquet'}\n")
    assert main(["validate", str(path), "--storage", str(tmp_path / "st")]) == 2
    assert "data.prices" in capsys.readouterr().err
    assert main(["run", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "data.prices" in err and str(root.resolve()) in err
    assert not (tmp_path / "st").exists()


# ---------------------------------------------------------------------------------------------
# JSON configs


def test_load_config_json_equals_yaml(tmp_path: Path) -> None:
    yaml_cfg = load_config(REPO_ROOT / "configs" / "demo.yaml")
    raw = yaml.safe_load((REPO_ROOT / "configs" / "demo.yaml").read_text())
    path = tmp_path / "demo.json"
    path.write_text(json.dumps(raw))
    json_cfg = load_config(path)
    assert json_cfg == yaml_cfg
    assert json_cfg.config_hash() == yaml_cfg.config_hash()


def test_load_config_json_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"execution": {"fil": "close"}}))
    with pytest.raises(ConfigError, match=r"execution\.fil"):
        load_config(path)
    path.write_text('{"data": ')
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(path)
    path.write_text('{"execution": {"initial_cash": Infinity}}')
    with pytest.raises(ConfigError, match="Infinity is not a JSON number"):
        load_config(path)
