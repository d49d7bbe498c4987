"""Fixtures for the benchmark suites: the real S&P 500 daily panel in the engine's contract."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

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
    frame = raw.with_columns(
        pl.col("timestamp")
        .dt.replace_time_zone("America/New_York")
        .dt.offset_by("16h")
        .dt.convert_time_zone("UTC")
        .cast(pl.Datetime("us", "UTC"))
    ).filter(~pl.any_horizontal(pl.col(c).is_null() for c in ("open", "high", "low", "close")))
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
