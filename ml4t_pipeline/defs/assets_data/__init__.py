"""Data assets: raw prices → validated prices (+ quarantine) → features, context, signals → panel.

Every asset is partitioned by experiment (the partition key is the experiment file's stem).
The prepared tables (prices, prices_quarantine, features, market_context, signals, market_panel)
are stored hive-partitioned by year/month (``by_month_metadata``; see ``io_managers``).
Assets are thin: they load the experiment config, call ``ml4t_pipeline.lib`` and report metadata.

Each asset computes its blocking checks before it yields its value and passes the verdict to the
IO manager in the output metadata (``checks_verdict_metadata``): a value that fails a blocking
check is stored as a rejected candidate and the last value that passed stays current.
``prices_raw`` is judged by ``prices``' row checks: it stays a pending candidate until they pass.

The concepts, one module each: what the assets share (:mod:`.checks`: the group, the per-rule
check results, skipped checks), the price assets (:mod:`.price_assets`), features and market
context (:mod:`.feature_assets`), signals (:mod:`.signal_assets`) and the market panel
(:mod:`.panel_assets`). This package re-exports their public names, so the code location loads
every data asset from ``ml4t_pipeline.defs.assets_data`` and they share one code version
(:mod:`ml4t_pipeline.defs.versions`: the source closure of this package).
"""

from ml4t_pipeline.defs.assets_data.checks import (
    GROUP,
    MAX_LISTED_ROWS,
    SKIPPED_KEY,
    TABLE_RULES,
    skipped_check,
)
from ml4t_pipeline.defs.assets_data.feature_assets import (
    context_required_columns,
    features,
    market_context,
)
from ml4t_pipeline.defs.assets_data.panel_assets import (
    market_panel,
    signals_available_before_use,
    stale_check_skip_reason,
)
from ml4t_pipeline.defs.assets_data.price_assets import (
    FILE_ROW,
    FILE_ROW_NOTE,
    PRICE_CHECKS,
    PRICE_RULE_NAMES,
    in_file_rows,
    plausibility,
    prices,
    prices_raw,
)
from ml4t_pipeline.defs.assets_data.signal_assets import (
    signal_overlap_check,
    signal_stamp_check,
    signals,
)

__all__ = [
    "FILE_ROW",
    "FILE_ROW_NOTE",
    "GROUP",
    "MAX_LISTED_ROWS",
    "PRICE_CHECKS",
    "PRICE_RULE_NAMES",
    "SKIPPED_KEY",
    "TABLE_RULES",
    "context_required_columns",
    "features",
    "in_file_rows",
    "market_context",
    "market_panel",
    "plausibility",
    "prices",
    "prices_raw",
    "signal_overlap_check",
    "signal_stamp_check",
    "signals",
    "signals_available_before_use",
    "skipped_check",
    "stale_check_skip_reason",
]
