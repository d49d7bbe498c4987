"""Market mechanics in the engine: splits and dividends on raw prices, delistings, financing."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from engine import BacktestEngine, BacktestResult, ExecutionConfig, MarketData, RiskManager
from engine.mechanics import CorporateActions, CorporateActionsError, Delisting, Financing
from engine.risk.rules import PriceBasedStopLoss
from tests.engine.fastpath_helpers import use_python_kernels
from tests.engine.helpers import Script, make_panel, run, ts


def _actions(rows: list[dict[str, object]]) -> CorporateActions:
    return CorporateActions(pl.DataFrame(rows))


def _day(k: int) -> date:
    return ts(k).date()


FLAT = (100.0, 100.0, 100.0, 100.0)
HALF = (50.0, 50.0, 50.0, 50.0)


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ([{"symbol": "A", "ex_date": date(2024, 1, 5), "split_ratio": 0.0}], "split_ratio <= 0"),
        ([{"symbol": "A", "ex_date": date(2024, 1, 5), "dividend": -1.0}], "negative"),
        (
            [
                {"symbol": "A", "ex_date": date(2024, 1, 5), "dividend": 1.0},
                {"symbol": "A", "ex_date": date(2024, 1, 5), "dividend": 2.0},
            ],
            "duplicate (symbol, ex_date): row 0",
        ),
        (
            [
                {
                    "symbol": "A",
                    "ex_date": date(2024, 1, 5),
                    "dividend": 1.0,
                    "pay_date": date(2024, 1, 1),
                }
            ],
            "pay_date before the ex_date",
        ),
    ],
)
def test_corporate_actions_bad_rows_refused_naming_rows(
    rows: list[dict[str, object]], fragment: str
) -> None:
    with pytest.raises(CorporateActionsError, match="row 0") as err:
        _actions(rows)
    assert fragment in str(err.value)


def test_corporate_actions_unknown_column_refused() -> None:
    with pytest.raises(CorporateActionsError, match="unknown column"):
        CorporateActions(pl.DataFrame({"symbol": ["A"], "ex_date": [date(2024, 1, 5)], "x": [1]}))


# ---------------------------------------------------------------------- splits
def test_split_long_quantity_times_ratio_levels_divided_no_stop() -> None:
    # bought 10 at 100 (bar 1 open); a 2:1 split with ex-date bar 3 halves the price
    panel = make_panel({"A": [FLAT, FLAT, FLAT, HALF, HALF]})
    actions = _actions([{"symbol": "A", "ex_date": _day(3), "split_ratio": 2.0}])
    result = run(
        panel,
        {0: lambda s: s.buy("A", 10)},
        rules=[PriceBasedStopLoss(0.1)],
        corporate_actions=actions,
    )
    assert result.trades.height == 0  # the 10 % stop at 90 became 45: not hit by 50
    pos = result.open_positions.row(0, named=True)
    assert pos["quantity"] == 20.0
    assert pos["avg_price"] == 50.0
    assert pos["stop_loss"] == pytest.approx(45.0)
    equity = result.portfolio_states["equity"].to_list()
    assert equity == [1_000_000.0] * 5  # continuous across the ex-date
    event = result.corporate_actions.row(0, named=True)
    assert (event["quantity_before"], event["quantity_after"]) == (10.0, 20.0)
    assert event["timestamp"] == ts(3)


def test_split_without_corporate_actions_stop_fires_on_raw_drop() -> None:
    """What happens today on raw prices: the split looks like a 50 % loss."""
    panel = make_panel({"A": [FLAT, FLAT, FLAT, HALF, HALF]})
    result = run(panel, {0: lambda s: s.buy("A", 10)}, rules=[PriceBasedStopLoss(0.1)])
    assert result.trades["exit_reason"].to_list() == ["PriceBasedStopLoss"]


def test_split_working_limit_order_price_divided_quantity_multiplied() -> None:
    panel = make_panel({"A": [FLAT, FLAT, HALF, HALF]})
    actions = _actions([{"symbol": "A", "ex_date": _day(2), "split_ratio": 2.0}])
    seen: dict[str, object] = {}

    def check(s: object) -> None:
        order = s.open_orders("A")[0]  # type: ignore[attr-defined]
        seen["limit"] = order.limit_price
        seen["qty"] = order.quantity

    run(
        panel,
        {0: lambda s: s.buy("A", 10, limit_price=80.0), 2: check},
        corporate_actions=actions,
    )
    assert seen == {"limit": 40.0, "qty": 20.0}


def test_split_fraction_of_a_share_paid_as_cash_in_lieu() -> None:
    # 5 shares, 3:2 split: 7.5 -> 7 shares and 0.5 x (100 / 1.5) in cash
    third = (200 / 3, 200 / 3, 200 / 3, 200 / 3)
    panel = make_panel({"A": [FLAT, FLAT, third]})
    actions = _actions([{"symbol": "A", "ex_date": _day(2), "split_ratio": 1.5}])
    result = run(panel, {0: lambda s: s.buy("A", 5)}, corporate_actions=actions)
    event = result.corporate_actions.row(0, named=True)
    assert event["quantity_after"] == 7.0
    assert event["cash_in_lieu"] == pytest.approx(0.5 * 100 / 1.5)
    assert result.portfolio_states["equity"][-1] == pytest.approx(1_000_000.0)


# ---------------------------------------------------------------------- dividends
@pytest.mark.parametrize("side", [1.0, -1.0])
def test_dividend_credited_to_long_debited_from_short(side: float) -> None:
    panel = make_panel({"A": [FLAT, FLAT, (98.0, 98.0, 98.0, 98.0)]})
    actions = _actions([{"symbol": "A", "ex_date": _day(2), "dividend": 2.0}])

    def enter(s: object) -> None:
        (s.buy if side > 0 else s.sell)("A", 10)  # type: ignore[attr-defined]

    result = run(panel, {0: enter}, corporate_actions=actions, allow_short=True)
    states = result.portfolio_states
    assert states["dividends"].to_list() == [0.0, 0.0, side * 20.0]
    # price falls by the dividend: equity unchanged for the long, the short pays it back
    assert states["equity"][-1] == pytest.approx(1_000_000.0)
    assert result.corporate_actions["dividend_cash"].to_list() == [side * 20.0]


def test_dividend_with_pay_date_receivable_until_paid() -> None:
    panel = make_panel({"A": [FLAT, FLAT, (98.0,) * 4, (98.0,) * 4, (98.0,) * 4]})
    actions = _actions([{"symbol": "A", "ex_date": _day(2), "dividend": 2.0, "pay_date": _day(4)}])
    result = run(panel, {0: lambda s: s.buy("A", 10)}, corporate_actions=actions)
    cash = result.portfolio_states["cash"].to_list()
    equity = result.portfolio_states["equity"].to_list()
    assert cash[3] == cash[2] == 1_000_000.0 - 1000.0
    assert cash[4] == 1_000_000.0 - 1000.0 + 20.0
    assert equity[2:] == [1_000_000.0] * 3


# ---------------------------------------------------------------------- delistings
def test_delisting_closes_position_at_last_close_and_rejects_later_orders() -> None:
    panel = make_panel({"A": [FLAT, FLAT, (90.0,) * 4, None, None], "B": [FLAT] * 5})
    result = run(
        panel,
        {0: lambda s: s.buy("A", 10), 2: lambda s: s.buy("A", 5), 3: lambda s: s.buy("A", 1)},
        delisting=Delisting(gap_sessions=20),
    )
    trade = result.trades.row(0, named=True)
    assert trade["exit_reason"] == "delisted"
    assert trade["exit_price"] == 90.0
    assert trade["exit_timestamp"] == ts(2)
    reasons = result.rejections.select("event", "reason").rows()
    assert reasons == [("rejected", "delisted"), ("rejected", "delisted")]


def test_delisting_off_position_stays_open_at_last_close() -> None:
    """Today's behaviour (no ``delisting``): the position is carried at its last close."""
    panel = make_panel({"A": [FLAT, FLAT, (90.0,) * 4, None], "B": [FLAT] * 4})
    result = run(panel, {0: lambda s: s.buy("A", 10)})
    assert result.trades.height == 0
    assert result.open_positions["mark"].to_list() == [90.0]


