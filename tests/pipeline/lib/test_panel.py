"""Specification of ml4t_pipeline.lib.panel: prices × features × signals joined on availability."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml4t_pipeline.lib.features import compute_features
from ml4t_pipeline.lib.io import load_prices_file
from ml4t_pipeline.lib.panel import build_market_panel, join_signals_asof
from ml4t_pipeline.lib.timing import UTC_DATETIME, check_no_lookahead, signal_available_at


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


DAYS = [utc(2024, 1, d, 21) for d in (2, 3, 4, 5)]


def daily_prices(symbols: tuple[str, ...] = ("A", "B")) -> pl.DataFrame:
    rows = [(t, s) for t in DAYS for s in symbols]
    n = len(rows)
    return pl.DataFrame(
        {
            "timestamp": [t for t, _ in rows],
            "symbol": [s for _, s in rows],
            "open": [10.0] * n,
            "high": [11.0] * n,
            "low": [9.0] * n,
            "close": [float(i + 10) for i in range(n)],
            "volume": [100.0] * n,
        },
        schema_overrides={"timestamp": UTC_DATETIME},
    )


def signals(rows: list[tuple[datetime, str, float, datetime]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "timestamp": [r[0] for r in rows],
            "symbol": [r[1] for r in rows],
            "score": [r[2] for r in rows],
            "available_at": [r[3] for r in rows],
        },
        schema_overrides={"timestamp": UTC_DATETIME, "available_at": UTC_DATETIME},
    )


def features_of(prices: pl.DataFrame) -> pl.DataFrame:
    return prices.select("timestamp", "symbol", (pl.col("close") * 2).alias("f"))


def test_build_market_panel_signal_visible_from_first_close_at_or_after_availability() -> None:
    prices = daily_prices()
    sig = signals(
        [
            (DAYS[0], "A", 0.5, DAYS[0]),  # market_close: visible at its own bar
            (DAYS[1], "A", 0.7, DAYS[1] + timedelta(minutes=1)),  # one minute late: next bar
            (DAYS[0], "B", -0.2, DAYS[2]),  # available two bars later
        ]
    )
    panel = build_market_panel(prices, features_of(prices), sig)
    a = panel.filter(pl.col("symbol") == "A")
    b = panel.filter(pl.col("symbol") == "B")
    assert a["score"].to_list() == [0.5, 0.5, 0.7, 0.7]
    assert a["signal_timestamp"].to_list() == [DAYS[0], DAYS[0], DAYS[1], DAYS[1]]
    assert b["score"].to_list() == [None, None, -0.2, -0.2]
    assert b["signal_available_at"].to_list()[2] == DAYS[2]


def test_build_market_panel_columns_rows_and_order() -> None:
    prices = daily_prices()
    sig = signals([(DAYS[0], "A", 0.5, DAYS[0])])
    panel = build_market_panel(prices, features_of(prices), sig)
    assert panel.columns == [
        *prices.columns,
        "f",
        "score",
        "signal_timestamp",
        "signal_available_at",
    ]
    assert panel.height == prices.height
    assert panel.select(["timestamp", "symbol"]).equals(prices.select(["timestamp", "symbol"]))
    assert panel["f"].to_list() == (prices["close"] * 2).to_list()


def test_build_market_panel_never_shows_signal_before_available() -> None:
    prices = daily_prices()
    # A "forward-shifted" file: each row claims the bar before the one it was computed at.
    shifted = signals([(DAYS[i], "A", float(i), DAYS[i + 1]) for i in range(3)])
    panel = build_market_panel(prices, features_of(prices), shifted)
    used = panel.select("timestamp", "symbol", pl.col("signal_available_at").alias("available_at"))
    assert check_no_lookahead(used).height == 0
    a = panel.filter(pl.col("symbol") == "A")
    assert a["score"].to_list() == [None, 0.0, 1.0, 2.0]


def test_forward_shifted_signals_used_on_their_timestamp_are_refused() -> None:
    # Joining on the signal's own timestamp (instead of availability) is the mistake the
    # look-ahead check exists to catch: every such use is reported.
    shifted = signals([(DAYS[i], "A", float(i), DAYS[i + 1]) for i in range(3)])
    naive_use = shifted.select("timestamp", "symbol", "available_at")
    bad = check_no_lookahead(naive_use)
    assert bad["row_index"].to_list() == [0, 1, 2]


def test_build_market_panel_duplicate_price_key_raises() -> None:
    prices = pl.concat([daily_prices(), daily_prices().head(1)])
    with pytest.raises(ValueError, match="prices has 2 rows with a duplicated"):
        build_market_panel(prices, features_of(daily_prices()), signals([]))


def test_build_market_panel_categorical_symbols_join() -> None:
    prices = daily_prices().with_columns(pl.col("symbol").cast(pl.Categorical))
    sig = signals([(DAYS[0], "B", 1.5, DAYS[0])])
    panel = build_market_panel(prices, features_of(daily_prices()), sig)
    assert panel.filter(pl.col("symbol") == "B")["score"].to_list() == [1.5] * 4


def test_join_signals_asof_daily_signal_on_minute_bars_visible_from_first_bar_after() -> None:
    # 1-minute bars (stamped at their close) on 2024-01-03, 14:28..14:33 UTC (09:28..09:33 EST).
    minutes = [utc(2024, 1, 3, 14, 28) + timedelta(minutes=i) for i in range(6)]
    bars = pl.DataFrame(
        {"timestamp": minutes, "symbol": ["A"] * 6}, schema_overrides={"timestamp": UTC_DATETIME}
    )
    # A daily signal for 2024-01-03, made pre-market: available at the 09:30 open.
    sig = signal_available_at(
        signals([(utc(2024, 1, 3, 21), "A", 0.9, utc(2024, 1, 3, 21))]).drop("available_at"),
        "market_open",
    )
    out = join_signals_asof(bars, sig, max_staleness="1d")
    assert out.frame["score"].to_list() == [None, None, 0.9, 0.9, 0.9, 0.9]
    assert out.frame["signal_status"].to_list() == [
        "missing",
        "missing",
        "fresh",
        "filled",
        "filled",
        "filled",
    ]
    assert out.counts == {"fresh": 1, "filled": 3, "stale": 0, "missing": 2}


def test_join_signals_asof_next_day_signal_stale_after_limit() -> None:
    minutes = [utc(2024, 1, 4, 14, 31), utc(2024, 1, 5, 14, 31), utc(2024, 1, 5, 15, 0)]
    bars = pl.DataFrame(
        {"timestamp": minutes, "symbol": ["A"] * 3}, schema_overrides={"timestamp": UTC_DATETIME}
    )
    sig = signal_available_at(
        signals([(utc(2024, 1, 3, 21), "A", 0.9, utc(2024, 1, 3, 21))]).drop("available_at"),
        "next_day",
    )
    out = join_signals_asof(bars, sig, max_staleness="1d")
    assert out.frame["signal_available_at"].to_list() == [utc(2024, 1, 4, 14, 30)] * 3
    assert out.frame["score"].to_list() == [0.9, None, None]
    assert out.counts["stale"] == 2


def test_build_market_panel_real_sp500_row_count_and_no_lookahead(data_root: Path) -> None:
    prices = load_prices_file(data_root / "sp500_5yr_daily_ohlcv.parquet").filter(
        pl.col("symbol").is_in(["AAPL", "MSFT", "XOM", "JPM"])
    )
    feats = compute_features(prices)
    sig = signal_available_at(
        feats.select("timestamp", "symbol", pl.col("ret_5").alias("score")).drop_nulls(),
        "next_day",
    )
    panel = build_market_panel(prices, feats, sig)
    assert panel.height == prices.height
    used = panel.filter(pl.col("signal_available_at").is_not_null())
    assert (used["signal_available_at"] <= used["timestamp"]).all()
    # next_day on daily bars is a one-bar delay: the bar after the signal's own bar sees it.
    aapl = panel.filter(pl.col("symbol") == "AAPL")
    assert aapl["signal_timestamp"][10] == aapl["timestamp"][9]


def test_build_market_panel_unsorted_inputs_same_as_sorted() -> None:
    prices = daily_prices(("A", "B", "C"))
    sig = signals([(DAYS[i], s, float(i), DAYS[i]) for i in range(4) for s in ("C", "A")])
    expected = build_market_panel(prices, features_of(prices), sig)
    shuffled = build_market_panel(
        prices.sample(fraction=1.0, shuffle=True, seed=1),
        features_of(prices).sample(fraction=1.0, shuffle=True, seed=2),
        sig.sample(fraction=1.0, shuffle=True, seed=3),
    )
    assert shuffled.equals(expected)


def test_build_market_panel_max_fill_bars_nulls_old_signal() -> None:
    prices = daily_prices(("A",))
    sig = signals([(DAYS[0], "A", 0.5, DAYS[0])])
    panel = build_market_panel(prices, features_of(prices), sig, max_fill_bars=1)
    assert panel["score"].to_list() == [0.5, 0.5, None, None]


def test_build_market_panel_aligned_features_same_as_join() -> None:
    prices = daily_prices()
    sig = signals([(DAYS[0], "A", 0.5, DAYS[0])])
    aligned = build_market_panel(prices, features_of(prices), sig)  # same keys, same order
    shuffled = build_market_panel(prices, features_of(prices).reverse(), sig)  # hash join
    assert aligned.equals(shuffled)


def test_build_market_panel_keep_status_adds_signal_status() -> None:
    prices = daily_prices()
    sig = signals([(DAYS[1], "A", 0.5, DAYS[1])])
    panel = build_market_panel(prices, features_of(prices), sig, keep_status=True)
    a = panel.filter(pl.col("symbol") == "A")
    assert a["signal_status"].to_list() == ["missing", "fresh", "filled", "filled"]
    assert panel.columns[-1] == "signal_status"


# ---------------------------------------------------------------------------------------------
# prepare_panel_by_month: the bounded-memory form of the same pipeline


def hourly_prices(months: tuple[int, ...] = (1, 2, 3)) -> pl.DataFrame:
    """Three symbols, 7 hourly bars on each weekday of the given 2024 months (UTC closes)."""
    days = pl.date_range(
        datetime(2024, months[0], 1), datetime(2024, months[-1], 28), "1d", eager=True
    )
    stamps = [
        datetime(d.year, d.month, d.day, 15 + h, tzinfo=UTC)
        for d in days.to_list()
        if d.weekday() < 5 and d.month in months
        for h in range(7)
    ]
    rows = [(t, s) for t in stamps for s in ("A", "B", "C")]
    n = len(rows)
    steps = pl.Series([((i * 7919) % 13 - 6) / 1000 for i in range(n)])
    close = 50.0 * (1 + steps).cum_prod()
    return (
        pl.DataFrame(
            {"timestamp": [t for t, _ in rows], "symbol": [s for _, s in rows], "close": close},
            schema_overrides={"timestamp": UTC_DATETIME},
        )
        .with_columns(
            pl.col("close").alias("open"),
            (pl.col("close") * 1.01).alias("high"),
            (pl.col("close") * 0.99).alias("low"),
            pl.lit(1_000.0).alias("volume"),
        )
        .select("timestamp", "symbol", "open", "high", "low", "close", "volume")
    )


def daily_signals(prices: pl.DataFrame) -> pl.DataFrame:
    last_bar = prices.group_by(pl.col("timestamp").dt.date().alias("d"), "symbol").agg(
        pl.col("timestamp").max(), pl.col("close").last().alias("score")
    )
    return signal_available_at(last_bar.drop("d"), "next_day")


def test_prepare_panel_by_month_full_warmup_equals_one_shot(tmp_path: Path) -> None:
    from ml4t_pipeline.lib.panel import prepare_panel_by_month
    from ml4t_pipeline.lib.storage import read_partitioned, write_partitioned

    prices = hourly_prices()
    write_partitioned(prices, tmp_path / "prices")
    sig = daily_signals(prices)
    result = prepare_panel_by_month(tmp_path / "prices", sig, tmp_path / "out", warmup_bars=2_000)
    one_shot = build_market_panel(prices, compute_features(prices), sig)
    by_month = read_partitioned(result.panel_root, symbol_categorical=False)
    assert [(m.year, m.month) for m in result.months] == [(2024, 1), (2024, 2), (2024, 3)]
    assert result.rows == prices.height
    assert by_month.equals(one_shot)


def test_prepare_panel_by_month_short_warmup_rolling_windows_exact(tmp_path: Path) -> None:
    from ml4t_pipeline.lib.panel import prepare_panel_by_month
    from ml4t_pipeline.lib.storage import read_partitioned, write_partitioned

    prices = hourly_prices()
    write_partitioned(prices, tmp_path / "prices")
    sig = daily_signals(prices)
    result = prepare_panel_by_month(tmp_path / "prices", sig, tmp_path / "out", warmup_bars=21)
    one_shot = build_market_panel(prices, compute_features(prices), sig)
    by_month = read_partitioned(result.panel_root, symbol_categorical=False)
    # Windows of at most 20 bars see the same bars (rolling sums may differ in the last bits).
    exact = ["ret_1", "ret_5", "ret_20", "vol_20", "sma_20", "zscore_20", "score"]
    assert_frame_equal(by_month.select(exact), one_shot.select(exact), rel_tol=1e-12)


def test_prepare_panel_by_month_quarantine_context_and_one_month_rerun(tmp_path: Path) -> None:
    from ml4t_pipeline.lib.panel import prepare_panel_by_month
    from ml4t_pipeline.lib.storage import read_partitioned, write_partitioned

    prices = hourly_prices()
    bad_at = prices.filter(pl.col("timestamp").dt.month() == 2).row(10, named=True)
    prices = prices.with_columns(
        pl.when((pl.col("timestamp") == bad_at["timestamp"]) & (pl.col("symbol") == "B"))
        .then(pl.col("low") * 0.5)
        .otherwise(pl.col("high"))
        .alias("high")
    )
    write_partitioned(prices, tmp_path / "prices")
    context = pl.DataFrame(
        {"timestamp": [utc(2024, 1, 1), utc(2024, 2, 1)], "vix": [12.0, 20.0]},
        schema_overrides={"timestamp": UTC_DATETIME},
    )
    sig = daily_signals(prices)
    out = tmp_path / "out"
    result = prepare_panel_by_month(tmp_path / "prices", sig, out, context=context)
    assert result.quarantined.height == 1
    assert result.quarantined.row(0, named=True)["symbol"] == "B"
    assert "high_at_or_above_low" in result.quarantined["reason"][0]
    assert [m.invalid_rows for m in result.months] == [0, 1, 0]
    assert result.rows == prices.height - 1
    assert read_partitioned(result.quarantine_root).height == 1
    # Context is stored once per bar timestamp, never per symbol.
    stored = read_partitioned(result.context_root)
    assert stored.height == prices["timestamp"].n_unique()
    assert stored.filter(pl.col("timestamp") < utc(2024, 2, 1))["vix"].unique().to_list() == [12.0]
    # Rematerializing February alone writes the same bytes.
    feb = out / "panel" / "year=2024" / "month=02" / "data.parquet"
    before = feb.read_bytes()
    again = prepare_panel_by_month(tmp_path / "prices", sig, out, months=[(2024, 2)])
    assert [(m.year, m.month) for m in again.months] == [(2024, 2)]
    assert feb.read_bytes() == before


def test_prepare_panel_by_month_fail_policy_raises_naming_rule(tmp_path: Path) -> None:
    from ml4t_pipeline.lib.panel import prepare_panel_by_month
    from ml4t_pipeline.lib.storage import write_partitioned

    prices = hourly_prices((1,)).with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(-1.0).otherwise(pl.col("volume")).alias("volume")
    )
    write_partitioned(prices, tmp_path / "prices")
    with pytest.raises(ValueError, match="volume_non_negative"):
        prepare_panel_by_month(
            tmp_path / "prices", daily_signals(prices), tmp_path / "out", invalid_policy="fail"
        )


def test_prepare_panel_by_month_paranoid_reports_stale_signal_uses(tmp_path: Path) -> None:
    from ml4t_pipeline.lib.panel import prepare_panel_by_month
    from ml4t_pipeline.lib.storage import write_partitioned

    prices = hourly_prices((1,))
    write_partitioned(prices, tmp_path / "prices")
    # Daily signals stamped at the session's last bar (21:00 UTC), used for the 7 bars of the
    # next session (15:00-21:00 UTC): ages 1-7 bars; with a limit of 5, ages 6 and 7 (the 20:00
    # and 21:00 bars) are reported.
    result = prepare_panel_by_month(
        tmp_path / "prices",
        daily_signals(prices),
        tmp_path / "out",
        level="paranoid",
        max_signal_age_bars=5,
    )
    found = result.timing_violations
    assert found.height == result.months[0].timing_violations > 0
    assert set(found["rule"].to_list()) == {"signal_not_stale"}
    hours = found["timestamp"].dt.hour().unique().sort().to_list()
    assert hours == [20, 21]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": "thorough"}, "unknown validation level"),
        ({"invalid_policy": "drop"}, "unknown invalid_policy"),
        ({"warmup_bars": 3, "max_fill_bars": 5}, "warmup_bars"),
        ({"level": "paranoid"}, "max_signal_age_bars"),
        ({"months": [(2030, 1)]}, "no price partition"),
    ],
)
def test_prepare_panel_by_month_bad_arguments_raise(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    from ml4t_pipeline.lib.panel import prepare_panel_by_month
    from ml4t_pipeline.lib.storage import write_partitioned

    prices = hourly_prices((1,))
    write_partitioned(prices, tmp_path / "prices")
    with pytest.raises(ValueError, match=message):
        prepare_panel_by_month(
            tmp_path / "prices",
            daily_signals(prices),
            tmp_path / "out",
            **kwargs,  # type: ignore[arg-type]
        )
