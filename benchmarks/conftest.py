"""Fixtures for the benchmark suites: the real S&P 500 daily panel in the engine's contract, the
issue-7 reference inputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pytest

from ml4t_pipeline.lib.timing import UTC_DATETIME, daily_close_utc

if TYPE_CHECKING:
    from ml4t_pipeline.lib.crossval.reference import ReferenceInputs

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """``$ML4T_DATA_ROOT``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("ML4T_DATA_ROOT")
    return Path(env).resolve() if env else (REPO_ROOT.parent / "shared" / "data").resolve()


def momentum_panel(path: Path) -> pl.DataFrame:
    """S&P 500 daily bars (16:00 New York close in UTC) with ``mom_20`` = 20-day return.

    The 11 rows with a null open/high/low are filtered out explicitly (the engine refuses them).
    """
    raw = pl.read_parquet(path)
    frame = raw.with_columns(daily_close_utc(pl.col("timestamp")).cast(UTC_DATETIME)).filter(
        ~pl.any_horizontal(pl.col(c).is_null() for c in ("open", "high", "low", "close"))
    )
    return frame.sort("symbol", "timestamp").with_columns(
        (pl.col("close") / pl.col("close").shift(20).over("symbol") - 1.0).alias("mom_20")
    )


@pytest.fixture(scope="session")
def sp500_momentum_panel() -> pl.DataFrame:
    """:func:`momentum_panel` of the real file (skipped when it is missing)."""
    path = data_root() / "sp500_5yr_daily_ohlcv.parquet"
    if not path.exists():
        pytest.skip(f"real market data not found at {path} (set ML4T_DATA_ROOT)")
    return momentum_panel(path)


@pytest.fixture(scope="module")
def reference() -> ReferenceInputs:
    """The issue-7 reference inputs (:func:`load_reference_inputs` of the real S&P 500 file:
    461 symbols x 1,259 days, the panel and VectorBT's wide matrices); skipped when missing."""
    from ml4t_pipeline.lib.crossval.reference import load_reference_inputs

    root = data_root()
    if not (root / "sp500_5yr_daily_ohlcv.parquet").exists():
        pytest.skip(f"real market data not found under {root}")
    return load_reference_inputs(root)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Benchmarks time one process: no pytest-xdist workers here (``pyproject.toml``'s addopts
    start two for the test suite; pytest-benchmark switches itself off under xdist)."""
    if getattr(config.option, "numprocesses", None) is not None:
        config.option.numprocesses = 0
