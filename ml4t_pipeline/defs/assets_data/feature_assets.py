"""Feature and market-context assets: per-symbol indicators and market-wide values per bar."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from ml4t_pipeline.config import ContextConfig, resolve_data_path
from ml4t_pipeline.defs.assets_data.checks import (
    GROUP,
    _rule_checks,
    _rule_specs,
    _validation_check,
)
from ml4t_pipeline.defs.metadata import frame_metadata, pandera_descriptions
from ml4t_pipeline.defs.partitions import (
    RERUN_ON_NEW_INPUTS,
    experiment_check_spec,
    experiments_partitions,
)
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.defs.storage_metadata import asset_checks_verdict, by_month_metadata
from ml4t_pipeline.lib import context as context_lib
from ml4t_pipeline.lib import corporate_actions as actions_lib
from ml4t_pipeline.lib import features as features_lib
from ml4t_pipeline.lib import io as io_lib
from ml4t_pipeline.lib import schemas, timing
from ml4t_pipeline.lib.lineage import file_content_hash, frame_content_hash


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
