"""Implausible price rows are refused (or quarantined) naming the rows, and data messages say
what is wrong where in the file.

Rules of ``data.plausibility``: ``price_level_plausible`` (a price above ``max_price``, default
1e7), ``return_plausible`` (a close-to-close return outside [-0.99, +10]), ``on_session_date``
(a bar on no NYSE session, e.g. a Saturday), ``symbol_not_blank``. Messages: rows named by their
data row in the file (``file_row``, 0-based), duplicates appended at the end of a file reported
as duplicates, and scores that all come after the last bar get their own message.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml4t_pipeline.config import ExperimentConfig
from ml4t_pipeline.lib.io import load_prices_file, to_prices_contract
from ml4t_pipeline.lib.schemas import (
    PLAUSIBILITY_RULE_NAMES,
    Plausibility,
    validate_prices,
)
from tests.pipeline.data_cases import (
    Lab,
    experiment,
    momentum_scores,
    prepare,
    price_slice,
    run_cli,
)

DEFAULT = Plausibility()


def _bars(
    closes: list[float], days: list[dt.date] | None = None, symbol: str = "A"
) -> pl.DataFrame:
    """Daily bars of one symbol (open = high = low = close), in the prices contract."""
    days = days or [dt.date(2013, 4, 29) + dt.timedelta(days=i) for i in range(len(closes))]
    raw = pl.DataFrame(
        {
            "timestamp": days,
            "symbol": [symbol] * len(closes),
            **{c: closes for c in ("open", "high", "low", "close")},
            "volume": [1e5] * len(closes),
        }
    )
    return to_prices_contract(raw)


WEEK = [dt.date(2013, 4, 29) + dt.timedelta(days=i) for i in range(5)]  # Mon 29 Apr .. Fri 3 May


# ---------------------------------------------------------------------------------------------
# the rules


def test_validate_prices_price_near_1e300_breaks_price_level_naming_the_row() -> None:
    prices = _bars([10.0, 10.5, 1e300, 10.4, 10.6], WEEK)
    report = validate_prices(prices, plausibility=DEFAULT)
    assert report.rows_breaking("price_level_plausible")["row_index"].to_list() == [2]
    # The spike's return (+1e299) and the return back from it (-100 %) are both out of bounds.
    assert report.rows_breaking("return_plausible")["row_index"].to_list() == [2, 3]


def test_validate_prices_returns_inside_default_bounds_pass() -> None:
    # -98 % and +900 % are extreme but inside [-0.99, 10].
    prices = _bars([100.0, 2.0, 20.0, 20.0, 20.0], WEEK)
    report = validate_prices(prices, plausibility=DEFAULT)
    assert report.summary["return_plausible"] == 0


def test_validate_prices_custom_bounds_applied() -> None:
    prices = _bars([100.0, 60.0, 60.0, 61.0, 200.0], WEEK)
    tight = Plausibility(max_price=150.0, min_return=-0.3, max_return=1.0)
    report = validate_prices(prices, plausibility=tight)
    assert report.rows_breaking("return_plausible")["row_index"].to_list() == [1, 4]
    assert report.rows_breaking("price_level_plausible")["row_index"].to_list() == [4]
    off = Plausibility(max_price=None, min_return=None, max_return=None, calendar="none")
    assert validate_prices(prices, plausibility=off).ok


def test_validate_prices_saturday_copy_of_friday_breaks_on_session_date() -> None:
    saturday = dt.date(2013, 5, 4)
    prices = _bars([10.0] * 6, [*WEEK, saturday])
    for calendar in ("XNYS", "weekdays"):
        report = validate_prices(prices, plausibility=Plausibility(calendar=calendar))
        broken = report.rows_breaking("on_session_date")
        assert broken["row_index"].to_list() == [5], calendar
    assert validate_prices(prices, plausibility=Plausibility(calendar="none")).ok


def test_validate_prices_exchange_holiday_breaks_xnys_but_not_weekdays() -> None:
    july = [dt.date(2013, 7, d) for d in (1, 2, 3, 4, 5)]  # 4 July 2013: a Thursday, closed
    prices = _bars([10.0] * 5, july)
    xnys = validate_prices(prices, plausibility=DEFAULT)
    assert xnys.rows_breaking("on_session_date")["row_index"].to_list() == [3]
    weekdays = validate_prices(prices, plausibility=Plausibility(calendar="weekdays"))
    assert weekdays.ok


@pytest.mark.parametrize("symbol", ["", " ", "\t"])
def test_validate_prices_blank_symbol_breaks_symbol_not_blank(symbol: str) -> None:
    prices = pl.concat([_bars([10.0] * 5, WEEK), _bars([20.0] * 5, WEEK, symbol=symbol)]).sort(
        "timestamp", "symbol"
    )
    report = validate_prices(prices, plausibility=DEFAULT)
    broken = report.rows_breaking("symbol_not_blank")
    assert broken.height == 5
    assert set(broken["symbol"].to_list()) == {symbol}


def test_validate_prices_plausibility_not_applied_unless_asked() -> None:
    prices = _bars([10.0, 1e300, 10.0, 10.0, 10.0, 10.0], [*WEEK, dt.date(2013, 5, 4)])
    report = validate_prices(prices)
    assert report.ok
    assert not set(PLAUSIBILITY_RULE_NAMES) & set(report.summary)


@settings(max_examples=25, deadline=None)
@given(
    growth=st.floats(min_value=0.0, max_value=0.2),
    sample=st.integers(min_value=2, max_value=40),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_validate_prices_fast_sample_never_flags_returns_between_non_adjacent_rows(
    growth: float, sample: int, seed: int
) -> None:
    # Each bar rises at most 20 %, but rows far apart differ by up to ~1e15 x: a return computed
    # between sampled rows would be a false report. The sample reports only rows' own returns.
    closes = [100.0 * (1 + growth) ** i for i in range(200)]
    days = [dt.date(2013, 1, 1) + dt.timedelta(days=i) for i in range(200)]
    prices = _bars(closes, days)
    loose = Plausibility(max_price=None, calendar="none")
    report = validate_prices(
        prices, level="fast", sample_size=sample, seed=seed, plausibility=loose
    )
    assert report.sampled
    assert report.summary["return_plausible"] == 0


def test_validate_prices_real_sp500_passes_the_default_plausibility(data_root: Path) -> None:
    prices = load_prices_file(data_root / "sp500_5yr_daily_ohlcv.parquet")
    report = validate_prices(prices, plausibility=DEFAULT)
    assert {name: report.summary[name] for name in PLAUSIBILITY_RULE_NAMES} == dict.fromkeys(
        PLAUSIBILITY_RULE_NAMES, 0
    )
    # The README's quirks (null opens, high < low, close < low) are still the only findings.
    assert report.invalid.height == validate_prices(prices).invalid.height == 23


def test_config_plausibility_defaults_and_bounds() -> None:
    cfg = ExperimentConfig.model_validate({"name": "x"})
    p = cfg.data.plausibility
    assert (p.max_price, p.min_return, p.max_return, p.calendar) == (1e7, -0.99, 10.0, "XNYS")
    for bad in ({"max_price": 0}, {"min_return": -1.5}, {"max_return": -1}, {"calendar": "LSE"}):
        with pytest.raises(ValueError, match="plausibility"):
            ExperimentConfig.model_validate({"name": "x", "data": {"plausibility": bad}})


# ---------------------------------------------------------------------------------------------
# the loader's messages


def test_load_prices_duplicates_appended_at_end_reach_key_unique_as_duplicates(
    tmp_path: Path,
) -> None:
    raw = _raw_week()
    with_dups = pl.concat([raw, raw.slice(1, 2)])  # rows 1 and 2 appended again as rows 10, 11
    path = tmp_path / "prices.parquet"
    with_dups.write_parquet(path)
    prices = load_prices_file(path, row_column="file_row")  # no "go back in time" error
    report = validate_prices(prices)
    broken = report.rows_breaking("key_unique")
    rows = prices["file_row"].gather(broken["row_index"]).sort().to_list()
    assert rows == [1, 2, 10, 11]
    assert report.summary["timestamp_sorted_within_symbol"] == 0


def test_load_prices_rows_going_back_in_time_still_refused_with_duplicates(tmp_path: Path) -> None:
    raw = _raw_week()
    # A duplicate at the end, and B's rows 5..9 reversed: only the reversal is a step back.
    reversed_b = pl.concat([raw.slice(0, 5), raw.slice(5, 5).reverse(), raw.slice(0, 1)])
    path = tmp_path / "prices.parquet"
    reversed_b.write_parquet(path)
    with pytest.raises(ValueError, match=r"4 rows go back in time.*'row': 6, 'symbol': 'B'"):
        load_prices_file(path)


def test_load_prices_row_column_is_the_file_row_after_sorting(tmp_path: Path) -> None:
    raw = _raw_week()  # A's five days, then B's: sorted by (timestamp, symbol) they interleave
    path = tmp_path / "prices.parquet"
    raw.write_parquet(path)
    prices = load_prices_file(path, row_column="file_row")
    assert prices["file_row"].to_list() == [0, 5, 1, 6, 2, 7, 3, 8, 4, 9]
    assert prices.drop("file_row").equals(load_prices_file(path))


def _raw_week() -> pl.DataFrame:
    """Plain-date rows as in a daily file: symbol A's week, then B's (sorted by symbol, date)."""
    return pl.DataFrame(
        {
            "timestamp": WEEK * 2,
            "symbol": ["A"] * 5 + ["B"] * 5,
            **{c: [10.0 + i for i in range(10)] for c in ("open", "high", "low", "close")},
            "volume": [1e5] * 10,
        }
    )


# ---------------------------------------------------------------------------------------------
# through the pipeline


@pytest.fixture(scope="module")
def lab(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("plausibility"))
    prices = price_slice(data_root, n_days=60)
    prices.write_parquet(lab.data / "good.parquet")
    momentum_scores(prices).write_parquet(lab.data / "scores.parquet")
    return lab


def _good(lab: Lab) -> pl.DataFrame:
    return pl.read_parquet(lab.data / "good.parquet")


def _saturday_copies(prices: pl.DataFrame) -> pl.DataFrame:
    """Every Friday bar copied to the Saturday after it, kept in (symbol, timestamp) order."""
    fridays = prices.filter(pl.col("timestamp").dt.weekday() == 5)
    saturdays = fridays.with_columns(pl.col("timestamp") + dt.timedelta(days=1))
    return pl.concat([prices, saturdays]).sort("symbol", "timestamp")


def test_ml4t_run_saturday_copies_refused_naming_file_rows(lab: Lab, tmp_path: Path) -> None:
    bad = _saturday_copies(_good(lab))
    bad.write_parquet(lab.data / "saturdays.parquet")
    result = run_cli(lab.config(experiment(prices="saturdays.parquet")), tmp_path / "out", lab.data)
    assert result.code == 1, result.printed[-2000:]
    assert "FAILED check prices:prices_on_session_date" in result.printed
    first = (
        bad.with_row_index("file_row")
        .filter(pl.col("timestamp").dt.weekday() == 6)
        .row(0, named=True)
    )
    stamp = first["timestamp"].strftime("%Y-%m-%d")
    row = rf"\| {first['file_row']} \| {stamp} 2\d:00:00\+00:00 \| {first['symbol']} \|"
    assert re.search(row, result.printed), result.printed[-3000:]
    assert "file_row = 0-based data row of the prices file" in result.printed


def test_pipeline_saturday_copies_quarantined_and_never_traded(lab: Lab, tmp_path: Path) -> None:
    bad = _saturday_copies(_good(lab))
    bad.write_parquet(lab.data / "saturdays.parquet")
    cfg = experiment(prices="saturdays.parquet", invalid_rows="quarantine")
    run = prepare(lab.config(cfg, name="quarantined"), tmp_path / "storage", lab.data)
    assert run.success
    assert run.checks["prices_on_session_date"] is False  # WARN: set aside
    quarantine = run.value("prices_quarantine")
    n_saturdays = bad.filter(pl.col("timestamp").dt.weekday() == 6).height
    assert quarantine.height == n_saturdays
    assert set(quarantine["reason"].to_list()) == {"on_session_date"}
    panel = run.value("market_panel")
    weekdays = panel["timestamp"].dt.convert_time_zone("America/New_York").dt.weekday()
    assert weekdays.max() <= 5


def test_ml4t_run_symbol_priced_1e300_refused(lab: Lab, tmp_path: Path) -> None:
    good = _good(lab)
    huge = good.with_columns(
        pl.when(pl.col("symbol") == "KO").then(pl.col(c) * 1e298).otherwise(pl.col(c)).alias(c)
        for c in ("open", "high", "low", "close")
    )
    huge.write_parquet(lab.data / "huge.parquet")
    result = run_cli(lab.config(experiment(prices="huge.parquet")), tmp_path / "out", lab.data)
    assert result.code == 1, result.printed[-2000:]
    assert "FAILED check prices:prices_price_level_plausible" in result.printed
    assert "| KO |" in result.printed


def test_ml4t_run_empty_symbol_refused(lab: Lab, tmp_path: Path) -> None:
    # KO renamed to "" in the prices and in the scores: before, the "" symbol was traded.
    def blank(frame: pl.DataFrame) -> pl.DataFrame:
        ko = pl.col("symbol") == "KO"
        return frame.with_columns(pl.when(ko).then(pl.lit("")).otherwise("symbol").alias("symbol"))

    blank(_good(lab)).write_parquet(lab.data / "blank.parquet")
    blank(pl.read_parquet(lab.data / "scores.parquet")).write_parquet(lab.data / "blank_s.parquet")
    cfg = experiment("blank_s.parquet", prices="blank.parquet")
    result = run_cli(lab.config(cfg), tmp_path / "out", lab.data)
    assert result.code == 1, result.printed[-2000:]
    assert "FAILED check prices:prices_symbol_not_blank" in result.printed
    assert re.search(
        r"\| \d+ \| 2013-\d\d-\d\d 21:00:00\+00:00 \|  \| symbol_not_blank", result.printed
    )


def test_ml4t_run_high_below_low_named_by_file_row_not_sorted_position(
    lab: Lab, tmp_path: Path
) -> None:
    good = _good(lab)  # sorted by (symbol, timestamp): KO's 10th row is far down the file
    file_row = good.with_row_index("r").filter(pl.col("symbol") == "KO")["r"][10]
    bad = good.with_columns(
        pl.when(pl.int_range(pl.len()) == file_row)
        .then(pl.col("low") - 1)
        .otherwise(pl.col("high"))
        .alias("high")
    )
    bad.write_parquet(lab.data / "high_low.parquet")
    result = run_cli(lab.config(experiment(prices="high_low.parquet")), tmp_path / "out", lab.data)
    assert result.code == 1, result.printed[-2000:]
    sorted_position = (
        bad.sort("timestamp", "symbol", maintain_order=True)
        .with_row_index("p")
        .filter((pl.col("symbol") == "KO") & (pl.col("high") < pl.col("low")))["p"][0]
    )
    assert sorted_position != file_row  # the test can tell the two apart
    assert f"| {file_row} | " in result.printed
    assert f"| {sorted_position} | " not in result.printed


def test_ml4t_run_duplicates_appended_at_end_reported_as_duplicates(
    lab: Lab, tmp_path: Path
) -> None:
    good = _good(lab)
    tail = good.filter(pl.col("symbol") == "KO").slice(3, 2)
    pl.concat([good, tail]).write_parquet(lab.data / "dups.parquet")
    result = run_cli(lab.config(experiment(prices="dups.parquet")), tmp_path / "out", lab.data)
    assert result.code == 1, result.printed[-2000:]
    assert "go back in time" not in result.printed
    assert "FAILED check prices:prices_key_unique" in result.printed
    for row in (good.height, good.height + 1):  # the appended copies, named by file row
        assert f"| {row} | " in result.printed


def test_ml4t_run_all_future_signals_get_their_own_message(lab: Lab, tmp_path: Path) -> None:
    scores = pl.read_parquet(lab.data / "scores.parquet")
    future = scores.with_columns(pl.col("timestamp").dt.offset_by("5y"))
    future.write_parquet(lab.data / "future.parquet")
    result = run_cli(
        lab.config(experiment("future.parquet", prices="good.parquet")), tmp_path / "out", lab.data
    )
    assert result.code == 1, result.printed[-2000:]
    assert "FAILED check signals:signals_overlap_price_bars" in result.printed
    assert f"all {future.height} signals become available after the last price bar" in (
        result.printed
    )
