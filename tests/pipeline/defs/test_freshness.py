"""Freshness policies on the score inputs (``signals``) and ``performance_report``.

Declared: the code location's asset graph carries a time-window policy on exactly those two
assets (defaults 26 h warn / 74 h fail, overridable by environment). Evaluated: Dagster's
``FreshnessDaemon`` (what ``dagster dev`` runs every 30 s) records Unknown before the first
materialization, then Pass / Warn / Fail as the clock moves past the windows; the states are read
back from the instance, as the UI reads them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.definitions.freshness import FreshnessState, TimeWindowFreshnessPolicy
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.freshness import FreshnessDaemon

from ml4t_pipeline.defs import freshness
from ml4t_pipeline.defs.partitions import EXPERIMENTS
from tests.conftest import REPO_ROOT

SIGNALS = dg.AssetKey("signals")
REPORT = dg.AssetKey("performance_report")


def _policies(defs: dg.Definitions) -> dict[str, object]:
    graph = defs.resolve_asset_graph()
    return {
        node.key.to_user_string(): node.freshness_policy
        for node in graph.asset_nodes
        if node.freshness_policy is not None
    }


def test_definitions_freshness_declared_on_signals_and_report_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ml4t_pipeline.definitions import build_definitions

    monkeypatch.delenv(freshness.WARN_HOURS_ENV, raising=False)
    monkeypatch.delenv(freshness.FAIL_HOURS_ENV, raising=False)
    policies = _policies(build_definitions())
    assert set(policies) == {"signals", "performance_report"}
    for policy in policies.values():
        assert isinstance(policy, TimeWindowFreshnessPolicy)
        assert policy.fail_window.to_timedelta() == timedelta(hours=74)
        assert policy.warn_window is not None
        assert policy.warn_window.to_timedelta() == timedelta(hours=26)


def test_freshness_policy_windows_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(freshness.WARN_HOURS_ENV, "2.5")
    monkeypatch.setenv(freshness.FAIL_HOURS_ENV, "12")
    policy = freshness.freshness_policy()
    assert isinstance(policy, TimeWindowFreshnessPolicy)
    assert policy.fail_window.to_timedelta() == timedelta(hours=12)
    assert policy.warn_window is not None
    assert policy.warn_window.to_timedelta() == timedelta(hours=2, minutes=30)


def test_freshness_fail_hours_zero_declares_no_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from ml4t_pipeline.definitions import build_definitions

    monkeypatch.setenv(freshness.FAIL_HOURS_ENV, "0")
    assert freshness.freshness_policy() is None
    assert _policies(build_definitions()) == {}


@pytest.mark.parametrize(
    ("warn", "fail", "named"),
    [
        ("soon", "74", freshness.WARN_HOURS_ENV),
        ("26", "-1", freshness.FAIL_HOURS_ENV),
        ("80", "74", freshness.WARN_HOURS_ENV),
    ],
)
def test_freshness_policy_bad_window_raises_naming_variable(
    monkeypatch: pytest.MonkeyPatch, warn: str, fail: str, named: str
) -> None:
    monkeypatch.setenv(freshness.WARN_HOURS_ENV, warn)
    monkeypatch.setenv(freshness.FAIL_HOURS_ENV, fail)
    with pytest.raises(ValueError, match=named):
        freshness.freshness_policy()


@contextmanager
def _clock_at(now: datetime) -> Iterator[None]:
    """Dagster's clock (``dagster._time``: every "now" Dagster reads, the freshness daemon's
    included, goes through these two functions, its documented mocking point) set to ``now``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("dagster._time._mockable_get_current_datetime", lambda: now)
        patch.setattr("dagster._time._mockable_get_current_timestamp", now.timestamp)
        yield


def _evaluate(context: WorkspaceProcessContext, instance: dg.DagsterInstance) -> dict[str, str]:
    """One iteration of Dagster's freshness daemon; the recorded state of both assets."""
    for _ in FreshnessDaemon().run_iteration(context):
        pass
    records = instance.get_freshness_state_records([SIGNALS, REPORT])
    return {
        key.to_user_string(): records[key].freshness_state.value
        for key in (SIGNALS, REPORT)
        if key in records
    }


def test_freshness_daemon_evaluates_signals_policy_unknown_pass_warn_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(freshness.WARN_HOURS_ENV, raising=False)
    monkeypatch.delenv(freshness.FAIL_HOURS_ENV, raising=False)
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            module_name="ml4t_pipeline.definitions",
            attribute="defs",
            working_directory=str(REPO_ROOT),
        )
    )
    with (
        dg.instance_for_test() as instance,
        WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as context,
    ):
        assert _evaluate(context, instance) == {
            "signals": FreshnessState.UNKNOWN.value,
            "performance_report": FreshnessState.UNKNOWN.value,
        }
        instance.add_dynamic_partitions(EXPERIMENTS, ["demo"])
        instance.report_runless_asset_event(dg.AssetMaterialization(SIGNALS, partition="demo"))
        materialized = datetime.now(UTC)
        assert _evaluate(context, instance)["signals"] == FreshnessState.PASS.value
        with _clock_at(materialized + timedelta(hours=30)):
            assert _evaluate(context, instance)["signals"] == FreshnessState.WARN.value
        with _clock_at(materialized + timedelta(hours=80)):
            states = _evaluate(context, instance)
        assert states["signals"] == FreshnessState.FAIL.value
        # never materialized: the report stays Unknown, whatever the clock says
        assert states["performance_report"] == FreshnessState.UNKNOWN.value
