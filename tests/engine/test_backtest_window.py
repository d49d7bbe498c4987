"""The backtest window (issue 24.6): ``BacktestEngine.run(start=, end=)`` and
``MarketData.between`` trade only the window's bars while the columns computed before the engine
keep their full-history values."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine import (
    BacktestEngine,
    BacktestResult,
    ChunkedMarketData,
    ExecutionConfig,
    MarketData,
    PercentageCommission,
    PriceBasedStopLoss,
    RiskManager,
    Strategy,
    TopNStrategy,
)
from engine.data import BarBatch
from tests.engine.helpers import make_panel, ts

START = datetime(2015, 1, 1, tzinfo=UTC)
END = date(2015, 12, 31)


@pytest.fixture(scope="module")
def scored(sp500_panel: pl.DataFrame) -> pl.DataFrame:
    """120 symbols of the S&P file, 2014-2016, with the 20-bar return and a 50-bar SMA of
    the close computed on the whole history (as the pipeline computes features)."""
    symbols = sp500_panel["symbol"].unique().sort().head(120)
    return (
        sp500_panel.filter(
            pl.col("symbol").is_in(symbols.implode())
            & pl.col("timestamp").dt.year().is_between(2014, 2016)
        )
        .sort("symbol", "timestamp")
        .with_columns(
            (pl.col("close") / pl.col("close").shift(20).over("symbol") - 1).alias("mom"),
            pl.col("close").rolling_mean(50).over("symbol").alias("sma_50"),
        )
    )


def _run(
    data: MarketData | ChunkedMarketData, *, compiled: bool, **window: object
) -> BacktestResult:
    engine = BacktestEngine(
        data,
        TopNStrategy(signal="mom", n=10, rebalance_every=5),
        RiskManager([PriceBasedStopLoss(0.05)]),
        ExecutionConfig(commission=PercentageCommission(0.001), close_at_end=True),
        compiled=compiled,
    )
    return engine.run(**window)  # type: ignore[arg-type]


def _assert_same(a: BacktestResult, b: BacktestResult) -> None:
    for name in ("trades", "fills", "portfolio_states", "rejections"):
        assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "loop"])
def test_engine_run_window_equals_run_on_cut_data(scored: pl.DataFrame, compiled: bool) -> None:
    data = MarketData.from_frame(scored, signal_columns=["mom"], indicator_columns=["sma_50"])
    end_of_day = datetime(2015, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    cut = scored.filter(pl.col("timestamp").is_between(START, end_of_day))
    cut_data = MarketData.from_frame(cut, signal_columns=["mom"], indicator_columns=["sma_50"])
    windowed = _run(data, compiled=compiled, start=START, end=END)
    _assert_same(windowed, _run(cut_data, compiled=compiled))
    assert windowed.compiled is compiled
    states = windowed.portfolio_states
    assert states["timestamp"].min() == cut["timestamp"].min()  # first bar of 2015
    assert states["timestamp"].max() == cut["timestamp"].max()  # 2015-12-31's close kept
    assert states["equity"][0] == pytest.approx(1_000_000.0, rel=1e-3)  # starts from cash
    # close_at_end applies at the window's end, not at the data's
    assert windowed.trades["exit_timestamp"].max() == cut["timestamp"].max()
    assert "end_of_data" in windowed.trades["exit_reason"].to_list()


def test_engine_run_window_over_chunks_equals_window_over_panel(scored: pl.DataFrame) -> None:
    data = MarketData.from_frame(scored, signal_columns=["mom"], indicator_columns=["sma_50"])
    months = scored.with_columns(pl.col("timestamp").dt.truncate("1mo").alias("_m"))
    chunks = [g.drop("_m") for _, g in months.sort("_m").group_by("_m", maintain_order=True)]
    chunked = ChunkedMarketData(
        chunks,
        symbols=scored["symbol"].unique().to_list(),
        signal_columns=["mom"],
        indicator_columns=["sma_50"],
    )
    _assert_same(
        _run(chunked, compiled=False, start=START, end=END),
        _run(data, compiled=False, start=START, end=END),
    )


class _RecordFirstBar(Strategy):
    """Records the ``sma_50`` values the strategy sees at its first bar."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}

    def on_timestamp_batch(self, timestamp: datetime, batch: BarBatch, context: object) -> None:
        if not self.first:
            self.first = dict(zip(batch.symbols.tolist(), batch["sma_50"].tolist(), strict=True))


def test_window_features_from_before_start_are_used_at_the_first_traded_bar(
    scored: pl.DataFrame,
) -> None:
    data = MarketData.from_frame(scored, signal_columns=["mom"], indicator_columns=["sma_50"])
    strategy = _RecordFirstBar()
    BacktestEngine(data, strategy).run(start=START, end=END)
    first_bar = scored.filter(pl.col("timestamp") >= START)["timestamp"].min()
    expected = scored.filter(pl.col("timestamp") == first_bar)
    # the 50-bar SMA over the full history (2014's closes included), not a fresh one
    assert strategy.first == dict(zip(expected["symbol"], expected["sma_50"], strict=True))
    # finite at the window's first bar: a 50-bar SMA computed on the cut data would be null
    assert len(strategy.first) == expected.height
    assert all(np.isfinite(v) for v in strategy.first.values())


# --- MarketData.between: bounds, shapes and refusals -------------------------------------------

FLAT = (10.0, 10.0, 10.0, 10.0)


def _tiny() -> MarketData:
    panel = make_panel({"AAA": [FLAT] * 6, "BBB": [None, FLAT, FLAT, None, FLAT, FLAT]})
    return MarketData.from_frame(panel.with_columns(pl.col("close").alias("x")), ["x"])


def test_between_date_bounds_keep_whole_utc_days() -> None:
    data = _tiny()  # closes at 21:00 UTC on 2024-01-02 .. 2024-01-07
    window = data.between(ts(1).date(), ts(3).date())
    assert window.datetimes == [ts(1), ts(2), ts(3)]
    assert window.n_rows == 5 and window.offsets.tolist() == [0, 2, 4, 5]
    assert window.symbols.tolist() == ["AAA", "BBB"]  # same ids
    assert window.ordinal.tolist() == [0, 0, 1, 1, 2]  # counted from the window's first bar
    assert window.first_index == 0


def test_between_datetime_bounds_are_inclusive_and_none_is_open() -> None:
    data = _tiny()
    assert data.between(ts(4), None).datetimes == [ts(4), ts(5)]
    assert data.between(None, ts(0)).datetimes == [ts(0)]
    assert data.between() is data


def test_between_empty_window_raises_with_data_range() -> None:
    with pytest.raises(ValueError, match="holds no bar: the data runs from 2024-01-02"):
        _tiny().between(date(2025, 1, 1), date(2025, 2, 1))


@pytest.mark.parametrize(
    ("start", "end", "match"),
    [
        (datetime(2024, 1, 3), None, "no timezone"),
        (date(2024, 1, 5), date(2024, 1, 3), "after its end"),
        ("2024-01-03", None, "date or a tz-aware datetime"),
    ],
)
def test_between_bad_bounds_raise(start: object, end: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _tiny().between(start, end)  # type: ignore[arg-type]


def test_chunked_window_with_no_bar_raises_naming_the_window() -> None:
    frame = make_panel({"AAA": [FLAT] * 3})
    chunked = ChunkedMarketData([frame], symbols=["AAA"]).between(date(2030, 1, 1), None)
    with pytest.raises(ValueError, match=r"window \[2030-01-01, None\] holds no bar"):
        BacktestEngine(chunked, TopNStrategy("close", n=1)).run()
