"""Daily bars are stamped at the NYSE's real close of their session (``exchange_calendars``):
16:00 New York, or the early close of a half day (13:00 on 2017-11-24); a bar on a weekend is
refused by the ``on_session_date`` price rule, naming the row."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import polars as pl
import pytest

from ml4t_pipeline.lib.calendars import early_closes
from ml4t_pipeline.lib.io import load_prices_file, to_prices_contract
from ml4t_pipeline.lib.schemas import Plausibility, validate_prices
from ml4t_pipeline.lib.timing import daily_close_utc

DATA_ROOT = Path(os.environ.get("ML4T_DATA_ROOT", "../shared/data"))
SP500 = DATA_ROOT / "sp500_5yr_daily_ohlcv.parquet"
NY = "America/New_York"


def _ny(ts: pl.Series) -> list[dt.datetime]:
    return ts.dt.convert_time_zone(NY).dt.replace_time_zone(None).to_list()


def test_daily_close_utc_half_day_2017_11_24_stamped_1300_new_york() -> None:
    days = pl.DataFrame(
        {"d": [dt.date(2017, 11, 22), dt.date(2017, 11, 24), dt.date(2017, 11, 27)]}
    )
    stamped = days.select(daily_close_utc(pl.col("d"))).to_series()
    assert _ny(stamped) == [
        dt.datetime(2017, 11, 22, 16),
        dt.datetime(2017, 11, 24, 13),  # day after Thanksgiving: early close
        dt.datetime(2017, 11, 27, 16),
    ]


def test_early_closes_xnys_known_half_days_listed() -> None:
    early = early_closes("XNYS")
    minutes = dict(zip(early["date"].to_list(), early["close_minutes"].to_list(), strict=True))
    assert minutes[dt.date(2017, 11, 24)] == 13 * 60
    assert minutes[dt.date(2013, 7, 3)] == 13 * 60  # eve of Independence Day
    assert dt.date(2017, 11, 27) not in minutes  # a full session


@pytest.mark.skipif(not SP500.is_file(), reason=f"no S&P file under {DATA_ROOT}")
def test_load_prices_file_sp500_half_day_bars_stamped_at_early_close() -> None:
    prices = load_prices_file(SP500)
    ny = prices.with_columns(pl.col("timestamp").dt.convert_time_zone(NY).alias("ny"))
    half = ny.filter(pl.col("ny").dt.date() == dt.date(2017, 11, 24))
    raw_rows = pl.read_parquet(SP500).filter(pl.col("timestamp").dt.date() == dt.date(2017, 11, 24))
    assert half.height == raw_rows.height > 500  # every row of that date moved, none lost
    assert set(half["ny"].dt.hour().to_list()) == {13}
    # Only early-close days move: every other bar still closes at 16:00.
    early = set(early_closes("XNYS")["date"].to_list())
    other = ny.filter(~pl.col("ny").dt.date().is_in(list(early)))
    assert set(other["ny"].dt.hour().to_list()) == {16}


def test_validate_prices_weekend_row_refused_naming_it() -> None:
    days = [dt.date(2017, 11, 24), dt.date(2017, 11, 25), dt.date(2017, 11, 27)]  # Fri, Sat, Mon
    raw = pl.DataFrame(
        {
            "timestamp": days,
            "symbol": ["A"] * 3,
            **{c: [10.0, 10.0, 10.0] for c in ("open", "high", "low", "close")},
            "volume": [1e5] * 3,
        }
    )
    report = validate_prices(to_prices_contract(raw), plausibility=Plausibility())
    broken = report.rows_breaking("on_session_date")
    assert broken["row_index"].to_list() == [1]
    assert _ny(broken["timestamp"]) == [dt.datetime(2017, 11, 25, 16)]


def test_naive_dates_to_close_utc_repeated_dates_and_nulls_match_daily_close_utc() -> None:
    """The frame-level stamping (each distinct date stamped once, then looked up) gives every
    row the stamp :func:`daily_close_utc` gives it: repeated dates, a half day, a weekend, a
    date before the calendar, a null (stays null), in any order."""
    from ml4t_pipeline.lib.timing import naive_dates_to_close_utc

    days = [
        dt.datetime(2017, 11, 24),  # half day: 13:00 New York
        dt.datetime(2024, 7, 6),  # Saturday: regular close
        None,
        dt.datetime(2017, 11, 24),
        dt.datetime(1985, 1, 2),  # before the calendar
        dt.datetime(2024, 1, 2),
    ]
    frame = pl.DataFrame({"timestamp": days, "row": list(range(len(days)))})
    out = naive_dates_to_close_utc(frame, "test", "intraday must be tz-aware")
    expected = frame.with_columns(daily_close_utc(pl.col("timestamp")).alias("timestamp"))
    assert out.equals(expected)
    assert _ny(out["timestamp"]) == [
        dt.datetime(2017, 11, 24, 13),
        dt.datetime(2024, 7, 6, 16),
        None,
        dt.datetime(2017, 11, 24, 13),
        dt.datetime(1985, 1, 2, 16),
        dt.datetime(2024, 1, 2, 16),
    ]
