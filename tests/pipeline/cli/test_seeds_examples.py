"""The seeds' pipeline-side examples as written (issue 24, item 8): the DataPreparer of
002 TASK-DA-012 and the Top-25 configuration of 000 §5.5.

Only the import line and the data sources change: the seeds' files do not exist, so the
sources are files under ``$ML4T_DATA_ROOT`` (or written to a temporary folder from them).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
import yaml

from ml4t_pipeline import DataPreparer
from ml4t_pipeline.config import ExperimentConfig, build_rule, load_config
from tests.pipeline.helpers import REPO_ROOT, run_cli

# ----------------------------------------------------------------------------- 002 DA-012


@pytest.fixture(scope="module")
def daily_signals(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A daily score per ETF of the 1-minute file: the previous day's last close over the
    close 5 days before − 1, stamped at 00:00 UTC of the day it is for (known at that day's
    09:30 New York open: the seeds' ``valid_from="market_open"``)."""
    minute = pl.read_parquet(data_root / "intraday_1min_etfs_2023_2025.parquet")
    daily = (
        minute.sort("symbol", "timestamp")
        .group_by("symbol", pl.col("timestamp").dt.date().alias("day"), maintain_order=True)
        .agg(pl.col("close").last())
        .with_columns(
            (pl.col("close").shift(1) / pl.col("close").shift(6) - 1).over("symbol").alias("ml")
        )
        .drop_nulls("ml")
        .select(
            pl.col("day").cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias("timestamp"),
            "symbol",
            "ml",
        )
    )
    path = tmp_path_factory.mktemp("signals") / "signals.parquet"
    daily.write_parquet(path)
    return path


def test_seeds_002_da012_data_preparer_fluent_api_writes_validated_tables(
    data_root: Path, daily_signals: Path, tmp_path: Path
) -> None:
    """002 TASK-DA-012, verbatim but for the sources: the 1-minute ETF file, a daily score
    file, and for ``add_context(["VIX", "^GSPC"])`` the CBOE VIX file and the prices' own
    equal-weight market (no S&P index series is in the data; a ticker is refused)."""
    asset_output = tmp_path / "asset_data.parquet"
    context_output = tmp_path / "context_data.parquet"

    prep = DataPreparer()
    prep.add_prices(str(data_root / "intraday_1min_etfs_2023_2025.parquet"), freq="1min")
    prep.add_signals(str(daily_signals), freq="1day", valid_from="market_open")
    prep.add_indicators(["rsi:14", "macd", "atr:14"])  # Auto-computed
    prep.add_context([str(data_root / "vix_daily_cboe.parquet"), "market"])

    prep.validate_and_save(asset_output=asset_output, context_output=context_output)

    asset = pl.read_parquet(asset_output)
    context = pl.read_parquet(context_output)
    raw = pl.read_parquet(data_root / "intraday_1min_etfs_2023_2025.parquet")
    assert asset.height == raw.height == 184_207
    assert {"rsi_14", "macd", "atr_14", "ml"} <= set(asset.columns)
    assert "sma_20" not in asset.columns  # only the indicators asked for
    # bar close = bar start + 1 minute
    assert asset["timestamp"].min() == raw["timestamp"].min().replace(minute=11)
    # MACD = EMA-12 − EMA-26 of the closes, by hand for the first 3 bars of one symbol
    dbb = asset.filter(pl.col("symbol") == "DBB").sort("timestamp").head(3)
    c = dbb["close"].to_list()
    e12, e26 = c[0], c[0]
    for x in c[1:]:
        e12 += 2 / 13 * (x - e12)
        e26 += 2 / 27 * (x - e26)
    assert math.isclose(dbb["macd"][2], e12 - e26, rel_tol=1e-9, abs_tol=1e-12)
    # a day's score is first used at the first bar closing at or after 09:30 New York
    used = asset.filter(pl.col("ml").is_not_null(), pl.col("symbol") == "DBB").head(1)
    ny = used["timestamp"].dt.convert_time_zone("America/New_York")[0]
    assert (ny.hour, ny.minute) >= (9, 30)
    assert {"vix", "context_timestamp"} <= set(context.columns)
    assert context["vix"].null_count() == 0
    assert prep.indicator_columns == ["rsi_14", "macd", "atr_14"]


def test_seeds_002_da012_ticker_context_refused_naming_files(data_root: Path) -> None:
    prep = DataPreparer()
    with pytest.raises(ValueError, match=r"'VIX' is not a file.*never downloaded.*'market'"):
        prep.add_context(["VIX", "^GSPC"])


def test_seeds_002_da012_unknown_indicator_lists_available() -> None:
    with pytest.raises(ValueError, match=r"'rsi:10' is not computed here; available: rsi:14"):
        DataPreparer().add_indicators(["rsi:10"])


