"""The parity matrix (issue 31): fast subset on a small real S&P panel, and the knobs that
explain each remaining gap.

The full matrix (every scenario, 12 symbols x 1,259 bars) runs in ``benchmarks/test_parity.py``;
here a few scenarios run on 4 symbols x 400 bars of ``sp500_5yr_daily_ohlcv.parquet``.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import polars as pl
import pytest

pytest.importorskip("backtrader")
pytest.importorskip("vectorbt")

from ml4t_pipeline.cli import main  # noqa: E402
from ml4t_pipeline.lib.crossval.matrix import (  # noqa: E402
    MATRIX_COLUMNS,
    compare_scenario,
    matrix_markdown,
    net_fills,
    replace_docs_table,
    unexplained_gaps,
)
from ml4t_pipeline.lib.crossval.scenarios import (  # noqa: E402
    ScenarioData,
    catalogue,
    get_scenario,
    load_prices,
    panel_symbols,
    prepare_inputs,
    scenario_data,
)

REQUIRED = {
    "long_only",
    "long_short",
    "stop_loss",
    "take_profit",
    "commission_percent",
    "commission_per_share",
    "slippage_fixed",
    "slippage_percent",
    "trailing_stop",
    "bracket",
    "short_only",
    "short_trailing_stop",
    "trailing_take_profit",
    "trailing_stop_loss",
    "three_rules",
    "stress_1000_bars",
    "limit_entry",
    "stop_entry",
    "volume_cap",
    "time_exit",
    "same_close",
    "target_weights",
    "cash_constrained",
    "topn_stop",
    "topn_take_profit",
    "topn_trailing_stop",
}


@pytest.fixture(scope="module")
def panel(data_root: Path) -> tuple:
    prices = load_prices(data_root)
    return prepare_inputs(prices, panel_symbols(prices, 6), n_bars=500)


def _data(panel: tuple, name: str) -> ScenarioData:
    inputs, volume = panel
    return scenario_data(inputs, volume, get_scenario(name))


def test_catalogue_covers_the_issue_list_with_unique_names() -> None:
    names = [s.name for s in catalogue()]
    assert len(names) == len(set(names))
    assert len(names) >= 16
    assert set(names) >= REQUIRED


@pytest.mark.parametrize(
    "name", ["long_only", "long_short", "stop_loss_take_profit", "commission_per_share"]
)
@pytest.mark.parametrize("framework", ["backtrader", "vectorbt"])
def test_parity_fast_subset_matches_fill_for_fill(panel: tuple, name: str, framework: str) -> None:
    data = _data(panel, name)
    row = compare_scenario(get_scenario(name), data, framework).row
    assert row["fills_ours"] > 20  # the scenario really trades on this panel
    assert (row["missing"], row["extra"], row["price_gaps"]) == (0, 0, 0)
    assert abs(row["final_equity_gap"]) < 0.01
    assert row["status"] == "matched"


@pytest.mark.parametrize(
    "name", ["slippage_fixed", "limit_entry", "volume_cap", "topn_stop_loss_take_profit"]
)
def test_parity_backtrader_native_orders_match(panel: tuple, name: str) -> None:
    row = compare_scenario(get_scenario(name), _data(panel, name), "backtrader").row
    assert row["fills_ours"] > 10
    assert row["status"] == "matched", row


def test_parity_stop_loss_gap_against_from_signals_closes_with_stop_wins(panel: tuple) -> None:
    """VectorBT's from_signals checks stops before the bar's signals: with our default
    ``exit_conflict="open_sell_wins"`` a bar with a queued signal exit that also touches the
    stop differs; the scenario's ``stop_wins`` setting closes the gap."""
    scenario = get_scenario("stop_loss")
    data = _data(panel, "stop_loss")
    honest = compare_scenario(scenario, data, "vectorbt", engine_overrides={}).row
    matched = compare_scenario(scenario, data, "vectorbt").row
    assert honest["price_gaps"] + honest["missing"] + honest["extra"] > 0
    assert matched["status"] == "matched"
    assert "exit_conflict=stop_wins" in matched["preset"]


