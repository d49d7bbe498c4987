"""Observable source assets: the experiment's input files, versioned by content hash.

``prices_file``, ``signals_file``, ``features_file`` and ``context_file`` are partitioned by
experiment. Their data version is the SHA-256 of the file's bytes (or of every file in a
partitioned folder), so replacing an input file is seen as new data. An experiment whose input is
not a file (demo prices, model signals, computed features, market context) has no version for
that source. The ``input_files_sensor`` reports an observation when a hash changes, and the
``eager`` automation conditions downstream rerun exactly that experiment.
"""

import dagster as dg

from ml4t_pipeline.defs.partitions import experiments_partitions
from ml4t_pipeline.lib.lineage import experiment_input_hashes


def _observe(context: dg.AssetExecutionContext, name: str) -> dg.DataVersionsByPartition:
    experiments = context.resources.experiments
    versions: dict[str, str] = {}
    for key in context.instance.get_dynamic_partitions(experiments_partitions.name):
        try:
            hashes = experiment_input_hashes(experiments.load(key), experiments.root())
        except FileNotFoundError as exc:
            context.log.warning(f"experiment {key}: {exc}")
            continue
        if name in hashes:
            versions[key] = hashes[name]
    return dg.DataVersionsByPartition(versions)


@dg.observable_source_asset(
    partitions_def=experiments_partitions,
    required_resource_keys={"experiments"},
    group_name="inputs",
    description="The experiment's price file (content hash as data version).",
)
def prices_file(context: dg.AssetExecutionContext) -> dg.DataVersionsByPartition:
    """Observe the content hash of each experiment's price file."""
    return _observe(context, "prices_file")


@dg.observable_source_asset(
    partitions_def=experiments_partitions,
    required_resource_keys={"experiments"},
    group_name="inputs",
    description="The experiment's model-score file (content hash as data version). Experiments "
    "whose signals come from the built-in walk-forward model have no file to observe.",
)
def signals_file(context: dg.AssetExecutionContext) -> dg.DataVersionsByPartition:
    """Observe the content hash of each experiment's signal file."""
    return _observe(context, "signals_file")


@dg.observable_source_asset(
    partitions_def=experiments_partitions,
    required_resource_keys={"experiments"},
    group_name="inputs",
    description="The experiment's features table, when read from a file (content hash as data "
    "version). Computed features have no file to observe.",
)
def features_file(context: dg.AssetExecutionContext) -> dg.DataVersionsByPartition:
    """Observe the content hash of each experiment's features file."""
    return _observe(context, "features_file")


@dg.observable_source_asset(
    partitions_def=experiments_partitions,
    required_resource_keys={"experiments"},
    group_name="inputs",
    description="The experiment's market-context file (VIX or any timestamped table; content "
    "hash as data version). The `market` context is derived from prices and has no file.",
)
def context_file(context: dg.AssetExecutionContext) -> dg.DataVersionsByPartition:
    """Observe the content hash of each experiment's context file."""
    return _observe(context, "context_file")
