"""The code location loads and lists all its assets and checks."""

from __future__ import annotations

import subprocess
import sys

from ml4t_pipeline.definitions import defs
from tests.conftest import REPO_ROOT


def test_definitions_list_all_assets_and_checks() -> None:
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"prices_raw", "prices", "prices_quarantine", "features", "market_context", "signals",
            "market_panel", "backtest", "trades", "portfolio_states", "metrics",
            "performance_report", "attribution_by_exit_reason", "attribution_by_signal",
            "attribution_by_regime", "cost_attribution", "experiment_comparison",
            "vectorbt_backtest", "backtrader_backtest", "cross_framework_validation",
            "prepared_panel", "prices_file", "signals_file", "features_file",
            "context_file"} <= keys  # fmt: skip
    checks = {k.name for k in graph.asset_check_keys}
    assert {"prices_valid", "signals_available_before_use",
            "trades_entered_after_signal_available",
            "equity_equals_cash_plus_marked_positions", "signals_valid",
            "prices_key_unique", "prices_high_at_or_above_low"} <= checks  # fmt: skip
    for job in ("experiment_job", "validated_experiment_job", "comparison_job", "validation_job",
                "prepared_panel_job"):  # fmt: skip
        assert defs.resolve_job_def(job) is not None
    assert defs.resolve_sensor_def("experiment_configs_sensor") is not None


def test_dagster_definitions_validate_with_workspace() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
