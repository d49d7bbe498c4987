"""Fixtures of the engine tests (their plain helpers: :mod:`tests.engine.helpers`)."""

from __future__ import annotations

import polars as pl
import pytest

from ml4t_pipeline.lib.timing import UTC_DATETIME, daily_close_utc


@pytest.fixture(scope="session")
def sp500_panel(data_root: object) -> pl.DataFrame:
    """The real S&P 500 daily file in the engine's contract.

    Timestamps become the 16:00 America/New_York close in UTC. Rows with a null open, high or
    low (11 rows, listed in the data README) are filtered out HERE, explicitly, because the
    engine refuses null prices.
    """
    from pathlib import Path

    assert isinstance(data_root, Path)
    raw = pl.read_parquet(data_root / "sp500_5yr_daily_ohlcv.parquet")
    frame = raw.with_columns(daily_close_utc(pl.col("timestamp")).cast(UTC_DATETIME))
    null_ohlc = pl.any_horizontal(pl.col(c).is_null() for c in ("open", "high", "low", "close"))
    assert frame.filter(null_ohlc).height == 11
    return frame.filter(~null_ohlc)
