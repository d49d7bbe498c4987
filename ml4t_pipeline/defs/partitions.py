"""Experiments are partitions: one partition key per experiment file (its file stem).

A partition key becomes part of file paths (the config file ``<configs>/<key>.yaml``, the stored
values ``<storage>/<asset>/<key>...``), so only safe names are accepted
(:func:`check_partition_key`): the sensor skips other file stems, and the resource and the IO
manager refuse them with an error naming the key.
"""

from __future__ import annotations

import re

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
        return f"it contains {bad} (allowed: letters, digits, '_', '-', '.')"
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
