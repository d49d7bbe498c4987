"""Compiled helpers of :mod:`engine.data` (numba): one pass over the rows instead of a sort.

Each kernel is a plain typed function compiled with :func:`numba.njit` (cached on disk next
to this module); the uncompiled function stays available as ``kernel.py_func`` (the tests
run both and compare).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(func: _F) -> _F:
    """Compile ``func`` in nopython mode, cached on disk next to this module."""
    return cast(_F, numba.njit(cache=True, nogil=True)(func))


@_jit
def symbol_chains(
    sym_id: IntArray,
    start: int,
    last: IntArray,
    count: IntArray,
    ordinal: IntArray,
    prev: IntArray,
) -> None:
    """Bar numbers within each symbol and previous-bar rows of the rows ``start:``, in place.

    Parameters
    ----------
    sym_id : ndarray[int64], shape (N,)
        Symbol id of each row; rows in time order.
    start : int
        First row to fill; rows before it are left as they are.
    last : ndarray[int64], shape (S,)
        Per symbol id, the row of its latest bar before ``start`` (``-1``: none); updated in
        place to the latest bar up to the end.
    count : ndarray[int64], shape (S,)
        Per symbol id, its number of bars before ``start``; updated in place.
    ordinal, prev : ndarray[int64], shape (N,)
        Outputs: ``ordinal[r]`` = bars of the same symbol before row ``r``, ``prev[r]`` = the
        row of the latest of them (``-1`` for a symbol's first bar).
    """
    for r in range(start, sym_id.size):
        s = sym_id[r]
        prev[r] = last[s]
        ordinal[r] = count[s]
        last[s] = r
        count[s] += 1


@_jit
def all_finite(values: FloatArray) -> bool:
    """True when every value of ``values`` (float64) is finite: no NaN, no ±inf."""
    bad = 0
    for k in range(values.size):
        if not np.isfinite(values[k]):
            bad = 1
            break
    return bad == 0


@_jit
def last_rows(sym_id: IntArray, last: IntArray) -> None:
    """``last[s]`` <- the highest row ``r`` with ``sym_id[r] == s`` (unchanged: no such row)."""
    for r in range(sym_id.size):
        last[sym_id[r]] = r


@_jit
def strictly_increasing(ts: IntArray, sym_id: IntArray) -> bool:
    """True when the pairs ``(ts[r], sym_id[r])`` increase strictly (lexicographic order)."""
    for r in range(1, ts.size):
        if ts[r] < ts[r - 1]:
            return False
        if ts[r] == ts[r - 1] and sym_id[r] <= sym_id[r - 1]:
            return False
    return True


@_jit
def group_offsets(ts: IntArray) -> tuple[IntArray, IntArray]:
    """CSR offsets of the runs of equal values of the sorted ``ts`` and the run values.

    Returns ``offsets``, shape (T + 1,) (run ``k`` is rows ``offsets[k]:offsets[k + 1]``,
    ``offsets[T] == ts.size``), and ``values``, shape (T,); ``ts`` must be non-empty.
    """
    n = ts.size
    runs = 1
    for r in range(1, n):
        if ts[r] != ts[r - 1]:
            runs += 1
    offsets = np.empty(runs + 1, dtype=np.int64)
    values = np.empty(runs, dtype=np.int64)
    offsets[0] = 0
    values[0] = ts[0]
    k = 1
    for r in range(1, n):
        if ts[r] != ts[r - 1]:
            offsets[k] = r
            values[k] = ts[r]
            k += 1
    offsets[runs] = n
    return offsets, values
