"""Experiments are partitions: one partition key per experiment file (its file stem).

A partition key becomes part of file paths (the config file ``<configs>/<key>.yaml``, the stored
values ``<storage>/<asset>/<key>...``), so only safe names are accepted
(:func:`check_partition_key`): the sensor skips other file stems, and the resource and the IO
manager refuse them with an error naming the key.
"""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg

EXPERIMENTS = "experiments"

experiments_partitions = dg.DynamicPartitionsDefinition(name=EXPERIMENTS)
"""Dynamic partitions kept in sync with the configs folder by ``experiment_configs_sensor``."""

INPUT_FILE_SOURCES = dg.AssetSelection.assets(
    "prices_file", "signals_file", "features_file", "context_file"
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


SAFE_KEY_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
"""Characters allowed in a partition key (besides: no ``..``, no leading ``.``)."""


class UnsafePartitionKeyError(ValueError):
    """A partition key that could name a path outside its folder (or a hidden file)."""


def partition_key_problem(key: object) -> str | None:
    """Why ``key`` is not a safe partition key, or None when it is.

    Safe: a non-empty string of letters, digits, ``_``, ``-`` and ``.`` that does not start
    with ``.`` and does not contain ``..`` (so it can never be ``..``, an absolute path, a path
    with a separator or a hidden file name).
    """
    if not isinstance(key, str) or not key:
        return "it is empty or not a string"
    if not SAFE_KEY_PATTERN.fullmatch(key):
        bad = sorted({c for c in key if not SAFE_KEY_PATTERN.fullmatch(c)})
        return f"it contains {bad} (allowed: ASCII letters, digits, '_', '-', '.')"
    if key.startswith("."):
        return "it starts with '.'"
    if ".." in key:
        return "it contains '..'"
    return None


def check_partition_key(key: object, *, what: str = "partition key") -> str:
    """Return ``key`` if it is safe (see :func:`partition_key_problem`).

    Raises
    ------
    UnsafePartitionKeyError
        The key is unsafe; the message quotes it and says why.
    """
    problem = partition_key_problem(key)
    if problem is not None:
        raise UnsafePartitionKeyError(
            f"{what} {key!r} refused: {problem}. A partition key is an experiment file's stem "
            f"and must match {SAFE_KEY_PATTERN.pattern}, not start with '.', and not contain '..'"
        )
    assert isinstance(key, str)
    return key


def check_config_stem(path: str | Path) -> str:
    """The partition key of experiment file ``path`` (its stem), checked before anything uses it.

    ``ml4t run`` and ``ml4t validate`` call this before they register the partition, so a file
    named e.g. ``exp_ü.yaml`` leaves no partition behind that could never run.

    Raises
    ------
    UnsafePartitionKeyError
        The stem is not a safe partition key (:func:`partition_key_problem`); the message names
        the file and the allowed pattern.
    """
    key = Path(path).stem
    problem = partition_key_problem(key)
    if problem is not None:
        raise UnsafePartitionKeyError(
            f"experiment file {path}: its stem {key!r} cannot be a partition key: {problem}. "
            f"Rename the file so its stem matches {SAFE_KEY_PATTERN.pattern}, does not start "
            "with '.' and does not contain '..'"
        )
    return key


def register_experiments(
    instance: dg.DagsterInstance, configs_dir: str, keys: list[str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """Add experiment partitions for config files, as ``experiment_configs_sensor`` does.

    Parameters
    ----------
    instance : dg.DagsterInstance
        The instance whose dynamic partitions are updated.
    configs_dir : str
        Folder of experiment files (``.yaml``, ``.yml``, ``.json``).
    keys : list of str, optional
        Only these stems (default: every file in ``configs_dir``).

    Returns
    -------
    (added, refused)
        Keys newly added (already known ones are left as they are), and ``{key: reason}`` for
        unsafe stems or keys without a config file (not added).
    """
    from ml4t_pipeline.defs.resources import ExperimentsResource  # resources imports this module

    resource = ExperimentsResource(configs_dir=configs_dir)
    on_disk = resource.experiment_keys()
    wanted = on_disk if keys is None else keys
    refused: dict[str, str] = {}
    ok: list[str] = []
    for key in wanted:
        problem = partition_key_problem(key)
        if problem is not None:
            refused[key] = f"not a safe partition key ({problem})"
        elif key not in on_disk:
            refused[key] = f"no {key}.yaml, {key}.yml or {key}.json in {configs_dir}"
        else:
            ok.append(key)
    added = [k for k in ok if not instance.has_dynamic_partition(EXPERIMENTS, k)]
    if added:
        instance.add_dynamic_partitions(EXPERIMENTS, added)
    return added, refused


def main(argv: list[str] | None = None) -> int:
    """``python -m ml4t_pipeline.defs.partitions [KEY ...]``: register experiment partitions.

    Registers the configs folder's experiments (or the given keys) on the instance of
    ``$DAGSTER_HOME``, so ``dagster job execute ... --tags '{"dagster/partition": KEY}'`` can
    run them without ``dagster dev``'s sensor. Exit 2 when a key is refused (named on stderr).
    """
    import argparse
    import os
    import sys

    from ml4t_pipeline.defs.resources import default_configs_dir

    parser = argparse.ArgumentParser(
        prog="python -m ml4t_pipeline.defs.partitions",
        description="Register experiment files as partitions of the Dagster instance "
        "($DAGSTER_HOME), like experiment_configs_sensor.",
    )
    parser.add_argument("keys", nargs="*", help="experiment file stems (default: every file)")
    parser.add_argument("--configs", default=None, help="configs folder (default: ./configs)")
    args = parser.parse_args(argv)
    if not os.environ.get("DAGSTER_HOME"):
        print("error: set DAGSTER_HOME to the instance folder first", file=sys.stderr)
        return 2
    configs = args.configs or default_configs_dir()
    with dg.DagsterInstance.get() as instance:
        added, refused = register_experiments(instance, configs, args.keys or None)
        known = instance.get_dynamic_partitions(EXPERIMENTS)
    for key, reason in refused.items():
        print(f"error: experiment {key!r} refused: {reason}", file=sys.stderr)
    print(f"experiments partitions: {known} (added {added or 'none'})")
    return 2 if refused else 0


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in the tests
    raise SystemExit(main())
