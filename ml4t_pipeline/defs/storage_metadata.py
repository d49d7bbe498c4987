"""The metadata between the assets and the IO manager: how a value is stored, judged, versioned.

An asset's *definition* metadata tells :class:`~ml4t_pipeline.defs.io_managers.Ml4tIOManager`
how to store its value (:func:`by_month_metadata`) and who judges it
(:func:`judged_by_metadata`, :func:`promotes_metadata`); its *output* metadata carries the
verdict of its blocking checks (:func:`checks_verdict_metadata`, :func:`asset_checks_verdict`).
The IO manager module's docstring says what it does with each key. A step whose inputs were
built from different versions of one stored value is refused with
:class:`MixedVersionsError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dagster as dg

STORAGE_KEY = "ml4t/storage"
"""Definition-metadata key selecting how an output is stored."""
BY_MONTH = "parquet_by_year_month"
"""Value of :data:`STORAGE_KEY` for prepared tables (hive-partitioned by year/month)."""
ALLOW_EMPTY_KEY = "ml4t/allow_empty"
"""Definition-metadata key: an empty prepared table may replace the stored one."""
VERDICT_KEY = "ml4t/checks_passed"
"""Output-metadata key: did every blocking check of this value pass (bool)."""
FAILED_CHECKS_KEY = "ml4t/failed_checks"
"""Output-metadata key: the blocking checks that failed with ERROR severity (list of names)."""
JUDGED_BY_KEY = "ml4t/judged_by"
"""Definition-metadata key: the downstream asset whose checks decide if this value is kept."""
PROMOTES_KEY = "ml4t/promotes"
"""Definition-metadata key: upstream assets whose pending candidate this output promotes."""
VERSION_KEY = "ml4t/version"
"""Materialization-metadata key: which stored version is current after this write."""


def by_month_metadata(*, allow_empty: bool = False) -> dict[str, Any]:
    """Definition metadata that stores an asset's DataFrame as a year/month-partitioned table.

    ``allow_empty``: an empty frame may replace the stored table (for tables that are empty
    by design when nothing is wrong, such as ``prices_quarantine``); otherwise it is refused.
    """
    meta: dict[str, Any] = {STORAGE_KEY: BY_MONTH}
    if allow_empty:
        meta[ALLOW_EMPTY_KEY] = True
    return meta


def judged_by_metadata(asset: str) -> dict[str, str]:
    """Definition metadata: the value stays a pending candidate until ``asset``'s checks pass."""
    return {JUDGED_BY_KEY: asset}


def promotes_metadata(*assets: str) -> dict[str, list[str]]:
    """Definition metadata of the judging output: promote these upstream assets' candidates."""
    return {PROMOTES_KEY: list(assets)}


def checks_verdict_metadata(
    results: Iterable[dg.AssetCheckResult], blocking: Iterable[str] | None = None
) -> dict[str, dg.MetadataValue]:
    """Output metadata telling the IO manager whether the value passed its blocking checks.

    Parameters
    ----------
    results : iterable of dg.AssetCheckResult
        The value's check results, computed before the value is yielded.
    blocking : iterable of str, optional
        Names of the blocking checks (default: every result). Only a failed blocking check of
        ERROR severity refuses the value, as it is the one that stops downstream assets.

    Returns
    -------
    dict
        ``{"ml4t/checks_passed": bool, "ml4t/failed_checks": [names]}``.
    """
    names = None if blocking is None else set(blocking)
    failed = sorted(
        r.check_name or ""
        for r in results
        if not r.passed
        and r.severity == dg.AssetCheckSeverity.ERROR
        and (names is None or r.check_name in names)
    )
    return {
        VERDICT_KEY: dg.MetadataValue.bool(not failed),
        FAILED_CHECKS_KEY: dg.MetadataValue.json(failed),
    }


def asset_checks_verdict(
    context: dg.AssetExecutionContext, results: Iterable[dg.AssetCheckResult]
) -> dict[str, dg.MetadataValue]:
    """:func:`checks_verdict_metadata` over the blocking checks the running asset declares."""
    blocking = [spec.name for spec in context.assets_def.check_specs if spec.blocking]
    return checks_verdict_metadata(results, blocking)


class MixedVersionsError(RuntimeError):
    """A step's inputs were built from different versions of one upstream value.

    Attributes
    ----------
    step : str
        The step (asset) that was about to run.
    upstream : str
        The upstream value, ``asset[partition]``.
    versions : list of tuple
        ``(run id, input that brought it)`` for the two versions seen.
    """

    def __init__(
        self, step: str, upstream: str, first: tuple[str, str], second: tuple[str, str]
    ) -> None:
        self.step, self.upstream, self.versions = step, upstream, [first, second]

        def how(version: str, via: str) -> str:
            if via == upstream:
                return f"{via} itself is version {version}"
            return f"{via} was built from {upstream} version {version}"

        super().__init__(
            f"{step}: its inputs were built from different versions of {upstream}: "
            f"{how(*first)}; {how(*second)} (versions are the run ids that wrote them). A run "
            f"stopped part-way (killed, or a step failed) left them out of step; rematerialize "
            f"{upstream} and everything downstream of it together (`ml4t run`, or select the "
            "asset and its downstream assets in the UI) rather than a downstream asset alone"
        )
