"""The two look-ahead checks fail on violating data.

``signals_available_before_use`` (on ``market_panel``, and its monthly twin on
``prepared_panel``) looks every used signal up again in the signals table, so a panel built
with a look-ahead join fails it even when the panel's own ``signal_available_at`` column says
nothing is wrong. ``trades_entered_after_signal_available`` (on ``trades``) fails for a trade
decided before its signal was available, at a bar without a signal, or entered before its
decision. The frames are hand-built: two symbols, three daily bars.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from ml4t_pipeline.defs import assets_backtest, assets_data
from ml4t_pipeline.defs.assets_monthly import EXPERIMENTS, prepared_panel
from ml4t_pipeline.defs.metadata import table_text
from ml4t_pipeline.defs.partitions import experiments_partitions
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.defs.storage_metadata import VERDICT_KEY
from ml4t_pipeline.lib import panel as panel_lib
from ml4t_pipeline.lib import timing

DAY0 = datetime(2016, 5, 2, 20, tzinfo=UTC)  # 16:00 New York
BARS = [DAY0 + timedelta(days=i) for i in range(3)]
KEY = "lab"
CONFIG = """\
name: lab
data:
  prices: demo
  max_fill_bars: 0
strategy: {type: TopN, signal: score, n: 1, rebalance_every: 1}
execution: {initial_cash: 100000}
"""
UTC_US = pl.Datetime("us", "UTC")


def _prices() -> pl.DataFrame:
    rows = [
        {"timestamp": t, "symbol": s, "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5}
        for t in BARS
        for s in ("A", "B")
    ]
    return pl.DataFrame(rows, schema_overrides={"timestamp": UTC_US}).with_columns(
        pl.col("symbol").cast(pl.Categorical), volume=pl.lit(1000.0)
    )


def _features() -> pl.DataFrame:
    return _prices().select("timestamp", "symbol", ret_1=pl.lit(0.01))


def _signals(delay: timedelta = timedelta(0)) -> pl.DataFrame:
    """A score per bar and symbol, available ``delay`` after its bar's close."""
    return pl.DataFrame(
        {
            "timestamp": [t for t in BARS for _ in ("A", "B")],
            "symbol": ["A", "B"] * len(BARS),
            "score": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        },
        schema_overrides={"timestamp": UTC_US},
    ).with_columns(available_at=pl.col("timestamp") + delay)


def _lookahead_panel(
    prices: pl.DataFrame,
    features: pl.DataFrame,
    signals: pl.DataFrame,
    max_staleness: Any = None,
    max_fill_bars: int | None = None,
    *,
    keep_status: bool = False,
) -> pl.DataFrame:
    """A broken panel builder: each bar gets the signal stamped at that bar, whatever its
    ``available_at``, and reports the bar's close as the signal's availability."""
    key = ["timestamp", "symbol"]
    right = signals.select(
        "timestamp",
        pl.col("symbol").cast(pl.String),
        "score",
        pl.col("timestamp").alias("signal_timestamp"),
    )
    out = (
        prices.with_columns(pl.col("symbol").cast(pl.String))
        .join(features.with_columns(pl.col("symbol").cast(pl.String)), on=key, how="left")
        .join(right, on=key, how="left")
        .with_columns(
            pl.col("signal_timestamp").alias("signal_available_at"),
            pl.col("symbol").cast(pl.Categorical),
        )
    )
    return out.with_columns(pl.lit("fresh").alias("signal_status")) if keep_status else out


@pytest.fixture
def experiments(tmp_path: Path) -> ExperimentsResource:
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / f"{KEY}.yaml").write_text(CONFIG)
    return ExperimentsResource(configs_dir=str(configs))


def _context(partition_key: Any = KEY) -> Any:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(EXPERIMENTS, [KEY])
    return dg.build_asset_context(partition_key=partition_key, instance=instance)


def _results(events: Any) -> tuple[dict[str, dg.AssetCheckResult], dict[str, Any]]:
    checks: dict[str, dg.AssetCheckResult] = {}
    meta: dict[str, Any] = {}
    for event in events:
        if isinstance(event, dg.AssetCheckResult):
            checks[str(event.check_name)] = event
        elif isinstance(event, dg.Output):
            meta = {k: getattr(v, "value", v) for k, v in event.metadata.items()}
    return checks, meta


# ---------------------------------------------------------------------------------------------
# signals_available_before_use


def test_signals_available_before_use_honest_panel_passes() -> None:
    signals = _signals(timedelta(days=1))
    panel = panel_lib.build_market_panel(_prices(), _features(), signals, max_fill_bars=0)
    result = assets_data.signals_available_before_use(panel, signals)
    assert result.passed and result.metadata["n_violations"].value == 0


def test_signals_available_before_use_signal_used_before_available_fails() -> None:
    signals = _signals(timedelta(days=1))  # each score usable from the next bar only
    panel = _lookahead_panel(_prices(), _features(), signals)
    # the panel's own column cannot show it: it claims every signal was available at its bar
    own = panel.select("timestamp", "symbol", available_at="signal_available_at")
    assert timing.check_no_lookahead(own).height == 0
    result = assets_data.signals_available_before_use(panel, signals)
    assert not result.passed
    assert result.severity == dg.AssetCheckSeverity.ERROR
    assert result.metadata["n_violations"].value == panel.height  # every bar looks ahead
    assert "2016-05-03 20:00:00+00:00" in table_text(result.metadata["first_offending_rows"])


