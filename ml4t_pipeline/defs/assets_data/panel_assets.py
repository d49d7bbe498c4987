"""Market panel asset: prices × features × signals per (timestamp, symbol), the frame the engine
reads, with the checks that no bar uses a signal before it was available or stale."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from ml4t_pipeline.config import resolve_data_path
from ml4t_pipeline.defs.assets_data.checks import GROUP, MAX_LISTED_ROWS, skipped_check
from ml4t_pipeline.defs.metadata import frame_metadata, table_value
from ml4t_pipeline.defs.partitions import (
    RERUN_ON_NEW_INPUTS,
    experiment_check_spec,
    experiments_partitions,
)
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.defs.storage_metadata import asset_checks_verdict, by_month_metadata
from ml4t_pipeline.lib import panel as panel_lib
from ml4t_pipeline.lib import timing
from ml4t_pipeline.lib import universe as universe_lib
from ml4t_pipeline.lib.experiment import value_columns
from ml4t_pipeline.lib.lineage import file_content_hash


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
    path = resolve_data_path(spec.membership, data_root=data_root, field="data.universe.membership")
    membership = universe_lib.load_membership(path, spec.renames)
    masked = universe_lib.mask_outside_universe(frame, membership, ranked)
    gap = universe_lib.survivorship_gap(frame.select("timestamp", "symbol"), membership)
    inside = masked[universe_lib.IN_UNIVERSE]
    meta = {
        "membership_hash": dg.MetadataValue.text(file_content_hash(path)),
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