def test_delisting_gap_longer_than_limit_closes_before_reuse() -> None:
    bars: list[tuple[float, float, float, float] | None] = [FLAT, FLAT, FLAT]
    bars += [None] * 3 + [(30.0,) * 4] * 2
    panel = make_panel({"A": bars, "B": [FLAT] * 8})
    result = run(panel, {0: lambda s: s.buy("A", 10)}, delisting=Delisting(gap_sessions=2))
    assert result.trades["exit_reason"].to_list() == ["delisted"]
    assert result.trades["exit_price"].to_list() == [100.0]
    assert result.open_positions.height == 0


# ---------------------------------------------------------------------- financing
def test_financing_long_with_cash_interest_hand_checked() -> None:
    # cash 1000 - 10 x 100 = 0 after the fill; 500 left over: interest on it each day
    panel = make_panel({"A": [FLAT] * 4})
    fin = Financing(credit_rate=0.036, day_count="actual/360")
    result = run(panel, {0: lambda s: s.buy("A", 5)}, initial_cash=1000.0, financing=fin)
    interest = result.portfolio_states["interest"].to_list()
    day = 0.036 / 360
    # bar 1: 1000 held over day 0->1 (the fill is at bar 1's open, after the accrual)
    first = 1000.0 * day
    second = (500.0 + first) * day
    third = (500.0 + first + second) * day
    assert interest == pytest.approx([0.0, first, second, third])
    assert result.portfolio_states["borrow_fee"].to_list() == [0.0] * 4


def test_financing_short_borrow_fee_and_negative_cash_hand_checked() -> None:
    panel = make_panel({"A": [FLAT] * 3, "B": [FLAT] * 3})
    fin = Financing(debit_rate=0.072, borrow_rates={"A": 0.36}, day_count="actual/360")

    def trade(s: object) -> None:
        s.sell("A", 10)  # type: ignore[attr-defined]
        s.buy("B", 30)  # type: ignore[attr-defined]

    result = run(panel, {0: trade}, initial_cash=2000.0, financing=fin, allow_short=True)
    states = result.portfolio_states
    # after bar 1's fills: cash 2000 + 1000 - 3000 = 0; bar 2 accrues on cash 0 and the short
    assert states["borrow_fee"].to_list() == pytest.approx([0.0, 0.0, -1000.0 * 0.36 / 360])
    assert states["interest"].to_list() == [0.0, 0.0, 0.0]

    panel2 = make_panel({"B": [FLAT] * 3})
    result2 = run(
        panel2,
        {0: lambda s: s.buy("B", 30)},
        initial_cash=2000.0,
        financing=fin,
        cash_tolerance=2000.0,
    )
    # cash -1000 over bar 1 -> 2 at 7.2 % actual/360
    assert result2.portfolio_states["interest"].to_list() == pytest.approx(
        [0.0, 0.0, -1000.0 * 0.072 / 360]
    )


