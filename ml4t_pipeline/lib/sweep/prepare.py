"""A sweep's data: prepared once per distinct ``data`` section under ``DIR/prepared/<data_key>``.

The data assets' values are stored there with ``prepared.json`` (input hashes, data versions)
and reused while the input files, the data section and the code version are unchanged.
:func:`build_market` turns them into the engine's arrays, once per worker and data set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ml4t_pipeline.config import ExperimentConfig
from ml4t_pipeline.lib.lineage import experiment_input_hashes, frame_content_hash
from ml4t_pipeline.lib.sweep.spec import data_key
from ml4t_pipeline.lib.sweep.store import write_json
from ml4t_pipeline.lib.sweep.trials import sweep_code_version

if TYPE_CHECKING:
    from engine import MarketData


@dataclass
class PreparedData:
    """Prepared inputs shared by every trial with the same ``data`` section.

    Attributes
    ----------
    key : str
        :func:`~ml4t_pipeline.lib.sweep.spec.data_key` of the data section.
    panel, context : pl.DataFrame
        The ``market_panel`` and ``market_context`` assets' values.
    signal_columns, indicator_columns : list[str]
        Value columns of the ``signals`` and ``features`` assets.
    versions : dict[str, str]
        Content hashes of ``market_panel`` and ``market_context`` (the data versions).
    """

    key: str
    panel: pl.DataFrame
    context: pl.DataFrame
    signal_columns: list[str]
    indicator_columns: list[str]
    versions: dict[str, str]

    def frames(self) -> tuple[pl.DataFrame, pl.DataFrame, list[str], list[str]]:
        """What a worker needs: (panel, context, signal columns, indicator columns)."""
        return self.panel, self.context, self.signal_columns, self.indicator_columns


def build_market(frames: tuple[pl.DataFrame, pl.DataFrame, list[str], list[str]]) -> MarketData:
    """The engine's arrays of :meth:`PreparedData.frames`, built once per worker and data set.

    Building them is most of a trial's cost when done per trial (about 80 % on the S&P
    top-25 sweep); the engine only reads them, so every trial of a worker shares one.
    """
    from ml4t_pipeline.lib.experiment import market_data

    return market_data(*frames)


PrepareData = Callable[[dict[str, Any], ExperimentConfig, Path], PreparedData]
"""``prepare(raw, cfg, folder)``: the prepared data of one data section (what
:func:`run_sweep` is handed; ``ml4t_pipeline.sweeps.prepare_data`` runs the data assets)."""

MaterializeData = Callable[[ExperimentConfig, Path], None]
"""``materialize(config, storage_dir)``: store the data assets of one validated experiment
config under ``storage_dir`` (raises :class:`SweepError` naming what failed)."""

PREPARED_STEM = "sweep_data"
"""Stem of the experiment file (and partition key) a sweep's data is prepared under."""


def prepare_data(
    raw: dict[str, Any], cfg: ExperimentConfig, folder: Path, *, materialize: MaterializeData
) -> PreparedData:
    """Materialize the data assets of ``cfg.data`` into ``folder`` (or reuse them).

    The stored tables are reused when ``folder/prepared.json`` records the same input-file
    hashes (:func:`~ml4t_pipeline.lib.lineage.experiment_input_hashes`), data section and code
    version; otherwise ``materialize`` stores them again (the Dagster data assets, run by
    :func:`ml4t_pipeline.sweeps.prepare_data`) and they are read back with
    :func:`ml4t_pipeline.lib.formats.read_value`.

    Parameters
    ----------
    raw : dict
        The trial's experiment mapping (the data section's source; ``cfg`` is what runs).
    cfg : ExperimentConfig
        The same, validated.
    folder : Path
        ``DIR/prepared/<data_key>``.
    materialize : callable
        ``materialize(config, storage_dir)`` (:data:`MaterializeData`): the data assets of
        ``cfg`` (named ``prepared``) stored under ``storage_dir``.

    Raises
    ------
    SweepError
        A data asset or a blocking check failed (the message lists them).
    FileNotFoundError
        An input file is missing.
    """
    from ml4t_pipeline.config import DATA_ROOT_ENV
    from ml4t_pipeline.lib.experiment import attach_quotes, experiment_quotes, value_columns
    from ml4t_pipeline.lib.formats import read_value

    stem = PREPARED_STEM
    folder = Path(folder)
    storage = folder / "assets"
    marker = folder / "prepared.json"
    fingerprint = {
        "data": cfg.data.model_dump(mode="json"),
        "inputs": experiment_input_hashes(cfg, os.environ.get(DATA_ROOT_ENV)),
        "code_version": sweep_code_version(),
    }
    stored = json.loads(marker.read_text()) if marker.is_file() else {}
    fresh = stored.get("fingerprint") != fingerprint
    if fresh:
        # the validated config itself (no experiment file written and read back)
        materialize(cfg.model_copy(update={"name": stem}), storage)
    panel = read_value(storage / "market_panel" / stem)
    quotes = experiment_quotes(cfg, os.environ.get(DATA_ROOT_ENV))
    if quotes is not None:  # bid/ask for spread-aware slippage, as in the backtest asset
        panel = attach_quotes(panel, quotes)
    context = read_value(storage / "market_context" / stem)
    signals = read_value(storage / "signals" / stem, lazy=True).head(0).collect()
    features = read_value(storage / "features" / stem, lazy=True).head(0).collect()
    if fresh or "versions" not in stored:
        versions = {
            "market_panel": frame_content_hash(panel),
            "market_context": frame_content_hash(context),
        }
        write_json(marker, {"fingerprint": fingerprint, "versions": versions})
    else:
        versions = dict(stored["versions"])
    return PreparedData(
        key=data_key(cfg),
        panel=panel,
        context=context,
        signal_columns=value_columns(signals),
        indicator_columns=value_columns(features),
        versions=versions,
    )
