"""Specification of ml4t_pipeline.lib.timing: bar-close stamps, signal availability, as-of joins."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml4t_pipeline.lib.timing import (
    UTC_DATETIME,
    asof_join_backward,
    bar_start_to_close,
    check_no_lookahead,
    daily_close_utc,
    market_open_utc,
    parse_duration,
    signal_age_bars,
    signal_available_at,
    signal_uses_before_available,
    stale_signal_uses,
    status_counts,
    vix_close_utc,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def stamp(expr_fn, days: list[date]) -> list[datetime]:  # type: ignore[no-untyped-def]
    return pl.DataFrame({"d": days}).select(expr_fn(pl.col("d")))["d"].to_list()


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2024, 1, 2), utc(2024, 1, 2, 21)),  # EST: 16:00 = 21:00 UTC
        (date(2024, 7, 1), utc(2024, 7, 1, 20)),  # EDT: 16:00 = 20:00 UTC
        (date(2024, 3, 8), utc(2024, 3, 8, 21)),  # Friday before the March DST switch
        (date(2024, 3, 11), utc(2024, 3, 11, 20)),  # Monday after it
        (date(2024, 11, 1), utc(2024, 11, 1, 20)),  # Friday before the November switch
        (date(2024, 11, 4), utc(2024, 11, 4, 21)),  # Monday after it
        (date(2024, 11, 29), utc(2024, 11, 29, 18)),  # half day: its 13:00 New York close
    ],
)
def test_daily_close_utc_dates_become_session_close_in_utc(day: date, expected: datetime) -> None:
    assert stamp(daily_close_utc, [day]) == [expected]


def test_daily_close_utc_naive_midnight_datetime_same_as_date() -> None:
    df = pl.DataFrame({"d": [datetime(2013, 2, 8)]})
    out = df.select(daily_close_utc(pl.col("d")))
    assert out.schema["d"] == UTC_DATETIME
    assert out["d"].to_list() == [utc(2013, 2, 8, 21)]


def test_market_open_and_vix_close_utc_are_0930_and_1615_new_york() -> None:
    assert stamp(market_open_utc, [date(2024, 1, 2), date(2024, 7, 1)]) == [
        utc(2024, 1, 2, 14, 30),
        utc(2024, 7, 1, 13, 30),
    ]
    assert stamp(vix_close_utc, [date(2024, 1, 2), date(2024, 7, 1)]) == [
        utc(2024, 1, 2, 21, 15),
        utc(2024, 7, 1, 20, 15),
    ]


def signals_frame(timestamps: list[datetime], **extra: list[object]) -> pl.DataFrame:
    n = len(timestamps)
    return pl.DataFrame(
        {"timestamp": timestamps, "symbol": ["A"] * n, "score": [float(i) for i in range(n)]}
        | extra,
        schema_overrides={"timestamp": UTC_DATETIME, "available_at": UTC_DATETIME},
    )


def test_signal_available_at_market_close_equals_timestamp() -> None:
    sig = signals_frame([utc(2024, 1, 2, 21), utc(2024, 1, 3, 21)])
    out = signal_available_at(sig, "market_close")
    assert out["available_at"].to_list() == out["timestamp"].to_list()
    assert out.schema["available_at"] == UTC_DATETIME


def test_signal_available_at_market_open_is_0930_same_new_york_date() -> None:
    sig = signals_frame([utc(2024, 1, 2, 21), utc(2024, 7, 1, 20)])
    out = signal_available_at(sig, "market_open")
    assert out["available_at"].to_list() == [utc(2024, 1, 2, 14, 30), utc(2024, 7, 1, 13, 30)]


def test_signal_available_at_next_day_friday_becomes_monday_open() -> None:
    # 2024-03-08 is a Friday (EST); the next weekday 2024-03-11 is already EDT.
    sig = signals_frame([utc(2024, 3, 7, 21), utc(2024, 3, 8, 21)])
    out = signal_available_at(sig, "next_day")
    assert out["available_at"].to_list() == [utc(2024, 3, 8, 14, 30), utc(2024, 3, 11, 13, 30)]


def test_signal_available_at_explicit_column_kept_even_if_earlier() -> None:
    avail = [utc(2024, 1, 2, 12), utc(2024, 1, 4, 9)]
    sig = signals_frame([utc(2024, 1, 2, 21), utc(2024, 1, 3, 21)], available_at=avail)
    out = signal_available_at(sig, "available_at")
    assert out["available_at"].to_list() == avail


def test_signal_available_at_null_available_at_raises_naming_row() -> None:
    sig = signals_frame([utc(2024, 1, 2, 21), utc(2024, 1, 3, 21)], available_at=[None, None])
    sig = sig.with_columns(
        pl.Series("available_at", [utc(2024, 1, 2, 21), None], dtype=UTC_DATETIME)
    )
    with pytest.raises(ValueError, match=r"1 signal rows have a null available_at.*'row_index': 1"):
        signal_available_at(sig, "available_at")


def test_signal_available_at_missing_column_raises() -> None:
    sig = signals_frame([utc(2024, 1, 2, 21)])
    with pytest.raises(ValueError, match="'available_at' is missing"):
        signal_available_at(sig, "available_at")


def test_signal_available_at_naive_daily_timestamp_stamped_at_close() -> None:
    # The price files' daily convention: naive 2024-01-02 00:00 is that date's 16:00 New York
    # close, 21:00 UTC in January.
    sig = pl.DataFrame({"timestamp": [datetime(2024, 1, 2)], "symbol": ["A"], "score": [1.0]})
    out = signal_available_at(sig, "market_close")
    assert out["timestamp"].to_list() == out["available_at"].to_list() == [utc(2024, 1, 2, 21)]


def test_signal_available_at_naive_intraday_timestamp_raises_naming_row() -> None:
    sig = pl.DataFrame(
        {"timestamp": [datetime(2024, 1, 2), datetime(2024, 1, 3, 15)], "symbol": ["A"] * 2}
    )
    with pytest.raises(ValueError, match=r"not at 00:00.*'row_index': 1"):
        signal_available_at(sig, "market_close")


def test_signal_available_at_non_utc_timestamp_converted_to_same_instant() -> None:
    # 16:00 New York on 2024-01-02 (EST) is 21:00 UTC.
    sig = pl.DataFrame(
        {"timestamp": [datetime(2024, 1, 2, 16)], "symbol": ["A"], "score": [1.0]}
    ).with_columns(pl.col("timestamp").dt.replace_time_zone("America/New_York"))
    out = signal_available_at(sig, "market_close")
    assert out.schema["timestamp"] == out.schema["available_at"] == UTC_DATETIME
    assert out["available_at"].to_list() == [utc(2024, 1, 2, 21)]


@pytest.mark.parametrize(
    ("mode", "rule_value"),
    [
        ("market_close", utc(2024, 1, 2, 21)),  # the row's own close
        ("market_open", utc(2024, 1, 2, 14, 30)),  # 09:30 New York the same date
        ("next_day", utc(2024, 1, 3, 14, 30)),  # 09:30 New York the next weekday
    ],
)
def test_signal_available_at_rule_mode_keeps_later_file_value(
    mode: str, rule_value: datetime
) -> None:
    # Row 0 says "available three days later" (2024-01-05 21:00): the later value wins and the
    # rule never pulls it earlier. Row 1's file value (2024-01-02 12:00) is before every rule
    # value here, so the rule's value wins.
    late, early = utc(2024, 1, 5, 21), utc(2024, 1, 2, 12)
    sig = signals_frame([utc(2024, 1, 2, 21)] * 2, available_at=[late, early])
    sig = sig.with_columns(pl.Series("symbol", ["A", "B"]))
    out = signal_available_at(sig, mode)
    assert out["available_at"].to_list() == [late, max(early, rule_value)]


def test_signal_available_at_rule_mode_null_file_value_raises_naming_row() -> None:
    sig = signals_frame(
        [utc(2024, 1, 2, 21), utc(2024, 1, 3, 21)], available_at=[utc(2024, 1, 2, 21), None]
    )
    with pytest.raises(ValueError, match=r"1 signal rows have a null available_at.*'row_index': 1"):
        signal_available_at(sig, "market_close")


def test_signal_available_at_naive_file_available_at_raises_naming_column() -> None:
    sig = signals_frame([utc(2024, 1, 2, 21)]).with_columns(
        pl.lit(datetime(2024, 1, 3)).alias("available_at")
    )
    with pytest.raises(ValueError, match=r"'available_at' is Datetime.*must be timezone-aware"):
        signal_available_at(sig, "market_close")


def test_signal_available_at_unknown_mode_raises() -> None:
    with pytest.raises(ValueError, match="unknown signal_available_at mode 'at_lunch'"):
        signal_available_at(signals_frame([utc(2024, 1, 2, 21)]), "at_lunch")


def test_check_no_lookahead_returns_only_rows_used_before_available() -> None:
    used = pl.DataFrame(
        {
            "timestamp": [utc(2024, 1, 2, 21), utc(2024, 1, 3, 21), utc(2024, 1, 4, 21)],
            "symbol": ["A", "A", "B"],
            "available_at": [utc(2024, 1, 2, 21), utc(2024, 1, 4, 14, 30), None],
        },
        schema_overrides={"timestamp": UTC_DATETIME, "available_at": UTC_DATETIME},
    )
    bad = check_no_lookahead(used)
    assert bad["row_index"].to_list() == [1]
    assert bad["symbol"].to_list() == ["A"]


def test_bar_start_to_close_minute_bar_closes_one_minute_later() -> None:
    df = pl.DataFrame(
        {"timestamp": [utc(2014, 6, 5, 13, 30)], "symbol": ["AAPL"]},
        schema_overrides={"timestamp": UTC_DATETIME},
    )
    out = bar_start_to_close(df, "1m")
    assert out["timestamp"].to_list() == [utc(2014, 6, 5, 13, 31)]


def test_bar_start_to_close_new_york_zone_converted_to_utc() -> None:
    df = pl.DataFrame({"timestamp": [datetime(2014, 6, 5, 15, 0)]}).with_columns(
        pl.col("timestamp").dt.replace_time_zone("America/New_York")
    )
    out = bar_start_to_close(df, timedelta(hours=1))
    assert out.schema["timestamp"] == UTC_DATETIME
    assert out["timestamp"].to_list() == [utc(2014, 6, 5, 20)]  # 16:00 EDT


def test_bar_start_to_close_naive_timestamps_raise() -> None:
    df = pl.DataFrame({"timestamp": [datetime(2014, 6, 5, 9, 30)]})
    with pytest.raises(ValueError, match="timezone-aware"):
        bar_start_to_close(df, "1m")


@pytest.mark.parametrize("bad", ["0m", "-1m", "1w", "m", timedelta(0)])
def test_bar_start_to_close_invalid_length_raises(bad: object) -> None:
    df = pl.DataFrame(
        {"timestamp": [utc(2014, 6, 5)]}, schema_overrides={"timestamp": UTC_DATETIME}
    )
    with pytest.raises(ValueError):
        bar_start_to_close(df, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("1m", timedelta(minutes=1)),
        ("4h", timedelta(hours=4)),
        ("3d", timedelta(days=3)),
    ],
)
def test_parse_duration_units_parsed(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def bars(times: list[datetime], symbol: str = "A") -> pl.DataFrame:
    return pl.DataFrame(
        {"timestamp": times, "symbol": [symbol] * len(times)},
        schema_overrides={"timestamp": UTC_DATETIME},
    )


def test_asof_join_backward_statuses_fresh_filled_stale_missing() -> None:
    left = bars([utc(2024, 1, d, 21) for d in (1, 2, 3, 4, 8)])
    right = pl.DataFrame(
        {
            "symbol": ["A", "A"],
            "ctx_ts": [utc(2024, 1, 2, 21), utc(2024, 1, 3, 22)],
            "v": [1.0, 2.0],
        },
        schema_overrides={"ctx_ts": UTC_DATETIME},
    )
    out = asof_join_backward(
        left, right, left_on="timestamp", right_on="ctx_ts", by="symbol", max_staleness="2d"
    )
    frame = out.frame
    # Jan 1: nothing yet; Jan 2: exactly at close -> visible; Jan 3 21:00: the 22:00 value is
    # not yet visible, so Jan 2's is forward-filled; Jan 4: Jan 3 22:00 fresh; Jan 8: too old.
    assert frame["asof_status"].to_list() == ["missing", "fresh", "filled", "fresh", "stale"]
    assert frame["v"].to_list() == [None, 1.0, 1.0, 2.0, None]
    assert frame["ctx_ts"].to_list()[4] == utc(2024, 1, 3, 22)  # age stays visible
    assert out.counts == {"fresh": 2, "filled": 1, "stale": 1, "missing": 1}
    assert frame.height == left.height


def test_asof_join_backward_keeps_left_order_and_groups_by_symbol() -> None:
    left = pl.concat([bars([utc(2024, 1, 3, 21)], "B"), bars([utc(2024, 1, 3, 21)], "A")])
    right = pl.DataFrame(
        {"symbol": ["A", "B"], "t": [utc(2024, 1, 2, 21), utc(2024, 1, 3, 21)], "v": [1.0, 2.0]},
        schema_overrides={"t": UTC_DATETIME},
    )
    out = asof_join_backward(left, right, left_on="timestamp", right_on="t", by="symbol")
    assert out.frame["symbol"].to_list() == ["B", "A"]
    assert out.frame["v"].to_list() == [2.0, 1.0]


def test_asof_join_backward_duplicate_right_key_raises() -> None:
    right = pl.DataFrame(
        {"symbol": ["A", "A"], "t": [utc(2024, 1, 2, 21)] * 2, "v": [1.0, 2.0]},
        schema_overrides={"t": UTC_DATETIME},
    )
    with pytest.raises(ValueError, match="2 right rows share a key"):
        asof_join_backward(
            bars([utc(2024, 1, 3)]), right, left_on="timestamp", right_on="t", by="symbol"
        )


def test_asof_join_backward_duplicate_right_key_in_time_symbol_order_names_every_copy() -> None:
    # Right rows in (key, symbol) order: the duplicate test is the one-pass neighbour test.
    right = pl.DataFrame(
        {
            "t": [utc(2024, 1, 2, 21)] * 3 + [utc(2024, 1, 3, 21)],
            "symbol": ["A", "B", "B", "A"],
            "v": [1.0, 2.0, 3.0, 4.0],
        },
        schema_overrides={"t": UTC_DATETIME},
    )
    with pytest.raises(ValueError, match=r"2 right rows share a key .*'B'.*'B'"):
        asof_join_backward(
            bars([utc(2024, 1, 3)]), right, left_on="timestamp", right_on="t", by="symbol"
        )


def test_asof_join_backward_wide_left_keeps_its_columns_and_order() -> None:
    # Left out of time order with extra columns: they come back unchanged, right columns after.
    left = pl.DataFrame(
        {
            "timestamp": [utc(2024, 1, 3, 21), utc(2024, 1, 2, 21), utc(2024, 1, 3, 21)],
            "symbol": ["A", "A", "B"],
            "close": [10.0, 9.0, 20.0],
            "volume": [1, 2, 3],
        },
        schema_overrides={"timestamp": UTC_DATETIME},
    )
    right = pl.DataFrame(
        {"symbol": ["A", "B"], "t": [utc(2024, 1, 2, 21), utc(2024, 1, 3, 22)], "v": [1.0, 2.0]},
        schema_overrides={"t": UTC_DATETIME},
    )
    out = asof_join_backward(left, right, left_on="timestamp", right_on="t", by="symbol")
    assert out.frame.columns == ["timestamp", "symbol", "close", "volume", "t", "v", "asof_status"]
    assert out.frame.select(left.columns).equals(left)
    assert out.frame["v"].to_list() == [1.0, 1.0, None]  # B's value is not visible at 21:00
    assert out.frame["asof_status"].to_list() == ["filled", "fresh", "missing"]


def test_asof_join_backward_clashing_columns_raise() -> None:
    right = pl.DataFrame(
        {"timestamp": [utc(2024, 1, 2)]}, schema_overrides={"timestamp": UTC_DATETIME}
    )
    with pytest.raises(ValueError, match="clash"):
        asof_join_backward(
            bars([utc(2024, 1, 3)]), right, left_on="timestamp", right_on="timestamp"
        )


def test_status_counts_all_statuses_present() -> None:
    frame = pl.DataFrame({"s": ["fresh", "fresh", "missing"]})
    assert status_counts(frame, "s") == {"fresh": 2, "filled": 0, "stale": 0, "missing": 1}


def test_asof_join_backward_max_fill_bars_limits_forward_fill() -> None:
    left = bars([utc(2024, 1, 2, h) for h in (15, 16, 17, 18)])
    right = pl.DataFrame(
        {"symbol": ["A"], "t": [utc(2024, 1, 2, 15)], "v": [7.0]},
        schema_overrides={"t": UTC_DATETIME},
    )
    out = asof_join_backward(
        left, right, left_on="timestamp", right_on="t", by="symbol", max_fill_bars=2
    )
    assert out.frame["v"].to_list() == [7.0, 7.0, 7.0, None]
    assert out.frame["asof_status"].to_list() == ["fresh", "filled", "filled", "stale"]


def test_asof_join_backward_negative_max_fill_bars_raises() -> None:
    right = pl.DataFrame({"t": [utc(2024, 1, 2)]}, schema_overrides={"t": UTC_DATETIME})
    with pytest.raises(ValueError, match="max_fill_bars"):
        asof_join_backward(
            bars([utc(2024, 1, 3)]), right, left_on="timestamp", right_on="t", max_fill_bars=-1
        )


# --------------------------------------------------------------------------------------------
# Signal age and staleness


def age_panel() -> pl.DataFrame:
    """Two symbols, five daily bars each, with the timestamp of the signal each bar uses.

    A: signal of day 0 used on days 0-2, signal of day 3 on days 3-4 -> ages 0 1 2 0 1.
    B: no signal on day 0; a signal stamped 3 days before B's first bar (counts every bar) on
       day 1; the signal of day 1 on days 2-4 -> ages null 2 1 2 3.
    """
    ts = [utc(2024, 1, 2, 21) + timedelta(days=d) for d in range(5)]
    sig_a = [ts[0], ts[0], ts[0], ts[3], ts[3]]
    sig_b = [None, ts[0] - timedelta(days=3), ts[1], ts[1], ts[1]]
    return pl.DataFrame(
        {"timestamp": ts * 2, "symbol": ["A"] * 5 + ["B"] * 5, "signal_timestamp": sig_a + sig_b},
        schema_overrides={"timestamp": UTC_DATETIME, "signal_timestamp": UTC_DATETIME},
    )


def test_signal_age_bars_counts_bars_of_own_symbol_since_signal() -> None:
    ages = signal_age_bars(age_panel())
    assert ages.to_list() == [0, 1, 2, 0, 1, None, 2, 1, 2, 3]


def test_signal_age_bars_input_order_kept_when_shuffled() -> None:
    panel = age_panel().with_row_index("i").reverse()
    ages = signal_age_bars(panel.drop("i"))
    assert ages.to_list() == [3, 2, 1, 2, None, 1, 0, 2, 1, 0]


def test_signal_age_bars_signal_between_bars_counts_from_next_bar() -> None:
    # Hourly bars 15:00 and 16:00 UTC; a signal stamped 15:30 is 1 bar old at 16:00.
    panel = pl.DataFrame(
        {
            "timestamp": [utc(2024, 1, 2, 15), utc(2024, 1, 2, 16)],
            "symbol": ["A", "A"],
            "signal_timestamp": [None, utc(2024, 1, 2, 15, 30)],
        },
        schema_overrides={"timestamp": UTC_DATETIME, "signal_timestamp": UTC_DATETIME},
    )
    assert signal_age_bars(panel).to_list() == [None, 1]


def test_signal_age_bars_duplicate_key_raises() -> None:
    panel = pl.concat([age_panel().head(1), age_panel().head(1)])
    with pytest.raises(ValueError, match="share a"):
        signal_age_bars(panel)


def test_stale_signal_uses_reports_rows_older_than_limit() -> None:
    stale = stale_signal_uses(age_panel(), max_age_bars=1)
    assert stale["row_index"].to_list() == [2, 6, 8, 9]
    assert stale["signal_age_bars"].to_list() == [2, 2, 2, 3]
    assert stale["symbol"].to_list() == ["A", "B", "B", "B"]


def test_stale_signal_uses_limit_zero_allows_only_own_bar() -> None:
    stale = stale_signal_uses(age_panel(), max_age_bars=0)
    assert stale["row_index"].to_list() == [1, 2, 4, 6, 7, 8, 9]


def test_stale_signal_uses_rows_nulled_by_join_are_not_uses() -> None:
    panel = age_panel().with_columns(
        pl.Series("signal_status", ["fresh", "filled", "stale", "fresh", "filled"] * 2)
    )
    stale = stale_signal_uses(panel, max_age_bars=1)
    assert stale["row_index"].to_list() == [6, 8, 9]


def test_stale_signal_uses_value_columns_decide_use() -> None:
    panel = age_panel().with_columns(
        pl.Series("score", [0.1, 0.1, None, 0.1, 0.1, None, 0.1, 0.1, None, 0.1])
    )
    stale = stale_signal_uses(panel, max_age_bars=1, value_columns=["score"])
    assert stale["row_index"].to_list() == [6, 9]


def test_stale_signal_uses_join_without_limit_reported_with_limit_clean() -> None:
    # A: signal available day 0, used days 0-4 (ages 0-4); B: available day 1, used days 1-4
    # (ages 0-3). Limit 1 -> A days 2, 3, 4 and B days 3, 4.
    bars = age_panel().select("timestamp", "symbol")
    signals = pl.DataFrame(
        {
            "symbol": ["A", "B"],
            "signal_available_at": [utc(2024, 1, 2, 21), utc(2024, 1, 3, 21)],
            "score": [0.5, 0.7],
        },
        schema_overrides={"signal_available_at": UTC_DATETIME},
    ).with_columns(pl.col("signal_available_at").alias("signal_timestamp"))

    def joined(max_fill_bars: int | None) -> pl.DataFrame:
        return asof_join_backward(
            bars,
            signals,
            left_on="timestamp",
            right_on="signal_available_at",
            by="symbol",
            max_fill_bars=max_fill_bars,
            status_col="signal_status",
        ).frame

    unlimited = stale_signal_uses(joined(None), max_age_bars=1)
    assert unlimited["row_index"].to_list() == [2, 3, 4, 8, 9]
    # The join's fill limit nulls old uses (values and signal_timestamp), so none is reported,
    # with or without the status column.
    limited = joined(1)
    assert stale_signal_uses(limited, max_age_bars=1).height == 0
    assert stale_signal_uses(limited.drop("signal_status"), max_age_bars=1).height == 0


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_stale_signal_uses_bad_limit_raises(bad: object) -> None:
    with pytest.raises(ValueError, match="max_age_bars"):
        stale_signal_uses(age_panel(), max_age_bars=bad)  # type: ignore[arg-type]


def used_panel(signal_times: list[datetime | None]) -> pl.DataFrame:
    # Three daily bars of symbol A (2024-01-02..04, 21:00 UTC) and the signal each one uses.
    return pl.DataFrame(
        {
            "timestamp": [utc(2024, 1, d, 21) for d in (2, 3, 4)],
            "symbol": ["A"] * 3,
            "signal_timestamp": signal_times,
        },
        schema_overrides={"timestamp": UTC_DATETIME, "signal_timestamp": UTC_DATETIME},
    )


def test_signal_uses_before_available_names_bars_using_a_late_signal() -> None:
    # The 01-02 signal says it became available on 01-04 at 21:00; a panel that used it at the
    # 01-02 and 01-03 bars (rows 0 and 1) used it early. The 01-04 bar may use it.
    signals = signals_frame([utc(2024, 1, 2, 21)], available_at=[utc(2024, 1, 4, 21)])
    panel = used_panel([utc(2024, 1, 2, 21)] * 3)
    bad = signal_uses_before_available(panel, signals)
    assert bad["row_index"].to_list() == [0, 1]
    assert bad["available_at"].to_list() == [utc(2024, 1, 4, 21)] * 2


def test_signal_uses_before_available_clean_panel_and_signal_not_in_table() -> None:
    signals = signals_frame([utc(2024, 1, 2, 21)], available_at=[utc(2024, 1, 2, 21)])
    assert (
        signal_uses_before_available(used_panel([None, *[utc(2024, 1, 2, 21)] * 2]), signals).height
        == 0
    )
    # A bar using a signal the table does not hold (01-03) cannot be checked: a violation.
    bad = signal_uses_before_available(used_panel([None, None, utc(2024, 1, 3, 21)]), signals)
    assert bad["row_index"].to_list() == [2]
    assert bad["available_at"].to_list() == [None]


@settings(max_examples=60, deadline=None)
@given(
    bars_of=st.dictionaries(
        st.sampled_from(["A", "B", "C"]), st.sets(st.integers(0, 15), min_size=1), min_size=1
    ),
    signals_of=st.dictionaries(st.sampled_from(["A", "B"]), st.sets(st.integers(0, 15))),
    max_fill_bars=st.integers(0, 3),
    shuffle_seed=st.integers(0, 10),
)
def test_asof_join_backward_status_matches_per_row_count(
    bars_of: dict[str, set[int]],
    signals_of: dict[str, set[int]],
    max_fill_bars: int,
    shuffle_seed: int,
) -> None:
    # Arrange: hourly bars per symbol and signal keys, both drawn; left rows in any order
    t0 = utc(2024, 1, 2, 0)
    rows = [(t0 + timedelta(hours=h), s) for s, hours in bars_of.items() for h in hours]
    left = pl.DataFrame(rows, schema={"timestamp": UTC_DATETIME, "symbol": pl.String}, orient="row")
    left = left.sample(fraction=1.0, shuffle=True, seed=shuffle_seed)
    keys = [(s, t0 + timedelta(hours=h)) for s, hours in signals_of.items() for h in hours]
    right = pl.DataFrame(keys, schema={"symbol": pl.String, "t": UTC_DATETIME}, orient="row")

    # Act
    out = asof_join_backward(
        left, right, left_on="timestamp", right_on="t", by="symbol", max_fill_bars=max_fill_bars
    )

    # Assert: per row, the latest key <= the bar; the n-th bar (0-based) of the symbol to see it
    # is fresh at n = 0, filled up to max_fill_bars, stale after; no key yet: missing
    expected = []
    for ts, symbol in left.iter_rows():
        seen = [k for s, k in keys if s == symbol and k <= ts]
        if not seen:
            expected.append("missing")
            continue
        key = max(seen)
        n = sum(1 for t, s in left.iter_rows() if s == symbol and key <= t < ts)
        expected.append("fresh" if n == 0 else "filled" if n <= max_fill_bars else "stale")
    assert out.frame["asof_status"].to_list() == expected