def test_financing_zero_rates_equal_no_financing() -> None:
    panel = make_panel({"A": [FLAT, (101.0,) * 4, (99.0,) * 4, (103.0,) * 4], "B": [FLAT] * 4})
    plan = {0: lambda s: s.buy("A", 10), 1: lambda s: s.sell("B", 5)}
    base = run(panel, plan, allow_short=True)
    zero = run(panel, plan, allow_short=True, financing=Financing())
    assert_frame_equal(base.trades, zero.trades)
    assert_frame_equal(base.fills, zero.fills)
    assert_frame_equal(
        base.portfolio_states,
        zero.portfolio_states.drop("dividends", "interest", "borrow_fee"),
    )


# ---------------------------------------------------------------------- real data
def _lean_prices(data_root: Path, symbols: list[str]) -> pl.DataFrame:
    frame = pl.read_parquet(data_root / "lean_daily_ohlcv_unadjusted.parquet")
    frame = frame.filter(pl.col("symbol").is_in(symbols))
    # daily rows are session dates; the bar closes at 16:00 New York (20:00/21:00 UTC)
    stamp = (
        (pl.col("timestamp") + pl.duration(hours=16))
        .dt.replace_time_zone("America/New_York")
        .dt.convert_time_zone("UTC")
    )
    return frame.with_columns(stamp.alias("timestamp"))


def _lean_actions(data_root: Path, prices: pl.DataFrame, symbols: list[str]) -> pl.DataFrame:
    from ml4t_pipeline.lib.corporate_actions import from_lean_factors

    factors = pl.read_parquet(data_root / "lean_factor_files.parquet")
    factors = factors.filter(pl.col("symbol").is_in(symbols))
    raw = prices.with_columns(pl.col("timestamp").dt.convert_time_zone("America/New_York"))
    return from_lean_factors(
        factors, raw.with_columns(pl.col("timestamp").dt.replace_time_zone(None))
    )


def test_aapl_raw_buy_and_hold_28x_shares_dividends_hand_computed(data_root: Path) -> None:
    start, end = datetime(2014, 1, 2, tzinfo=UTC), datetime(2021, 3, 31, 23, tzinfo=UTC)
    prices = _lean_prices(data_root, ["AAPL"]).filter(pl.col("timestamp").is_between(start, end))
    actions = _lean_actions(data_root, prices, ["AAPL"])
    shares = 100
    data = MarketData.from_frame(prices)
    cfg = ExecutionConfig(corporate_actions=CorporateActions(actions))
    risk = RiskManager([PriceBasedStopLoss(0.5)])
    result = BacktestEngine(data, Script({0: lambda s: s.buy("AAPL", shares)}), risk, cfg).run()
    pos = result.open_positions.row(0, named=True)
    assert pos["quantity"] == 28 * shares
    assert result.trades.height == 0  # no stop on either split day
    # dividends = Σ dividend × shares held at each ex-date, from the factor rows
    held_from = datetime(2014, 1, 3, tzinfo=UTC).date()  # filled at bar 1's open
    expected = 0.0
    qty = float(shares)
    for row in actions.sort("ex_date").iter_rows(named=True):
        if held_from < row["ex_date"] <= end.date():
            expected += qty * row["dividend"]
            qty *= row["split_ratio"]
    states = result.portfolio_states
    assert states["dividends"].sum() == pytest.approx(expected, rel=1e-12)
    assert result.corporate_actions.filter(pl.col("split_ratio") != 1.0).height == 2
    # equity continuous: on each split day it moves by the day's market move only
    for ex, ratio, held in ((date(2014, 6, 9), 7.0, 700), (date(2020, 8, 31), 4.0, 2800)):
        i = states["timestamp"].dt.date().to_list().index(ex)
        closes = prices.filter(pl.col("timestamp").dt.date() <= ex).tail(2)["close"].to_list()
        move = states["equity"][i] - states["equity"][i - 1]
        assert move == pytest.approx((closes[1] - closes[0] / ratio) * held, rel=1e-9)


