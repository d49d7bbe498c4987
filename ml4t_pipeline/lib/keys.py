"""Partition keys: an experiment file's stem, checked before it names a path.

A partition key becomes part of file paths (the config file ``<configs>/<key>.yaml``, the stored
values ``<storage>/<asset>/<key>...``), so only safe names are accepted: the Dagster sensor
skips other file stems, and the resource, the IO manager and ``ml4t run`` refuse them with an
error naming the key. Dagster-free (``ml4t_pipeline.defs.partitions`` re-exports these names).
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = [
    "SAFE_KEY_PATTERN",
    "UnsafePartitionKeyError",
    "check_config_stem",
    "check_partition_key",
    "partition_key_problem",
]

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
