"""How the core's kernels are compiled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

F = TypeVar("F", bound=Callable[..., Any])


def njit(func: F) -> F:
    """Compile ``func`` with numba in nopython mode, cached on disk next to its module.

    The plain Python function stays available as ``func.py_func`` (the tests run both and
    compare). numba's cache tracks only the function's own source file: after editing a
    kernel that other cached kernels call, delete ``engine/**/__pycache__/*.nb*``.
    """
    return cast(F, numba.njit(cache=True, nogil=True)(func))


def njit_held(func: F) -> F:
    """:func:`njit` for a short kernel the Python loop calls once or twice per bar: compiled
    without releasing the GIL (releasing it for a call of a few microseconds costs more than
    the call when another thread, e.g. a chunk read ahead, is waiting to take it)."""
    return cast(F, numba.njit(cache=True, nogil=False)(func))
