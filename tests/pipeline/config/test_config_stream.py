"""``data.stream: monthly`` gives the whole-panel results; ``data.quotes`` brings the prices
file's bid/ask to the engine (issue 16, "reach from YAML what the engine already has")."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml4t_pipeline.config import ExperimentConfig, QuotesConfig
from ml4t_pipeline.lib.experiment import (
    MonthlyPanel,
    attach_quotes,
    month_starts,
    quotes_from_prices_file,
    run_experiment,
    run_experiment_streamed,
)
from ml4t_pipeline.lib.io import load_demo_prices, load_prices_file


@pytest.fixture(scope="module")
def demo_panel() -> pl.DataFrame:
    """Demo prices 2010-2011 with a 20-bar momentum score (several symbols, 24 months)."""
    prices = load_demo_prices().filter(pl.col("timestamp").dt.year().is_in([2010, 2011]))
    return (
        prices.sort("symbol", "timestamp")
        .with_columns(
            (pl.col("close") / pl.col("close").shift(20) - 1).over("symbol").alias("score")
        )
        .sort("timestamp", "symbol")
    )


def _cfg(**execution: object) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "name": "s",
            "data": {"stream": "monthly"},
            "strategy": {"n": 2, "rebalance_every": 5},
            "risk_rules": [
                {"type": "PriceBasedStopLoss", "stop_pct": 0.03},
                {"type": "TimeBasedExit", "max_bars": 15},
            ],
            "execution": {"initial_cash": 100_000, **execution},
        }
    )


@pytest.mark.parametrize("execution", [{}, {"bar_event_order": "stops_first"}])
def test_run_experiment_streamed_equals_whole_panel(
    demo_panel: pl.DataFrame, execution: dict[str, object]
) -> None:
    cfg = _cfg(**execution)
    context = demo_panel.select("timestamp").unique().sort("timestamp")
    whole = run_experiment(cfg, demo_panel, context, ["score"], [])
    chunks = MonthlyPanel(demo_panel.lazy())
    streamed = run_experiment_streamed(cfg, chunks, context, ["score"], [])
    assert whole.trades.height > 10  # stops and time exits both happen
    assert set(whole.trades["exit_reason"]) >= {"PriceBasedStopLoss", "TimeBasedExit"}
    for name in ("trades", "fills", "portfolio_states", "rejections"):
        assert_frame_equal(getattr(streamed, name), getattr(whole, name))
    assert len(chunks.months) == 24
    assert chunks.bar_events == demo_panel.height


def test_month_starts_are_utc_month_starts(demo_panel: pl.DataFrame) -> None:
    starts = month_starts(demo_panel.lazy())
    assert [s.date() for s in starts[:3]] == [date(2010, 1, 1), date(2010, 2, 1), date(2010, 3, 1)]
    assert all(s.tzinfo is not None and s.utcoffset().total_seconds() == 0 for s in starts)


# ---------------------------------------------------------------------------------------------
# quotes


@pytest.fixture
def prices_file(tmp_path: Path) -> Path:
    """Two symbols, three naive daily dates, with bid/ask columns named as a vendor might."""
    frame = pl.DataFrame(
        {
            "timestamp": [date(2024, 3, d) for d in (4, 4, 5, 5, 6, 6)],
            "symbol": ["AAA", "BBB"] * 3,
            "open": [10.0, 20.0] * 3,
            "high": [11.0, 21.0] * 3,
            "low": [9.0, 19.0] * 3,
            "close": [10.0, 20.0] * 3,
            "volume": [1000.0] * 6,
            "best_bid": [9.9, 19.8, 9.9, 19.8, 9.9, 19.8],
            "best_ask": [10.1, 20.2, 10.1, 20.2, 10.1, 20.2],
        }
    )
    path = tmp_path / "prices.parquet"
    frame.write_parquet(path)
    return path


def test_quotes_from_prices_file_stamped_like_prices(prices_file: Path) -> None:
    quotes = quotes_from_prices_file(prices_file, QuotesConfig(bid="best_bid", ask="best_ask"))
    prices = load_prices_file(prices_file)
    assert quotes.select("timestamp", "symbol").equals(prices.select("timestamp", "symbol"))
    assert quotes["bid"].to_list() == [9.9, 19.8] * 3
    assert quotes["ask"].to_list() == [10.1, 20.2] * 3


def test_quotes_from_prices_file_missing_column_is_an_error(prices_file: Path) -> None:
    with pytest.raises(Exception, match="bid"):
        quotes_from_prices_file(prices_file, QuotesConfig())


def _panel_and_quotes(prices_file: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    panel = load_prices_file(prices_file).with_columns(pl.col("symbol").cast(pl.Categorical))
    quotes = quotes_from_prices_file(prices_file, QuotesConfig(bid="best_bid", ask="best_ask"))
    return panel, quotes


def test_attach_quotes_adds_bid_ask_to_every_bar(prices_file: Path) -> None:
    panel, quotes = _panel_and_quotes(prices_file)
    out = attach_quotes(panel, quotes)
    assert out.columns == [*panel.columns, "bid", "ask"]
    assert out.drop("bid", "ask").equals(panel)
    assert out["bid"].to_list() == quotes["bid"].to_list()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (pl.when(pl.int_range(pl.len()) == 2).then(None).otherwise(pl.col("bid")), "1 bars"),
        (pl.when(pl.int_range(pl.len()) == 3).then(float("nan")).otherwise(pl.col("bid")), "1"),
        (pl.when(pl.int_range(pl.len()) == 0).then(0.0).otherwise(pl.col("bid")), "1 bars"),
        (pl.when(pl.int_range(pl.len()) < 2).then(99.0).otherwise(pl.col("bid")), "2 bars"),
    ],
    ids=["null", "nan", "zero", "crossed"],
)
def test_attach_quotes_bad_quote_is_refused_naming_rows(
    prices_file: Path, change: pl.Expr, expected: str
) -> None:
    panel, quotes = _panel_and_quotes(prices_file)
    with pytest.raises(ValueError, match=f"data.quotes: {expected}.*no valid quote") as info:
        attach_quotes(panel, quotes.with_columns(change.alias("bid")))
    assert "AAA" in str(info.value) or "BBB" in str(info.value)


def test_attach_quotes_bar_without_quote_is_refused(prices_file: Path) -> None:
    panel, quotes = _panel_and_quotes(prices_file)
    with pytest.raises(ValueError, match="1 bars have no valid quote"):
        attach_quotes(panel, quotes.slice(1))


def test_attach_quotes_duplicate_key_is_refused(prices_file: Path) -> None:
    panel, quotes = _panel_and_quotes(prices_file)
    with pytest.raises(ValueError, match="share a"):
        attach_quotes(panel, pl.concat([quotes, quotes.head(1)]))


def test_data_quotes_with_demo_prices_is_refused() -> None:
    with pytest.raises(ValueError, match="demo prices have no bid/ask"):
        ExperimentConfig.model_validate({"name": "q", "data": {"quotes": {}}})


def test_run_experiment_quotes_reach_spread_aware_slippage(prices_file: Path) -> None:
    panel, quotes = _panel_and_quotes(prices_file)
    panel = panel.with_columns(score=pl.when(pl.col("symbol") == "AAA").then(1.0).otherwise(0.0))
    cfg = ExperimentConfig.model_validate(
        {
            "name": "q",
            "data": {"prices": str(prices_file), "quotes": {"bid": "best_bid", "ask": "best_ask"}},
            "strategy": {"n": 1, "weight": 0.5},
            "execution": {
                "initial_cash": 10_000,
                "slippage": {"type": "SpreadAware", "spread_fraction": 0.5},
            },
        }
    )
    context = panel.select("timestamp").unique().sort("timestamp")
    result = run_experiment(cfg, panel, context, ["score"], [], quotes=quotes)
    fill = result.fills.row(0, named=True)
    # AAA bought at the second bar's open 10 plus half its quoted spread (10.1 - 9.9)
    assert fill["symbol"] == "AAA"
    assert fill["price"] == pytest.approx(10.0 + 0.5 * (10.1 - 9.9))


# ---------------------------------------------------------------------------------------------
# through the Dagster path (the backtest asset reads the stored panel lazily)

E2E_YAML = """\
name: {name}
data:
  prices: prices.parquet
  signals: {{path: scores.parquet}}
  quotes: {{bid: best_bid, ask: best_ask}}
  stream: {stream}