def test_aapl_total_return_equals_raw_with_dividends_reinvested(data_root: Path) -> None:
    """The same AAPL position, 2014-01-03 to 2021-03-31, under ``raw`` and ``total_return``.

    They differ only by reinvestment: on total-return prices every dividend is implicitly
    reinvested in the stock at the ex-date (at the theoretical ex price, previous close −
    dividend); under ``raw`` the dividends stay in cash. So (1) the total-return value equals
    the raw shares with each dividend reinvested that way, computed by hand from the factor
    rows, to 1e-9; (2) the raw run (dividends in cash) ends below it by the compounding of
    the reinvested dividends: within 10 % of the total-return gain over these 7 years of a
    fivefold rise (8.8 % measured).
    """
    from ml4t_pipeline.lib.corporate_actions import adjust_prices, previous_closes

    start, end = datetime(2014, 1, 2, tzinfo=UTC), datetime(2021, 3, 31, 23, tzinfo=UTC)
    prices = _lean_prices(data_root, ["AAPL"]).filter(pl.col("timestamp").is_between(start, end))
    actions = _lean_actions(data_root, prices, ["AAPL"])
    cash = 1_000_000.0
    raw = BacktestEngine(
        MarketData.from_frame(prices),
        Script({0: lambda s: s.buy("AAPL", 1000)}),
        None,
        ExecutionConfig(corporate_actions=CorporateActions(actions), initial_cash=cash),
    ).run()
    adjusted = adjust_prices(prices, actions, "total_return")
    tr_shares = 1000 * prices["open"][1] / adjusted["open"][1]  # the same money invested
    tr = BacktestEngine(
        MarketData.from_frame(adjusted),
        Script({0: lambda s: s.buy("AAPL", tr_shares)}),
        None,
        ExecutionConfig(initial_cash=cash, fractional_shares=True),
    ).run()
    # (1) hand-computed reinvestment on raw prices
    first_day = prices["timestamp"][1].date()
    shares = 1000.0
    for row in previous_closes(actions, prices).sort("ex_date").iter_rows(named=True):
        if first_day < row["ex_date"]:
            d, p = row["dividend"], row["previous_close"]
            shares = (shares + shares * d / (p - d)) * row["split_ratio"]
    tr_value = tr.open_positions["quantity"][0] * tr.open_positions["mark"][0]
    assert tr_value == pytest.approx(shares * prices["close"][-1], rel=1e-9)
    # (2) raw: dividends kept in cash, not compounded
    raw_gain = raw.final_equity - cash
    tr_gain = tr.final_equity - cash
    assert raw.open_positions["quantity"][0] == 28_000
    assert 0 < raw_gain < tr_gain
    assert tr_gain == pytest.approx(raw_gain, rel=0.10)


def test_wm_position_closed_delisted_at_washington_mutual_last_close(data_root: Path) -> None:
    prices = _lean_prices(data_root, ["WM", "SPY"]).filter(
        pl.col("timestamp").is_between(
            datetime(2008, 6, 1, tzinfo=UTC), datetime(2009, 12, 31, tzinfo=UTC)
        )
    )
    data = MarketData.from_frame(prices)
    # buy in June 2008; try to buy again during the gap and after the ticker is reused
    plan = {0: lambda s: s.buy("WM", 1000), 100: lambda s: s.buy("WM", 10)}
    cfg = ExecutionConfig(delisting=Delisting(gap_sessions=20))
    result = BacktestEngine(data, Script(plan), None, cfg).run()
    trade = result.trades.row(0, named=True)
    assert trade["exit_reason"] == "delisted"
    assert trade["exit_price"] == 0.16
    assert trade["exit_timestamp"].date() == date(2008, 9, 26)
    assert result.open_positions.height == 0  # never carried into Waste Management
    assert result.rejections["reason"].to_list() == ["delisted"]


# ---------------------------------------------------------------------- both drivers
RUN_FRAMES = (
    "trades",
    "fills",
    "orders",
    "rejections",
    "portfolio_states",
    "open_positions",
    "corporate_actions",
)


def _assert_same_run(compiled: BacktestResult, loop: BacktestResult) -> None:
    assert compiled.compiled and not loop.compiled
    for name in RUN_FRAMES:
        assert_frame_equal(getattr(compiled, name), getattr(loop, name), check_exact=True)


def _both_drivers(
    data: MarketData, strategy: dict[str, Any], risk: list[Any] | None, cfg: ExecutionConfig
) -> tuple[BacktestResult, BacktestResult]:
    from engine import TopNStrategy

    runs = []
    for flag in (True, False):
        manager = RiskManager(list(risk)) if risk is not None else None
        engine = BacktestEngine(data, TopNStrategy(**strategy), manager, cfg, compiled=flag)
        runs.append(engine.run())
    return runs[0], runs[1]


@pytest.mark.parametrize("fractional", [False, True])
def test_compiled_topn_raw_lean_equals_python_loop(data_root: Path, fractional: bool) -> None:
    """Corporate actions and financing are core kernels both drivers call: a compiled TopN
    run on the raw Lean prices equals the Python loop's, record for record."""
    symbols = ["AAPL", "IBM", "SPY", "BAC", "QQQ", "AIG"]
    prices = _lean_prices(data_root, symbols).filter(
        pl.col("timestamp") >= datetime(2005, 1, 1, tzinfo=UTC)
    )
    actions = _lean_actions(data_root, prices, symbols)
    ret = pl.col("close") / pl.col("close").shift(20).over("symbol") - 1.0
    panel = prices.sort("symbol", "timestamp").with_columns(ret.alias("mom"))
    data = MarketData.from_frame(panel, signal_columns=["mom"])
    cfg = ExecutionConfig(
        corporate_actions=CorporateActions(actions),
        financing=Financing(credit_rate=0.02, borrow_rate=0.01),
        fractional_shares=fractional,
    )
    runs = _both_drivers(data, {"signal": "mom", "n": 3}, [PriceBasedStopLoss(0.08)], cfg)
    _assert_same_run(*runs)
    assert runs[0].corporate_actions.filter(pl.col("split_ratio") != 1.0).height >= 1
    assert runs[0].portfolio_states["interest"].sum() > 0


