"""Signal stamps must line up with bar closes, or the config must say how to read them.

A daily score file written as midnight ``Asia/Tokyo`` lands 5-6 h before the previous New York
session's close once converted to UTC: each score would be traded one session early (a silent
one-day look-ahead). The stamp of every signal row is mapped to the first price bar closing at
or after it; under ``data.signal_timestamps: bar_close`` (the default) a stamp inside the price
history that is not a close is refused naming the rows, ``session_date`` reads each stamp as its
own date, ``instant`` accepts any offset and reports it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from ml4t_pipeline.config import ExperimentConfig
from ml4t_pipeline.lib import timing
from tests.pipeline.data_cases import (
    Lab,
    experiment,
    momentum_scores,
    prepare,
    price_slice,
    run_cli,
)

UTC = dt.UTC


def _closes(*days: tuple[int, int, int]) -> pl.Series:
    """16:00 New York closes of the given 2013 dates (EDT from 10 March: 20:00 UTC)."""
    dates = pl.Series("timestamp", [dt.date(*d) for d in days])
    return dates.to_frame().select(timing.daily_close_utc(pl.col("timestamp"))).to_series()


CLOSES = _closes((2013, 4, 29), (2013, 4, 30), (2013, 5, 1), (2013, 5, 2), (2013, 5, 3))  # Mon-Fri


def _scores(stamps: list[dt.datetime] | list[dt.date], zone: str | None = None) -> pl.DataFrame:
    frame = pl.DataFrame({"timestamp": stamps, "symbol": ["A"] * len(stamps)}).with_columns(
        score=pl.int_range(pl.len()).cast(pl.Float64)
    )
    if zone is not None:
        frame = frame.with_columns(
            pl.col("timestamp").dt.cast_time_unit("us").dt.replace_time_zone(zone)
        )
    return frame


TOKYO_MIDNIGHTS = [dt.datetime(2013, 5, 1), dt.datetime(2013, 5, 2), dt.datetime(2013, 5, 3)]


# ---------------------------------------------------------------------------------------------
# the lib functions


def test_signal_stamp_offsets_tokyo_midnight_lies_five_hours_before_previous_close() -> None:
    offsets = timing.signal_stamp_offsets(_scores(TOKYO_MIDNIGHTS, "Asia/Tokyo"), CLOSES)
    # 2013-05-01 00:00+09:00 = 2013-04-30 15:00 UTC, 5 h before 30 April's 20:00 UTC close.
    row = offsets.row(0, named=True)
    assert row["stamp"] == "2013-05-01 00:00:00+09:00"
    assert row["timestamp"] == dt.datetime(2013, 4, 30, 15, tzinfo=UTC)
    assert row["bar_close"] == dt.datetime(2013, 4, 30, 20, tzinfo=UTC)
    assert row["offset"] == dt.timedelta(hours=5)
    assert offsets["placement"].to_list() == ["between_bars"] * 3
    assert offsets["row_index"].to_list() == [0, 1, 2]


@pytest.mark.parametrize(("zone", "suffix"), [("Asia/Tokyo", "+09:00"), ("UTC", "+00:00")])
def test_signal_stamp_offsets_runs_of_stamps_in_time_order_same_rows_as_shuffled(
    zone: str, suffix: str
) -> None:
    # Several symbols per stamp (runs of equal stamps, each formatted once), stamps before,
    # between and after the bars; in time order the rows skip the sort there and back.
    days = [dt.datetime(2013, 4, 28), *TOKYO_MIDNIGHTS, dt.datetime(2013, 5, 9)]
    stamps = [d for d in days for _ in range(3)]
    ordered = _scores(stamps, zone).with_columns(pl.Series("symbol", ["A", "B", "C"] * len(days)))
    shuffled = ordered.with_row_index("position").sample(fraction=1.0, shuffle=True, seed=4)

    in_order = timing.signal_stamp_offsets(ordered, CLOSES)
    mixed = timing.signal_stamp_offsets(shuffled.drop("position"), CLOSES)

    assert in_order["stamp"].to_list() == [f"{d:%Y-%m-%d %H:%M:%S}{suffix}" for d in stamps]
    assert set(in_order["placement"]) == {"before_first_bar", "between_bars", "after_last_bar"}
    assert mixed["row_index"].to_list() == list(range(len(stamps)))
    back = mixed.with_columns(shuffled["position"]).sort("position").drop("position")
    assert back.drop("row_index").equals(in_order.drop("row_index"))


def test_check_signal_stamps_tokyo_midnight_refused_naming_rows() -> None:
    scores = _scores(TOKYO_MIDNIGHTS, "Asia/Tokyo")
    with pytest.raises(ValueError, match=r"3 of 3 signal stamps are not bar closes") as info:
        timing.check_signal_stamps(scores, CLOSES)
    message = str(info.value)
    assert "'row_index': 0, 'symbol': 'A', 'stamp': '2013-05-01 00:00:00+09:00'" in message
    assert "'bar_close': '2013-04-30 20:00:00+00:00', 'offset': '5:00:00'" in message
    assert "signal_timestamps: session_date" in message


def test_check_signal_stamps_tokyo_midnight_as_session_date_are_those_sessions() -> None:
    scores = _scores(TOKYO_MIDNIGHTS, "Asia/Tokyo")
    offsets = timing.check_signal_stamps(scores, CLOSES, stamps="session_date")
    assert offsets["placement"].to_list() == ["at_bar_close"] * 3
    assert offsets["timestamp"].to_list() == CLOSES[2:].to_list()  # 1, 2 and 3 May


def test_check_signal_stamps_plain_dates_accepted_at_their_session_close() -> None:
    days = [dt.date(2013, 4, 29), dt.date(2013, 4, 30), dt.date(2013, 5, 2)]
    for frame in (_scores(days), _scores([dt.datetime(d.year, d.month, d.day) for d in days])):
        offsets = timing.check_signal_stamps(frame, CLOSES)
        assert offsets["placement"].to_list() == ["at_bar_close"] * 3
        assert offsets["offset"].to_list() == [dt.timedelta(0)] * 3


def test_check_signal_stamps_same_bar_close_in_another_zone_accepted() -> None:
    # 16:00 New York on 30 April is that bar's close, whatever zone it is written in.
    stamps = [dt.datetime(2013, 4, 30, 16), dt.datetime(2013, 5, 1, 16)]
    offsets = timing.check_signal_stamps(_scores(stamps, "America/New_York"), CLOSES)
    assert offsets["placement"].to_list() == ["at_bar_close"] * 2


def test_check_signal_stamps_instant_accepts_offsets_and_reports_them() -> None:
    scores = _scores(TOKYO_MIDNIGHTS, "Asia/Tokyo")
    offsets = timing.check_signal_stamps(scores, CLOSES, stamps="instant")
    assert offsets["offset"].to_list() == [dt.timedelta(hours=5)] * 3
    summary = timing.signal_stamp_summary(offsets)
    assert summary["offset_buckets"]["(1 h, 1 day]"] == 3
    assert (summary["offset_min"], summary["offset_max"]) == ("5:00:00", "5:00:00")


def test_signal_stamp_summary_buckets_and_placements_hand_checked() -> None:
    stamps = [
        dt.datetime(2013, 4, 28, 12),  # before the first close (29 Apr 20:00 UTC)
        dt.datetime(2013, 4, 29, 20),  # at a close
        dt.datetime(2013, 4, 30, 19, 59, 30),  # 30 s before a close
        dt.datetime(2013, 5, 1, 19, 30),  # 30 min before a close
        dt.datetime(2013, 5, 1, 21),  # 23 h before the next close
        dt.datetime(2013, 5, 3, 21),  # after the last close (3 May 20:00 UTC)
    ]
    offsets = timing.signal_stamp_offsets(_scores(stamps, "UTC"), CLOSES, stamps="instant")
    summary = timing.signal_stamp_summary(offsets)
    assert summary["by_placement"] == {
        "at_bar_close": 1,
        "between_bars": 3,
        "before_first_bar": 1,
        "after_last_bar": 1,
    }
    assert summary["offset_buckets"] == {
        "0 (at a bar close)": 1,
        "(0, 1 min]": 1,
        "(1 min, 1 h]": 1,
        "(1 h, 1 day]": 1,
        "> 1 day": 0,
    }
    assert summary["offset_min"] == "0:00:00"
    assert summary["offset_max"] == "23:00:00"
    assert offsets.filter(pl.col("placement") == "after_last_bar")["bar_close"].null_count() == 1


def test_signal_stamps_utc_instant_refuses_naive_dates() -> None:
    with pytest.raises(ValueError, match="'instant' but column 'timestamp' is Date"):
        timing.signal_stamps_utc(_scores([dt.date(2013, 4, 30)]), "instant")


def test_signal_stamps_utc_session_date_refuses_time_of_day_naming_rows() -> None:
    scores = _scores([dt.datetime(2013, 4, 30), dt.datetime(2013, 5, 1, 9)], "Asia/Tokyo")
    with pytest.raises(ValueError, match=r"1 stamps are not at 00:00.*'row_index': 1"):
        timing.signal_stamps_utc(scores, "session_date")


def test_signal_stamps_utc_unknown_convention_refused() -> None:
    with pytest.raises(ValueError, match="unknown signal stamp convention 'midnight'"):
        timing.signal_stamps_utc(_scores([dt.date(2013, 4, 30)]), "midnight")


def test_config_signal_timestamps_only_for_signal_files() -> None:
    with pytest.raises(ValueError, match="signal_timestamps='session_date' applies to signal"):
        ExperimentConfig.model_validate(
            {"name": "x", "data": {"signal_timestamps": "session_date"}}
        )
    cfg = ExperimentConfig.model_validate(
        {"name": "x", "data": {"signals": {"path": "s.parquet"}, "signal_timestamps": "instant"}}
    )
    assert cfg.data.signal_timestamps == "instant"


# ---------------------------------------------------------------------------------------------
# through `ml4t run`


@pytest.fixture(scope="module")
def lab(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    lab = Lab(tmp_path_factory.mktemp("stamps"))
    prices = price_slice(data_root, n_days=80)
    prices.write_parquet(lab.data / "prices.parquet")
    plain = momentum_scores(prices)
    plain.write_parquet(lab.data / "plain.parquet")
    tokyo = plain.with_columns(
        pl.col("timestamp").cast(pl.Datetime("us")).dt.replace_time_zone("Asia/Tokyo")
    )
    tokyo.write_parquet(lab.data / "tokyo.parquet")
    closes = plain.with_columns(timing.daily_close_utc(pl.col("timestamp")).alias("timestamp"))
    closes.write_parquet(lab.data / "closes.parquet")
    return lab


def _tokyo_row(lab: Lab, i: int) -> tuple[str, str]:
    """Symbol and stamp text of data row ``i`` of the Tokyo file."""
    row = pl.read_parquet(lab.data / "tokyo.parquet").row(i, named=True)
    return row["symbol"], row["timestamp"].strftime("%Y-%m-%d 00:00:00+09:00")


def test_ml4t_run_tokyo_midnight_signals_refused_naming_rows(lab: Lab, tmp_path: Path) -> None:
    result = run_cli(lab.config(experiment("tokyo.parquet")), tmp_path / "out", lab.data)
    # A blocking check fails: exit 1 (the CLI's code for a failed check), nothing published.
    assert result.code == 1, result.printed[-2000:]
    assert "FAILED check signals:signals_stamped_at_bar_close" in result.printed
    symbol, stamp = _tokyo_row(lab, 3)
    assert f"| 3 | {symbol} | {stamp} |" in result.printed
    assert "signal_timestamps: session_date" in result.printed
    assert not (tmp_path / "out").exists()


def test_pipeline_plain_dates_closes_and_tokyo_session_dates_give_the_same_signals(
    lab: Lab, tmp_path: Path
) -> None:
    prepared = {
        name: prepare(lab.config(cfg, name=name), tmp_path / "storage", lab.data)
        for name, cfg in {
            "plain": experiment("plain.parquet"),  # plain dates, the default bar_close
            "closes": experiment("closes.parquet"),  # UTC bar closes
            "tokyo_session": experiment("tokyo.parquet", signal_timestamps="session_date"),
        }.items()
    }
    for name, run in prepared.items():
        assert run.success, name
        assert run.checks["signals_stamped_at_bar_close"], name
    signals = {name: run.value("signals") for name, run in prepared.items()}
    assert signals["plain"].height > 0
    assert signals["closes"].equals(signals["plain"])
    assert signals["tokyo_session"].equals(signals["plain"])
    panels = {name: run.value("market_panel") for name, run in prepared.items()}
    assert panels["tokyo_session"].equals(panels["plain"])


def test_pipeline_tokyo_instants_accepted_and_used_one_session_earlier(
    lab: Lab, tmp_path: Path
) -> None:
    # Declared as instants, the Tokyo stamps are accepted (the score was known at 15:00 UTC):
    # each is first usable at the first close after that instant, one session before the date
    # it names unless the day before was no session (Mondays, days after a holiday).
    prepared = {
        name: prepare(lab.config(cfg, name=name), tmp_path / "storage", lab.data)
        for name, cfg in {
            "plain": experiment("plain.parquet"),
            "instant": experiment("tokyo.parquet", signal_timestamps="instant"),
        }.items()
    }
    for name, run in prepared.items():
        assert run.success, name
        assert run.checks["signals_stamped_at_bar_close"], name  # reported, not judged
    # The signals asset's metadata gives the offsets: none for plain dates; for the Tokyo
    # instants 5 h (summer) or 6 h (winter) before the previous close, and 1 day 5-6 h for the
    # Monday stamps (Sunday 15:00 UTC, before Monday's close).
    plain_offsets = prepared["plain"].metadata["signals"]["signal_stamp_offsets"]
    assert plain_offsets["offset_max"] == "0:00:00"
    tokyo_offsets = prepared["instant"].metadata["signals"]["signal_stamp_offsets"]
    n = tokyo_offsets["rows"]
    assert tokyo_offsets["by_placement"]["between_bars"] == n
    assert tokyo_offsets["offset_min"] == "5:00:00"
    assert tokyo_offsets["offset_buckets"]["(1 h, 1 day]"] > n // 2
    assert tokyo_offsets["offset_max"] in ("1 day, 5:00:00", "1 day, 6:00:00", "3 days, 6:00:00")
    used = {
        name: run.value("signals")
        .sort("symbol", "available_at")
        .select("symbol", "score", "available_at")
        for name, run in prepared.items()
    }
    prices = pl.read_parquet(lab.data / "prices.parquet")
    closes = prices.select(timing.daily_close_utc(pl.col("timestamp"))).to_series().unique().sort()
    plain, instant = used["plain"], used["instant"]
    assert instant["score"].equals(plain["score"])
    # The bar at which each score is first usable: the first close at or after available_at.
    usable = instant.sort("available_at").join_asof(
        closes.alias("bar").to_frame(), left_on="available_at", right_on="bar", strategy="forward"
    )
    usable = usable.sort("symbol", "available_at")["bar"].to_list()
    own = plain["available_at"].to_list()
    session = set(closes.to_list())
    for bar, own_close in zip(usable, own, strict=True):
        day_before = own_close - dt.timedelta(days=1)  # the close of the calendar day before
        assert bar == (day_before if day_before in session else own_close)
    earlier = sum(bar < own_close for bar, own_close in zip(usable, own, strict=True))
    assert earlier > len(own) // 2  # Tuesday to Friday: one session early
