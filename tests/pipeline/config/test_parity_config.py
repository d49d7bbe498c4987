"""The parity settings (issue 31) are reachable from an experiment file: the trailing stop's
reference price as rule parameters, ``target_rounding`` and ``stop_activation: second_bar`` as
``execution`` keys; bad values fail at load time naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml4t_pipeline.config import ConfigError, load_config
from ml4t_pipeline.config.specs import build_rule

YAML = """\
name: parity_settings
risk_rules:
  - {type: DynamicTrailingStop, initial_trail_pct: 0.05, trail_on: close}
  - {type: DynamicTrailingStop, initial_trail_pct: 0.06, include_entry_bar: false}
execution:
  preset: backtrader
  fill: close
  target_rounding: order
  stop_activation: second_bar
"""


def test_config_parity_settings_reach_the_engine(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(YAML)
    cfg = load_config(path)
    engine_cfg = cfg.execution.engine_config()
    assert engine_cfg.target_rounding == "order"
    assert engine_cfg.stop_activation == "second_bar"
    assert engine_cfg.bar_event_order == "stops_first"  # the preset still applies
    close_trail, vbt_trail = (build_rule(spec) for spec in cfg.risk_rules)
    assert (close_trail.trail_on, close_trail.include_entry_bar) == ("close", True)
    assert (vbt_trail.trail_on, vbt_trail.include_entry_bar) == ("high", False)


def test_config_parity_settings_default_leaves_hash_unchanged(tmp_path: Path) -> None:
    plain, explicit = tmp_path / "a.yaml", tmp_path / "b.yaml"
    plain.write_text("name: h\n")
    explicit.write_text("name: h\nexecution:\n  target_rounding: order\n")
    assert load_config(plain).execution.target_rounding is None
    assert load_config(plain).config_hash() != load_config(explicit).config_hash()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("execution:\n  target_rounding: nearest\n", r"execution\.target_rounding"),
        ("execution:\n  stop_activation: third_bar\n", r"execution\.stop_activation"),
        (
            "risk_rules:\n  - {type: DynamicTrailingStop, trail_on: open}\n",
            r"risk_rules\[0\].*trail_on must be one of",
        ),
        (
            "risk_rules:\n  - {type: DynamicTrailingStop, trail_on: close,"
            " tighten_per_bar: 0.01}\n",
            r"risk_rules\[0\].*tighten_per_bar=0",
        ),
    ],
)
def test_config_bad_parity_setting_names_the_key(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\n" + text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)
