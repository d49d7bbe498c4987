"""Freshness policies: how old the model scores and the report may be before the UI warns.

Dagster 1.13's ``FreshnessPolicy`` (public API, no preview flag; the ``FreshnessDaemon`` that
``dagster dev`` starts evaluates it every 30 s) is declared on ``signals`` (the score inputs of
the backtest) and ``performance_report``. A time-window policy: an asset is **Fresh** when its
latest materialization is younger than the warn window, **Warning** between the warn and the
fail window, **Failing** beyond it (and "Unknown" before its first materialization). The
defaults fit the nightly schedule (``nightly_experiments``, weekdays 06:00 New York): warn after
26 hours (a nightly run was missed), fail after 74 hours (missed across a weekend).

**Per asset, not per experiment.** Dagster evaluates a freshness policy on the asset's latest
materialization of *any* partition: ``signals`` is Fresh as soon as one experiment's scores are
recent, however old another experiment's are. Each experiment's own age is its partition's last
materialization time (the asset's **Partitions** tab, or the ``ml4t/experiment`` run tag in the
run list); a rerun of every experiment (the nightly schedule) keeps all of them within the window.

Set ``ML4T_FRESHNESS_WARN_HOURS`` / ``ML4T_FRESHNESS_FAIL_HOURS`` before ``dagster dev`` to change
the windows; ``ML4T_FRESHNESS_FAIL_HOURS=0`` declares no policy (research use without a schedule).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import dagster as dg

FRESH_ASSETS = ("signals", "performance_report")
"""The assets with a freshness policy: the score inputs and the report."""

WARN_HOURS_ENV = "ML4T_FRESHNESS_WARN_HOURS"
FAIL_HOURS_ENV = "ML4T_FRESHNESS_FAIL_HOURS"
DEFAULT_WARN_HOURS = 26.0
DEFAULT_FAIL_HOURS = 74.0


def _hours(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"${name}={raw!r} is not a number of hours") from None
    if value < 0:
        raise ValueError(f"${name}={raw!r} must be >= 0 hours")
    return value


def freshness_policy() -> dg.FreshnessPolicy | None:
    """The time-window policy of :data:`FRESH_ASSETS`, from the environment (None: no policy).

    Raises
    ------
    ValueError
        A window variable is not a non-negative number, or the warn window is not shorter than
        the fail window.
    """
    fail = _hours(FAIL_HOURS_ENV, DEFAULT_FAIL_HOURS)
    if fail == 0:
        return None
    warn = _hours(WARN_HOURS_ENV, DEFAULT_WARN_HOURS)
    if not 0 < warn < fail:
        raise ValueError(
            f"freshness windows: ${WARN_HOURS_ENV}={warn:g} must be above 0 and below "
            f"${FAIL_HOURS_ENV}={fail:g} hours"
        )
    return dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=fail), warn_window=timedelta(hours=warn)
    )


def with_freshness(assets: Sequence[Any]) -> list[Any]:
    """``assets`` with :func:`freshness_policy` on :data:`FRESH_ASSETS` (unchanged when None).

    Parameters
    ----------
    assets : sequence
        Assets definitions and source assets, as ``Definitions(assets=...)`` takes them.
    """
    policy = freshness_policy()
    keys = {dg.AssetKey(name) for name in FRESH_ASSETS}
    if policy is None:
        return list(assets)

    def apply(spec: dg.AssetSpec) -> dg.AssetSpec:
        return dg.apply_freshness_policy(spec, policy) if spec.key in keys else spec

    out: list[Any] = []
    for item in assets:
        if isinstance(item, dg.AssetsDefinition) and item.is_executable and keys & item.keys:
            out.extend(dg.map_asset_specs(apply, [item]))
        else:
            out.append(item)
    return out
