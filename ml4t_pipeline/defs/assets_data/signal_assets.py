"""Signal asset: model scores (or a user's file) with the time each became available, and the
checks that the stamps are bar closes and that some score is usable by the last bar."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from ml4t_pipeline.config import FileSignalsConfig, resolve_data_path
from ml4t_pipeline.defs.assets_data.checks import (
    GROUP,
    MAX_LISTED_ROWS,
    _rule_checks,
    _rule_specs,
    _validation_check,
)
from ml4t_pipeline.defs.metadata import frame_metadata, pandera_descriptions, table_value
from ml4t_pipeline.defs.partitions import (
    RERUN_ON_NEW_INPUTS,
    experiment_check_spec,
    experiments_partitions,
)
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.defs.storage_metadata import asset_checks_verdict, by_month_metadata
from ml4t_pipeline.lib import features as features_lib
from ml4t_pipeline.lib import io as io_lib
from ml4t_pipeline.lib import schemas, timing
from ml4t_pipeline.lib import signals as signals_lib
from ml4t_pipeline.lib.lineage import file_content_hash, frame_content_hash
from ml4t_pipeline.lib.memory import release_free_memory


@dg.asset(
    partitions_def=experiments_partitions,
    group_name=GROUP,
    kinds={"polars", "sklearn"},
    deps=["signals_file"],
    ins={
        # what the model and the checks read: the close, not the whole OHLCV table
        "prices": dg.AssetIn(metadata={"columns": ["timestamp", "symbol", "close"]}),
        # scanned: the model collects only its input columns; a signal file reads none
        "features": dg.AssetIn(metadata={"lazy": True}),
    },
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
    features: pl.LazyFrame,
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
        inputs = list(features_lib.FEATURE_COLUMNS)
        stored = features.collect_schema().names()  # a missing input is named by the model
        frame = signals_lib.walk_forward_signals(
            prices,
            features.select(c for c in ["timestamp", "symbol", *inputs] if c in stored).collect(),
            inputs,
            horizon=model.horizon,
            retrain=model.retrain,
            min_train_periods=model.min_train_periods,
            model=model.model,
            alpha=model.alpha,
        )
        release_free_memory()  # the fits' training-matrix copies (~60 MB on the S&P file)
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
