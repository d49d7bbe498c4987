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

RERUN_ON_NEW_INPUTS = dg.AutomationCondition.eager()
"""Automation condition of every experiment asset: rerun a partition when an upstream partition
gets new data (a new input-file version or a fresh materialization), once nothing upstream is
missing or in progress."""

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
