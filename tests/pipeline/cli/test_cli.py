"""The ``ml4t`` console script: run writes the outputs, validate names offending rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from ml4t_pipeline.cli import main
from tests.conftest import REPO_ROOT
from tests.pipeline.helpers import DemoCliRun


def test_cli_run_demo_writes_outputs_and_prints_metrics(demo_cli_run: DemoCliRun) -> None:
    out = demo_cli_run.out  # main(["run", <copy of configs/demo.yaml>, "--output", out]) == 0
    assert demo_cli_run.code == 0
    for name in ("trades", "portfolio_states", "signals", "fills", "rejections",
                 "prices_quarantine"):  # fmt: skip
        assert (out / f"{name}.parquet").is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_trades"] == pl.read_parquet(out / "trades.parquet").height > 0
    signals = pl.read_parquet(out / "signals.parquet")
    assert {"timestamp", "symbol", "score", "available_at"} <= set(signals.columns)
    printed = demo_cli_run.stdout
    assert "sharpe" in printed and str((out / "report.html").resolve()) in printed


def test_cli_run_report_is_the_performance_report_asset_and_tables_the_attribution_assets(
    demo_cli_run: DemoCliRun,
) -> None:
    # one graph, one report: report.html is the asset's HTML byte for byte, and each
    # attribution file holds the attribution asset's value (computed once, in the graph)
    out = demo_cli_run.out
    assets = out / "assets"
    report = (out / "report.html").read_bytes()
    assert report == (assets / "performance_report" / "demo.html").read_bytes()
    assert b"prices_version" in report and b"config_file" in report
    pairs = {
        "attribution_by_exit_reason.parquet": assets
        / "attribution_by_exit_reason"
        / "demo.parquet",
        "cost_attribution.parquet": assets / "cost_attribution" / "demo.parquet",
        "attribution_by_regime.parquet": assets / "attribution_by_regime" / "demo.parquet",
        "attribution_by_signal.parquet": assets
        / "attribution_by_signal"
        / "demo"
        / "deciles.parquet",
        "information_coefficient.parquet": (
            assets / "attribution_by_signal" / "demo" / "information_coefficient.parquet"
        ),
    }
    for name, stored in pairs.items():
        assert pl.read_parquet(out / name).equals(pl.read_parquet(stored)), name
    settings = json.loads((out / "report_settings.json").read_text())
    assert settings == {"periods_per_year": 252, "risk_free_rate": 0.0, "initial_cash": 100000.0,
                        "signal": "score", "horizon": 5,
                        "title": "ml4t experiment: demo", "benchmark": None}  # fmt: skip


def test_cli_run_bad_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("execution:\n  fil: close\n")
    assert main(["run", str(bad), "--output", str(tmp_path / "o")]) == 2
    assert "execution.fil" in capsys.readouterr().err


def test_cli_validate_fail_policy_names_offending_rows(
    tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (REPO_ROOT / "configs" / "sp500_top25.yaml").read_text()
    cfg = tmp_path / "strict.yaml"
    cfg.write_text(
        text.replace("name: sp500_top25", "name: strict")
        .replace("invalid_rows: quarantine", "invalid_rows: fail")
        .replace(
            "prices: sp500_5yr_daily_ohlcv.parquet",
            f"prices: {data_root / 'sp500_5yr_daily_ohlcv.parquet'}",
        )  # fmt: skip
    )
    code = main(["validate", str(cfg), "--storage", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 1
    assert "prices_valid" in err and "AOS" in err


def test_cli_validate_demo_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(REPO_ROOT / "configs" / "demo.yaml", configs / "demo.yaml")
    assert main(["validate", str(configs / "demo.yaml"), "--storage", str(tmp_path / "s")]) == 0
    assert "passed  prices:prices_valid" in capsys.readouterr().out
