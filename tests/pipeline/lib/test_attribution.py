"""Attribution tables: hand-made trades, the real S&P 500 run, and the information coefficient."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from ml4t_pipeline.lib import attribution as att
from ml4t_pipeline.lib.output import read_manifest
from ml4t_pipeline.runner import run_prices

T0 = datetime(2020, 1, 6, 21, tzinfo=UTC)


def _trades(**columns: list[Any]) -> pl.DataFrame:
    n = len(next(iter(columns.values())))
    base: dict[str, list[Any]] = {
        "trade_id": list(range(n)),
        "exit_reason": ["strategy"] * n,
        "pnl_gross": [0.0] * n,
        "commission": [0.0] * n,
        "slippage": [0.0] * n,
        "bars_held": [1] * n,
        "exit_timestamp": [T0] * n,
    }
    base.update(columns)
    if "pnl_net" not in columns:
        base["pnl_net"] = [
            g - c for g, c in zip(base["pnl_gross"], base["commission"], strict=True)
        ]
    return pl.DataFrame(base, schema_overrides={"exit_timestamp": pl.Datetime("us", "UTC")})


# --- small hand-made cases -----------------------------------------------------------------------


def test_by_exit_reason_hand_values_and_total_row() -> None:
    trades = _trades(
        exit_reason=["strategy", "StopLoss", "strategy", "StopLoss"],
        pnl_gross=[10.0, -5.0, -2.0, -4.0],
        bars_held=[4, 1, 2, 3],
        mfe=[12.0, 1.0, 3.0, 0.0],
        mae=[-1.0, -5.0, -3.0, -4.0],
    )
    table = att.by_exit_reason(trades)
    assert table["exit_reason"].to_list() == ["StopLoss", "strategy", att.TOTAL]
    stop, strat, total = table.rows(named=True)
    assert (stop["n_trades"], stop["win_rate"], stop["pnl_net_total"]) == (2, 0.0, -9.0)
    assert stop["bars_held_mean"] == 2.0 and stop["mae_mean"] == -4.5
    assert (strat["pnl_net_mean"], strat["win_rate"], strat["mfe_mean"]) == (4.0, 0.5, 7.5)
    assert (total["n_trades"], total["pnl_net_total"]) == (4, -1.0)
    assert stop["share_of_pnl"] == pytest.approx(9.0)  # -9 of a -1 total
    assert att.reconcile(table, trades).ok


def test_by_signal_decile_equal_buckets_and_missing_part() -> None:
    scores: list[float | None] = [float(s) for s in range(20)] + [None]
    trades = _trades(entry_score=scores, pnl_gross=[float(s or 0) - 5 for s in scores])
    table = att.by_signal_decile(trades)
    parts = table.filter(pl.col("decile") != att.TOTAL)
    assert parts["decile"].to_list() == [f"D{i:02d}" for i in range(1, 11)] + [att.MISSING]
    assert parts["n_trades"].to_list() == [2] * 10 + [1]
    assert parts.row(0, named=True)["signal_max"] == 1.0
    assert parts.row(9, named=True)["signal_min"] == 18.0
    assert parts.row(9, named=True)["hit_rate"] == 1.0
    result = att.reconcile(table, trades)
    assert result.ok and result.n_parts_trades == 21


def test_by_regime_terciles_from_bar_values_hand_cut_points() -> None:
    states = pl.DataFrame({"vix": [10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 22.0], "return": [0.01] * 7})
    # cut points: linear 1/3 and 2/3 quantiles of 10..22 step 2 -> 14.0 and 18.0
    trades = _trades(entry_vix=[11.0, 14.0, 15.0, 30.0, None], pnl_gross=[1.0, 2.0, 3.0, 4.0, 5.0])
    table = att.by_regime(trades, "vix", portfolio_states=states)
    assert table["regime"].to_list() == [
        "Q1 (<= 14)",
        "Q2 (14, 18]",
        "Q3 (> 18)",
        att.MISSING,
        att.TOTAL,
    ]
    assert table["n_trades"].to_list() == [2, 1, 1, 1, 5]
    assert table["pnl_net_total"].to_list() == [3.0, 3.0, 4.0, 5.0, 15.0]
    assert table["lower"].to_list()[:3] == [None, 14.0, 18.0]
    assert table["n_bars"].to_list()[:3] == [3, 2, 2]
    assert table.row(-1, named=True)["annualised_return"] == pytest.approx(0.01 * 252)
    assert att.reconcile(table, trades).ok


def test_cost_attribution_months_and_identity() -> None:
    trades = _trades(
        exit_timestamp=[T0, T0 + timedelta(days=30), T0 + timedelta(days=31)],
        pnl_gross=[100.0, -40.0, 10.0],
        commission=[1.0, 2.0, 3.0],
        slippage=[0.5, 0.5, 1.0],
    )
    table = att.cost_attribution(trades)
    assert table["month"].to_list() == ["2020-01", "2020-02", att.TOTAL]
    jan, feb, total = table.rows(named=True)
    assert jan["pnl_before_costs"] == 100.5 and jan["pnl_net_total"] == 99.0
    assert feb["n_trades"] == 2 and feb["pnl_before_costs"] == pytest.approx(-28.5)
    assert total["pnl_before_costs"] - total["slippage"] - total["commission"] == pytest.approx(
        total["pnl_net_total"]
    )
    assert total["cost_share"] == pytest.approx(8.0 / 72.0)
    assert att.reconcile(table, trades).ok


def test_cost_attribution_inconsistent_pnl_raises() -> None:
    trades = _trades(pnl_gross=[10.0], commission=[1.0], pnl_net=[8.0])
    with pytest.raises(ValueError, match="pnl_net != pnl_gross - commission"):
        att.cost_attribution(trades)


def test_attribution_null_pnl_raises_naming_row() -> None:
    trades = _trades(pnl_gross=[1.0, 2.0], pnl_net=[1.0, None])
    with pytest.raises(ValueError, match=r"null or non-finite pnl_net: \[\(1, 1, 2?"):
        att.by_exit_reason(trades)


def test_reconciliation_detects_a_missing_trade() -> None:
    trades = _trades(pnl_gross=[1.0, 2.0])
    table = att.by_exit_reason(trades.head(1))
    result = att.reconcile(table, trades)
    assert not result.ok and result.difference == pytest.approx(-2.0)
    assert "MISMATCH" in att.reconciliation_line(result)


def test_forward_returns_anchor_at_first_bar_after_available_at() -> None:
    bars = [T0 + timedelta(days=i) for i in range(4)]
    prices = pl.DataFrame(
        {"timestamp": bars, "symbol": ["A"] * 4, "close": [10.0, 11.0, 12.1, 9.0]}
    )
    signals = pl.DataFrame(
        {
            "timestamp": [bars[0], bars[0]],
            "symbol": ["A", "A"],
            "score": [1.0, 2.0],
            # the second row is only usable after bar 0's close: anchored at bar 1
            "available_at": [bars[0], bars[0] + timedelta(hours=1)],
        }
    )
    out = att.forward_returns(signals, prices, horizon=1)
    assert out["timestamp"].to_list() == [bars[0], bars[1]]
    assert out["forward_return"].to_list() == pytest.approx([0.1, 0.1])
    two = att.forward_returns(signals, prices, horizon=2)
    assert two["forward_return"].to_list() == pytest.approx([0.21, 9.0 / 11.0 - 1.0])


def test_forward_returns_two_rows_at_one_anchor_keep_later_usable_any_input_order() -> None:
    # Arrange: prices in (symbol, timestamp) order, not time order; A's two scores both anchor
    # at bar 1 (the first usable 1 h after bar 0's close, the second at bar 1's close)
    bars = [T0 + timedelta(days=i) for i in range(4)]
    prices = pl.DataFrame(
        {
            "timestamp": bars + bars,
            "symbol": ["A"] * 4 + ["B"] * 4,
            "close": [10.0, 11.0, 12.1, 9.0, 5.0, 6.0, 7.0, 8.0],
        }
    )
    signals = pl.DataFrame(
        {
            "timestamp": [bars[1], bars[0], bars[0]],
            "symbol": ["A", "A", "B"],
            "score": [2.0, 1.0, 3.0],
            "available_at": [bars[1], bars[0] + timedelta(hours=1), bars[0]],
        }
    )

    # Act
    out = att.forward_returns(signals, prices, horizon=1)

    # Assert: B at bar 0 (6/5 - 1), A at bar 1 with the later-usable score 2 (12.1/11 - 1)
    assert out.select("timestamp", "symbol", "score").rows() == [
        (bars[0], "B", 3.0),
        (bars[1], "A", 2.0),
    ]
    assert out["forward_return"].to_list() == pytest.approx([0.2, 0.1])


def test_forward_returns_duplicated_price_rows_refused_naming_them() -> None:
    bars = [T0 + timedelta(days=i) for i in range(3)]
    prices = pl.DataFrame(
        {
            "timestamp": [bars[0], bars[1], bars[2], bars[1], bars[0]],
            "symbol": ["A", "A", "A", "A", "B"],
            "close": [10.0, 11.0, 12.0, 11.5, 5.0],
        }
    )
    signals = pl.DataFrame({"timestamp": [bars[0]], "symbol": ["A"], "score": [1.0]})
    with pytest.raises(ValueError, match=r"prices have 2 duplicated \(timestamp, symbol\) rows"):
        att.forward_returns(signals, prices)
    unique = prices.filter(pl.int_range(pl.len()) != 3)  # same bars, B too: no false alarm
    assert att.forward_returns(signals, unique)["forward_return"].to_list() == pytest.approx([0.1])


def test_information_coefficient_perfect_ranking_is_one() -> None:
    pairs = pl.DataFrame(
        {
            "timestamp": [T0] * 6,
            "score": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "forward_return": [-0.2, -0.1, 0.0, 0.05, 0.3, 0.31],
        }
    )
    ic = att.information_coefficient(pairs)
    assert ic["ic"].to_list() == pytest.approx([1.0])
    few = att.information_coefficient(pairs.head(4))
    assert few["ic"].to_list() == [None]


# --- the real S&P 500 run ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sp500_run(sp500_cli_output: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # `ml4t run configs/sp500_top25.yaml -o <folder>/out` exited 0 in a niced, untraced child
    # started at collection (tests/background.py); copied, as a test writes into the folder
    out = tmp_path_factory.mktemp("sp500_run") / "out"
    shutil.copytree(sp500_cli_output, out)
    trades = pl.read_parquet(out / "trades.parquet")
    states = pl.read_parquet(out / "portfolio_states.parquet")
    signals = pl.read_parquet(out / "signals.parquet")
    prices = run_prices(out, read_manifest(out))
    assert prices is not None
    tables = att.attribute_run(trades, states, signals=signals, prices=prices, horizon=5)
    return {"out": out, "trades": trades, "signals": signals, "prices": prices, "tables": tables}


@pytest.mark.parametrize(
    "table", ["by_exit_reason", "by_signal_decile", "by_regime", "cost_attribution"]
)
def test_attribution_real_sp500_table_reconciles_to_total_net_pnl(
    sp500_run: dict[str, Any], table: str
) -> None:
    trades = sp500_run["trades"]
    frame = sp500_run["tables"][table]
    key = frame.columns[0]
    total_net = float(trades["pnl_net"].sum())
    parts = frame.filter(pl.col(key) != att.TOTAL)
    total_row = frame.filter(pl.col(key) == att.TOTAL)
    assert trades.height > 1000  # a real run, not an empty one
    assert float(parts["pnl_net_total"].sum()) == pytest.approx(total_net, abs=1e-6)
    assert int(parts["n_trades"].sum()) == trades.height
    assert float(total_row["pnl_net_total"][0]) == pytest.approx(total_net, abs=1e-6)
    assert sp500_run["tables"]["reconciliation"][table].ok


def test_attribution_real_sp500_exit_reasons_are_rules_and_strategy(
    sp500_run: dict[str, Any],
) -> None:
    reasons = set(sp500_run["tables"]["by_exit_reason"]["exit_reason"].to_list())
    assert {"strategy", "PriceBasedStopLoss", att.TOTAL} <= reasons
    stops = sp500_run["tables"]["by_exit_reason"].filter(
        pl.col("exit_reason") == "PriceBasedStopLoss"
    )
    assert stops["win_rate"][0] == 0.0  # a 5 % stop-loss exit never closes a long at a gain
    assert sp500_run["tables"]["regime_column"] == "vix"


def test_attribution_real_sp500_writes_parquet_files(sp500_run: dict[str, Any]) -> None:
    written = att.write_attribution(sp500_run["tables"], sp500_run["out"])
    names = {p.name for p in written}
    assert set(att.ATTRIBUTION_FILES.values()) | {"attribution_summary.json"} == names
    back = pl.read_parquet(sp500_run["out"] / "cost_attribution.parquet")
    assert back.equals(sp500_run["tables"]["cost_attribution"])


def _ic_of(signals: pl.DataFrame, prices: pl.DataFrame) -> dict[str, float | int]:
    ic = att.information_coefficient(att.forward_returns(signals, prices, horizon=1))
    return att.ic_summary(ic, 1)


def test_information_coefficient_shuffled_signal_near_zero(sp500_run: dict[str, Any]) -> None:
    rng = np.random.default_rng(7)
    signals = sp500_run["signals"]
    shuffled = signals.with_columns(
        pl.Series("score", rng.permutation(signals["score"].to_numpy()))
    )
    summary = _ic_of(shuffled, sp500_run["prices"])
    assert summary["n_periods"] > 500
    assert abs(summary["ic_mean"]) < 0.01
    assert abs(summary["ic_t_stat"]) < 3.0


def test_information_coefficient_lookahead_signal_clearly_positive(
    sp500_run: dict[str, Any],
) -> None:
    # deliberate look-ahead, only here: the score IS the realised next-bar return plus noise
    prices, signals = sp500_run["prices"], sp500_run["signals"]
    realised = att.forward_returns(signals, prices, horizon=1)
    rng = np.random.default_rng(11)
    noise = rng.normal(0.0, realised["forward_return"].std(), realised.height)
    cheat = realised.select(
        "timestamp",
        "symbol",
        (pl.col("forward_return") + noise).alias("score"),
        pl.col("timestamp").alias("available_at"),
    )
    summary = _ic_of(cheat, prices)
    assert summary["ic_mean"] > 0.3  # 0.52 on the S&P run: noise as large as the signal
    assert summary["ic_t_stat"] > 20.0
    assert summary["ic_positive_share"] > 0.95