@pytest.mark.parametrize("fractional", [False, True])
def test_compiled_delistings_and_pay_dates_lean_equal_python_loop(
    data_root: Path, fractional: bool
) -> None:
    """Delistings and dividends paid after their ex-date, compiled: a TopN run on every
    symbol of the raw Lean daily file, 2007-2010, holding the three cheapest (so it holds
    Washington Mutual into its last session, 2008-09-26, and WMI until its data ends), with
    each dividend paid ten days after its ex-date, equals the Python loop record for record."""
    prices = pl.read_parquet(data_root / "lean_daily_ohlcv_unadjusted.parquet")
    symbols = sorted(prices["symbol"].unique().to_list())
    prices = _lean_prices(data_root, symbols).filter(
        pl.col("timestamp").is_between(
            datetime(2007, 1, 1, tzinfo=UTC), datetime(2010, 12, 31, tzinfo=UTC)
        )
    )
    actions = _lean_actions(data_root, prices, symbols)
    paid = actions.with_columns(
        pl.when(pl.col("dividend") > 0)
        .then(pl.col("ex_date") + pl.duration(days=10))
        .otherwise(None)
        .alias("pay_date")
    )
    panel = prices.with_columns((-pl.col("close")).alias("cheap"))
    data = MarketData.from_frame(panel, signal_columns=["cheap"])
    cfg = ExecutionConfig(
        corporate_actions=CorporateActions(paid),
        delisting=Delisting(gap_sessions=20, delisting_return=-0.25),
        fractional_shares=fractional,
    )
    engine = BacktestEngine(data, Script({}), None, cfg)
    assert engine.compiled_reason is not None  # a scripted strategy: the Python loop
    compiled, loop = _both_drivers(
        data, {"signal": "cheap", "n": 3, "rebalance_every": 5}, None, cfg
    )
    _assert_same_run(compiled, loop)
    delisted = compiled.trades.filter(pl.col("exit_reason") == "delisted")
    wm = delisted.filter(pl.col("symbol") == "WM").row(0, named=True)
    assert wm["exit_timestamp"].date() == date(2008, 9, 26)
    assert wm["exit_price"] == pytest.approx(0.16 * 0.75, rel=1e-12)
    # dividends booked at the ex-date, paid into the cash ten days later
    assert compiled.portfolio_states["dividends"].sum() != 0.0
    assert compiled.corporate_actions["pay_date"].null_count() < compiled.corporate_actions.height


def test_partial_profit_taking_slice_rescaled_at_split_both_drivers() -> None:
    """100 shares bought at 100, a 2:1 split (200 shares, entry 50), then a close of 56:
    +12 % reaches the 10 % level, which sells half the starting size in post-split shares,
    0.5 × 200 = 100 shares at the next open (56), leaving 100. (Before the starting size was
    rescaled it sold 0.5 × 100 = 50.) Both drivers, identical records."""
    from engine import PartialProfitTaking

    half = (50.0, 50.0, 50.0, 50.0)
    bars = [FLAT, FLAT, half, (50.0, 56.0, 50.0, 56.0), (56.0,) * 4, (56.0,) * 4]
    panel = make_panel({"A": bars}, signals={"s": {"A": [1.0] * 6}})
    data = MarketData.from_frame(panel, signal_columns=["s"])
    cfg = ExecutionConfig(
        initial_cash=10_000.0,
        corporate_actions=_actions([{"symbol": "A", "ex_date": _day(2), "split_ratio": 2.0}]),
    )
    rule = [PartialProfitTaking([(0.10, 0.5)])]
    compiled, loop = _both_drivers(data, {"signal": "s", "n": 1}, rule, cfg)
    _assert_same_run(compiled, loop)
    fills = compiled.fills.select("timestamp", "quantity", "price").rows()
    assert fills == [(ts(1), 100.0, 100.0), (ts(4), -100.0, 56.0)]
    assert compiled.trades["exit_reason"].to_list() == ["PartialProfitTaking"]
    assert compiled.open_positions["quantity"].to_list() == [100.0]


def test_compiled_reason_none_for_delisting_and_pay_dates() -> None:
    """The compiled driver runs delistings and pay dates (they used to send the run to the
    Python loop)."""
    from engine import TopNStrategy

    panel = make_panel({"A": [FLAT] * 3}, signals={"s": {"A": [1.0, 1.0, 1.0]}})
    data = MarketData.from_frame(panel, signal_columns=["s"])
    paid_later = _actions(
        [{"symbol": "A", "ex_date": _day(1), "dividend": 1.0, "pay_date": _day(2)}]
    )
    for cfg in (
        ExecutionConfig(delisting=Delisting()),
        ExecutionConfig(corporate_actions=paid_later),
        ExecutionConfig(financing=Financing(), corporate_actions=paid_later, delisting=Delisting()),
    ):
        assert BacktestEngine(data, TopNStrategy("s", n=1), None, cfg).compiled_reason is None


