"""Reference inputs of the cross-framework experiment (issue 7), on the real S&P file."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ml4t_pipeline.lib.crossval.reference import (
    REFERENCE_SYMBOL_COUNT,
    SP500_FILE,
    ReferenceInputs,
    ReferenceSpec,
    build_reference_inputs,
    inputs_from_wide,
    load_reference_inputs,
    select_clean_symbols,
)


@pytest.fixture(scope="module")
def reference(data_root: Path) -> ReferenceInputs:
    return load_reference_inputs(data_root)


def test_load_reference_inputs_real_file_461_symbols_by_1259_dates(
    reference: ReferenceInputs,
) -> None:
    assert len(reference.symbols) == REFERENCE_SYMBOL_COUNT == 461
    assert reference.close.shape == (1259, 461)
    assert reference.panel.height == 461 * 1259
    assert list(reference.symbols) == sorted(reference.symbols)


def test_select_clean_symbols_real_file_drops_incomplete_and_dirty(data_root: Path) -> None:
    prices = pl.read_parquet(data_root / SP500_FILE)
    clean = select_clean_symbols(prices)
    # complete histories with at least one invalid row (see the module docstring)
    for dirty in ("AOS", "BBY", "CHD", "CHK", "IP", "LNT", "REGN", "SPG", "VRTX"):
        assert dirty not in clean
    # incomplete histories
    for short in ("APTV", "DHR", "O", "BMY"):
        assert short not in clean
    assert "AAPL" in clean


def test_reference_score_is_20_day_close_return(reference: ReferenceInputs) -> None:
    close = reference.close["AAPL"].to_numpy()
    score = reference.score["AAPL"].to_numpy()
    assert np.isnan(score[:20]).all()
    assert score[20] == pytest.approx(close[20] / close[0] - 1.0, rel=1e-12)
    assert score[-1] == pytest.approx(close[-1] / close[-21] - 1.0, rel=1e-12)


def test_reference_panel_timestamps_are_new_york_close_in_utc(reference: ReferenceInputs) -> None:
    panel = reference.panel
    assert panel.schema["timestamp"] == pl.Datetime("us", "UTC")
    first = panel["timestamp"][0]
    assert first == datetime.fromisoformat("2013-02-08T21:00:00+00:00")  # EST: 16:00 = 21:00Z
    summer = panel.filter(pl.col("timestamp").dt.date() == datetime(2017, 7, 5).date())
    assert summer["timestamp"][0].hour == 20  # EDT
    half_day = panel.filter(pl.col("timestamp").dt.date() == datetime(2017, 7, 3).date())
    assert half_day["timestamp"][0].hour == 17  # the 13:00 EDT early close
    assert panel.filter(pl.col("symbol") == "AAPL")["score"].null_count() == 20


def test_inputs_from_wide_invalid_ohlc_raises_with_row() -> None:
    with pytest.raises(ValueError, match=r"2024-01-03.*'A'"):
        inputs_from_wide(
            ["2024-01-02", "2024-01-03"],
            open={"A": [10, 10]},
            high={"A": [10, 9]},
            low={"A": [10, 9.5]},
            close={"A": [10, 9.5]},
            score={"A": [1, 1]},
        )


def test_build_reference_inputs_unknown_symbol_raises() -> None:
    prices = pl.DataFrame(
        {
            "timestamp": [datetime(2024, 1, 2), datetime(2024, 1, 3)],
            "symbol": ["A", "A"],
            **{c: [10.0, 10.0] for c in ("open", "high", "low", "close", "volume")},
        }
    )
    with pytest.raises(ValueError, match="'B'"):
        build_reference_inputs(prices, symbols=["A", "B"], lookback=1)


def test_reference_spec_bad_weight_raises() -> None:
    with pytest.raises(ValueError, match="weight"):
        ReferenceSpec(weight=1.5)
