"""Observable source assets: the experiment's input files, versioned by content hash.

``prices_file``, ``signals_file``, ``features_file``, ``context_file``,
``corporate_actions_file``, ``membership_file`` and ``benchmark_file`` are partitioned by
experiment. Their data version is the SHA-256 of the file's bytes (or of every file in a
partitioned folder), so replacing an input file is seen as new data. An experiment whose input is
not a file (demo prices, model signals, computed features, market context) has no version for
that source. The ``input_files_sensor`` reports an observation when a hash changes, and the
``eager`` automation conditions downstream rerun exactly that experiment.
"""

from typing import Any

import dagster as dg

from ml4t_pipeline.defs.partitions import experiments_partitions
from ml4t_pipeline.lib.lineage import experiment_input_hashes


def _observe(context: dg.AssetExecutionContext, name: str) -> dg.DataVersionsByPartition:
    """Data versions of ``name`` for every experiment partition whose input can be hashed.

    An experiment whose config is refused (``ConfigError``/``DataPathError``, both
    ``ValueError``) or whose input file is missing is skipped with a warning naming it and the
    reason; the other experiments are still observed.
    """
    experiments = context.resources.experiments
    versions: dict[str, str] = {}
    for key in context.instance.get_dynamic_partitions(experiments_partitions.name):
        try:
            hashes = experiment_input_hashes(experiments.load(key), experiments.root())
        except (FileNotFoundError, ValueError) as exc:  # missing file, or a config now refused
            context.log.warning(f"{name}: experiment {key} not observed: {exc}")
            continue
        if name in hashes:
            versions[key] = hashes[name]
    return dg.DataVersionsByPartition(versions)


def _input_file_asset(name: str, description: str) -> Any:
    """An observable source asset whose per-experiment data version is the file's hash."""

    @dg.observable_source_asset(
        name=name,
        partitions_def=experiments_partitions,
        required_resource_keys={"experiments"},
        group_name="inputs",
        description=description,
    )
    def _asset(context: dg.AssetExecutionContext) -> dg.DataVersionsByPartition:
        return _observe(context, name)

    return _asset


prices_file = _input_file_asset(
    "prices_file", "The experiment's price file (content hash as data version)."
)
signals_file = _input_file_asset(
    "signals_file",
    "The experiment's model-score file (content hash as data version). Experiments whose "
    "signals come from the built-in walk-forward model have no file to observe.",
)
features_file = _input_file_asset(
    "features_file",
    "The experiment's features table, when read from a file (content hash as data version). "
    "Computed features have no file to observe.",
)
corporate_actions_file = _input_file_asset(
    "corporate_actions_file",
    "The experiment's corporate-actions table (data.corporate_actions: splits and dividends; "
    "content hash as data version). Experiments without one have no file to observe.",
)
membership_file = _input_file_asset(
    "membership_file",
    "The experiment's index-membership table (data.universe.membership; content hash as data "
    "version). Experiments without a universe have no file to observe.",
)
benchmark_file = _input_file_asset(
    "benchmark_file",
    "The experiment's benchmark price file and its corporate actions (reporting.benchmark; one "
    "content hash for both). Experiments without a benchmark have no file to observe.",
)
context_file = _input_file_asset(
    "context_file",
    "The experiment's market-context file (VIX or any timestamped table; content hash as data "
    "version). The `market` context is derived from prices and has no file.",
)