def test_seeds_002_da012_validate_and_save_without_prices_says_so(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no prices"):
        DataPreparer().validate_and_save(tmp_path / "a.parquet")


# ------------------------------------------------------------------------------ 000 §5.5

SEEDS_TOP25 = """\
# Top 25 ML Strategy with Volatility-Scaled Stops
name: top25_ml_with_risk
version: "1.0"

data:
  price_data: "sp500_5yr_daily_ohlcv.parquet"
  signals: "scores.parquet"
  features:
    provider: precomputed
    path: "features.parquet"

strategy:
  type: batch_mode
  universe_size: 500
  select_top: 25
  selection_metric: ml_score
  position_sizing:
    method: equal_weight
    max_positions: 25
    pct_per_position: 0.04

risk_rules:
  - type: VolatilityScaledStopLoss
    atr_multiplier: 2.0
    priority: 100

  - type: DynamicTrailingStop
    initial_trail_pct: 0.05
    tighten_rate: 0.001  # 0.1% per bar
    priority: 100

  - type: TimeBasedExit
    max_bars: 60
    priority: 90

  - type: RegimeDependentRule
    regime_source: vix
    high_vol_threshold: 25
    rules:
      high_vol:
        type: VolatilityScaledStopLoss
        atr_multiplier: 1.5  # Tighter in high vol
      low_vol:
        type: VolatilityScaledStopLoss
        atr_multiplier: 2.5  # Wider in low vol

execution:
  commission:
    type: PerShare
    cost: 0.005
  slippage:
    type: SpreadAware
    spread_fraction: 0.5

performance:
  benchmark: SPY
  risk_free_rate: 0.02
"""


def _seeds_raw(**changes: object) -> dict[str, object]:
    raw = yaml.safe_load(SEEDS_TOP25)
    raw.update(changes)
    return raw


@pytest.mark.filterwarnings("ignore:rules .* all set a stop-loss level")
def test_seeds_000_5_5_sections_translate_to_the_schema() -> None:
    """000 §5.5 verbatim (paths aside) but for ``benchmark``: every section maps."""
    cfg = ExperimentConfig.model_validate(
        _seeds_raw(performance={"benchmark": "equal_weight", "risk_free_rate": 0.02})
    )
    assert cfg.data.prices == "sp500_5yr_daily_ohlcv.parquet"
    assert cfg.data.signals.model_dump() == {"path": "scores.parquet", "columns": None}
    assert cfg.data.features == "features.parquet"
    assert (cfg.strategy.type, cfg.strategy.n, cfg.strategy.signal) == ("TopN", 25, "ml_score")
    assert cfg.strategy.weight == 0.04
    assert cfg.reporting.risk_free_rate == 0.02
    rules = [build_rule(spec) for spec in cfg.risk_rules]
    assert rules[1].tighten_per_bar == 0.001 and rules[1].min_trail_pct == 0.001
    assert rules[3].context_column == "vix" and rules[3].above.atr_multiplier == 1.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({}, r"performance\.benchmark: 'SPY'.*equal-weight universe"),
        ({"version": "2.0"}, r"version: '2\.0'"),
        (
            {"strategy": {"select_top": 25, "position_sizing": {"max_positions": 20}}},
            r"max_positions: 20 differs from select_top 25.*MaxPositionsRule",
        ),
        (
            {"strategy": {"select_top": 5, "position_sizing": {"method": "risk_parity"}}},
            r"method: 'risk_parity'; TopN sizes equal weights",
        ),
        ({"reporting": {"risk_free_rate": 0.0}}, r"give 'reporting' only"),
    ],
)
def test_seeds_000_5_5_wrong_translations_refused_naming_ours(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ExperimentConfig.model_validate(_seeds_raw(**change))


def test_seeds_000_5_5_shipped_config_keeps_the_seeds_sections() -> None:
    """configs/top25_ml_with_risk.yaml is written in the seeds' sections and names."""
    raw = yaml.safe_load((REPO_ROOT / "configs" / "top25_ml_with_risk.yaml").read_text())
    assert raw["version"] == "1.0" and "price_data" in raw["data"]
    assert {"select_top", "selection_metric", "position_sizing"} <= set(raw["strategy"])
    assert "performance" in raw and "reporting" not in raw
    cfg = load_config(REPO_ROOT / "configs" / "top25_ml_with_risk.yaml")
    assert cfg.name == "top25_ml_with_risk" and cfg.strategy.n == 25


@pytest.mark.filterwarnings("ignore:rules .* all set a stop-loss level")
def test_seeds_000_5_5_config_runs_end_to_end_through_ml4t_run(
    data_root: Path, tmp_path: Path
) -> None:
    """The shipped seeds config through ``ml4t run``, on 30 symbols and 2016-2017 to keep it
    short (data.symbols and backtest added, universe_size set to match; the seeds'
    sections otherwise untouched)."""
    raw = yaml.safe_load((REPO_ROOT / "configs" / "top25_ml_with_risk.yaml").read_text())
    symbols = sorted(
        pl.read_parquet(data_root / "sp500_5yr_daily_ohlcv.parquet")["symbol"].unique()
    )
    raw["data"]["symbols"] = symbols[:30]
    raw["strategy"]["universe_size"] = 30  # checked against data.symbols
    raw["backtest"] = {"start": "2016-01-01", "end": "2017-12-31"}
    config = tmp_path / "top25_ml_with_risk.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("run", str(config), "--output", str(out))
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    trades = pl.read_parquet(out / "trades.parquet")
    fills = pl.read_parquet(out / "fills.parquet")
    assert metrics["n_trades"] == trades.height > 0
    assert set(trades["exit_reason"]) <= {
        "VolatilityScaledStopLoss",
        "DynamicTrailingStop",
        "TimeBasedExit",
        "strategy",
        "end_of_data",
    }
    # PerShare 0.005 per share, SpreadAware slippage on every fill
    assert (fills["commission"] - 0.005 * fills["quantity"].abs()).abs().max() < 1e-6
    assert (fills["slippage"] > 0).mean() > 0.9
    assert fills["timestamp"].min().year == 2016
