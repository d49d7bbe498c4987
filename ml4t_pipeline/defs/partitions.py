"""Experiments are partitions: one partition key per experiment file (its file stem).

A partition key becomes part of file paths (the config file ``<configs>/<key>.yaml``, the stored
values ``<storage>/<asset>/<key>...``), so only safe names are accepted
(:func:`ml4t_pipeline.lib.keys.check_partition_key`): the sensor skips other file stems, and the
resource and the IO manager refuse them with an error naming the key.
"""

from __future__ import annotations

import dagster as dg

from ml4t_pipeline.lib import keys

EXPERIMENTS = "experiments"

experiments_partitions = dg.DynamicPartitionsDefinition(name=EXPERIMENTS)
"""Dynamic partitions kept in sync with the configs folder by ``experiment_configs_sensor``."""

INPUT_FILE_SOURCES = dg.AssetSelection.assets(
    "prices_file",
    "signals_file",
    "features_file",
    "context_file",
    "corporate_actions_file",
    "membership_file",
    "benchmark_file",
)
"""The observable source assets (``defs/sources.py``): an experiment whose input is computed
(model scores, computed features, the ``market`` context, the demo prices) never observes them."""

_AC = dg.AutomationCondition

RERUN_ON_NEW_INPUTS = (
    _AC.any_deps_updated().since_last_handled()
    & ~_AC.any_deps_missing().ignore(INPUT_FILE_SOURCES)
    & ~_AC.any_deps_in_progress()
    & ~_AC.in_progress()
    & _AC.all_deps_blocking_checks_passed()
).with_label("rerun_on_new_inputs")
"""Automation condition of every experiment asset: rerun an experiment's partition when an
upstream partition of the same experiment gets new data (a new input-file version or a fresh
materialization), once nothing upstream is missing, in progress or failing a blocking check.

It is Dagster's ``eager`` with three changes:

- **No run for a new partition.** ``eager`` also fires when a partition is newly missing, i.e.
  for every asset of a newly added experiment, at the same moment ``experiment_configs_sensor``
  launches that experiment's ``experiment_job``: the work was done twice. The first run is the
  sensor's alone.
- **Never-observed input files do not block.** An experiment whose scores, features or context
  are computed never observes ``signals_file`` / ``features_file`` / ``context_file``; plain
  ``eager`` counts them as missing forever, so a new prices file reran ``market_panel`` and
  ``backtest`` on features computed from the old prices. A missing *materialized* upstream
  still blocks.
- **Blocking checks gate it**: an upstream whose blocking check failed for this experiment
  (checks are partitioned by experiment, :func:`experiment_check_spec`) holds the rerun back.

Automatic runs use the code location's executor (``Definitions(executor=...)``, the one
``ML4T_EXECUTOR`` selects), like ``experiment_job``."""


def experiment_check_spec(
    name: str, *, asset: str, blocking: bool = False, description: str | None = None
) -> dg.AssetCheckSpec:
    """An asset check partitioned by experiment, like the asset it checks.

    Its result is recorded for the run's experiment partition, so the UI shows each experiment's
    own verdict (a clean run of one experiment does not turn another experiment's failing check
    green), and the check's history and plots stay per experiment.
    """
    return dg.AssetCheckSpec(
        name,
        asset=asset,
        blocking=blocking,
        description=description,
        partitions_def=experiments_partitions,
    )


# The partition-key check is Dagster-free (ml4t_pipeline.lib.keys); re-exported here.
SAFE_KEY_PATTERN = keys.SAFE_KEY_PATTERN
UnsafePartitionKeyError = keys.UnsafePartitionKeyError
partition_key_problem = keys.partition_key_problem
check_partition_key = keys.check_partition_key
check_config_stem = keys.check_config_stem
