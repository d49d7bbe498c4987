"""One month of the prepared panel at a time: ``prepared_panel``, partitioned experiment × month.

``market_panel`` rebuilds an experiment's whole panel. ``prepared_panel`` holds the same rows but
is partitioned by (experiment, calendar month in UTC), so one month can be rematerialized alone:
only that month's file ``prepared_panel/<experiment>/year=YYYY/month=MM/data.parquet`` is
rewritten (atomically), every other month's file is left untouched.

It reads the experiment's stored ``prices``, ``features`` and ``signals`` as lazy scans and
collects only what the month needs: the month's price and feature rows, the last
``max_fill_bars + 1`` bars of every symbol before the month (so the forward-fill limit counts
across the month boundary), and the signals available before the month ends. The join is
``panel.build_market_panel``, the same as ``market_panel``, so a month of ``prepared_panel``
equals that month of ``market_panel``.

This module is not part of the experiment job: that job runs every asset for one experiment
key, and this asset's keys are (experiment, month) pairs. Materialize it by partition (UI or
``dg.materialize(..., partition_key=dg.MultiPartitionKey(...))``) or by a backfill.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from ml4t_pipeline.defs.assets_data import signals_available_before_use
from ml4t_pipeline.defs.io_managers import MONTH_DIMENSION, month_bounds
from ml4t_pipeline.defs.metadata import frame_metadata
from ml4t_pipeline.defs.partitions import EXPERIMENTS, experiments_partitions
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.defs.storage_metadata import by_month_metadata, checks_verdict_metadata
from ml4t_pipeline.lib import panel as panel_lib
from ml4t_pipeline.lib import timing

MONTHS_START = "1990-01-01"
"""First monthly partition (the oldest shared data file, VIX, starts in January 1990)."""

months_partitions = dg.MonthlyPartitionsDefinition(start_date=MONTHS_START, timezone="UTC")
"""Calendar months in UTC, the same months as the prepared tables' ``year=/month=`` folders."""

experiment_months_partitions = dg.MultiPartitionsDefinition(
    {EXPERIMENTS: experiments_partitions, MONTH_DIMENSION: months_partitions}
)
"""(experiment, month) partitions of ``prepared_panel``."""

_SAME_EXPERIMENT = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=EXPERIMENTS)


def warmup_bars(prices: pl.LazyFrame, symbols: pl.Series, before: Any, n_bars: int) -> pl.DataFrame:
    """The last ``n_bars`` price rows of each of ``symbols`` strictly before ``before``.

    Parameters
    ----------
    prices : pl.LazyFrame
        The experiment's validated prices (lazy scan).
    symbols : pl.Series
        The symbols needing a warm-up (those of the month).
    before : datetime
        Start of the month (UTC).
    n_bars : int
        Bars per symbol (0: none).

    Returns
    -------
    pl.DataFrame
        Same columns as ``prices``, sorted by (timestamp, symbol).
    """
    if n_bars <= 0:
        return prices.filter(pl.lit(False)).collect()
    return (
        prices.filter(
            (pl.col("timestamp") < before)
            & pl.col("symbol").cast(pl.String).is_in(symbols.cast(pl.String).implode())
        )
        .sort("timestamp", "symbol")
        .filter(pl.int_range(pl.len(), 0, -1).over("symbol") <= n_bars)
        .collect()
    )


@dg.asset(
    partitions_def=experiment_months_partitions,
    group_name="data",
    kinds={"polars"},
    metadata=by_month_metadata(),
    ins={
        "prices": dg.AssetIn(partition_mapping=_SAME_EXPERIMENT, metadata={"lazy": True}),
        "features": dg.AssetIn(partition_mapping=_SAME_EXPERIMENT, metadata={"lazy": True}),
        "signals": dg.AssetIn(partition_mapping=_SAME_EXPERIMENT, metadata={"lazy": True}),
    },
    check_specs=[
        dg.AssetCheckSpec(
            "month_signals_available_before_use",
            asset="prepared_panel",
            partitions_def=experiment_months_partitions,
            blocking=True,
            description="No bar of the month uses a signal that the signals table says became "
            "available after the bar's close (each use is looked up again in the table).",
        )
    ],
)
def prepared_panel(
    context: dg.AssetExecutionContext,
    experiments: ExperimentsResource,
    prices: pl.LazyFrame,
    features: pl.LazyFrame,
    signals: pl.LazyFrame,
) -> Iterator[Any]:
    """One month of prices × features × signals for one experiment (see the module docstring).

    Raises
    ------
    ValueError
        The experiment has no validated price row in the month (its price range is named).
    """
    keys = context.partition_key.keys_by_dimension  # type: ignore[attr-defined]
    experiment, month = keys[EXPERIMENTS], keys[MONTH_DIMENSION]
    cfg = experiments.load(experiment).data
    start, end = month_bounds(month)
    in_month = (pl.col("timestamp") >= start) & (pl.col("timestamp") < end)
    bars = prices.filter(in_month).collect()
    if bars.height == 0:
        span = prices.select(
            pl.col("timestamp").min().alias("first"), pl.col("timestamp").max().alias("last")
        ).collect()
        raise ValueError(
            f"experiment {experiment!r} has no validated price rows in {month[:7]} (UTC); its "
            f"prices run from {span['first'][0]} to {span['last'][0]}"
        )
    # A signal first seen k bars before the month is stale at the same bars whether the join
    # sees all k bars or only the last max_fill_bars + 1 of them.
    n_warm = 0 if cfg.max_fill_bars is None else cfg.max_fill_bars + 1
    warm = warmup_bars(prices, bars["symbol"].unique(), start, n_warm)
    chunk = pl.concat([warm, bars], how="vertical") if warm.height else bars
    first = chunk["timestamp"].min()
    month_features = features.filter(
        (pl.col("timestamp") >= first) & (pl.col("timestamp") < end)
    ).collect()
    visible = signals.filter(pl.col("available_at") < end).collect()
    frame = panel_lib.build_market_panel(
        chunk, month_features, visible, max_fill_bars=cfg.max_fill_bars, keep_status=True
    ).filter(in_month)
    counts = timing.status_counts(frame, "signal_status")
    frame = frame.drop("signal_status")
    # the check looks every used signal up in the stored signals table, not in `visible`
    used_times = frame.get_column("signal_timestamp").drop_nulls().unique()
    lookup = signals.filter(pl.col("timestamp").is_in(used_times.implode())).collect()
    result = signals_available_before_use(
        frame, lookup, check_name="month_signals_available_before_use"
    )
    yield dg.Output(
        frame,
        metadata=frame_metadata(frame)
        | {
            "signal_fill": dg.MetadataValue.json(counts),
            "warmup_rows": dg.MetadataValue.int(warm.height),
        }
        | checks_verdict_metadata([result]),
    )
    yield result