@pytest.mark.parametrize("framework", ["backtrader", "vectorbt"])
def test_parity_target_weights_gap_closes_with_order_rounding(panel: tuple, framework: str) -> None:
    """Our default ``target_rounding="position"`` floors the target position (a sell one share
    larger); ``ExecutionConfig(target_rounding="order")`` truncates the order as both
    frameworks do."""
    scenario = get_scenario("target_weights")
    data = _data(panel, "target_weights")
    floored = compare_scenario(scenario, data, framework, engine_overrides={}).row
    truncated = compare_scenario(scenario, data, framework).row
    assert floored["status"] == "gap"
    assert floored["price_gaps"] > 0  # sells one share larger: quantities differ
    assert truncated["status"] == "matched"
    assert "target_rounding=order" in truncated["preset"]


@pytest.mark.parametrize("name", ["trailing_stop", "short_trailing_stop"])
def test_parity_trailing_gap_against_vectorbt_closes_without_the_entry_bar(
    panel: tuple, name: str
) -> None:
    """VectorBT's ``sl_trail`` high-water mark starts at the entry fill and skips the entry
    bar's high; ``DynamicTrailingStop(include_entry_bar=False)`` matches it fill for fill."""
    scenario = get_scenario(name)
    data = _data(panel, name)
    default = compare_scenario(scenario, data, "vectorbt", trail_settings={}).row
    matched = compare_scenario(scenario, data, "vectorbt").row
    assert default["status"] == "gap"
    assert matched["status"] == "matched", matched
    assert matched["fills_ours"] > 20 and abs(matched["final_equity_gap"]) < 0.01
    assert "include_entry_bar=False" in matched["preset"]


@pytest.mark.parametrize("name", ["trailing_stop", "short_trailing_stop", "topn_trailing_stop"])
def test_parity_trailing_gap_against_backtrader_closes_when_trailing_on_closes(
    panel: tuple, name: str
) -> None:
    """Backtrader's ``StopTrail`` ratchets on each close from the close of the fill bar;
    ``DynamicTrailingStop(trail_on="close")`` matches it fill for fill."""
    scenario = get_scenario(name)
    data = _data(panel, name)
    default = compare_scenario(scenario, data, "backtrader", trail_settings={}).row
    matched = compare_scenario(scenario, data, "backtrader").row
    assert default["status"] == "gap"
    assert matched["status"] == "matched", matched
    assert matched["fills_ours"] > 20 and abs(matched["final_equity_gap"]) < 0.01
    assert "trail_on=close" in matched["preset"]


def test_parity_same_close_gap_against_backtrader_closes_with_second_bar(panel: tuple) -> None:
    """Backtrader's cheat-on-close fill is notified a bar late, so its stop is first checked
    two bars after the entry close: ``stop_activation="second_bar"``."""
    scenario = get_scenario("same_close")
    data = _data(panel, "same_close")
    default = compare_scenario(scenario, data, "backtrader", engine_overrides={}).row
    matched = compare_scenario(scenario, data, "backtrader").row
    assert default["status"] == "gap"
    assert default["knob"].startswith("cheat-on-close timing")
    assert matched["status"] == "matched", matched
    assert "stop_activation=second_bar" in matched["preset"]