# ---------------------------------------------------------------------- properties
def _walk_panel(seed: int, n_symbols: int, n_bars: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_symbols):
        close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n_bars)))
        opens = close * np.exp(rng.normal(0.0, 0.005, n_bars))
        for k in range(n_bars):
            hi = max(opens[k], close[k]) * 1.01
            lo = min(opens[k], close[k]) * 0.99
            rows.append((ts(k), f"S{s}", opens[k], hi, lo, close[k], 1e6, rng.normal()))
    frame = pl.DataFrame(
        rows,
        schema=["timestamp", "symbol", "open", "high", "low", "close", "volume", "score"],
        orient="row",
    )
    return frame.with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n_symbols=st.integers(1, 4),
    short=st.booleans(),
    compiled=st.booleans(),
)
def test_financing_zero_rates_and_empty_table_equal_todays_results(
    seed: int, n_symbols: int, short: bool, compiled: bool
) -> None:
    """Property: financing with every rate 0 and an action-free table change nothing."""
    from engine import TopNStrategy

    data = MarketData.from_frame(_walk_panel(seed, n_symbols, 40), signal_columns=["score"])
    empty = CorporateActions(
        pl.DataFrame({"symbol": ["S0"], "ex_date": [date(2030, 1, 2)], "split_ratio": [2.0]})
    )
    results = []
    for extra in ({}, {"financing": Financing(), "corporate_actions": empty}):
        cfg = ExecutionConfig(allow_short=short, **extra)  # type: ignore[arg-type]
        strategy = TopNStrategy("score", n=max(1, n_symbols // 2))
        results.append(BacktestEngine(data, strategy, None, cfg, compiled=compiled).run())
    base, zero = results
    for name in ("trades", "fills", "open_positions"):
        assert_frame_equal(getattr(base, name), getattr(zero, name), check_exact=True)
    assert_frame_equal(
        base.portfolio_states,
        zero.portfolio_states.drop("dividends", "interest", "borrow_fee"),
        check_exact=True,
    )
    assert zero.corporate_actions.height == 0


@settings(max_examples=15, deadline=None)
@given(
    ratio=st.sampled_from([2.0, 3.0, 1.5, 0.5, 0.1, 7.0]),
    split_bar=st.integers(2, 8),
    shares=st.integers(1, 500),
)
def test_split_any_ratio_keeps_value_and_scales_quantity(
    ratio: float, split_bar: int, shares: int
) -> None:
    """Property: on raw prices that jump by 1/ratio at the ex-date, equity is flat across it
    and the quantity is ``shares × ratio`` (whole shares: the fraction paid in cash)."""
    bars: list[tuple[float, float, float, float]] = [FLAT] * split_bar
    bars += [tuple([100.0 / ratio] * 4)] * (10 - split_bar)  # type: ignore[list-item]
    panel = make_panel({"A": bars})
    actions = _actions([{"symbol": "A", "ex_date": _day(split_bar), "split_ratio": ratio}])
    result = run(
        panel, {0: lambda s: s.buy("A", shares)}, fractional_shares=True, corporate_actions=actions
    )
    assert result.open_positions["quantity"][0] == pytest.approx(shares * ratio, rel=1e-12)
    assert result.portfolio_states["equity"].to_list() == pytest.approx([1_000_000.0] * 10)


def _gappy_panel(seed: int, n_symbols: int, n_bars: int) -> pl.DataFrame:
    """:func:`_walk_panel` with rows taken out: a symbol's data may end early, start late
    or stop for a few bars (a gap)."""
    rng = np.random.default_rng(seed + 1)
    frame = _walk_panel(seed, n_symbols, n_bars)
    keep = []
    for _ in range(n_symbols):
        bars = np.ones(n_bars, dtype=bool)
        if rng.random() < 0.5:
            bars[rng.integers(n_bars // 2, n_bars) :] = False
        if rng.random() < 0.5:
            start = int(rng.integers(1, n_bars - 2))
            bars[start : start + int(rng.integers(1, 6))] = False
        if rng.random() < 0.3:
            bars[: int(rng.integers(1, 5))] = False
        keep.extend(bars.tolist())
    return frame.filter(pl.Series(keep))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n_symbols=st.integers(2, 5),
    gap=st.integers(1, 4),
    delisting_return=st.sampled_from([0.0, -0.3, -1.0, 0.1]),
    fractional=st.booleans(),
    stops=st.booleans(),
)
def test_compiled_delistings_pay_dates_generated_panels_equal_python_loop(
    seed: int, n_symbols: int, gap: int, delisting_return: float, fractional: bool, stops: bool
) -> None:
    """Property: on random panels whose symbols end, start late or stop for a few bars, with
    splits and dividends (some paid days after the ex-date) and delistings, the compiled
    TopN run equals the Python loop's, record for record."""
    n_bars = 40
    panel = _gappy_panel(seed, n_symbols, n_bars)
    data = MarketData.from_frame(panel, signal_columns=["score"])
    rng = np.random.default_rng(seed + 2)
    rows = []
    for s in range(n_symbols):
        for k in sorted(rng.choice(np.arange(1, n_bars), size=3, replace=False).tolist()):
            pay = _day(k + int(rng.integers(0, 6))) if rng.random() < 0.6 else None
            rows.append(
                {
                    "symbol": f"S{s}",
                    "ex_date": _day(k),
                    "split_ratio": float(rng.choice([1.0, 1.0, 2.0, 1.5, 0.5])),
                    "dividend": float(rng.choice([0.0, 0.3, 1.0])),
                    "pay_date": pay,
                }
            )
    cfg = ExecutionConfig(
        corporate_actions=_actions(rows),
        delisting=Delisting(gap_sessions=gap, delisting_return=delisting_return),
        fractional_shares=fractional,
    )
    risk = [PriceBasedStopLoss(0.03)] if stops else None
    strategy = {"signal": "score", "n": max(1, n_symbols // 2), "rebalance_every": 2}
    _assert_same_run(*_both_drivers(data, strategy, risk, cfg))


# ---------------------------------------------------------------------- core kernels
@pytest.fixture(params=["compiled", "py_func"])
def mechanics_kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The core's mechanics kernels compiled, or as the plain Python they are compiled from."""
    from engine.core import actions, delisting, financing

    if request.param == "py_func":
        use_python_kernels(monkeypatch, actions, delisting, financing)
    return str(request.param)


def _state(qty: list[float], mark: float = 100.0) -> np.ndarray:
    from engine.core import layout

    fstate = np.full((layout.N_FLOAT_FIELDS, len(qty)), np.nan)
    fstate[layout.QTY] = qty
    fstate[layout.AVG] = mark
    fstate[layout.MARK] = mark
    fstate[layout.STOP] = mark * 0.9
    return fstate


@pytest.mark.usefixtures("mechanics_kernels")
def test_bar_actions_hand_checked_split_dividend_orders_pay_date() -> None:
    from engine.core import actions, layout
    from engine.core.records import empty_records

    fstate = _state([5.0, -10.0])
    pending = np.array([5.0, 0.0])
    open_qty = np.array([5.0, 10.0])
    original = np.array([4.0, 10.0])  # PartialProfitTaking's starting sizes
    acc = np.zeros(layout.N_ACC)
    orders = empty_records("orders", 4)
    for o, quantity in enumerate((2.0, 3.0)):  # two working market buys of symbol 0
        orders[o]["sid"], orders[o]["quantity"], orders[o]["filled"] = 0, quantity, 0.0
        orders[o]["order_type"] = layout.T_MARKET
        orders[o]["limit_price"] = orders[o]["stop_price"] = np.nan
    book = np.array([0, 1], dtype=np.int64)
    ev_out = np.zeros((3, actions.N_EV))
    dividends = np.zeros(3)
    owed = np.zeros(3)
    payment = actions.new_payment_state()
    schedule = (
        np.array([1, 1, 2], dtype=np.int64),  # bars
        np.array([0, 1, 0], dtype=np.int64),  # symbols
        np.array([1.5, 1.0, 1.0]),  # ratios
        np.array([0.0, 1.0, 0.5]),  # dividends
        np.array([-1, -1, 5], dtype=np.int64),  # pay days: the third paid on day 5
    )

    def due(i: int, today: int, k: int) -> int:
        return int(
            actions.bar_actions(
                i,
                today,
                k,
                *schedule[:4],
                schedule[4],
                False,
                fstate,
                pending,
                open_qty,
                original,
                acc,
                orders,
                book,
                2,
                ev_out,
                dividends,
                owed,
                payment,
            )
        )

    # bar 1: 3:2 split of symbol 0 (7.5 shares -> 7 + cash in lieu), 1.0 dividend on the short
    k = due(1, 1, 0)
    assert k == 2  # the third action is due at bar 2
    assert fstate[layout.QTY].tolist() == [7.0, -10.0]
    assert fstate[layout.AVG, 0] == pytest.approx(100 / 1.5)
    assert fstate[layout.STOP, 0] == pytest.approx(90 / 1.5)
    assert open_qty.tolist() == [7.0, 10.0] and original.tolist() == [6.0, 10.0]
    # orders of whole shares stay whole: 2 -> 3, 3 -> 4.5 -> 4; pending 5 x 1.5 - 0.5
    assert orders["quantity"][:2].tolist() == [3.0, 4.0] and pending[0] == 7.0
    lieu = 0.5 * 100 / 1.5
    assert acc[layout.ACC_CASH] == pytest.approx(lieu - 10.0)
    assert dividends.tolist() == [0.0, -10.0, 0.0]
    assert ev_out[0, actions.EV_LIEU] == pytest.approx(lieu)
    assert ev_out[0, actions.EV_ORDERS] == 2 and ev_out[2, actions.EV_APPLIED] == 0
    # bar 2 (day 2): 0.5 on the 7 shares, owed until day 5: receivable, not cash
    cash = acc[layout.ACC_CASH]
    k = due(2, 2, k)
    assert k == 3 and dividends[2] == 3.5 and owed.tolist() == [0.0, 0.0, 3.5]
    assert acc[layout.ACC_CASH] == cash and payment[actions.MX_RECEIVABLE] == 3.5
    assert payment[actions.MX_NEXT_PAY] == 5
    actions.bar_payments(4, k, schedule[4], owed, acc, payment)
    assert acc[layout.ACC_CASH] == cash
    actions.bar_payments(5, k, schedule[4], owed, acc, payment)
    assert acc[layout.ACC_CASH] == cash + 3.5 and payment[actions.MX_RECEIVABLE] == 0.0
    assert owed.tolist() == [0.0, 0.0, 0.0] and payment[actions.MX_NEXT_PAY] == actions.NEVER


@pytest.mark.usefixtures("mechanics_kernels")
def test_delisted_book_pass_hand_checked_reject_new_cancel_old() -> None:
    from engine.core import delisting, layout
    from engine.core.records import empty_records

    # bar 3, rows 0..1: symbol 0's last row (terminal), symbol 1 trading; symbol 2 was
    # delisted earlier and has no bar now
    terminal = np.array([True, False])
    sym_id = np.array([0, 1], dtype=np.int64)
    delisted = np.array([False, False, True])
    orders = empty_records("orders", 4)
    for o, (sid, submit) in enumerate(((0, 3), (0, 2), (1, 3), (2, 3))):
        orders[o]["sid"], orders[o]["submit_index"] = sid, submit
        orders[o]["quantity"], orders[o]["filled"] = 10.0, 0.0
        orders[o]["order_type"], orders[o]["status"] = layout.T_MARKET, layout.S_ACCEPTED
        orders[o]["reason"] = layout.R_STRATEGY
    book = np.array([0, 1, 2, 3], dtype=np.int64)
    counts = np.zeros(layout.N_C, dtype=np.int64)
    counts[layout.C_BOOK] = 4
    pending = np.array([20.0, 10.0, 10.0])
    aux_i = np.zeros((layout.N_A, 3), dtype=np.int64)
    rejections = empty_records("rejections", 4)
    delisting.delisted_book_pass(
        3, 0, 2, terminal, sym_id, delisted, orders, book, counts, pending, aux_i, rejections
    )
    assert delisted.tolist() == [True, False, True]
    assert counts[layout.C_BOOK] == 1 and book[0] == 2  # only symbol 1's order is left
    assert orders["status"].tolist() == [
        layout.S_REJECTED,  # submitted on the delisting bar
        layout.S_CANCELLED,  # working since bar 2
        layout.S_ACCEPTED,
        layout.S_REJECTED,  # for a symbol delisted earlier
    ]
    assert pending.tolist() == [0.0, 10.0, 0.0]
    assert counts[layout.C_REJ] == 3
    assert rejections["reason"][:3].tolist() == [layout.SR_DELISTED] * 3
    assert rejections["event"][:3].tolist() == [
        layout.EV_REJECTED,
        layout.EV_CANCELLED,
        layout.EV_REJECTED,
    ]
    assert delisting.delisting_price(0.16, -0.25) == pytest.approx(0.12)


def test_delisting_rows_hand_checked_end_and_gap() -> None:
    from engine.core.delisting import delisting_rows

    # 6 bars; symbol 0 every bar; symbol 1 bars 0-1 then 4-5 (a gap of 2); symbol 2 bars 0-2
    bars = [[0, 1, 2], [0, 1, 2], [0, 2], [0], [0, 1], [0, 1]]
    sym_id = np.array([s for bar in bars for s in bar], dtype=np.int64)
    offsets = np.cumsum([0] + [len(b) for b in bars]).astype(np.int64)
    rows = delisting_rows(offsets, sym_id, gap_sessions=2)
    terminal = [(i, s) for i, bar in enumerate(bars) for s in bar]
    got = [terminal[r] for r in np.flatnonzero(rows)]
    assert got == [(2, 2)]  # symbol 2 ends at bar 2; symbol 1's gap of 2 is not longer than 2
    rows = delisting_rows(offsets, sym_id, gap_sessions=1)
    got = [terminal[r] for r in np.flatnonzero(rows)]
    assert got == [(1, 1), (2, 2)]  # now the gap counts: symbol 1 delisted at bar 1


@pytest.mark.usefixtures("mechanics_kernels")
def test_bar_financing_hand_checked_interest_and_fee() -> None:
    from engine.core import financing, layout

    acc = np.zeros(layout.N_ACC)
    acc[layout.ACC_CASH] = 36_000.0
    stamps = np.array([0, 3 * 86_400_000_000], dtype=np.int64)  # Friday -> Monday
    interest, fee = np.zeros(2), np.zeros(2)
    financing.bar_financing(
        1,
        stamps,
        np.array([0, 1], dtype=np.int64),
        np.array([10.0, -20.0]),
        np.array([100.0, 50.0]),
        np.array([0.0, 0.36]),
        acc,
        np.array([0.01, 0.05, 360.0]),
        interest,
        fee,
    )
    assert interest[1] == pytest.approx(36_000 * 0.01 * 3 / 360)  # 3.0
    assert fee[1] == pytest.approx(-1000 * 0.36 * 3 / 360)  # -3.0
    assert acc[layout.ACC_CASH] == pytest.approx(36_000.0)
    financing.bar_financing(
        0,
        stamps,
        np.zeros(0, dtype=np.int64),
        np.zeros(2),
        np.zeros(2),
        np.zeros(2),
        acc,
        np.array([0.01, 0.05, 360.0]),
        interest,
        fee,
    )
    assert interest[0] == 0.0  # no interval before the first bar


def test_chunked_run_with_actions_and_financing_equals_whole_run(data_root: Path) -> None:
    """Corporate actions are scheduled by date and financing by elapsed time, so month
    chunks (``stream: monthly``) give the records of the whole panel."""
    from engine import ChunkedMarketData, TopNStrategy

    symbols = ["AAPL", "IBM", "SPY"]
    prices = _lean_prices(data_root, symbols).filter(
        pl.col("timestamp").is_between(
            datetime(2014, 1, 1, tzinfo=UTC), datetime(2014, 12, 31, tzinfo=UTC)
        )
    )
    actions = CorporateActions(_lean_actions(data_root, prices, symbols))
    ret = pl.col("close") / pl.col("close").shift(5).over("symbol") - 1.0
    panel = prices.sort("symbol", "timestamp").with_columns(ret.alias("mom"))
    cfg = ExecutionConfig(corporate_actions=actions, financing=Financing(credit_rate=0.03))
    month = pl.col("timestamp").dt.month()
    chunks = [panel.filter(month == m) for m in range(1, 13)]
    chunked = ChunkedMarketData(chunks, symbols=symbols, signal_columns=["mom"])
    whole = MarketData.from_frame(panel, signal_columns=["mom"])
    runs = [BacktestEngine(d, TopNStrategy("mom", n=1), None, cfg).run() for d in (chunked, whole)]
    for name in ("trades", "fills", "portfolio_states", "corporate_actions"):
        assert_frame_equal(getattr(runs[0], name), getattr(runs[1], name), check_exact=True)
    assert runs[0].corporate_actions.height > 0
