"""Corporate actions as data: Lean factor rows, validation against prices, price adjustment,
config keys, and the equity reconciliation of runs with market mechanics."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from engine import BacktestEngine, ExecutionConfig, MarketData
from engine.mechanics import CorporateActions, CorporateActionsError, Financing
from ml4t_pipeline.config import ExperimentConfig
from ml4t_pipeline.lib import reconcile
from ml4t_pipeline.lib.corporate_actions import (
    adjust_prices,
    adjustment_factors,
    from_lean_factors,
    prepare_prices,
    read_corporate_actions,
    validate_against_prices,
)
from tests.engine.helpers import Script


def _lean_prices(root: Path, symbols: list[str]) -> pl.DataFrame:
    frame = pl.read_parquet(root / "lean_daily_ohlcv_unadjusted.parquet")
    frame = frame.filter(pl.col("symbol").is_in(symbols))
    stamp = (
        (pl.col("timestamp") + pl.duration(hours=16))
        .dt.replace_time_zone("America/New_York")
        .dt.convert_time_zone("UTC")
    )
    return frame.with_columns(stamp.alias("timestamp"))


def _factors(root: Path, symbols: list[str]) -> pl.DataFrame:
    frame = pl.read_parquet(root / "lean_factor_files.parquet")
    return frame.filter(pl.col("symbol").is_in(symbols))


def test_from_lean_factors_aapl_splits_and_dividend_from_rows(data_root: Path) -> None:
    prices = _lean_prices(data_root, ["AAPL"])
    actions = from_lean_factors(_factors(data_root, ["AAPL"]), prices)
    splits = actions.filter(pl.col("split_ratio") != 1.0)
    assert splits.filter(pl.col("ex_date") > date(2010, 1, 1)).rows() == [
        ("AAPL", date(2014, 6, 9), 7.0, 0.0),
        ("AAPL", date(2020, 8, 31), 4.0, 0.0),
    ]
    # the README's worked example: 455.61 x (1 - 0.9949942 / 0.9967882), ex-date 2020-08-07
    row = actions.filter(pl.col("ex_date") == date(2020, 8, 7)).row(0, named=True)
    assert row["dividend"] == pytest.approx(455.61 * (1 - 0.9949942 / 0.9967882), abs=1e-6)


def test_adjust_total_return_equals_lean_factors_times_raw(data_root: Path) -> None:
    prices = _lean_prices(data_root, ["AAPL"])
    factors = _factors(data_root, ["AAPL"])
    actions = from_lean_factors(factors, prices)
    ours = adjustment_factors(prices, actions, "total_return")
    # Lean: a row's factors apply to the dates up to its date, back to the previous row's
    lean = (
        factors.sort("date")
        .select("date", (pl.col("price_factor") * pl.col("split_factor")).alias("lean"))
        .set_sorted("date")
    )
    joined = (
        ours.with_columns(pl.col("timestamp").dt.date().alias("date"))
        .sort("date")
        .join_asof(lean, on="date", strategy="forward")
    )
    # the factor files are rounded to 7 digits (0.0357143 for 1/28 is 5e-7 off) and our
    # factor multiplies ~40 dividend terms derived from those rows (2.4e-6 measured)
    rel = (joined["price_factor"] / joined["lean"] - 1.0).abs().max()
    assert rel is not None and float(rel) < 1e-5  # type: ignore[arg-type]


def test_adjust_split_adjusted_prices_continuous_at_split(data_root: Path) -> None:
    prices = _lean_prices(data_root, ["AAPL"]).filter(
        pl.col("timestamp").dt.date().is_between(date(2014, 6, 6), date(2014, 6, 9))
    )
    actions = pl.DataFrame(
        {"symbol": ["AAPL"], "ex_date": [date(2014, 6, 9)], "split_ratio": [7.0]}
    )
    adjusted = adjust_prices(prices, actions, "split_adjusted")
    assert adjusted["close"].to_list() == pytest.approx([645.57 / 7, 93.70])
    assert adjusted["volume"][0] == prices["volume"][0] * 7
    assert adjusted.columns == prices.columns
    assert_raw = adjust_prices(prices, actions, "raw")
    assert assert_raw.equals(prices)


def test_validate_unknown_symbol_refused_naming_row(data_root: Path) -> None:
    prices = _lean_prices(data_root, ["AAPL"])
    actions = pl.DataFrame(
        {
            "symbol": ["AAPL", "ZZZZ"],
            "ex_date": [date(2014, 6, 9), date(2015, 1, 2)],
            "split_ratio": [7.0, 2.0],
        }
    )
    with pytest.raises(CorporateActionsError, match=r"row 1 \(symbol=ZZZZ"):
        validate_against_prices(actions, prices)


def test_validate_wm_reused_ticker_dividends_above_close_refused(data_root: Path) -> None:
    """Lean's WM factor rows are Waste Management's; against Washington Mutual's last close
    (0.16) its 2008-2009 dividends are refused, naming them."""
    prices = _lean_prices(data_root, ["WM"])
    actions = from_lean_factors(_factors(data_root, ["WM"]), prices)
    with pytest.raises(CorporateActionsError, match="not below the previous close") as err:
        validate_against_prices(actions, prices)
    assert "ex_date=2008-11-26" in str(err.value)
    assert "previous_close=0.16" in str(err.value)


def test_read_corporate_actions_csv_and_bad_format(tmp_path: Path) -> None:
    path = tmp_path / "actions.csv"
    path.write_text("symbol,ex_date,split_ratio,dividend\nA,2024-01-05,2.0,\nB,2024-01-08,,0.5\n")
    frame = read_corporate_actions(path)
    assert CorporateActions(frame).frame["split_ratio"].to_list() == [2.0, 1.0]
    with pytest.raises(CorporateActionsError, match="unknown corporate-actions format"):
        read_corporate_actions(path, "zipline")
    with pytest.raises(CorporateActionsError, match="duplicate"):
        path.write_text("symbol,ex_date,dividend\nA,2024-01-05,1\nA,2024-01-05,2\n")
        read_corporate_actions(path)


def test_prepare_prices_lean_leaves_out_tickers_without_prices(data_root: Path) -> None:
    prices = _lean_prices(data_root, ["AAPL", "SPY"])
    adjusted, counts = prepare_prices(
        prices, data_root / "lean_factor_files.parquet", "lean", "split_adjusted"
    )
    assert counts["rows_left_out"] > 0
    assert counts["splits"] == 4  # AAPL 2000, 2005, 2014, 2020
    assert adjusted.height == prices.height


# ---------------------------------------------------------------------- config
def _config(**data: object) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {"name": "x", "data": {"prices": "lean_daily_ohlcv_unadjusted.parquet", **data}}
    )


def test_config_mechanics_keys_parse_and_default_hash_unchanged() -> None:
    cfg = _config(
        adjustment="total_return",
        corporate_actions={"path": "lean_factor_files.parquet", "format": "lean"},
        delisting={"gap_sessions": 10},
    )
    assert cfg.data.corporate_actions is not None
    assert cfg.data.corporate_actions.format == "lean"
    explicit = _config(adjustment="raw", corporate_actions=None, delisting=None)
    assert explicit.config_hash() == _config().config_hash()
    financed = ExperimentConfig.model_validate(
        {"name": "x", "execution": {"financing": {"credit_rate": 0.02, "borrow_rates": {"A": 0.1}}}}
    )
    settings = financed.execution.engine_config()
    assert settings.financing == Financing(credit_rate=0.02, borrow_rates={"A": 0.1})


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"adjustment": "split_adjusted"}, "corporate-actions table"),
        ({"prices": "demo", "corporate_actions": {"path": "x.parquet"}}, "already split"),
        ({"delisting": {}, "stream": "monthly"}, "whole panel"),
        ({"adjustment": "adjusted"}, "adjustment"),
    ],
)
def test_config_mechanics_bad_combinations_refused(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        _config(**data)


# ---------------------------------------------------------------------- reconciliation
def test_equity_reconciliation_holds_with_splits_dividends_financing(data_root: Path) -> None:
    start, end = datetime(2014, 1, 2, tzinfo=UTC), datetime(2015, 3, 31, tzinfo=UTC)
    prices = _lean_prices(data_root, ["AAPL", "SPY"]).filter(
        pl.col("timestamp").is_between(start, end)
    )
    actions = from_lean_factors(_factors(data_root, ["AAPL", "SPY"]), prices)
    cfg = ExecutionConfig(
        corporate_actions=CorporateActions(actions),
        financing=Financing(credit_rate=0.02, borrow_rate=0.05),
        allow_short=True,
    )
    plan = {0: lambda s: (s.buy("AAPL", 700), s.sell("SPY", 100))}
    result = BacktestEngine(MarketData.from_frame(prices), Script(plan), None, cfg).run()
    assert result.corporate_actions.height > 0
    bad = reconcile.equity_mismatches(
        result.portfolio_states,
        result.fills,
        prices,
        initial_cash=cfg.initial_cash,
        corporate_actions=result.corporate_actions,
    )
    assert bad.height == 0
    # without the mechanics' lines the books do not agree: the check can fail
    naive = reconcile.equity_mismatches(
        result.portfolio_states.drop("interest", "borrow_fee", "dividends"),
        result.fills,
        prices,
        initial_cash=cfg.initial_cash,
    )
    assert naive.height > 0
    # attribution: the carry lines close the books with the trades' and open positions' P&L
    from ml4t_pipeline.lib.attribution import attribute_run

    tables = attribute_run(result.trades, result.portfolio_states)
    carry = tables["carry_attribution"].filter(pl.col("month") == "TOTAL").row(0, named=True)
    assert carry["dividends"] == pytest.approx(result.corporate_actions["dividend_cash"].sum())
    assert carry["borrow_fee"] < 0 < carry["interest"]
    pnl = result.trades["pnl_net"].sum() + result.open_positions["unrealized_pnl"].sum()
    lieu = result.corporate_actions["cash_in_lieu"].sum()
    assert result.final_equity - cfg.initial_cash == pytest.approx(
        pnl + carry["carry_total"] + lieu, rel=1e-9
    )


def test_carry_attribution_absent_without_mechanics() -> None:
    from ml4t_pipeline.lib.attribution import carry_attribution

    states = pl.DataFrame({"timestamp": [datetime(2024, 1, 2, tzinfo=UTC)], "equity": [1.0]})
    assert carry_attribution(states) is None


# ---------------------------------------------------------------------- top-N per mode
def test_topn_lean_symbols_each_mode_differs_only_where_it_should(data_root: Path) -> None:
    """TopN on 20-day returns of five Lean symbols, 2010-2021, under each adjustment.

    ``raw`` computes its features on split-adjusted prices, so it ranks exactly as
    ``split_adjusted`` does: the same trades (symbol, entry and exit bars). They differ in
    share counts (raw shares are 7x / 28x more after AAPL's splits) and in the dividends,
    which only ``raw`` books (as corporate-action events). ``total_return`` ranks on
    dividend-adjusted returns: it runs, with no events.
    """
    from engine import TopNStrategy
    from ml4t_pipeline.lib.corporate_actions import raw_features
    from ml4t_pipeline.lib.features import compute_features

    symbols = ["AAPL", "IBM", "SPY", "BAC", "QQQ"]
    prices = _lean_prices(data_root, symbols).filter(
        pl.col("timestamp") >= datetime(2010, 1, 1, tzinfo=UTC)
    )
    actions = from_lean_factors(_factors(data_root, symbols), prices)
    validate_against_prices(actions, prices)
    results = {}
    for mode in ("raw", "split_adjusted", "total_return"):
        traded = adjust_prices(prices, actions, mode)
        feats = raw_features(prices, actions) if mode == "raw" else compute_features(traded)
        panel = traded.join(
            feats.select("timestamp", "symbol", "ret_20"), on=["timestamp", "symbol"]
        )
        data = MarketData.from_frame(panel.drop_nulls("ret_20"), signal_columns=["ret_20"])
        cfg = ExecutionConfig(
            fractional_shares=True,
            corporate_actions=CorporateActions(actions) if mode == "raw" else None,
        )
        results[mode] = BacktestEngine(
            data, TopNStrategy("ret_20", n=2, weight=0.3), None, cfg
        ).run()
    key = ["symbol", "entry_timestamp", "exit_timestamp"]
    raw, split = results["raw"], results["split_adjusted"]
    assert raw.trades.height > 100
    assert raw.trades.select(key).equals(split.trades.select(key))
    assert raw.corporate_actions.filter(pl.col("split_ratio") != 1.0).height >= 1
    assert raw.portfolio_states["dividends"].sum() > 0
    assert split.corporate_actions.height == 0 and "dividends" not in split.portfolio_states.columns
    assert raw.compiled and split.compiled  # the compiled driver applies the actions too
    assert results["total_return"].trades.height > 100


def test_engine_settings_raw_carries_table_adjusted_does_not(data_root: Path) -> None:
    from ml4t_pipeline.lib.experiment import engine_settings

    lean = {"path": "lean_factor_files.parquet", "format": "lean"}
    raw = engine_settings(_config(corporate_actions=lean, delisting={}), data_root)
    assert raw.corporate_actions is not None and len(raw.corporate_actions) > 0
    assert raw.delisting is not None and raw.delisting.gap_sessions == 20
    adjusted = engine_settings(_config(corporate_actions=lean, adjustment="total_return"))
    assert adjusted.corporate_actions is None and not adjusted.has_mechanics


def test_report_sections_show_carry_lines_and_corporate_action_events() -> None:
    from ml4t_pipeline.lib import report_html as report_lib
    from ml4t_pipeline.lib.attribution import add_mechanics

    stamp = datetime(2014, 6, 9, 20, tzinfo=UTC)
    states = pl.DataFrame(
        {"timestamp": [stamp], "dividends": [12.5], "interest": [0.25], "borrow_fee": [0.0]}
    ).with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))
    events = pl.DataFrame(
        {
            "timestamp": [stamp],
            "symbol": ["AAPL"],
            "ex_date": [date(2014, 6, 9)],
            "split_ratio": [7.0],
            "dividend": [0.0],
            "quantity_before": [100.0],
            "quantity_after": [700.0],
            "dividend_cash": [0.0],
            "cash_in_lieu": [0.0],
            "pay_date": [None],
            "orders_adjusted": [0],
        },
        schema_overrides={"pay_date": pl.Date},
    ).with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))
    tables = add_mechanics({}, states, events)
    html = "\n".join(report_lib._mechanics_sections(tables))
    assert "Dividends and financing" in html and "Corporate actions applied (1)" in html
    assert "2014-06-09" in html and "AAPL" in html
    assert add_mechanics({}, states.drop("dividends", "interest", "borrow_fee")) == {}


def test_rebuild_report_shows_corporate_action_events_from_folder(
    data_root: Path, tmp_path: Path
) -> None:
    """``ml4t report DIR`` (:func:`rebuild_report`) reads the folder's corporate_actions.parquet
    back into the report: the AAPL 7:1 split of 2014-06-09 and its dividends are listed."""
    from ml4t_pipeline.lib.attribution import MECHANICS_FILES
    from ml4t_pipeline.lib.report import rebuild_report

    prices = _lean_prices(data_root, ["AAPL"]).filter(
        pl.col("timestamp").is_between(
            datetime(2014, 1, 2, tzinfo=UTC), datetime(2014, 12, 31, tzinfo=UTC)
        )
    )
    naive = prices.with_columns(
        pl.col("timestamp").dt.convert_time_zone("America/New_York").dt.replace_time_zone(None)
    )
    actions = from_lean_factors(_factors(data_root, ["AAPL"]), naive)
    cfg = ExecutionConfig(corporate_actions=CorporateActions(actions), close_at_end=True)
    result = BacktestEngine(
        MarketData.from_frame(prices), Script({0: lambda s: s.buy("AAPL", 100)}), None, cfg
    ).run()
    events = result.corporate_actions
    assert events.height == 5  # the split and four quarterly dividends
    result.trades.write_parquet(tmp_path / "trades.parquet")
    result.portfolio_states.write_parquet(tmp_path / "portfolio_states.parquet")
    events.write_parquet(tmp_path / MECHANICS_FILES["corporate_actions"])
    html = rebuild_report(tmp_path, periods_per_year=252).read_text()
    assert f"Corporate actions applied ({events.height})" in html
    assert '<td class="text">2014-06-09</td><td>7.00</td>' in html
    rewritten = pl.read_parquet(tmp_path / MECHANICS_FILES["corporate_actions"])
    assert rewritten.equals(events)
