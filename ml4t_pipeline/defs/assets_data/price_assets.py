"""Price assets: raw prices → validated prices (+ quarantine), with one check per row rule.

``prices_raw`` is judged by ``prices``' row checks: it stays a pending candidate until they pass.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from ml4t_pipeline.config import DEMO_PRICES, PlausibilityConfig, resolve_data_path
from ml4t_pipeline.defs.assets_data.checks import GROUP, MAX_LISTED_ROWS
from ml4t_pipeline.defs.metadata import frame_metadata, pandera_descriptions, table_value
from ml4t_pipeline.defs.partitions import (
    RERUN_ON_NEW_INPUTS,
    experiment_check_spec,
    experiments_partitions,
)
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.defs.storage_metadata import (
    asset_checks_verdict,
    by_month_metadata,
    judged_by_metadata,
    promotes_metadata,
)
from ml4t_pipeline.lib import corporate_actions as actions_lib
from ml4t_pipeline.lib import io as io_lib
from ml4t_pipeline.lib import schemas
from ml4t_pipeline.lib.lineage import file_content_hash, frame_content_hash

FILE_ROW = "file_row"
"""Column of ``prices_raw`` (and ``prices_quarantine``) holding each row's 0-based data row in the
prices file (header not counted); the prepared ``prices`` do not carry it."""
FILE_ROW_NOTE = (
    "file_row = 0-based data row of the prices file (the header is not counted; a CSV's line "
    "number is file_row + 2)"
)


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"polars"},
    deps=["prices_file"],
    automation_condition=RERUN_ON_NEW_INPUTS,
    metadata=judged_by_metadata("prices"),
)
def prices_raw(
    context: dg.AssetExecutionContext, experiments: ExperimentsResource
) -> dg.Output[pl.DataFrame]:
    """Daily OHLCV as read from the experiment's source, in the prices contract, unvalidated.

    ``prices: demo`` reads bokeh-sampledata's real daily stocks (split- and dividend-adjusted with
    their adjusted close); anything else is a Parquet/CSV file or folder under ``ML4T_DATA_ROOT``.
    Nothing is dropped here; a ``symbols`` list in the config restricts the universe explicitly.
    A file's rows carry ``file_row`` (their 0-based data row in the file), so a row refused later
    is named by its place in the file, not by its place after sorting.
    The data version is the content hash of the source. The value becomes current only when
    ``prices``' blocking checks pass on it (until then it is a pending candidate).
    """
    cfg = experiments.load(context.partition_key)
    if cfg.data.prices == DEMO_PRICES:
        frame = io_lib.load_demo_prices()
        source, version = "bokeh-sampledata (package)", frame_content_hash(frame)
    else:
        path = resolve_data_path(cfg.data.prices, data_root=experiments.root(), field="data.prices")
        frame = io_lib.load_prices_file(
            path, bar_length=cfg.data.bar_length, row_column=FILE_ROW, calendar=cfg.data.calendar
        )
        source, version = str(path), file_content_hash(path)
    n_all = frame.height
    if cfg.data.symbols:
        frame = frame.filter(pl.col("symbol").is_in(cfg.data.symbols))
    meta = frame_metadata(frame)
    meta |= {
        "source": dg.MetadataValue.text(source),
        "content_hash": dg.MetadataValue.text(version),
        "rows_outside_configured_universe": dg.MetadataValue.int(n_all - frame.height),
    }
    return dg.Output(frame, metadata=meta, data_version=dg.DataVersion(version))


PRICE_RULE_NAMES = (*schemas.PRICE_RULE_NAMES, *schemas.PLAUSIBILITY_RULE_NAMES)
"""Every row rule of the prices asset: the schema's rules, then the plausibility rules."""
PRICE_CHECKS = tuple(f"prices_{rule}" for rule in PRICE_RULE_NAMES)


def _price_check_description(rule: str) -> str:
    source = " (bounds from data.plausibility)" if rule in schemas.PLAUSIBILITY_RULE_NAMES else ""
    return (
        f"No input price row breaks the rule `{rule}`{source} (WARN when the quarantine policy "
        "sets the rows aside, ERROR under fail)."
    )


def plausibility(cfg: PlausibilityConfig) -> schemas.Plausibility:
    """The lib's plausibility bounds from the config's ``data.plausibility``."""
    return schemas.Plausibility(
        max_price=cfg.max_price,
        min_return=cfg.min_return,
        max_return=cfg.max_return,
        calendar=cfg.calendar,
    )


def in_file_rows(violations: pl.DataFrame, prices_raw: pl.DataFrame) -> pl.DataFrame:
    """Violations named by their row in the prices file: ``file_row`` instead of ``row_index``.

    ``row_index`` is a position in ``prices_raw``, which is sorted by (timestamp, symbol); a
    user looks for the row in the file. Without a ``file_row`` column (the demo prices are no
    file) the violations are returned as they are.
    """
    if FILE_ROW not in prices_raw.columns or violations.is_empty():
        return violations
    rows = prices_raw.get_column(FILE_ROW).gather(violations.get_column("row_index"))
    return violations.select(rows.alias(FILE_ROW), pl.exclude("row_index"))


