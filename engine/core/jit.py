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


def compiled_entry(func: Callable[..., Any], args: tuple[object, ...]) -> Callable[..., Any]:
    """The compiled entry point of kernel ``func`` for the numba types of ``args`` (compiled
    or loaded from the cache if need be): a callable that unboxes its arguments as those
    types without numba's per-call type dispatch (which costs more than a short kernel's
    body when a kernel takes ~30 arguments, four of them record arrays).

    Only for arguments of exactly those types on every later call: the entry point does not
    check them (an array of another dtype, or a non-contiguous one where a contiguous one
    was seen, would be read wrongly). A plain Python function (a kernel swapped for its
    ``py_func``) is returned as it is.
    """
    if not isinstance(func, numba.core.registry.CPUDispatcher):
        return func
    signature = tuple(func.typeof_pyval(a) for a in args)
    overload = func.overloads.get(signature)
    if overload is None:
        func.compile(signature)
        overload = func.overloads[signature]
    entry: Callable[..., Any] = overload.entry_point  # type: ignore[attr-defined]
    return entry
