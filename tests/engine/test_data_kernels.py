"""The compiled helpers of engine.data equal plain NumPy formulations (compiled and py_func)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from engine import data_kernels


def _both(kernel: Any) -> list[Callable[..., Any]]:
    return [kernel, kernel.py_func]


def _reference_chains(sym_id: np.ndarray, start: int, last: np.ndarray, count: np.ndarray):
    """Per row from ``start``: bars of its symbol before it, and the row of the latest one."""
    n = sym_id.size
    ordinal = np.full(n, -7, dtype=np.int64)
    prev = np.full(n, -7, dtype=np.int64)
    for s in np.unique(sym_id[start:]):
        rows = start + np.flatnonzero(sym_id[start:] == s)
        ordinal[rows] = count[s] + np.arange(rows.size)
        prev[rows] = np.concatenate(([last[s]], rows[:-1]))
    return ordinal, prev


@pytest.mark.parametrize("variant", [0, 1])
@pytest.mark.parametrize("start", [0, 5])
def test_symbol_chains_random_rows_match_reference(variant: int, start: int) -> None:
    rng = np.random.default_rng(3)
    sym_id = rng.integers(0, 6, 60).astype(np.int64)
    last = np.array([-1, 2, -1, 4, 0, -1], dtype=np.int64) if start else np.full(6, -1)
    count = np.array([0, 3, 0, 1, 7, 0], dtype=np.int64) if start else np.zeros(6, np.int64)
    exp_ord, exp_prev = _reference_chains(sym_id, start, last, count)
    ordinal = np.full(60, -7, dtype=np.int64)
    prev = np.full(60, -7, dtype=np.int64)
    last_io = last.astype(np.int64)
    count_io = count.copy()
    _both(data_kernels.symbol_chains)[variant](sym_id, start, last_io, count_io, ordinal, prev)
    np.testing.assert_array_equal(ordinal, exp_ord)
    np.testing.assert_array_equal(prev, exp_prev)
    for s in range(6):
        rows = start + np.flatnonzero(sym_id[start:] == s)
        assert last_io[s] == (rows[-1] if rows.size else last[s])
        assert count_io[s] == count[s] + rows.size


@pytest.mark.parametrize("variant", [0, 1])
def test_last_rows_is_highest_row_per_symbol(variant: int) -> None:
    sym_id = np.array([2, 0, 2, 3, 0, 2], dtype=np.int64)
    last = np.full(5, -1, dtype=np.int64)
    _both(data_kernels.last_rows)[variant](sym_id, last)
    np.testing.assert_array_equal(last, [4, -1, 5, 3, -1])


@pytest.mark.parametrize("variant", [0, 1])
@pytest.mark.parametrize(
    ("ts", "ids", "expected"),
    [
        ([1, 1, 2, 3], [0, 4, 1, 1], True),
        ([1, 1, 2], [0, 0, 1], False),  # duplicate key
        ([1, 1, 2], [3, 1, 0], False),  # symbols out of order within a timestamp
        ([2, 1], [0, 1], False),  # time goes back
        ([5], [0], True),
        ([], [], True),
    ],
)
def test_strictly_increasing_pairs(
    variant: int, ts: list[int], ids: list[int], expected: bool
) -> None:
    kernel = _both(data_kernels.strictly_increasing)[variant]
    assert kernel(np.array(ts, dtype=np.int64), np.array(ids, dtype=np.int64)) is expected


@pytest.mark.parametrize("variant", [0, 1])
@pytest.mark.parametrize("ts", [[4], [1, 1, 1], [1, 1, 2, 5, 5, 5, 9]])
def test_group_offsets_match_numpy_runs(variant: int, ts: list[int]) -> None:
    arr = np.array(ts, dtype=np.int64)
    starts = np.concatenate(([0], np.flatnonzero(np.diff(arr)) + 1))
    offsets, values = _both(data_kernels.group_offsets)[variant](arr)
    np.testing.assert_array_equal(offsets, np.concatenate((starts, [arr.size])))
    np.testing.assert_array_equal(values, arr[starts])


@pytest.mark.parametrize("variant", [0, 1])
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], True),
        ([1.0, -2.5, 0.0], True),
        ([1.0, np.nan, 2.0], False),
        ([np.inf], False),
        ([3.0, -np.inf], False),
    ],
)
def test_all_finite_is_false_at_any_nan_or_infinity(
    variant: int, values: list[float], expected: bool
) -> None:
    arr = np.asarray(values, dtype=np.float64)
    assert _both(data_kernels.all_finite)[variant](arr) is expected
    assert bool(np.isfinite(arr).all()) is expected
