"""MarketData: validation, sorting, CSR layout, batches and events."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from engine import MarketData
from tests.engine.helpers import make_panel, ts


def _two_symbol_panel() -> pl.DataFrame:
    return make_panel(
        {
            "BBB": [(20, 21, 19, 20.5), (21, 22, 20, 21.5), (22, 23, 21, 22.5)],
            "AAA": [(10, 11, 9, 10.5), None, (12, 13, 11, 12.5)],
        },
        signals={"score": {"BBB": [1.0, None, 3.0], "AAA": [0.5, None, 2.0]}},
    )


def test_from_frame_unsorted_input_is_sorted_into_csr_layout() -> None:
    panel = _two_symbol_panel().reverse()
    data = MarketData.from_frame(panel, signal_columns=["score"])
    assert data.symbols.tolist() == ["AAA", "BBB"]
    assert data.offsets.tolist() == [0, 2, 3, 5]
    assert data.sym_id.tolist() == [0, 1, 1, 0, 1]
    assert data.close.tolist() == [10.5, 20.5, 21.5, 12.5, 22.5]
    assert data.ordinal.tolist() == [0, 0, 1, 1, 2]
    assert data.prev_row.tolist() == [-1, -1, 1, 0, 2]
    assert np.isnan(data.columns["score"][2])  # null signal becomes NaN


def test_from_frame_duplicate_keys_raises_naming_them() -> None:
    panel = _two_symbol_panel()
    dup = pl.concat([panel, panel.head(1)])
    with pytest.raises(ValueError, match=r"duplicate \(timestamp, symbol\).*BBB"):
        MarketData.from_frame(dup)


def test_from_frame_null_close_raises_naming_the_row() -> None:
    panel = _two_symbol_panel().with_columns(
        pl.when(pl.col("symbol") == "AAA").then(None).otherwise(pl.col("close")).alias("close")
    )
    with pytest.raises(ValueError, match=r"null or non-finite.*AAA.*close"):
        MarketData.from_frame(panel)


def test_from_frame_naive_timestamp_raises() -> None:
    panel = _two_symbol_panel().with_columns(pl.col("timestamp").dt.replace_time_zone(None))
    with pytest.raises(ValueError, match="tz-aware UTC"):
        MarketData.from_frame(panel)


def test_from_frame_missing_signal_column_raises() -> None:
    with pytest.raises(ValueError, match=r"missing columns \['nope'\]"):
        MarketData.from_frame(_two_symbol_panel(), signal_columns=["nope"])


def test_from_frame_categorical_symbol_is_accepted() -> None:
    panel = _two_symbol_panel().with_columns(pl.col("symbol").cast(pl.Categorical))
    data = MarketData.from_frame(panel)
    assert data.symbols.tolist() == ["AAA", "BBB"]


def test_from_frame_context_aligned_by_timestamp_missing_is_nan() -> None:
    context = pl.DataFrame(
        {"timestamp": [ts(0), ts(2), ts(9)], "vix": [15.0, 17.0, 99.0]}
    ).with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))
    data = MarketData.from_frame(_two_symbol_panel(), context=context, context_columns=["vix"])
    vix = data.context["vix"]
    assert vix[0] == 15.0 and math.isnan(vix[1]) and vix[2] == 17.0


def test_from_frame_duplicate_context_timestamp_raises() -> None:
    context = pl.DataFrame({"timestamp": [ts(0), ts(0)], "vix": [15.0, 16.0]}).with_columns(
        pl.col("timestamp").cast(pl.Datetime("us", "UTC"))
    )
    with pytest.raises(ValueError, match="one row per timestamp"):
        MarketData.from_frame(_two_symbol_panel(), context=context)


def test_batch_exposes_slices_signals_and_polars_view() -> None:
    data = MarketData.from_frame(_two_symbol_panel(), signal_columns=["score"])
    batch = data.batch(2)
    assert batch.symbols.tolist() == ["AAA", "BBB"]
    assert batch.ids.tolist() == [0, 1]
    assert batch.close.tolist() == [12.5, 22.5]
    assert batch.signals["score"].tolist() == [2.0, 3.0]
    assert batch["score"].tolist() == [2.0, 3.0]
    assert np.shares_memory(batch.close, data.close)
    frame = batch.to_polars()
    assert frame.columns[:3] == ["timestamp", "symbol", "open"]
    assert frame["timestamp"].dtype == pl.Datetime("us", "UTC")
    with pytest.raises(KeyError, match="no column 'nope'"):
        batch["nope"]


def test_iter_events_one_event_per_symbol_with_dicts() -> None:
    data = MarketData.from_frame(_two_symbol_panel(), signal_columns=["score"])
    events = list(data.batch(1).iter_events())
    assert [e.symbol for e in events] == ["BBB"]
    event = events[0]
    assert (event.open, event.high, event.low, event.close) == (21.0, 22.0, 20.0, 21.5)
    assert math.isnan(event.signals["score"])
    assert event.timestamp == ts(1)


def test_from_frame_duplicate_in_sorted_input_raises() -> None:
    panel = _two_symbol_panel().sort("timestamp", "symbol")
    dup = pl.concat([panel.head(2), panel.slice(1, 1), panel.slice(2)])
    with pytest.raises(ValueError, match=r"1 duplicate \(timestamp, symbol\) keys"):
        MarketData.from_frame(dup)


def test_from_frame_sorted_input_keeps_order_and_values() -> None:
    panel = _two_symbol_panel().sort("timestamp", "symbol")
    data = MarketData.from_frame(panel, signal_columns=["score"])
    assert data.close.tolist() == panel["close"].to_list()