def test_signals_available_before_use_signal_missing_from_table_fails() -> None:
    signals = _signals()
    panel = panel_lib.build_market_panel(_prices(), _features(), signals, max_fill_bars=0)
    result = assets_data.signals_available_before_use(panel, signals.filter(pl.col("score") != 6.0))
    assert not result.passed and result.metadata["n_violations"].value == 1


def test_market_panel_asset_with_lookahead_join_fails_check_and_refuses_value(
    experiments: ExperimentsResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    signals = _signals(timedelta(days=1))
    honest, meta = _results(
        assets_data.market_panel(_context(), experiments, _prices(), _features(), signals)
    )
    assert honest["signals_available_before_use"].passed and meta[VERDICT_KEY] is True
    monkeypatch.setattr(panel_lib, "build_market_panel", _lookahead_panel)
    checks, meta = _results(
        assets_data.market_panel(_context(), experiments, _prices(), _features(), signals)
    )
    assert not checks["signals_available_before_use"].passed
    assert checks["signals_available_before_use"].metadata["n_violations"].value == 6
    assert meta[VERDICT_KEY] is False  # the IO manager keeps the last passing panel
    assert meta["ml4t/failed_checks"] == ["signals_available_before_use"]


def test_prepared_panel_month_with_lookahead_join_fails_check(
    experiments: ExperimentsResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    signals = _signals(timedelta(days=1))
    key = dg.MultiPartitionKey({EXPERIMENTS: KEY, "month": "2016-05-01"})

    def month(**patch: Any) -> dict[str, dg.AssetCheckResult]:
        checks, _ = _results(
            prepared_panel(
                _context(key),
                experiments,
                _prices().lazy(),
                _features().lazy(),
                signals.lazy(),
            )
        )
        return checks

    assert month()["month_signals_available_before_use"].passed
    monkeypatch.setattr(panel_lib, "build_market_panel", _lookahead_panel)
    failed = month()["month_signals_available_before_use"]
    assert not failed.passed and failed.metadata["n_violations"].value == 6


# ---------------------------------------------------------------------------------------------
# trades_entered_after_signal_available


def _trades(**changes: Any) -> pl.DataFrame:
    """One honest long trade in A: decided at bar 0's close, entered at bar 1, exited at 2."""
    row = {
        "trade_id": 1,
        "symbol": "A",
        "side": "long",
        "decision_timestamp": BARS[0],
        "entry_timestamp": BARS[1],
        "exit_timestamp": BARS[2],
        "entry_price": 10.0,
        "exit_price": 10.5,
        "quantity": 100.0,
        "commission": 2.0,
        "slippage": 0.0,
        "exit_reason": "strategy",
        "pnl_gross": 50.0,
        "pnl_net": 48.0,
        "return_pct": 0.048,
        "bars_held": 1,
        "mfe": 50.0,
        "mae": -100.0,
    } | changes
    return pl.DataFrame(
        [row],
        schema_overrides={
            c: UTC_US for c in ("decision_timestamp", "entry_timestamp", "exit_timestamp")
        },
    )


def _trades_check(
    experiments: ExperimentsResource, trades: pl.DataFrame, signals: pl.DataFrame
) -> dict[str, dg.AssetCheckResult]:
    panel = panel_lib.build_market_panel(_prices(), _features(), signals, max_fill_bars=0)
    checks, _ = _results(
        assets_backtest.trades(_context(), experiments, {"trades": trades}, panel, signals)
    )
    return checks


def test_trades_entered_after_signal_available_honest_trade_passes(
    experiments: ExperimentsResource,
) -> None:
    checks = _trades_check(experiments, _trades(), _signals())
    assert checks["trades_entered_after_signal_available"].passed
    assert checks["trades_match_schema"].passed


@pytest.mark.parametrize(
    ("trade", "delay", "why"),
    [
        # the score of bar 0 becomes available only at bar 1's close: deciding at bar 0 peeks
        (_trades(), timedelta(days=1), "decided before its signal was available"),
        # B at bar 0, with scores available a day late: no signal is visible at the decision
        (_trades(symbol="B"), timedelta(days=1), "decided at a bar without a visible signal"),
        # entered at bar 0 although decided at bar 1's close
        (
            _trades(decision_timestamp=BARS[1], entry_timestamp=BARS[0], exit_timestamp=BARS[2]),
            timedelta(0),
            "entered before its decision",
        ),
    ],
    ids=["decision_before_available", "no_signal_at_decision", "entry_before_decision"],
)
def test_trades_entered_after_signal_available_violation_fails(
    experiments: ExperimentsResource, trade: pl.DataFrame, delay: timedelta, why: str
) -> None:
    check = _trades_check(experiments, trade, _signals(delay))[
        "trades_entered_after_signal_available"
    ]
    assert not check.passed, why
    assert check.metadata["n_violations"].value == 1
    listed = check.metadata["first_offending_rows"]  # a table the UI shows and sorts
    assert [record.data["trade_id"] for record in listed.records] == [1]


def test_experiments_partitions_are_the_checks_partitions() -> None:
    assert assets_data.market_panel.partitions_def == experiments_partitions
