"""The month writer's shortcuts give what the plain way gives (issue 27, main-job latency).

``storage.write_partitioned`` finds the months of a table in time order from its runs of equal
stamps (instead of a year and month for every row) and tests the order of a Categorical
``symbol`` by its categories' text rank (instead of a String copy of every row).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from ml4t_pipeline.lib.storage import (
    _is_sorted_by,
    _month_runs,
    _strings_for_storage,
    _time_ordered_month_runs,
    list_partitions,
    write_partitioned,
)

UTC = pl.Datetime("us", "UTC")
START = dt.datetime(2015, 12, 30, 20, tzinfo=dt.UTC)  # months turn within the first few days
SYMBOLS = ["MSFT", "AAPL", "b", "A", "ZZ", "AA"]  # insertion order is not text order
ZONES = ["UTC", "America/New_York", "Asia/Tokyo"]


def _stamps(hours: list[int]) -> pl.Series:
    return pl.Series("timestamp", [START + dt.timedelta(hours=h) for h in hours], dtype=UTC)


def _per_row_months(stamps: pl.Series, zone: str) -> dict[tuple[int, int], tuple[int, int]] | None:
    """The plain way: every row's local year and month, then :func:`_month_runs`."""
    local = stamps.to_frame().select(pl.col("timestamp").dt.convert_time_zone(zone))
    keys = local.select(
        pl.col("timestamp").dt.year().cast(pl.Int32).alias("year"),
        pl.col("timestamp").dt.month().cast(pl.Int32).alias("month"),
    )
    return _month_runs(keys)


hours = st.lists(st.integers(0, 24 * 100), min_size=1, max_size=40)


@settings(max_examples=80, deadline=None)
@given(hours=hours, zone=st.sampled_from(ZONES))
def test_time_ordered_month_runs_equal_every_rows_months(hours: list[int], zone: str) -> None:
    """Time-ordered stamps (repeats included, month ends in each zone): the runs found from
    the distinct stamps are the per-row months' runs; stamps out of time order give None."""
    ordered = _stamps(sorted(hours))
    assert _time_ordered_month_runs(ordered, zone) == _per_row_months(ordered, zone)
    shuffled = _stamps(hours)
    if hours != sorted(hours):
        assert _time_ordered_month_runs(shuffled, zone) is None


def test_time_ordered_month_runs_new_york_evening_in_next_utc_month() -> None:
    # 2016-01-01 01:00 UTC is 2015-12-31 20:00 in New York: December there, January in UTC.
    stamps = pl.Series([dt.datetime(2015, 12, 31, 21, tzinfo=dt.UTC)] * 2, dtype=UTC).append(
        pl.Series([dt.datetime(2016, 1, 1, 1, tzinfo=dt.UTC)], dtype=UTC)
    )
    assert _time_ordered_month_runs(stamps, "UTC") == {(2015, 12): (0, 2), (2016, 1): (2, 1)}
    assert _time_ordered_month_runs(stamps, "America/New_York") == {(2015, 12): (0, 3)}
    assert _time_ordered_month_runs(stamps.clear(), "UTC") is None


frames = st.lists(
    st.tuples(
        st.integers(0, 3), st.sampled_from([*SYMBOLS, None]), st.sampled_from(["x", "y", None])
    ),
    min_size=0,
    max_size=30,
)


@settings(max_examples=80, deadline=None)
@given(rows=frames, sort=st.booleans(), enum=st.booleans())
def test_is_sorted_by_categorical_columns_same_verdict_as_their_text(
    rows: list[tuple[int, str | None, str | None]], sort: bool, enum: bool
) -> None:
    """A Categorical/Enum ``symbol`` (by text rank) and another Categorical column (cast) give
    the verdicts of the String copy the files hold, nulls first included."""
    text = pl.DataFrame(
        {
            "timestamp": _stamps([24 * d for d, _, _ in rows]),
            "symbol": pl.Series([s for _, s, _ in rows], dtype=pl.String),
            "side": pl.Series([x for _, _, x in rows], dtype=pl.String),
        }
    )
    if sort:
        text = text.sort("timestamp", "symbol", nulls_last=False)
    coded = text.with_columns(
        pl.col("symbol").cast(pl.Enum(SYMBOLS) if enum else pl.Categorical),
        pl.col("side").cast(pl.Categorical),
    )
    assert _strings_for_storage(coded).equals(text)
    for columns in (["timestamp", "symbol"], ["symbol"], ["timestamp", "side"], ["side", "symbol"]):
        assert _is_sorted_by(coded, columns) == _is_sorted_by(text, columns), columns


months = st.lists(
    st.tuples(st.integers(0, 24 * 80), st.sampled_from(SYMBOLS)), min_size=1, max_size=40
)


@settings(max_examples=40, deadline=None)
@given(rows=months, order=st.sampled_from(["time", "key", "shuffled"]))
def test_write_partitioned_months_equal_plain_filter_and_sort(
    rows: list[tuple[int, str]], order: str
) -> None:
    """Each month file holds that month's rows (UTC), symbols as text, in (timestamp, symbol)
    order: the plain per-month filter and sort, whether the table came in time order, in key
    order or shuffled."""
    frame = pl.DataFrame(
        {
            "timestamp": _stamps([h for h, _ in rows]),
            "symbol": pl.Series([s for _, s in rows], dtype=pl.String),
            "value": pl.Series([float(i) for i in range(len(rows))]),
        }
    )
    frame = frame.unique(["timestamp", "symbol"], keep="first", maintain_order=True)
    if order == "time":
        frame = frame.sort("timestamp")
    elif order == "key":
        frame = frame.sort("timestamp", "symbol")
    coded = frame.with_columns(pl.col("symbol").cast(pl.Categorical))
    with tempfile.TemporaryDirectory() as folder:
        written = write_partitioned(coded, Path(folder))
        assert len(written) == len(list_partitions(folder))
        for w in written:
            plain = frame.filter(
                (pl.col("timestamp").dt.year() == w.year)
                & (pl.col("timestamp").dt.month() == w.month)
            ).sort("timestamp", "symbol", maintain_order=True)
            assert pl.read_parquet(w.path).equals(plain)
        assert sum(w.rows for w in written) == frame.height
