"""release_free_memory: the C heap's free pages back to the operating system."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from ml4t_pipeline.lib import memory


def test_release_free_memory_without_malloc_trim_returns_false(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)  # macOS, musl

    assert memory.release_free_memory() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_free_memory_keeps_live_arrays_intact() -> None:
    kept = [np.full(20_000, float(i)) for i in range(50)]  # 160 kB each: heap or mmap
    dropped = [np.ones(20_000) for _ in range(50)]
    del dropped

    released = memory.release_free_memory()

    assert isinstance(released, bool)
    assert all(float(a.sum()) == 20_000.0 * i for i, a in enumerate(kept))
