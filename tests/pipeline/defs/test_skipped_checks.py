"""A check that cannot run is reported as skipped, with its reason, not as passed (issue 24.5).

``market_panel:signals_not_stale`` needs ``data.validation: paranoid`` and
``data.max_signal_age_bars``; without the age limit it used to print ``passed``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from ml4t_pipeline import cli
from ml4t_pipeline.defs.assets_data import SKIPPED_KEY, stale_check_skip_reason
from ml4t_pipeline.runner import DATA_ASSETS, materialize_experiment
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def paranoid_without_age(tmp_path_factory: pytest.TempPathFactory) -> dg.ExecuteInProcessResult:
    """The demo's data assets under ``validation: paranoid`` with no ``max_signal_age_bars``."""
    root = tmp_path_factory.mktemp("paranoid")
    configs = root / "configs"
    configs.mkdir()
    text = (REPO_ROOT / "configs" / "demo.yaml").read_text()
    assert "validation: standard" in text
    config = configs / "paranoid.yaml"
    config.write_text(
        text.replace("name: demo", "name: paranoid").replace(
            "validation: standard", "validation: paranoid"
        )
    )
    return materialize_experiment(config, root / "storage", selection=DATA_ASSETS)


def _stale_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    found = [e for e in result.get_asset_check_evaluations() if e.check_name == "signals_not_stale"]
    assert len(found) == 1
    return found[0]


def test_stale_check_skip_reason_names_the_missing_setting() -> None:
    assert "max_signal_age_bars" in str(stale_check_skip_reason("paranoid", None))
    assert "paranoid" in str(stale_check_skip_reason("standard", 5))
    assert stale_check_skip_reason("paranoid", 5) is None


def test_dagster_stale_check_without_age_limit_is_marked_skipped_with_reason(
    paranoid_without_age: dg.ExecuteInProcessResult,
) -> None:
    assert paranoid_without_age.success
    event = _stale_check(paranoid_without_age)
    reason = event.metadata[SKIPPED_KEY].value
    assert "max_signal_age_bars" in str(reason)
    assert event.description == f"skipped: {reason}"
    assert event.severity == dg.AssetCheckSeverity.WARN
    assert "n_violations" not in event.metadata  # nothing was counted


def test_cli_validate_prints_skipped_not_passed_for_a_check_that_did_not_run(
    paranoid_without_age: dg.ExecuteInProcessResult,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(REPO_ROOT / "configs" / "demo.yaml", configs / "paranoid.yaml")
    # the CLI prints the run it gets: hand it the fixture's run instead of a second one
    monkeypatch.setattr(cli, "materialize_experiment", lambda *a, **k: paranoid_without_age)
    assert cli.main(["validate", str(configs / "paranoid.yaml")]) == 0
    out = capsys.readouterr().out
    assert "passed  market_panel:signals_not_stale" not in out
    line = next(x for x in out.splitlines() if x.endswith(")") and "signals_not_stale" in x)
    assert line.startswith("skipped market_panel:signals_not_stale (")
    assert "max_signal_age_bars" in line
    assert "passed  market_panel:signals_available_before_use" in out
