"""``data.calendar``: one named exchange calendar stamps daily dates at their session's real
close, refuses bars on dates that are no session (naming the rows), and gives ``SessionEndExit``
each session's real close (early closes included), on the real data files."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import polars as pl
import pytest
import yaml

import engine
from engine.strategy import Strategy
from ml4t_pipeline.config import ConfigError, DataConfig, ExperimentConfig, load_config
from ml4t_pipeline.lib import calendars
from ml4t_pipeline.lib.calendars import CalendarSessionEndExit, session_end_rule
from ml4t_pipeline.lib.experiment import build_engine
from ml4t_pipeline.lib.io import load_prices_file, to_prices_contract
from ml4t_pipeline.lib.schemas import Plausibility, validate_prices
from ml4t_pipeline.lib.timing import bar_start_to_close, daily_close_utc

DATA_ROOT = Path(os.environ.get("ML4T_DATA_ROOT", "../shared/data"))
SP500 = DATA_ROOT / "sp500_5yr_daily_ohlcv.parquet"
LEAN_MINUTE = DATA_ROOT / "lean_minute_ohlcv_unadjusted.parquet"
NY = "America/New_York"


def _local(ts: pl.Series, zone: str = NY) -> list[dt.datetime]:
    return ts.dt.convert_time_zone(zone).dt.replace_time_zone(None).to_list()


# --- the config key -----------------------------------------------------------------------------


def test_data_calendar_default_is_xnys_and_keeps_the_config_hash() -> None:
    cfg = ExperimentConfig.model_validate({"name": "x"})
    assert cfg.data.calendar == "XNYS" and cfg.data.plausibility.calendar == "XNYS"
    stated = ExperimentConfig.model_validate({"name": "x", "data": {"calendar": "XNYS"}})
    assert stated.config_hash() == cfg.config_hash()  # stating the default changes nothing
    london = ExperimentConfig.model_validate({"name": "x", "data": {"calendar": "XLON"}})
    assert london.config_hash() != cfg.config_hash()


def test_data_calendar_unknown_name_refused_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"name": "exp", "data": {"calendar": "XNYZ"}}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "data.calendar" in text and "unknown exchange calendar 'XNYZ'" in text
    assert "XNYS" in text  # the closest names are offered


def test_data_calendar_plausibility_check_follows_it_or_is_refused_when_different() -> None:
    assert DataConfig(calendar="XLON").plausibility.calendar == "XLON"
    assert DataConfig(calendar="XLON", plausibility={"calendar": "none"}).plausibility.calendar == (
        "none"
    )
    with pytest.raises(ValueError, match=r"data.plausibility.calendar 'XNYS' is not data.calendar"):
        DataConfig(calendar="XLON", plausibility={"calendar": "XNYS"})
    # a round trip through plain data (what a run from code hands over) keeps it valid
    cfg = ExperimentConfig.model_validate({"name": "x", "data": {"calendar": "XTKS"}})
    again = ExperimentConfig.model_validate_json(cfg.model_dump_json(by_alias=True))
    assert again == cfg


def test_check_calendar_name_accepts_aliases_and_refuses_non_strings() -> None:
    assert calendars.check_calendar_name("NYSE") == "NYSE"
    with pytest.raises(ValueError, match="data.calendar: unknown exchange calendar 5"):
        calendars.check_calendar_name(5)


# --- stamping -----------------------------------------------------------------------------------


def test_daily_close_utc_other_calendars_use_their_own_close_and_early_closes() -> None:
    days = pl.DataFrame({"d": [dt.date(2019, 12, 23), dt.date(2019, 12, 24)]})
    london = days.select(daily_close_utc(pl.col("d"), "XLON")).to_series()
    # 16:30 London, and 12:30 on Christmas Eve (an XLON early close)
    assert _local(london, "Europe/London") == [
        dt.datetime(2019, 12, 23, 16, 30),
        dt.datetime(2019, 12, 24, 12, 30),
    ]
    assert dt.date(2019, 12, 24) in calendars.early_closes("XLON")["date"].to_list()


def test_daily_close_utc_follows_a_calendar_whose_close_time_changed() -> None:
    # Tokyo moved its close from 15:00 to 15:30 on 2024-11-05.
    days = pl.DataFrame({"d": [dt.date(2024, 11, 1), dt.date(2024, 11, 5)]})
    tokyo = days.select(daily_close_utc(pl.col("d"), "XTKS")).to_series()
    assert _local(tokyo, "Asia/Tokyo") == [
        dt.datetime(2024, 11, 1, 15, 0),
        dt.datetime(2024, 11, 5, 15, 30),
    ]


@pytest.mark.skipif(not SP500.is_file(), reason=f"no S&P file under {DATA_ROOT}")
def test_load_prices_file_sp500_half_day_2017_11_24_closes_1300_under_stated_xnys() -> None:
    prices = load_prices_file(SP500, calendar="XNYS")
    day = prices.filter(
        pl.col("timestamp").dt.convert_time_zone(NY).dt.date() == dt.date(2017, 11, 24)
    )
    assert day.height > 500
    assert set(_local(day["timestamp"])) == {dt.datetime(2017, 11, 24, 13, 0)}


# --- non-session dates --------------------------------------------------------------------------


@pytest.mark.skipif(not SP500.is_file(), reason=f"no S&P file under {DATA_ROOT}")
def test_validate_prices_sp500_saturday_copies_of_friday_bars_refused_naming_the_rows() -> None:
    raw = pl.read_parquet(SP500).filter(
        pl.col("symbol").is_in(["AAPL", "MSFT"])
        & pl.col("timestamp").is_between(dt.datetime(2017, 11, 1), dt.datetime(2017, 11, 30))
    )
    fridays = raw.filter(pl.col("timestamp").dt.weekday() == 5)
    saturdays = fridays.with_columns(pl.col("timestamp") + pl.duration(days=1))
    thanksgiving = raw.filter(pl.col("timestamp") == dt.datetime(2017, 11, 22)).with_columns(
        pl.lit(dt.datetime(2017, 11, 23)).alias("timestamp")  # a holiday copy of Wednesday
    )
    bad = pl.concat([raw, saturdays, thanksgiving]).sort("symbol", "timestamp")
    prices = to_prices_contract(bad, calendar="XNYS")
    report = validate_prices(prices, plausibility=Plausibility(calendar="XNYS"))
    broken = report.rows_breaking("on_session_date")
    named = set(zip(broken["symbol"].to_list(), _local(broken["timestamp"]), strict=True))
    expected = {
        (sym, dt.datetime(d.year, d.month, d.day, 16))
        for sym, d in zip(
            [*saturdays["symbol"], *thanksgiving["symbol"]],
            [*saturdays["timestamp"], *thanksgiving["timestamp"]],
            strict=True,
        )
    }
    assert named == expected and len(expected) == 2 * 4 + 2  # 4 Saturdays in November 2017
    assert (
        not validate_prices(to_prices_contract(raw), plausibility=Plausibility(calendar="XNYS"))
        .rows_breaking("on_session_date")
        .height
    )


def test_validate_prices_session_check_uses_the_calendar_named() -> None:
    # 2019-12-26 (Boxing Day) is a New York session but no London session.
    raw = pl.DataFrame(
        {
            "timestamp": [dt.date(2019, 12, 24), dt.date(2019, 12, 26), dt.date(2019, 12, 27)],
            "symbol": ["A"] * 3,
            **{c: [10.0, 10.0, 10.0] for c in ("open", "high", "low", "close")},
            "volume": [1e5] * 3,
        }
    )
    london = validate_prices(
        to_prices_contract(raw, calendar="XLON"), plausibility=Plausibility(calendar="XLON")
    )
    assert london.rows_breaking("on_session_date")["row_index"].to_list() == [1]
    new_york = validate_prices(to_prices_contract(raw), plausibility=Plausibility())
    assert new_york.rows_breaking("on_session_date").height == 0


def test_plausibility_unknown_calendar_refused() -> None:
    with pytest.raises(ValueError, match="plausibility calendar: unknown exchange calendar"):
        Plausibility(calendar="Mars")


# --- SessionEndExit -----------------------------------------------------------------------------


def test_session_end_rule_calendar_form_only_without_a_fixed_close() -> None:
    rule = session_end_rule({"type": "SessionEndExit", "minutes_before": 5}, "XNYS")
    assert isinstance(rule, CalendarSessionEndExit) and rule.minutes_before == 5
    assert rule.name == "SessionEndExit"
    assert session_end_rule({"type": "SessionEndExit", "session_close": "15:00"}, "XNYS") is None
    assert session_end_rule({"type": "PriceBasedStopLoss", "stop_pct": 0.05}, "XNYS") is None


@pytest.mark.parametrize(
    ("local", "exits"),
    [
        (dt.datetime(2017, 11, 24, 12, 54), False),
        (dt.datetime(2017, 11, 24, 12, 55), True),  # half day: 5 minutes before its 13:00 close
        (dt.datetime(2017, 11, 27, 13, 0), False),
        (dt.datetime(2017, 11, 27, 15, 55), True),  # minutes_before=5 of 16:00
    ],
)
def test_calendar_session_end_exit_cutoff_per_session(local: dt.datetime, exits: bool) -> None:
    rule = CalendarSessionEndExit("XNYS", minutes_before=5)
    stamp = local.replace(tzinfo=ZoneInfo(NY)).astimezone(dt.UTC)
    decision = rule.evaluate(SimpleNamespace(timestamp=stamp))
    assert decision.should_exit is exits


class _BuyEachMorning(Strategy):
    """Buys one share of every symbol at the first bar of each New York date."""

    def on_start(self) -> None:
        self.day: dt.date | None = None

    def on_timestamp_batch(self, timestamp: dt.datetime, batch: object, context: object) -> None:
        day = timestamp.astimezone(ZoneInfo(NY)).date()
        if day != self.day:
            self.day = day
            self.buy("GOOG", 1)


def _goog_minutes() -> engine.MarketData:
    raw = pl.read_parquet(LEAN_MINUTE).filter(pl.col("symbol") == "GOOG")
    return engine.MarketData.from_frame(bar_start_to_close(raw, "1m"))


def _exits(rule: object) -> list[dt.datetime]:
    config = engine.ExecutionConfig(fill="close")
    result = engine.BacktestEngine(
        _goog_minutes(), _BuyEachMorning(), engine.RiskManager([rule]), config
    ).run()
    assert set(result.trades["exit_reason"].to_list()) == {"SessionEndExit"}
    return _local(result.trades["exit_timestamp"])


@pytest.mark.skipif(not LEAN_MINUTE.is_file(), reason=f"no Lean minute file under {DATA_ROOT}")
def test_calendar_session_end_exit_goog_minutes_half_day_exits_at_the_1300_close() -> None:
    exits = _exits(CalendarSessionEndExit("XNYS"))
    # 2015-12-24 is a half day (13:00 close); the other two close at 16:00. The exit is the
    # first bar closing at or after the session's close.
    assert [(t.date(), t.hour) for t in exits] == [
        (dt.date(2015, 12, 23), 16),
        (dt.date(2015, 12, 24), 13),
        (dt.date(2015, 12, 28), 16),
    ]
    # a fixed 16:00 close (the engine rule alone) holds through the half day's close
    fixed = _exits(engine.SessionEndExit("16:00", NY))
    assert fixed[1].date() == dt.date(2015, 12, 24) and fixed[1].hour == 16


def test_build_engine_session_end_exit_without_close_takes_the_data_calendar() -> None:
    cfg = ExperimentConfig.model_validate(
        {
            "name": "x",
            "data": {"calendar": "XLON"},
            "risk_rules": [{"type": "SessionEndExit", "minutes_before": 10}],
        }
    )
    panel = pl.DataFrame(
        {
            "timestamp": [dt.datetime(2019, 12, 23, 16, 30, tzinfo=dt.UTC)],
            "symbol": ["A"],
            **{c: [10.0] for c in ("open", "high", "low", "close", "volume")},
        }
    ).with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))
    bt = build_engine(cfg, engine.MarketData.from_frame(panel))
    (rule,) = bt.risk_manager.rules
    assert isinstance(rule, CalendarSessionEndExit)
    assert (rule.calendar, rule.timezone, rule.session_close) == ("XLON", "Europe/London", "16:30")
    assert rule.close_minutes(dt.date(2019, 12, 24)) == 12 * 60 + 30
