"""What the report's steps read and draw (issue 27: each figure drawn once per run, only the
columns a step uses read from storage)."""

from __future__ import annotations

import re

import dagster as dg
import pytest

from ml4t_pipeline.defs.assets_backtest import metrics, performance_report
from tests.pipeline.helpers import DemoCliRun


def test_metrics_and_report_inputs_read_only_the_benchmark_price_columns() -> None:
    for asset in (metrics, performance_report):
        assert asset.op.ins["prices"].metadata == {"columns": ["timestamp", "symbol", "close"]}
    # the report needs the signals only for a lineage fallback: scanned, not read
    assert performance_report.op.ins["signals"].metadata == {"lazy": True}


def test_metrics_equity_curve_metadata_is_the_reports_equity_figure(
    demo_cli_run: DemoCliRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(demo_cli_run.home))
    with dg.DagsterInstance.get() as instance:
        record = instance.fetch_materializations(dg.AssetKey("metrics"), limit=1).records[0]
    materialization = record.event_log_entry.asset_materialization
    assert materialization is not None
    markdown = materialization.metadata["equity_curve"]
    assert isinstance(markdown, dg.MarkdownMetadataValue)
    found = re.search(r"\((data:image/png;base64,[^)]+)\)", markdown.value)
    assert found is not None
    html = (demo_cli_run.out / "report.html").read_text(encoding="utf-8")
    # the same PNG as the report's equity and drawdown section: drawn once for both
    equity_section = re.search(r'<img src="([^"]+)" alt="Equity and drawdown', html)
    assert equity_section is not None
    assert found.group(1) == equity_section.group(1)
