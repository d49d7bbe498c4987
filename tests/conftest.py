"""Shared fixtures: where the real market data lives.

Tests read real data from the shared data folder (``../shared/data`` beside the repository, or
``ML4T_DATA_ROOT``). Outside CI a missing folder skips those tests with a printed reason; under CI
(``CI=true``) it is an error, so a broken checkout can never pass silently.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """Return the folder holding the shared real market data files."""
    env = os.environ.get("ML4T_DATA_ROOT")
    if env:
        return Path(env).resolve()
    return (REPO_ROOT.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Path to the real data folder; skip (or fail under CI) when it is missing."""
    root = shared_data_root()
    if not (root / "sp500_5yr_daily_ohlcv.parquet").exists():
        message = f"real market data not found under {root} (set ML4T_DATA_ROOT)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    # experiment configs resolve relative data paths against this variable
    os.environ.setdefault("ML4T_DATA_ROOT", str(root))
    return root


@pytest.fixture(scope="session", autouse=True)
def numba_compiles_untraced() -> Iterator[None]:
    """numba compiles a kernel in Python code (its own); under the coverage tracer each compile
    cost ~1.6x its plain CPU time (63 s vs 40 s for ``tests/engine/test_fastpath.py``'s
    kernels). The compiling thread's tracer is set aside for the compile and put back after it
    (``sys.settrace``: that thread only; coverage's tracer supports being reinstalled so): no
    line of ours runs while numba compiles, the kernels' lines are measured through their
    ``py_func`` runs."""
    from numba.core.dispatcher import Dispatcher

    original = Dispatcher.compile

    def compile_untraced(self: Any, sig: Any) -> Any:
        tracer = sys.gettrace()
        if tracer is None:
            return original(self, sig)
        sys.settrace(None)
        try:
            return original(self, sig)
        finally:
            sys.settrace(tracer)

    Dispatcher.compile = compile_untraced  # type: ignore[method-assign]
    try:
        yield
    finally:
        Dispatcher.compile = original  # type: ignore[method-assign]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the background jobs (``tests/background.py``) the selected tests will read."""
    from tests.background import start_wanted

    start_wanted(session, shared_data_root())


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the background children still running and remove their folders."""
    from tests.background import stop_all

    stop_all(session.config)
