"""Hand memory freed by large NumPy work back to the operating system.

glibc's ``malloc`` keeps freed blocks inside its heaps for reuse instead of returning them, and
NumPy arrays of up to 32 MB are served from those heaps once a larger one has been freed (the
allocator's adaptive mmap threshold). After a step that allocates and drops many such arrays
(the walk-forward fits, the engine run) the process keeps that memory resident although nothing
uses it, and the next step's allocations stack on top. ``malloc_trim(0)`` returns the free
pages of every heap; it costs milliseconds. Polars allocates through its own jemalloc, which
returns freed memory by itself within about a second (polars sets its decay times).

On a C library without ``malloc_trim`` (macOS, musl) :func:`release_free_memory` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

__all__ = ["release_free_memory"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


def release_free_memory() -> bool:
    """Return the C heap's free pages to the operating system (glibc ``malloc_trim(0)``).

    Live objects are untouched; only memory already freed leaves the process's resident set,
    so the peak resident memory of what runs next is lower. Call it after a step that
    allocated and freed large NumPy arrays.

    Returns
    -------
    bool
        True when memory was returned, False when there was none to return or the C library
        has no ``malloc_trim``.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