@pytest.mark.parametrize("name", ["trailing_stop_loss", "three_rules"])
def test_parity_fixed_and_trailing_stop_gap_is_backtraders_oco_order(
    panel: tuple, name: str
) -> None:
    """With a fixed stop beside the trailing one, the only differences left are bars on which
    Backtrader filled its first-submitted fixed ``Stop`` at a lower price than the tighter
    trailing level we fill (same bar, same quantity); a Backtrader strategy that cancels the
    fixed stop once the trailing level passes it matches every fill."""
    from ml4t_pipeline.lib.crossval.compare import compare_fills
    from ml4t_pipeline.lib.crossval.parity_backtrader import run_backtrader_scenario

    scenario = get_scenario(name)
    data = _data(panel, name)
    result = compare_scenario(scenario, data, "backtrader")
    assert result.row["knob"].startswith("OCO sibling order")
    assert "trail_on=close" in result.row["preset"]
    assert result.ours is not None and result.theirs is not None
    cmp = compare_fills(net_fills(result.ours.fills), net_fills(result.theirs.fills))
    assert (cmp.n_missing, cmp.n_extra) == (0, 0)
    bad = cmp.matched.filter(~pl.col("ok"))
    assert bad.height == result.row["price_gaps"] > 0
    assert (bad["quantity_ours"] == bad["quantity_theirs"]).all()
    assert (bad["quantity_ours"] < 0).all() and (bad["price_ours"] > bad["price_theirs"]).all()
    theirs = result.theirs.fills.join(bad.select("timestamp", "symbol"), on=["timestamp", "symbol"])
    assert set(theirs["reason"]) == {"stop"}  # the fixed Stop, not the StopTrail
    tighter = run_backtrader_scenario(scenario, data, drop_looser_stop=True)
    assert compare_fills(net_fills(result.ours.fills), net_fills(tighter.fills)).identical
    assert abs(result.ours.final_equity - tighter.final_equity) < 0.01


def test_parity_bracket_gap_against_vectorbt_is_a_stop_above_the_fill(data_root: Path) -> None:
    """MSI 2014-01-22 opens below the bracket's absolute stop: ours (and Backtrader) exit at
    that level, above the fill; VectorBT's ``sl_stop`` cannot be negative, so the driver
    clips it to the fill. That one trade is the whole gap."""
    prices = load_prices(data_root)
    inputs, volume = prepare_inputs(prices, ["MSI"], n_bars=260)
    scenario = get_scenario("bracket")
    result = compare_scenario(scenario, scenario_data(inputs, volume, scenario), "vectorbt")
    row = result.row
    assert (row["missing"], row["extra"], row["price_gaps"]) == (1, 1, 0)
    assert row["knob"].startswith("not expressible in VectorBT")
    from ml4t_pipeline.lib.crossval.compare import compare_fills

    assert result.ours is not None and result.theirs is not None
    extra = compare_fills(net_fills(result.ours.fills), net_fills(result.theirs.fills)).extra
    fills = result.ours.fills.sort("timestamp")
    k = fills["timestamp"].to_list().index(extra["timestamp"][0])
    entry, stop = fills.row(k - 1, named=True), fills.row(k, named=True)
    assert stop["reason"] == "stop" and entry["quantity"] > 0
    assert stop["price"] > entry["price"]  # the stop level lies above the entry fill


def test_parity_not_expressed_rows_name_their_reason(panel: tuple) -> None:
    row = compare_scenario(get_scenario("limit_entry"), _data(panel, "limit_entry"), "vectorbt")
    assert row.ours is None and row.theirs is None
    assert row.row["status"] == "not_expressed"
    assert "limit" in row.row["knob"]


def test_net_fills_sums_a_bar_and_weights_its_price() -> None:
    ts = dt.datetime(2020, 1, 2, 21, tzinfo=dt.UTC)
    fills = pl.DataFrame(
        {
            "timestamp": [ts, ts, ts],
            "symbol": ["A", "A", "B"],
            "quantity": [-100.0, -300.0, 50.0],
            "price": [10.0, 11.0, 20.0],
            "commission": [1.0, 2.0, 0.5],
        }
    )
    net = net_fills(fills)
    assert net.height == 2
    a = net.filter(pl.col("symbol") == "A").row(0, named=True)
    assert a["quantity"] == -400.0
    assert a["price"] == pytest.approx((100 * 10 + 300 * 11) / 400)
    assert a["commission"] == 3.0


def _table(status: str, knob: str) -> pl.DataFrame:
    row = {c: None for c in MATRIX_COLUMNS}
    row.update(
        scenario="s",
        framework="backtrader",
        status=status,
        driver="independent",
        knob=knob,
        fills_ours=3,
        fills_theirs=3,
        matched=3,
        missing=0,
        extra=0,
        price_gaps=1,
        final_equity_gap=-1.5,
    )
    return pl.DataFrame([row])