@dg.multi_asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    deps=["corporate_actions_file"],
    outs={
        "prices": dg.AssetOut(
            description="Validated daily OHLCV (timestamp = bar close, UTC), one row per "
            "(timestamp, symbol). Under the quarantine policy, invalid rows are left out "
            "and kept in prices_quarantine.",
            kinds={"polars"},
            automation_condition=RERUN_ON_NEW_INPUTS,
            metadata=by_month_metadata() | promotes_metadata("prices_raw"),
        ),
        "prices_quarantine": dg.AssetOut(
            description="Price rows that break a validation rule, every original column kept, "
            "with `row_index` (position in prices_raw), `file_row` (0-based data row of the "
            "prices file) and `reason` naming each rule broken. Empty unless the policy is "
            "quarantine.",
            kinds={"polars"},
            automation_condition=RERUN_ON_NEW_INPUTS,
            metadata=by_month_metadata(allow_empty=True),
        ),
    },
    check_specs=[
        experiment_check_spec(
            "prices_valid",
            asset="prices",
            blocking=True,
            description="The rows passed downstream break no PricesSchema rule: under `fail`, "
            "every input row is valid; under `quarantine`, the invalid rows were set aside.",
        ),
        *(
            experiment_check_spec(
                name,
                asset="prices",
                blocking=True,
                description=_price_check_description(rule),
            )
            for rule, name in zip(PRICE_RULE_NAMES, PRICE_CHECKS, strict=True)
        ),
    ],
)
def prices(
    context: dg.AssetExecutionContext, experiments: ExperimentsResource, prices_raw: pl.DataFrame
) -> Iterator[Any]:
    """Validate prices with the pandera schema at the configured level; apply the policy.

    Levels: ``fast`` checks names, dtypes and a sample of rows (the metadata says how many rows
    were not checked); ``standard`` and ``paranoid`` check every row. The plausibility rules of
    ``data.plausibility`` (price level, close-to-close return, session calendar, blank symbol)
    are applied at every level. Offending rows are listed by ``file_row``, their 0-based data
    row in the prices file. With ``data.corporate_actions`` the table is validated against
    these raw prices (a bad table fails the asset naming its rows) and, under
    ``data.adjustment: split_adjusted | total_return``, the prices are adjusted with it
    (:mod:`ml4t_pipeline.lib.corporate_actions`).
    """
    cfg = experiments.load(context.partition_key)
    policy = cfg.data.invalid_rows
    level = "fast" if cfg.data.validation == "fast" else "standard"
    report = schemas.validate_prices(
        prices_raw, level=level, plausibility=plausibility(cfg.data.plausibility)
    )
    quarantine = policy == "quarantine"
    kept = report.drop_invalid(prices_raw) if quarantine else prices_raw
    if FILE_ROW in kept.columns:
        kept = kept.drop(FILE_ROW)
    row_note = {"rows_numbered": dg.MetadataValue.text(FILE_ROW_NOTE)}
    if FILE_ROW not in prices_raw.columns:
        row_note = {"rows_numbered": dg.MetadataValue.text("row_index = position in prices_raw")}
    set_aside = report.invalid if quarantine else report.invalid.clear()
    actions_meta: dict[str, Any] = {}
    if cfg.data.corporate_actions is not None:  # validated on raw prices, then adjusted
        section = cfg.data.corporate_actions
        path = resolve_data_path(
            section.path, data_root=experiments.root(), field="data.corporate_actions.path"
        )
        kept, counts = actions_lib.prepare_prices(kept, path, section.format, cfg.data.adjustment)
        actions_meta = {
            "adjustment": dg.MetadataValue.text(cfg.data.adjustment),
            "corporate_actions_hash": dg.MetadataValue.text(file_content_hash(path)),
            **{f"n_{k}": dg.MetadataValue.int(v) for k, v in counts.items()},
        }
    descriptions = pandera_descriptions(schemas.PricesSchema)
    results = [
        dg.AssetCheckResult(
            check_name="prices_valid",
            asset_key="prices",
            passed=report.n_violations == 0 or quarantine,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "policy": dg.MetadataValue.text(policy),
                "validation_level": dg.MetadataValue.text(report.level),
                "rows_checked": dg.MetadataValue.int(report.n_checked),
                "rows_not_checked": dg.MetadataValue.int(report.n_unchecked),
                "n_violations": dg.MetadataValue.int(report.n_violations),
                "n_invalid_rows": dg.MetadataValue.int(report.invalid.height),
                "violations_by_rule": dg.MetadataValue.json(report.summary),
                "first_offending_rows": table_value(
                    in_file_rows(report.violations.head(MAX_LISTED_ROWS), prices_raw),
                    MAX_LISTED_ROWS,
                ),
                **(row_note if report.n_violations else {}),
            },
            description=(
                "all checked rows valid"
                if report.n_violations == 0
                else f"{report.invalid.height} invalid rows ({policy})"
            ),
        )
    ]
    for rule, name in zip(PRICE_RULE_NAMES, PRICE_CHECKS, strict=True):
        broken = report.rows_breaking(rule) if rule in report.summary else report.violations.clear()
        results.append(
            dg.AssetCheckResult(
                check_name=name,
                asset_key="prices",
                passed=broken.height == 0,
                severity=dg.AssetCheckSeverity.WARN if quarantine else dg.AssetCheckSeverity.ERROR,
                metadata={
                    "n_violations": dg.MetadataValue.int(broken.height),
                    "first_offending_rows": table_value(
                        in_file_rows(broken.head(MAX_LISTED_ROWS), prices_raw), MAX_LISTED_ROWS
                    ),
                    **(row_note if broken.height else {}),
                },
            )
        )
    verdict = asset_checks_verdict(context, results)
    yield dg.Output(
        kept,
        output_name="prices",
        metadata=frame_metadata(kept, descriptions)
        | {
            "n_quarantined": dg.MetadataValue.int(prices_raw.height - kept.height),
            "validation_level": dg.MetadataValue.text(report.level),
            "rows_not_checked": dg.MetadataValue.int(report.n_unchecked),
        }
        | actions_meta
        | verdict,
    )
    yield dg.Output(
        set_aside,
        output_name="prices_quarantine",
        metadata=frame_metadata(set_aside) | {"policy": dg.MetadataValue.text(policy)} | verdict,
    )
    yield from results
