"""Cross-framework validation assets on the demo data: VectorBT and Backtrader as assets."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from ml4t_pipeline.cli import materialize_experiment
from ml4t_pipeline.config import ExperimentConfig
from ml4t_pipeline.defs.assets_validation import _as_run, reference_spec
from ml4t_pipeline.defs.io_managers import read_value
from ml4t_pipeline.lib.crossval.compare import compare_runs

pytest.importorskip("vectorbt")
pytest.importorskip("backtrader")

CONFIG = """\
name: xv
data: {prices: demo, signals: {model: ridge}}
strategy: {type: TopN, signal: ret_20, n: 2, rebalance_every: 1}
risk_rules:
  - {type: PriceBasedStopLoss, stop_pct: 0.05, priority: 100}
execution:
  commission: {type: Percentage, rate: 0.001}
  initial_cash: 100000
"""


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> tuple[dg.ExecuteInProcessResult, Path]:
    root = tmp_path_factory.mktemp("xv")
    (root / "xv.yaml").write_text(CONFIG)
    result = materialize_experiment(root / "xv.yaml", root / "storage", validate=True)
    return result, root / "storage"


def test_validation_assets_frameworks_agree_fill_for_fill(validated) -> None:
    result, storage = validated
    assert result.success
    vbt = _as_run("vectorbt", read_value(storage / "vectorbt_backtest" / "xv"))
    bt = _as_run("backtrader", read_value(storage / "backtrader_backtest" / "xv"))
    assert vbt.n_fills > 100
    cmp = compare_runs(vbt, bt, price_tol=1e-9)
    assert cmp.fills.identical
    assert abs(cmp.equity_gap) < 0.01


def test_validation_asset_compares_ours_with_each_framework(validated) -> None:
    result, storage = validated
    table = read_value(storage / "cross_framework_validation" / "xv")["summary"]
    assert table["framework"].to_list() == ["vectorbt", "backtrader"]
    for row in table.iter_rows(named=True):
        # every fill is accounted for on both sides
        assert row["matched"] + row["extra"] == row["n_fills_ours"]
        assert row["matched"] + row["missing"] == row["n_fills_theirs"]
    (check,) = [
        c
        for c in result.get_asset_check_evaluations()
        if c.check_name == "engine_matches_frameworks"
    ]
    # no preset declared: a difference is a warning, never a silent pass
    assert check.severity == dg.AssetCheckSeverity.WARN


def test_reference_spec_lists_what_frameworks_cannot_express() -> None:
    cfg = ExperimentConfig.model_validate(
        {
            "name": "x",
            "strategy": {"n": 5, "rebalance_every": 5},
            "risk_rules": [
                {"type": "PriceBasedStopLoss", "stop_pct": 0.05},
                {"type": "TimeBasedExit", "max_bars": 60},
            ],
            "execution": {"commission": {"type": "Percentage", "rate": 0.001}},
        }
    )
    spec, notes = reference_spec(cfg)
    assert spec.n == 5 and spec.weight == pytest.approx(0.2) and spec.stop_pct == 0.05
    assert spec.commission_rate == 0.001
    assert any("rebalance_every" in n for n in notes)
    assert any("TimeBasedExit" in n for n in notes)
    with pytest.raises(ValueError, match="PriceBasedStopLoss"):
        reference_spec(ExperimentConfig(name="y"))


def test_validation_with_backtrader_preset_matches_exactly(tmp_path: Path) -> None:
    """Declared matched settings: the check is an ERROR check, and it passes with 0 differences."""
    (tmp_path / "xvp.yaml").write_text(
        CONFIG.replace("name: xv", "name: xvp") + "  preset: backtrader\n"
    )
    result = materialize_experiment(tmp_path / "xvp.yaml", tmp_path / "storage", validate=True)
    assert result.success
    (check,) = [
        c
        for c in result.get_asset_check_evaluations()
        if c.check_name == "engine_matches_frameworks"
    ]
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.passed
    table = read_value(tmp_path / "storage" / "cross_framework_validation" / "xvp")["summary"]
    assert (table["missing"] + table["extra"] + table["mismatched"]).sum() == 0
    assert table["equity_gap"].abs().max() < 0.01
