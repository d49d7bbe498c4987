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
import gc
import importlib
import sys
from collections.abc import Callable
from types import ModuleType

__all__ = ["import_without_collection", "release_free_memory"]


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


def import_without_collection(name: str) -> ModuleType:
    """Import module ``name`` with Python's cyclic garbage collector paused, and file what the
    import made with the long-lived objects.

    A large import (scikit-learn with ``scipy.stats``: about 300,000 objects) triggers full
    collections on its way, each walking every object in the process (two of them, 0.13 s CPU,
    in the S&P run), and leaves its objects where every later full collection walks them again
    (0.12 s in the same run). Imports make next to no garbage, so the collector is paused for
    the import, as ``ml4t_pipeline.cli`` does for its own imports; afterwards the objects are
    moved out of its reach the way the caller's are:

    - when a caller froze the process (``gc.freeze``, as ``ml4t run`` does for the run), into
      the permanent generation, released by the caller's ``gc.unfreeze``. A full collection
      runs first (it walks only what was made since the caller's freeze), so no garbage of
      the caller's is frozen with them;
    - otherwise into the oldest generation (``gc.freeze`` then ``gc.unfreeze``: a list splice),
      where they stay collectable as before.

    With the collector disabled by the caller, only the import runs.

    Parameters
    ----------
    name : str
        Absolute module name, e.g. ``"sklearn.linear_model"``.

    Returns
    -------
    types.ModuleType
        The module; one already imported is returned at once, nothing else done.

    Raises
    ------
    ImportError
        Whatever the import raises; the collector is enabled again first.
    """
    if name in sys.modules:
        return sys.modules[name]
    if not gc.isenabled():
        return importlib.import_module(name)
    frozen = gc.get_freeze_count() > 0
    if frozen:
        gc.collect()
    gc.disable()
    try:
        module = importlib.import_module(name)
    finally:
        gc.enable()
    gc.freeze()
    if not frozen:
        gc.unfreeze()
    return module
