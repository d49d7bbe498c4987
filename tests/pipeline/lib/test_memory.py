"""release_free_memory: the C heap's free pages back to the operating system;
import_without_collection: a large import without the cyclic collector's full walks."""

from __future__ import annotations

import gc
import sys
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path

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


# --- import_without_collection ------------------------------------------------------------------

_MODULE = """
TABLES = [[i] for i in range(60_000)]  # 60,000 tracked lists: young collections on the way
MARKER = ["kept by the module"]
"""


@pytest.fixture
def fresh_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of a module not imported yet that makes 60,000 tracked objects."""
    name = f"ml4t_test_import_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generation of every collection the cyclic collector starts while the test runs."""
    seen: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(record)
    yield seen
    gc.callbacks.remove(record)


def _in_generation(obj: object, generation: int) -> bool:
    return any(o is obj for o in gc.get_objects(generation=generation))


def test_import_without_collection_no_collection_during_import_objects_in_oldest_generation(
    fresh_module: str, collections: list[int]
) -> None:
    assert gc.isenabled() and gc.get_freeze_count() == 0

    module = memory.import_without_collection(fresh_module)

    assert collections == []  # a plain import of the module runs young collections on its way
    assert sys.modules[fresh_module] is module and len(module.TABLES) == 60_000
    assert gc.isenabled() and gc.get_freeze_count() == 0  # the caller's state as it was
    assert _in_generation(module.MARKER, 2)


def test_import_without_collection_plain_import_collects_on_its_way(
    fresh_module: str, collections: list[int]
) -> None:
    # the contrast to the test above: the same import with the collector running
    __import__(fresh_module)

    assert collections


def test_import_without_collection_under_a_freeze_frozen_with_it_but_no_garbage(
    fresh_module: str,
) -> None:
    """Under a caller's ``gc.freeze`` the module's objects join the frozen ones (released by
    the caller's ``gc.unfreeze``); garbage made since the caller's freeze is collected first,
    not frozen."""
    collected: list[str] = []
    gc.freeze()
    try:
        cycle: list[object] = []
        cycle.append(cycle)
        weakref.finalize(_Holder(cycle), collected.append, "garbage")
        before = gc.get_freeze_count()
        assert collected == []  # still uncollected garbage when the import starts

        module = memory.import_without_collection(fresh_module)

        assert collected == ["garbage"]
        assert gc.isenabled() and gc.get_freeze_count() >= before + 60_000
        assert not _in_generation(module.MARKER, 2)  # frozen: in no generation
    finally:
        gc.unfreeze()
    assert _in_generation(module.MARKER, 2)


class _Holder:
    """A cyclic object: finalised only by the cyclic collector."""

    def __init__(self, payload: list[object]) -> None:
        self.payload = payload
        self.me = self


def test_import_without_collection_disabled_collector_stays_disabled(fresh_module: str) -> None:
    gc.disable()
    try:
        memory.import_without_collection(fresh_module)
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_import_without_collection_already_imported_returns_module_untouched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the collector's switches recorded rather than read back: the frozen count itself moves
    # whenever a frozen object dies (another thread of the test process frees one)
    calls: list[str] = []
    for name in ("collect", "disable", "enable", "freeze", "unfreeze"):
        monkeypatch.setattr(gc, name, lambda *args, _name=name: calls.append(_name))
    assert memory.import_without_collection("json") is sys.modules["json"]
    assert calls == []


def test_import_without_collection_missing_module_raises_collector_enabled() -> None:
    with pytest.raises(ModuleNotFoundError, match="ml4t_no_such_module"):
        memory.import_without_collection("ml4t_no_such_module")
    assert gc.isenabled() and gc.get_freeze_count() == 0
