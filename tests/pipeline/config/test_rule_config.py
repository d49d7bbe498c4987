"""The rule settings of issue 24 are reachable from an experiment's YAML: ``MaxDrawdownRule``'s
``reset`` / ``resume_after_bars`` and a ``CompositeRule`` with ``mode: AND``."""

from __future__ import annotations

from pathlib import Path

import pytest

import engine
from ml4t_pipeline.config import ConfigError, build_rule, load_config

YAML = """\
name: resets
risk_rules:
  - type: MaxDrawdownRule
    max_dd_pct: 0.15
    reset: {reset}
    resume_after_bars: {bars}
  - type: CompositeRule
    mode: AND
    rules:
      - {{type: TimeBasedExit, max_bars: 10}}
      - {{type: PriceBasedStopLoss, sl_pct: 0.02}}
"""


@pytest.mark.parametrize(("reset", "bars"), [("bars", 20), ("peak_at_halt", 1)])
def test_yaml_max_drawdown_reset_builds_the_engine_rule(
    tmp_path: Path, reset: str, bars: int
) -> None:
    path = tmp_path / "resets.yaml"
    path.write_text(YAML.format(reset=reset, bars=bars))
    drawdown, composite = (build_rule(spec) for spec in load_config(path).risk_rules)
    assert isinstance(drawdown, engine.MaxDrawdownRule)
    assert (drawdown.reset_mode, drawdown.resume_after_bars) == (reset, bars)
    assert drawdown.max_drawdown == 0.15
    assert isinstance(composite, engine.CompositeRule) and composite.mode == "all"
    assert composite.name == "CompositeALL(TimeBasedExit+PriceBasedStopLoss)"


def test_yaml_resume_after_bars_out_of_range_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "resets.yaml"
    path.write_text(YAML.format(reset="bars", bars=0))
    with pytest.raises(ConfigError, match=r"risk_rules\[0\]\.resume_after_bars"):
        load_config(path)


def test_yaml_reset_bars_without_resume_after_bars_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "resets.yaml"
    path.write_text(YAML.format(reset="bars", bars=5).replace("    resume_after_bars: 5\n", ""))
    with pytest.raises(ConfigError, match=r"risk_rules\[0\].*needs resume_after_bars"):
        load_config(path)
