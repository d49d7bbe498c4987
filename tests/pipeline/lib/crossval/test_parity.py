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
    floored = compare_scenario(
        get_scenario("target_weights"), _data(panel, "target_weights"), framework
    ).row
    truncated = compare_scenario(
        get_scenario("target_weights_order_rounding"),
        _data(panel, "target_weights_order_rounding"),
        framework,
    ).row
    assert floored["status"] == "gap"
    assert floored["price_gaps"] > 0  # sells one share larger: quantities differ
    assert floored["knob"].startswith("target rounding")
    assert truncated["status"] == "matched"


def test_parity_trailing_gap_closes_when_vectorbt_counts_the_entry_bar(panel: tuple) -> None:
    from ml4t_pipeline.lib.crossval.compare import compare_fills
    from ml4t_pipeline.lib.crossval.parity_vectorbt import run_vectorbt_scenario
    from ml4t_pipeline.lib.crossval.scenarios import run_ml4t_scenario

    scenario = get_scenario("trailing_stop")
    data = _data(panel, "trailing_stop")
    row = compare_scenario(scenario, data, "vectorbt").row
    assert row["status"] == "gap"
    assert row["knob"].startswith("trailing high-water mark")
    ours = run_ml4t_scenario(scenario, data, "vectorbt")
    theirs = run_vectorbt_scenario(scenario, data, trail_includes_entry_bar=True)
    cmp = compare_fills(net_fills(ours.fills), net_fills(theirs.fills))
    assert cmp.identical
    assert abs(ours.final_equity - theirs.final_equity) < 0.01


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


@pytest.mark.parametrize("name", ["trailing_stop", "short_trailing_stop"])
def test_parity_trailing_gap_closes_when_backtrader_trails_on_highs(
    panel: tuple, name: str
) -> None:
    """Backtrader's StopTrail ratchets on closes; moving a plain Stop to the best high (low)
    since entry after every bar reproduces our fills exactly."""
    from ml4t_pipeline.lib.crossval.compare import compare_fills
    from ml4t_pipeline.lib.crossval.parity_backtrader import run_backtrader_scenario
    from ml4t_pipeline.lib.crossval.scenarios import run_ml4t_scenario

    scenario = get_scenario(name)
    data = _data(panel, name)
    row = compare_scenario(scenario, data, "backtrader").row
    assert row["status"] == "gap"
    assert row["knob"].startswith("trailing reference price")
    ours = run_ml4t_scenario(scenario, data, "backtrader")
    theirs = run_backtrader_scenario(scenario, data, trail_on_highs=True)
    cmp = compare_fills(net_fills(ours.fills), net_fills(theirs.fills))
    assert cmp.identical
    assert abs(ours.final_equity - theirs.final_equity) < 0.01


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
