"""Data assets: raw prices → validated prices (+ quarantine) → features, context, signals → panel.

Every asset is partitioned by experiment (the partition key is the experiment file's stem).
The prepared tables (prices, prices_quarantine, features, market_context, signals, market_panel)
are stored hive-partitioned by year/month (``by_month_metadata``; see ``io_managers``).
Assets are thin: they load the experiment config, call ``ml4t_pipeline.lib`` and report metadata.

Each asset computes its blocking checks before it yields its value and passes the verdict to the
IO manager in the output metadata (``checks_verdict_metadata``): a value that fails a blocking
check is stored as a rejected candidate and the last value that passed stays current.
``prices_raw`` is judged by ``prices``' row checks: it stays a pending candidate until they pass.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from ml4t_pipeline.config import (
    DEMO_PRICES,
    ContextConfig,
    FileSignalsConfig,
    PlausibilityConfig,
    resolve_data_path,
)
from ml4t_pipeline.defs.io_managers import (
    asset_checks_verdict,
    by_month_metadata,
    judged_by_metadata,
    promotes_metadata,
)
from ml4t_pipeline.defs.metadata import frame_metadata, pandera_descriptions, table_value
from ml4t_pipeline.defs.partitions import (
    RERUN_ON_NEW_INPUTS,
    experiment_check_spec,
    experiments_partitions,
)
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.lib import context as context_lib
from ml4t_pipeline.lib import corporate_actions as actions_lib
from ml4t_pipeline.lib import features as features_lib
from ml4t_pipeline.lib import io as io_lib
from ml4t_pipeline.lib import panel as panel_lib
from ml4t_pipeline.lib import schemas, timing
from ml4t_pipeline.lib import signals as signals_lib
from ml4t_pipeline.lib import universe as universe_lib
from ml4t_pipeline.lib.experiment import value_columns
from ml4t_pipeline.lib.lineage import file_content_hash, frame_content_hash

GROUP = "data"
MAX_LISTED_ROWS = 20
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


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"polars"},
    deps=["features_file"],
    metadata=by_month_metadata(),
    automation_condition=RERUN_ON_NEW_INPUTS,
    check_specs=[
        experiment_check_spec(
            "features_valid",
            asset="features",
            blocking=True,
            description="Feature keys (timestamp, symbol) are unique, every indicator value is "
            "finite or null (null = warm-up), and every symbol is known in prices.",
        ),
        *_rule_specs("features"),
    ],
)
def features(
    context: dg.AssetExecutionContext, experiments: ExperimentsResource, prices: pl.DataFrame
) -> Iterator[Any]:
    """Per-symbol indicators, each known at its bar's close (returns, vol_20, ATR-14, RSI-14...).

    ``features: computed`` computes them with polars window expressions from ``prices``; a path
    reads a user's features table (timestamp, symbol, Float64 columns), whose content hash is
    then the data version.
    """
    cfg = experiments.load(context.partition_key)
    section = cfg.data.corporate_actions
    if cfg.data.features == "computed" and section is not None and cfg.data.adjustment == "raw":
        path = resolve_data_path(
            section.path, data_root=experiments.root(), field="data.corporate_actions.path"
        )
        actions, _ = actions_lib.load_actions(path, section.format, prices)
        frame = actions_lib.raw_features(prices, actions)
        version = frame_content_hash(frame)
    elif cfg.data.features == "computed":
        frame = features_lib.compute_features(prices)
        version = frame_content_hash(frame)
    else:
        path = resolve_data_path(
            cfg.data.features, data_root=experiments.root(), field="data.features"
        )
        frame = io_lib.read_table(path)
        version = file_content_hash(path)
    report = schemas.validate_features(frame, known_symbols=prices["symbol"].unique())
    meta = frame_metadata(frame, pandera_descriptions(schemas.FeaturesSchema))
    meta["content_hash"] = dg.MetadataValue.text(version)
    results = [
        _validation_check("features_valid", "features", report),
        *_rule_checks("features", report),
    ]
    yield dg.Output(
        frame,
        metadata=meta | asset_checks_verdict(context, results),
        data_version=dg.DataVersion(version),
    )
    yield from results


def context_required_columns(cfg: ContextConfig) -> list[str]:
    """The context columns an experiment uses and so must not be null.

    The configured ``data.context.columns``; for ``source: vix`` the ``vix`` column. The
    ``market`` columns have warm-up nulls by construction and are not required.
    """
    if cfg.columns:
        return list(cfg.columns)
    return ["vix"] if cfg.source == "vix" else []


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"polars"},
    deps=["context_file"],
    metadata=by_month_metadata(),
    automation_condition=RERUN_ON_NEW_INPUTS,
    ins={"prices": dg.AssetIn(metadata={"columns": ["timestamp", "symbol", "close"]})},
    check_specs=[
        experiment_check_spec(
            "context_valid",
            asset="market_context",
            blocking=True,
            description="One context row per timestamp, no null in the columns the experiment "
            "uses, and every value finite or null.",
        ),
        *_rule_specs("market_context"),
    ],
)
def market_context(
    context: dg.AssetExecutionContext, experiments: ExperimentsResource, prices: pl.DataFrame
) -> Iterator[Any]:
    """Market-wide values, one row per bar timestamp (never duplicated per symbol).

    ``source: market``: equal-weight market return and its 20-bar volatility from the prices.
    ``source: vix``: CBOE VIX close, stamped at 16:15 New York and joined backward, so a day's VIX
    is visible from the next daily bar (no look-ahead). ``source: file``: any table with a
    ``timestamp`` column, joined the same way. Reads only the timestamp, symbol and close of
    the prices.
    """
    cfg = experiments.load(context.partition_key).data.context
    meta: dict[str, Any] = {}
    if cfg.source == "market":
        frame = context_lib.market_context_from_prices(prices)
    else:
        if cfg.path is None:
            raise ValueError(f"data.context.source={cfg.source!r} needs data.context.path")
        path = resolve_data_path(cfg.path, data_root=experiments.root(), field="data.context.path")
        raw = io_lib.load_vix(path) if cfg.source == "vix" else io_lib.read_table(path)
        if cfg.columns:
            raw = raw.select(["timestamp", *cfg.columns])
        bars = prices.select("timestamp").unique().sort("timestamp")
        frame = context_lib.join_context_asof(bars, raw)
        meta["source_content_hash"] = dg.MetadataValue.text(file_content_hash(path))
        meta["context_fill"] = dg.MetadataValue.json(timing.status_counts(frame, "context_status"))
    version = frame_content_hash(frame)
    required = context_required_columns(cfg)
    report = schemas.validate_context(frame, required_columns=required)
    meta |= frame_metadata(frame, pandera_descriptions(schemas.ContextSchema))
    meta["content_hash"] = dg.MetadataValue.text(version)
    results = [
        _validation_check(
            "context_valid",
            "market_context",
            report,
            required_columns=dg.MetadataValue.json(required),
        ),
        *_rule_checks("market_context", report),
    ]
    yield dg.Output(
        frame,
        metadata=meta | asset_checks_verdict(context, results),
        data_version=dg.DataVersion(version),
    )
    yield from results


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"polars", "sklearn"},
    deps=["signals_file"],
    metadata=by_month_metadata(),
    automation_condition=RERUN_ON_NEW_INPUTS,
    check_specs=[
        experiment_check_spec(
            "signals_valid",
            asset="signals",
            blocking=True,
            description="Signal keys are unique, values finite, available_at set, and every "
            "symbol is known in prices.",
        ),
        *_rule_specs("signals"),
        experiment_check_spec(
            "signals_stamped_at_bar_close",
            asset="signals",
            blocking=True,
            description="Every signal stamp inside the price history is, as read under "
            "data.signal_timestamps, the close of a price bar (not checked, only reported, "
            "for `instant`). A stamp between two closes (e.g. midnight Tokyo time) would let a "
            "score be used a session before the date it names.",
        ),
        experiment_check_spec(
            "signals_overlap_price_bars",
            asset="signals",
            blocking=True,
            description="At least one signal becomes available by the last price bar's close; "
            "otherwise no bar can use any score (e.g. scores dated after the prices end).",
        ),
    ],
)
def signals(
    context: dg.AssetExecutionContext,
    experiments: ExperimentsResource,
    prices: pl.DataFrame,
    features: pl.DataFrame,
) -> Iterator[Any]:
    """Model scores per (timestamp, symbol) with the time each became available.

    By default a walk-forward scikit-learn model predicts the forward return from the features:
    expanding window, refit monthly, trained only on labels fully known before the month's first
    bar. Every row carries ``available_at``. A user's file replaces the model when configured;
    its stamps are read under ``data.signal_timestamps`` and its availability follows
    ``data.signal_available_at``. For every row the bar its stamp maps to and the offset to that
    bar's close are computed; the metadata ``signal_stamp_offsets`` gives their distribution.
    """
    cfg = experiments.load(context.partition_key).data
    stamps = "bar_close"
    if isinstance(cfg.signals, FileSignalsConfig):
        path = resolve_data_path(
            cfg.signals.path, data_root=experiments.root(), field="data.signals.path"
        )
        frame = io_lib.read_table(path)
        if cfg.signals.columns:
            keep = ["timestamp", "symbol", *cfg.signals.columns]
            if "available_at" in frame.columns:
                keep.append("available_at")
            frame = frame.select(keep)
        stamps = cfg.signal_timestamps
        offsets = timing.signal_stamp_offsets(
            frame, prices["timestamp"], stamps=stamps, calendar=cfg.calendar
        )
        frame = timing.signal_available_at(
            frame, cfg.signal_available_at, stamps=stamps, calendar=cfg.calendar
        )
        version = file_content_hash(path)
    else:
        model = cfg.signals
        frame = signals_lib.walk_forward_signals(
            prices,
            features,
            list(features_lib.FEATURE_COLUMNS),
            horizon=model.horizon,
            retrain=model.retrain,
            min_train_periods=model.min_train_periods,
            model=model.model,
            alpha=model.alpha,
        )
        version = frame_content_hash(frame)
        offsets = timing.signal_stamp_offsets(frame, prices["timestamp"])
    report = schemas.validate_signals(frame, known_symbols=prices["symbol"].unique())
    meta = frame_metadata(frame, pandera_descriptions(schemas.SignalsSchema))
    meta["content_hash"] = dg.MetadataValue.text(version)
    stamp_summary = timing.signal_stamp_summary(offsets)
    meta["signal_stamp_offsets"] = dg.MetadataValue.json(stamp_summary)
    numbered = (
        "row_index = 0-based data row of the signal file"
        if isinstance(cfg.signals, FileSignalsConfig)
        else "row_index = position in the model's scores, sorted by (timestamp, symbol)"
    )
    results = [
        _validation_check(
            "signals_valid", "signals", report, rows_numbered=dg.MetadataValue.text(numbered)
        ),
        *_rule_checks("signals", report),
        signal_stamp_check(offsets, stamps, stamp_summary),
        signal_overlap_check(frame, prices),
    ]
    yield dg.Output(
        frame,
        metadata=meta | asset_checks_verdict(context, results),
        data_version=dg.DataVersion(version),
    )
    yield from results


def signal_stamp_check(
    offsets: pl.DataFrame, stamps: str, summary: dict[str, Any]
) -> dg.AssetCheckResult:
    """``signals_stamped_at_bar_close``: stamps inside the price history must be bar closes.

    Parameters
    ----------
    offsets : pl.DataFrame
        ``timing.signal_stamp_offsets`` of the signals as read.
    stamps : str
        ``data.signal_timestamps``; under ``instant`` any offset is accepted (reported only).
    summary : dict
        ``timing.signal_stamp_summary(offsets)``.

    Returns
    -------
    dg.AssetCheckResult
        ERROR severity; fails naming the first stamps that are not bar closes (``row_index`` =
        0-based row of the signal file, the stamp as written, the bar close it maps to, the
        offset) with how to state the stamps' meaning.
    """
    bad = timing.misaligned_signal_stamps(offsets)
    judged = stamps != "instant"
    failed = judged and bad.height > 0
    head = bad.head(MAX_LISTED_ROWS)
    shown = head.select(
        "row_index",
        "symbol",
        "stamp",
        pl.col("bar_close").dt.strftime("%Y-%m-%d %H:%M:%S%:z"),
    ).with_columns(  # durations as ``5:00:00``
        pl.Series("offset", [str(v) for v in head["offset"]], dtype=pl.String)
    )
    meta: dict[str, Any] = {
        "signal_timestamps": dg.MetadataValue.text(stamps),
        "n_not_at_bar_close": dg.MetadataValue.int(bad.height),
        "signal_stamp_offsets": dg.MetadataValue.json(summary),
        "first_offending_rows": table_value(shown if failed else shown.clear(), MAX_LISTED_ROWS),
    }
    if failed:
        meta["rows_numbered"] = dg.MetadataValue.text(
            "row_index = 0-based data row of the signal file; offset = how long before the "
            "close of the bar it maps to the stamp lies"
        )
        meta["how_to_fix"] = dg.MetadataValue.text(timing.STAMP_ADVICE)
    if not judged:
        description = f"not required (signal_timestamps: instant); {bad.height} stamps between bars"
    elif failed:
        description = f"{bad.height} of {offsets.height} signal stamps are not bar closes"
    else:
        description = "every stamp inside the price history is a bar close"
    return dg.AssetCheckResult(
        check_name="signals_stamped_at_bar_close",
        asset_key="signals",
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata=meta,
    )


def signal_overlap_check(signals: pl.DataFrame, prices: pl.DataFrame) -> dg.AssetCheckResult:
    """``signals_overlap_price_bars``: some signal is available by the last bar's close.

    When every score becomes available after the last price bar closed, no bar can use any of
    them and the backtest would make no trade; this says why, instead of the run's generic
    zero-trades warning. An empty signals table passes (nothing to judge).
    """
    last_close = prices.get_column("timestamp").max() if prices.height else None
    available = signals.get_column("available_at")
    late = int((available > last_close).sum()) if last_close is not None else signals.height
    failed = signals.height > 0 and late == signals.height
    meta: dict[str, Any] = {
        "last_bar_close": dg.MetadataValue.text(str(last_close)),
        "n_signals": dg.MetadataValue.int(signals.height),
        "n_available_after_last_bar": dg.MetadataValue.int(late),
    }
    if failed:
        first = signals.get_column("timestamp").min()
        meta["first_signal_timestamp"] = dg.MetadataValue.text(str(first))
        meta["first_available_at"] = dg.MetadataValue.text(str(available.min()))
        description = (
            f"all {signals.height} signals become available after the last price bar closes "
            f"({last_close}; the first at {available.min()}): no bar can use any score, so the "
            "backtest could make no trade. Do the scores and prices cover the same dates?"
        )
        meta["problem"] = dg.MetadataValue.text(description)
    else:
        description = f"{signals.height - late} of {signals.height} signals usable by the last bar"
    return dg.AssetCheckResult(
        check_name="signals_overlap_price_bars",
        asset_key="signals",
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata=meta,
    )


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"polars"},
    deps=["membership_file"],
    metadata=by_month_metadata(),
    automation_condition=RERUN_ON_NEW_INPUTS,
    check_specs=[
        experiment_check_spec(
            "signals_available_before_use",
            asset="market_panel",
            blocking=True,
            description="No bar uses a signal that the signals table says became available "
            "after the bar's close (each use is looked up again by signal timestamp and symbol).",
        ),
        experiment_check_spec(
            "signals_not_stale",
            asset="market_panel",
            blocking=False,
            description="Under the paranoid level: no bar uses a signal older than "
            "data.max_signal_age_bars of its symbol's bars as if it were fresh (warns). Without "
            "both settings it does not run: its result says 'skipped' with the reason "
            "(metadata 'skipped').",
        ),
    ],
)
def market_panel(
    context: dg.AssetExecutionContext,
    experiments: ExperimentsResource,
    prices: pl.DataFrame,
    features: pl.DataFrame,
    signals: pl.DataFrame,
) -> Iterator[Any]:
    """Prices × features × signals per (timestamp, symbol): the frame the engine reads.

    Signals are joined as of their availability (backward ``join_asof`` on ``available_at``), so
    a signal becomes visible at the first bar whose close is at or after its availability. How
    many bars got a fresh, forward-filled, stale (past ``data.max_fill_bars``) or no signal is
    reported in the metadata.
    """
    experiment = experiments.load(context.partition_key)
    cfg = experiment.data
    frame = panel_lib.build_market_panel(
        prices, features, signals, max_fill_bars=cfg.max_fill_bars, keep_status=True
    )
    universe_meta: dict[str, Any] = {}
    if cfg.universe is not None:
        frame, universe_meta = _apply_universe(
            frame,
            cfg.universe,
            [*value_columns(signals), experiment.strategy.signal],
            experiments.root(),
        )
    counts = timing.status_counts(frame, "signal_status")
    skip_reason = stale_check_skip_reason(cfg.validation, cfg.max_signal_age_bars)
    frame_with_status = frame
    frame = frame.drop("signal_status")
    results = [signals_available_before_use(frame, signals)]
    if skip_reason is None and cfg.max_signal_age_bars is not None:
        stale = timing.stale_signal_uses(frame_with_status, cfg.max_signal_age_bars)
        results.append(
            dg.AssetCheckResult(
                check_name="signals_not_stale",
                passed=stale.height == 0,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"checked (paranoid, max_signal_age_bars={cfg.max_signal_age_bars})",
                metadata={
                    "n_violations": dg.MetadataValue.int(stale.height),
                    "first_offending_rows": table_value(
                        stale.head(MAX_LISTED_ROWS), MAX_LISTED_ROWS
                    ),
                },
            )
        )
    else:
        results.append(skipped_check("signals_not_stale", skip_reason or "not configured"))
    yield dg.Output(
        frame,
        metadata=frame_metadata(frame)
        | {"signal_fill": dg.MetadataValue.json(counts)}
        | universe_meta
        | asset_checks_verdict(context, results),
    )
    yield from results


def _apply_universe(
    frame: pl.DataFrame, spec: Any, ranked: list[str], data_root: Any
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """``frame`` with ``in_universe`` and the ranked columns masked outside membership, and the
    survivorship-gap metadata (:func:`ml4t_pipeline.lib.universe.survivorship_gap`)."""
    membership = universe_lib.load_membership(
        resolve_data_path(spec.membership, data_root=data_root, field="data.universe.membership"),
        spec.renames,
    )
    masked = universe_lib.mask_outside_universe(frame, membership, ranked)
    gap = universe_lib.survivorship_gap(frame.select("timestamp", "symbol"), membership)
    inside = masked[universe_lib.IN_UNIVERSE]
    meta = {
        "universe_bars_inside": dg.MetadataValue.int(int(inside.sum())),
        "universe_bars_outside": dg.MetadataValue.int(int((inside == 0).sum())),
        "universe_masked_columns": dg.MetadataValue.text(", ".join(dict.fromkeys(ranked))),
        "survivorship_gap_by_year": table_value(gap["by_year"], 100),
        "survivorship_unseen_member_day_share": dg.MetadataValue.float(gap["unseen_share"]),
        "survivorship_members_without_prices": dg.MetadataValue.text(
            f"{len(gap['members_without_prices'])}: " + ", ".join(gap["members_without_prices"])
        ),
        "universe_unmatched_symbols": dg.MetadataValue.text(
            f"{len(gap['unmatched_symbols'])} price symbols have no membership spell (never in "
            f"the universe; map renamed tickers with data.universe.renames): "
            + ", ".join(gap["unmatched_symbols"])
        ),
    }
    return masked, meta


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


def stale_check_skip_reason(validation: str, max_signal_age_bars: int | None) -> str | None:
    """Why ``signals_not_stale`` cannot run for these settings, or ``None`` when it runs.

    It runs only under ``data.validation: paranoid`` with ``data.max_signal_age_bars`` set
    (the age limit is the user's: there is no default age at which a score is stale).
    """
    if validation != "paranoid":
        return f"runs only under data.validation: paranoid (this experiment: {validation})"
    if max_signal_age_bars is None:
        return "data.max_signal_age_bars is not set (no age limit to check against)"
    return None


def signals_available_before_use(
    panel: pl.DataFrame, signals: pl.DataFrame, *, check_name: str = "signals_available_before_use"
) -> dg.AssetCheckResult:
    """Check that no bar of ``panel`` uses a signal before ``signals`` says it was available.

    Independent of the join that built the panel: every used signal (``signal_timestamp``) is
    looked up again in the signals table by (symbol, timestamp) and its ``available_at`` there
    is compared with the bar's close (``timing.signal_uses_before_available``). Comparing the
    panel's own ``signal_available_at`` with ``timestamp`` could not fail for an as-of join on
    that column; this lookup fails for a join on the wrong key, a shifted panel, or a used
    signal that is not in the table.

    Parameters
    ----------
    panel : pl.DataFrame
        The market panel: ``timestamp`` (bar close, UTC), ``symbol``, ``signal_timestamp``
        (null where no signal is used).
    signals : pl.DataFrame
        The signals table: ``timestamp``, ``symbol``, ``available_at`` (UTC).
    check_name : str
        Name of the check the result is for.

    Returns
    -------
    dg.AssetCheckResult
        ERROR severity; fails with the first offending panel rows (row index, bar, symbol,
        the signal's timestamp and its ``available_at`` in the table).
    """
    bad = timing.signal_uses_before_available(panel, signals)
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=bad.height == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description="every used signal was available by its bar's close"
        if bad.height == 0
        else f"{bad.height} bars use a signal before it was available",
        metadata={
            "n_violations": dg.MetadataValue.int(bad.height),
            "first_offending_rows": table_value(bad.head(MAX_LISTED_ROWS), MAX_LISTED_ROWS),
        },
    )