strategy: {{type: TopN, signal: score, n: 2, rebalance_every: 5}}
risk_rules:
  - {{type: PriceBasedStopLoss, sl_pct: 0.03}}
execution:
  initial_cash: 100000
  slippage: {{type: SpreadAware, spread_fraction: 0.5}}
"""


def test_backtest_asset_monthly_stream_with_quotes_equals_whole(
    demo_panel: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml4t_pipeline.defs.io_managers import read_value
    from ml4t_pipeline.runner import materialize_experiment

    monkeypatch.setenv("ML4T_DATA_ROOT", str(tmp_path))
    daily = demo_panel.with_columns(
        pl.col("timestamp").dt.convert_time_zone("America/New_York").dt.date(),
        (pl.col("close") * 0.999).alias("best_bid"),
        (pl.col("close") * 1.001).alias("best_ask"),
    )
    daily.drop("score").write_parquet(tmp_path / "prices.parquet")
    demo_panel.drop_nulls("score").select("timestamp", "symbol", "score").write_parquet(
        tmp_path / "scores.parquet"
    )
    tables = {}
    for stream in ("whole", "monthly"):
        config = tmp_path / f"e2e_{stream}.yaml"
        config.write_text(E2E_YAML.format(name=f"e2e_{stream}", stream=stream))
        result = materialize_experiment(
            config,
            tmp_path / "storage",
            selection=["prices_raw", "prices", "prices_quarantine", "features",
                       "market_context", "signals", "market_panel", "backtest"],
        )  # fmt: skip
        assert result.success
        tables[stream] = read_value(tmp_path / "storage" / "backtest" / f"e2e_{stream}")
    for name in ("trades", "fills", "portfolio_states"):
        assert_frame_equal(tables["monthly"][name], tables["whole"][name])
    fills = tables["whole"]["fills"].with_columns(pl.col("symbol").cast(pl.String))
    assert fills.height > 20
    # every fill at the open paid half the spread quoted at the symbol's previous close (the
    # last quote before the open): 0.5 × (1.001 - 0.999) × previous close per share
    closes = demo_panel.sort("timestamp").select(
        pl.col("symbol").cast(pl.String),
        "timestamp",
        pl.col("close").shift(1).over("symbol").alias("previous_close"),
    )
    joined = fills.join(closes, on=["timestamp", "symbol"], how="left")
    expected = 0.5 * 0.002 * joined["previous_close"] * joined["quantity"].abs()
    assert joined["slippage"].to_list() == pytest.approx(expected.to_list(), rel=1e-9)
