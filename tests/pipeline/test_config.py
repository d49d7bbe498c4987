"""Experiment configs: the shipped files validate; bad ones fail with the offending key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml4t_pipeline.config import (
    ConfigError,
    ExperimentConfig,
    FileSignalsConfig,
    ModelSignalsConfig,
    load_config,
    resolve_data_path,
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