def test_unexplained_gaps_lists_only_gaps_without_a_setting() -> None:
    assert unexplained_gaps(_table("gap", "unexplained")).height == 1
    assert unexplained_gaps(_table("gap", "trailing reference price")).height == 0
    assert unexplained_gaps(_table("matched", "")).height == 0


def test_replace_docs_table_rewrites_only_between_markers(tmp_path: Path) -> None:
    page = tmp_path / "parity.md"
    page.write_text("intro\n<!-- parity-matrix:start -->\nold\n<!-- parity-matrix:end -->\nend\n")
    replace_docs_table(page, _table("gap", "a knob"))
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("end\n")
    assert "old" not in text
    assert matrix_markdown(_table("gap", "a knob")) in text
    bare = tmp_path / "bare.md"
    bare.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        replace_docs_table(bare, _table("gap", "k"))


def test_cli_parity_writes_the_matrix_parquet(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "matrix.parquet"
    code = main(
        [
            "parity",
            "--scenarios",
            "long_only,limit_entry",
            "--symbols",
            "3",
            "--bars",
            "300",
            "--data-root",
            str(data_root),
            "--output",
            str(out),
        ]
    )
    assert code == 0
    table = pl.read_parquet(out)
    assert tuple(table.columns) == MATRIX_COLUMNS
    assert table.height == 4
    assert table.filter(pl.col("scenario") == "long_only")["status"].to_list() == [
        "matched",
        "matched",
    ]
    assert main(["parity", "--scenarios", "nope", "--output", str(out)]) == 2


def test_catalogue_scenarios_of_an_experiment_name_each_feature() -> None:
    from ml4t_pipeline.config import ExperimentConfig
    from ml4t_pipeline.defs.assets_validation import catalogue_scenarios

    cfg = ExperimentConfig.model_validate(
        {
            "name": "x",
            "strategy": {"n": 5},
            "risk_rules": [
                {"type": "PriceBasedStopLoss", "stop_pct": 0.05},
                {"type": "DynamicTrailingStop", "initial_trail_pct": 0.05},
            ],
            "execution": {"commission": {"type": "PerShare", "cost": 0.005}},
        }
    )
    run_here, coverage = catalogue_scenarios(cfg)
    assert run_here == ["topn_stop"]
    by_key = {(r["feature"], r["framework"]): r for r in coverage}
    assert by_key[("topn", "vectorbt")]["run_here"]
    trailing = by_key[("trailing_stop", "backtrader")]
    assert trailing["scenario"] == "trailing_stop" and trailing["expressed"]
    assert not trailing["run_here"]
    assert trailing["note"].startswith("trailing reference price")
    assert by_key[("commission_per_share", "vectorbt")]["scenario"] == "commission_per_share"


def test_zipline_expresses_only_scenarios_without_levels_or_cash_limits() -> None:
    from ml4t_pipeline.lib.crossval.parity_zipline import ZIPLINE_SCENARIOS, zipline_reason

    assert zipline_reason(get_scenario("long_only")) is None
    assert "close" in (zipline_reason(get_scenario("stop_loss")) or "")
    assert "cash" in (zipline_reason(get_scenario("cash_constrained")) or "")
    assert {s.name for s in catalogue()} >= ZIPLINE_SCENARIOS


def test_parity_zipline_row_without_its_venv_is_not_expressed(
    panel: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ML4T_ZIPLINE_PYTHON", raising=False)
    row = compare_scenario(get_scenario("long_only"), _data(panel, "long_only"), "zipline").row
    assert row["status"] == "not_expressed"
    assert "--zipline-python" in row["knob"]


@pytest.mark.skipif(
    not Path(os.environ.get("ML4T_ZIPLINE_PYTHON", "/nonexistent")).exists(),
    reason="needs a zipline-reloaded venv in $ML4T_ZIPLINE_PYTHON (pandas<3 pin)",
)
def test_parity_zipline_long_short_matches_with_close_fills(panel: tuple) -> None:
    row = compare_scenario(get_scenario("long_short"), _data(panel, "long_short"), "zipline").row
    assert row["fills_ours"] > 20
    assert row["status"] == "matched", row
