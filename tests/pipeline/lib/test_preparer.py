"""DataPreparer: the fluent preparation gives the engine what the assets give it, and refuses
bad input with the rows named. Hand-built frames first, then a slice of the real S&P file."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import engine
from ml4t_pipeline import DataPreparer
from ml4t_pipeline.lib import io as io_lib
from ml4t_pipeline.lib.preparer import DataValidationError

UTC = dt.UTC
DAYS = [dt.date(2024, 1, d) for d in (2, 3, 4, 5, 8)]  # Tue..Fri, Mon


def _prices(symbols: tuple[str, ...] = ("AAA", "BBB")) -> pl.DataFrame:
    rows = []
    for k, sym in enumerate(symbols):
        for i, day in enumerate(DAYS):
            close = 100.0 + 10 * k + i
            rows.append((day, sym, close - 0.5, close + 1.0, close - 1.0, close, 1000.0))
    return pl.DataFrame(
        rows, schema=["timestamp", "symbol", "open", "high", "low", "close", "volume"], orient="row"
    )


def _close_utc(day: dt.date) -> dt.datetime:
    # 16:00 New York in January (EST) = 21:00 UTC.
    return dt.datetime(day.year, day.month, day.day, 21, 0, tzinfo=UTC)


def _scores(values: dict[str, list[float]]) -> pl.DataFrame:
    rows = [
        (_close_utc(day), sym, v)
        for sym, series in values.items()
        for day, v in zip(DAYS, series, strict=True)
    ]
    return pl.DataFrame(rows, schema=["timestamp", "symbol", "score"], orient="row").with_columns(
        pl.col("timestamp").dt.cast_time_unit("us")
    )


SCORES = {"AAA": [1.0, 2.0, 3.0, 4.0, 5.0], "BBB": [-1.0, -2.0, -3.0, -4.0, -5.0]}


def _panel_scores(prep: DataPreparer, symbol: str) -> list[float | None]:
    panel = prep.to_panel()
    return panel.filter(pl.col("symbol") == symbol).sort("timestamp")["score"].to_list()


def test_preparer_daily_dates_stamped_at_new_york_close() -> None:
    prep = DataPreparer(_prices()).validate()
    stamps = prep.prices.filter(pl.col("symbol") == "AAA")["timestamp"].to_list()
    assert stamps == [_close_utc(d) for d in DAYS]


def test_preparer_market_close_signal_visible_at_its_own_bar() -> None:
    prep = DataPreparer(_prices()).add_signals(_scores(SCORES), available_at="market_close")
    assert _panel_scores(prep, "AAA") == SCORES["AAA"]


def test_preparer_next_day_signal_visible_one_bar_later() -> None:
    prep = DataPreparer(_prices()).add_signals(_scores(SCORES), available_at="next_day")
    # available at 09:30 New York of the next weekday: first seen at that day's close.
    assert _panel_scores(prep, "AAA") == [None, *SCORES["AAA"][:-1]]


def test_preparer_explicit_available_at_delays_visibility_to_that_bar() -> None:
    scores = _scores(SCORES).with_columns(
        # every score known only two days after its bar (bar close + 48 h)
        (pl.col("timestamp") + pl.duration(hours=48)).alias("available_at")
    )
    prep = DataPreparer(_prices()).add_signals(scores, available_at="available_at")
    seen = _panel_scores(prep, "BBB")
    # Jan 2's score (+48 h = Jan 4 close) is first seen on Jan 4; Jan 5's (+48 h = Sunday) on
    # Monday Jan 8, which also sees nothing newer (Jan 8's own is not available yet).
    assert seen == [None, None, -1.0, -2.0, -4.0]


def test_preparer_to_market_data_carries_signals_features_and_context() -> None:
    data = (
        DataPreparer(_prices())
        .add_signals(_scores(SCORES))
        .add_features()
        .add_context()
        .validate()
        .to_market_data()
    )
    assert isinstance(data, engine.MarketData)
    assert data.signal_columns == ["score"]
    assert "ret_1" in data.indicator_columns and "rsi_14" in data.indicator_columns
    assert "market_return" in data.context_columns
    # ret_1 of AAA at its second bar: 101 / 100 - 1, known at that close.
    aaa = data.symbol_index["AAA"]
    rows = np.flatnonzero(data.sym_id == aaa)
    assert data.columns["ret_1"][rows[1]] == pytest.approx(101.0 / 100.0 - 1.0)
    assert np.isnan(data.columns["ret_1"][rows[0]])


def test_preparer_vix_context_visible_from_the_next_bar() -> None:
    # VIX stamped at its 16:15 New York close: a day's value is first seen at the next bar.
    vix = pl.DataFrame(
        {
            "timestamp": [dt.datetime(d.year, d.month, d.day, 21, 15, tzinfo=UTC) for d in DAYS],
            "vix": [11.0, 12.0, 13.0, 14.0, 15.0],
        }
    ).with_columns(pl.col("timestamp").dt.cast_time_unit("us"))
    data = DataPreparer(_prices()).add_context(vix, required=[]).to_market_data()
    assert np.isnan(data.context["vix"][0])
    assert data.context["vix"][1:].tolist() == [11.0, 12.0, 13.0, 14.0]


def test_preparer_context_null_at_first_bar_is_refused_by_default() -> None:
    vix = pl.DataFrame(
        {"timestamp": [dt.datetime(2024, 1, 2, 21, 15, tzinfo=UTC)], "vix": [11.0]}
    ).with_columns(pl.col("timestamp").dt.cast_time_unit("us"))
    prep = DataPreparer(_prices()).add_context(vix)  # every added column is required
    with pytest.raises(DataValidationError, match="required_not_null") as info:
        prep.validate()
    assert info.value.table == "context"
    assert info.value.violations["timestamp"].to_list() == [_close_utc(DAYS[0])]


def test_preparer_high_below_low_fails_naming_the_row() -> None:
    prices = _prices().with_columns(
        pl.when((pl.col("symbol") == "BBB") & (pl.col("timestamp") == DAYS[2]))
        .then(pl.col("low") - 5.0)
        .otherwise(pl.col("high"))
        .alias("high")
    )
    with pytest.raises(DataValidationError) as info:
        DataPreparer(prices).validate()
    err = info.value
    assert err.table == "prices"
    bad = err.violations.filter(pl.col("rule") == "high_at_or_above_low")
    assert bad.select("symbol", "timestamp").rows() == [("BBB", _close_utc(DAYS[2]))]
    assert "BBB" in str(err) and "high_at_or_above_low" in str(err)


def test_preparer_quarantine_sets_invalid_rows_aside_with_reason() -> None:
    prices = _prices().with_columns(
        pl.when((pl.col("symbol") == "AAA") & (pl.col("timestamp") == DAYS[1]))
        .then(None)
        .otherwise(pl.col("open"))
        .alias("open")
    )
    prep = DataPreparer(prices).validate(invalid_rows="quarantine")
    assert prep.prices.height == prices.height - 1
    assert prep.quarantine.select("symbol", "reason").rows() == [("AAA", "ohlcv_not_null")]
    assert prep.to_market_data().n_rows == prices.height - 1


def test_preparer_duplicate_signal_key_fails_naming_both_rows() -> None:
    scores = _scores(SCORES)
    scores = pl.concat([scores, scores.slice(3, 1)])
    with pytest.raises(DataValidationError, match="key_unique") as info:
        DataPreparer(_prices()).add_signals(scores).validate()
    dup = info.value.violations.filter(pl.col("rule") == "key_unique")
    assert dup["row_index"].to_list() == [3, scores.height - 1]


def test_preparer_signal_for_unknown_symbol_fails() -> None:
    scores = _scores({**SCORES, "ZZZ": [0.0] * 5})
    with pytest.raises(DataValidationError, match="symbol_known") as info:
        DataPreparer(_prices()).add_signals(scores).validate(level="paranoid")
    assert set(info.value.violations["symbol"].to_list()) == {"ZZZ"}


def test_preparer_nan_signal_fails_naming_the_row() -> None:
    scores = _scores(SCORES).with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(float("nan")).otherwise("score").alias("score")
    )
    with pytest.raises(DataValidationError, match="values_finite") as info:
        DataPreparer(_prices()).add_signals(scores).validate()
    assert info.value.violations["row_index"].to_list() == [7]


def test_preparer_naive_intraday_signal_timestamps_refused() -> None:
    # 21:00 without a time zone: neither a daily date nor an instant.
    scores = _scores(SCORES).with_columns(pl.col("timestamp").dt.replace_time_zone(None))
    with pytest.raises(ValueError, match="naive"):
        DataPreparer(_prices()).add_signals(scores).validate()


def test_preparer_paranoid_warns_about_stale_signals() -> None:
    scores = _scores(SCORES).filter(pl.col("timestamp") == _close_utc(DAYS[0]))
    prep = DataPreparer(_prices()).add_signals(scores)
    with pytest.warns(UserWarning, match="older than 2 bars"):
        prep.validate(level="paranoid", max_signal_age_bars=2)
    assert prep.stale_signals is not None
    # Jan 2's score, carried forward: ages 3 and 4 bars on Jan 5 and Jan 8, for both symbols.
    assert sorted(prep.stale_signals["signal_age_bars"].to_list()) == [3, 3, 4, 4]


def test_preparer_max_fill_bars_stops_carrying_a_signal() -> None:
    scores = _scores(SCORES).filter(pl.col("timestamp") == _close_utc(DAYS[0]))
    prep = DataPreparer(_prices()).add_signals(scores).validate(max_fill_bars=1)
    assert _panel_scores(prep, "AAA") == [1.0, 1.0, None, None, None]


def test_preparer_non_utc_bar_close_frame_refused_with_advice() -> None:
    prices = _prices().with_columns(
        pl.col("timestamp").cast(pl.Datetime("us")).dt.replace_time_zone("America/New_York")
    )
    with pytest.raises(ValueError, match="bar_length"):
        DataPreparer(prices)


def test_preparer_unknown_symbols_argument_refused() -> None:
    with pytest.raises(ValueError, match="QQQ"):
        DataPreparer(_prices(), symbols=["AAA", "QQQ"])


def test_preparer_market_data_runs_in_the_engine_like_the_frame_path() -> None:
    prep = DataPreparer(_prices()).add_signals(_scores(SCORES)).add_features()
    data = prep.to_market_data()
    direct = engine.MarketData.from_frame(
        prep.to_panel(), signal_columns=["score"], indicator_columns=prep.indicator_columns
    )
    strategy = {"type": "TopN", "signal": "score", "n": 1, "weight": 0.5}
    a = engine.BacktestEngine(data, engine.build_strategy(dict(strategy))).run()
    b = engine.BacktestEngine(direct, engine.build_strategy(dict(strategy))).run()
    assert a.fills.height > 0
    assert a.fills.equals(b.fills)
    # AAA has the higher score at every bar: the only symbol ever bought.
    assert set(a.fills["symbol"].cast(pl.String).to_list()) == {"AAA"}


# --- the real S&P file ------------------------------------------------------------------------

DATA_ROOT = Path(os.environ.get("ML4T_DATA_ROOT", "../shared/data"))
SP500 = DATA_ROOT / "sp500_5yr_daily_ohlcv.parquet"
VIX = DATA_ROOT / "vix_daily_cboe.parquet"
needs_data = pytest.mark.skipif(not SP500.is_file(), reason=f"no S&P file under {DATA_ROOT}")


@pytest.fixture(scope="module")
def sp500_slice() -> pl.DataFrame:
    # The first 30 symbols alphabetically plus five that the data README lists with invalid
    # rows (null opens, high < low, close below low), every day.
    raw = pl.read_parquet(SP500)
    symbols = sorted(raw["symbol"].unique().to_list())[:30] + ["BBY", "CHK", "REGN", "UA", "VRTX"]
    return raw.filter(pl.col("symbol").is_in(symbols))


def _independently_invalid(raw: pl.DataFrame) -> pl.DataFrame:
    # The invalid rows found without the pipeline's rule code: nulls, high < low, close or
    # open outside [low, high], non-positive prices, negative volume.
    o, h, lo, c, v = (pl.col(x) for x in ("open", "high", "low", "close", "volume"))
    bad = (
        pl.any_horizontal(x.is_null() for x in (o, h, lo, c, v))
        | (h < lo)
        | (c > h)
        | (c < lo)
        | (o > h)
        | (o < lo)
        | pl.any_horizontal(x <= 0 for x in (o, h, lo, c))
        | (v < 0)
    )
    return raw.filter(bad.fill_null(True))


@needs_data
def test_preparer_real_sp500_fail_policy_names_the_invalid_rows(sp500_slice) -> None:
    expected = _independently_invalid(sp500_slice)
    assert expected.height > 0  # the slice does hold bad rows
    with pytest.raises(DataValidationError) as info:
        DataPreparer(sp500_slice).validate()
    named = info.value.violations.select(
        "symbol", pl.col("timestamp").dt.convert_time_zone("America/New_York").dt.date()
    ).unique()
    want = expected.select("symbol", pl.col("timestamp").dt.date()).unique()
    assert sorted(named.rows()) == sorted(want.rows())


@needs_data
def test_preparer_real_sp500_quarantine_with_vix_builds_the_engine_input(sp500_slice) -> None:
    n_bad = _independently_invalid(sp500_slice).height
    prep = (
        DataPreparer(sp500_slice)
        .add_features()
        .add_context(VIX, vix=True)
        .validate(invalid_rows="quarantine")
    )
    data = prep.to_market_data()
    assert prep.quarantine.height == n_bad
    assert data.n_rows == sp500_slice.height - n_bad
    # The VIX seen at each bar is the previous trading day's close (published at 16:15).
    vix = pl.read_parquet(VIX).select(pl.col("timestamp").dt.date().alias("day"), "close")
    bars = pl.DataFrame(
        {
            "day": pl.Series(data.datetimes).dt.convert_time_zone("America/New_York").dt.date(),
            "seen": data.context["vix"],
        }
    )
    prev = bars.join_asof(
        vix.with_columns((pl.col("day") + pl.duration(days=1)).alias("visible")).sort("visible"),
        left_on="day",
        right_on="visible",
        strategy="backward",
    )
    assert np.allclose(prev["seen"].to_numpy(), prev["close"].to_numpy())


@needs_data
def test_preparer_real_sp500_from_path_equals_from_frame(sp500_slice) -> None:
    from_path = DataPreparer(SP500, symbols=sorted(sp500_slice["symbol"].unique().to_list()))
    from_frame = DataPreparer(sp500_slice)
    assert from_path.validate(invalid_rows="quarantine").prices.equals(
        from_frame.validate(invalid_rows="quarantine").prices
    )
    assert from_path.prices.equals(
        io_lib.to_prices_contract(sp500_slice).filter(
            ~pl.int_range(pl.len()).is_in(from_path.quarantine["row_index"].implode())
        )
    )


def test_preparer_signals_and_features_from_files_equal_frames(tmp_path: Path) -> None:
    scores = _scores(SCORES).with_columns(other=pl.lit(1.0))
    scores.write_parquet(tmp_path / "scores.parquet")
    feats = DataPreparer(_prices()).add_features().validate().to_panel()
    feats.select("timestamp", "symbol", "ret_1").write_parquet(tmp_path / "features.parquet")
    from_files = (
        DataPreparer(_prices())
        .add_signals(tmp_path / "scores.parquet", columns=["score"])
        .add_features(tmp_path / "features.parquet")
    )
    assert from_files.signal_columns == ["score"]
    assert from_files.indicator_columns == ["ret_1"]
    assert from_files.to_panel()["ret_1"].equals(feats["ret_1"])
    assert "validated at standard" in repr(from_files)


def test_preparer_signal_columns_missing_is_named() -> None:
    with pytest.raises(ValueError, match="nope"):
        DataPreparer(_prices()).add_signals(_scores(SCORES), columns=["nope"])


def test_preparer_unknown_level_and_timing_refused() -> None:
    with pytest.raises(ValueError, match="level"):
        DataPreparer(_prices()).validate(level="thorough")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="available_at"):
        DataPreparer(_prices()).add_signals(_scores(SCORES), available_at="whenever")
