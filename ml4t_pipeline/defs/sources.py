"""Observable source assets: the experiment's input files, versioned by content hash.

``prices_file`` and ``signals_file`` are partitioned by experiment. Their data version is the
SHA-256 of the file's bytes (or of every file in a partitioned folder), so replacing a signal file
is seen as new data. The ``input_files_sensor`` reports an observation when a hash changes, and
the ``eager`` automation conditions downstream rerun exactly that experiment.
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
