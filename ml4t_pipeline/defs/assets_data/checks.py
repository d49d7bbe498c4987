"""What the data assets share: their group, and the check results built from row validations.

Every row rule of a prepared table (:data:`TABLE_RULES`) becomes its own blocking check named
``<table>_<rule>``; :func:`skipped_check` is the result of a check that could not run.
"""

from typing import Any

import dagster as dg
import polars as pl

from ml4t_pipeline.defs.metadata import table_value
from ml4t_pipeline.defs.partitions import experiment_check_spec
from ml4t_pipeline.lib import schemas

GROUP = "data"
MAX_LISTED_ROWS = 20
TABLE_RULES: dict[str, tuple[str, ...]] = {
    "signals": ("key_unique", "values_finite", "available_at_not_null", "symbol_known"),
    "features": ("key_unique", "values_finite_or_null", "symbol_known"),
    "market_context": ("timestamp_unique", "required_not_null", "values_finite_or_null"),
}
"""The row rules of each prepared table; each becomes its own check named ``<table>_<rule>``."""


def _rule_check_name(asset: str, rule: str) -> str:
    return f"{'context' if asset == 'market_context' else asset}_{rule}"


def _rule_specs(asset: str) -> list[dg.AssetCheckSpec]:
    """One blocking check per property of ``asset``, named as a predicate."""
    return [
        experiment_check_spec(
            _rule_check_name(asset, rule),
            asset=asset,
            blocking=True,
            description=f"No {asset} row breaks `{rule}`.",
        )
        for rule in TABLE_RULES[asset]
    ]


def _rule_checks(asset: str, report: schemas.TableValidation) -> list[dg.AssetCheckResult]:
    """The per-property results of a validation (a rule not applied says so, and passes)."""
    out = []
    for rule in TABLE_RULES[asset]:
        checked = rule in report.summary
        broken = report.rows_breaking(rule) if checked else report.violations.clear()
        out.append(_rule_result(asset, rule, checked, broken))
    return out


def _rule_result(asset: str, rule: str, checked: bool, broken: pl.DataFrame) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=_rule_check_name(asset, rule),
        asset_key=asset,
        passed=broken.height == 0,
        description=None if checked else "not applicable to this experiment",
        metadata={
            "checked": dg.MetadataValue.bool(checked),
            "n_violations": dg.MetadataValue.int(broken.height),
            "first_offending_rows": table_value(broken.head(MAX_LISTED_ROWS), MAX_LISTED_ROWS),
        },
    )


def _validation_check(
    check_name: str, asset: str, report: schemas.TableValidation, **extra: Any
) -> dg.AssetCheckResult:
    """An ERROR-severity check result from a row validation: counts and first offending keys."""
    return dg.AssetCheckResult(
        check_name=check_name,
        asset_key=asset,
        passed=report.ok,
        severity=dg.AssetCheckSeverity.ERROR,
        description="every row valid"
        if report.ok
        else f"{report.invalid.height} invalid rows ({report.n_violations} violations)",
        metadata={
            "rows_checked": dg.MetadataValue.int(report.n_checked),
            "n_violations": dg.MetadataValue.int(report.n_violations),
            "n_invalid_rows": dg.MetadataValue.int(report.invalid.height),
            "violations_by_rule": dg.MetadataValue.json(report.summary),
            "first_offending_rows": table_value(
                report.violations.head(MAX_LISTED_ROWS), MAX_LISTED_ROWS
            ),
            **extra,
        },
    )


SKIPPED_KEY = "skipped"
"""Metadata key of a check result for a check that could not run: the reason, as text."""


def skipped_check(check_name: str, reason: str) -> dg.AssetCheckResult:
    """The result of a check that could not run: ``passed=True`` (nothing was found, so nothing
    blocks), WARN severity, the description ``skipped: <reason>`` and the reason under the
    metadata key :data:`SKIPPED_KEY`, which ``ml4t validate`` prints as ``skipped``.

    Dagster 1.13 has a SKIPPED check status only for a check whose result is never emitted,
    which an ``@asset`` with check specs cannot do (its check outputs are required), so the
    skip is stated in the result itself.
    """
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=True,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"skipped: {reason}",
        metadata={SKIPPED_KEY: dg.MetadataValue.text(reason)},
    )
