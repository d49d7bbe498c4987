"""Point-in-time universe (``data.universe``): membership spells joined as of each bar's New York
session date, the ranked signal masked outside membership, and the blocking check
``entries_inside_universe`` naming any entry decided outside it."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import polars as pl
import pytest

import engine
from ml4t_pipeline import DataPreparer
from ml4t_pipeline.config import ExperimentConfig
from ml4t_pipeline.defs.assets_backtest import _universe_check
from ml4t_pipeline.lib import universe
from ml4t_pipeline.lib.io import to_prices_contract
from tests.conftest import REPO_ROOT

DATA_ROOT = Path(os.environ.get("ML4T_DATA_ROOT", "../shared/data"))
SP500 = DATA_ROOT / "sp500_5yr_daily_ohlcv.parquet"
MEMBERSHIP = DATA_ROOT / "sp500_membership_1996_2025.parquet"
RENAMES = {"PCLN": "BKNG", "CBG": "CBRE", "HCN": "WELL", "DPS": "KDP", "LUK": "JEF"}
real_data = pytest.mark.skipif(
    not (SP500.is_file() and MEMBERSHIP.is_file()), reason=f"real data not under {DATA_ROOT}"
)


def _membership(tmp_path: Path, rows: list[tuple[str, str, str | None]]) -> Path:
    path = tmp_path / "members.parquet"
    pl.DataFrame(
        {
            "symbol": [r[0] for r in rows],
            "start_date": [dt.date.fromisoformat(r[1]) for r in rows],
            "end_date": [dt.date.fromisoformat(r[2]) if r[2] else None for r in rows],
        },
        schema={"symbol": pl.String, "start_date": pl.Date, "end_date": pl.Date},
    ).write_parquet(path)
    return path


def _bars(symbol_days: list[tuple[str, dt.date]]) -> pl.DataFrame:
    raw = pl.DataFrame(
        {
            "timestamp": [d for _, d in symbol_days],
            "symbol": [s for s, _ in symbol_days],
            **{c: [10.0] * len(symbol_days) for c in ("open", "high", "low", "close")},
            "volume": [1e5] * len(symbol_days),
        }
    )
    return to_prices_contract(raw, sort_rows=True)


def test_in_universe_flags_two_spells_start_and_end_inclusive(tmp_path: Path) -> None:
    # A: member 2013-05-01..2013-05-02 and again from 2013-05-07 (open-ended); B: never.
    path = _membership(tmp_path, [("A", "2013-05-01", "2013-05-02"), ("A", "2013-05-07", None)])
    members = universe.load_membership(path)
    days = [dt.date(2013, 4, 30), *(dt.date(2013, 5, d) for d in (1, 2, 3, 6, 7, 8))]
    bars = _bars([("A", d) for d in days] + [("B", days[1])])
    flags = bars.with_columns(universe.in_universe_flags(bars, members))
    got = {
        (r["symbol"], r["timestamp"].date()): r["in_universe"] for r in flags.iter_rows(named=True)
    }
    assert got == {
        ("A", dt.date(2013, 4, 30)): False,  # before the first spell
        ("A", dt.date(2013, 5, 1)): True,  # start date inclusive: known at its start
        ("A", dt.date(2013, 5, 2)): True,  # end date inclusive
        ("A", dt.date(2013, 5, 3)): False,  # between spells
        ("A", dt.date(2013, 5, 6)): False,
        ("A", dt.date(2013, 5, 7)): True,  # second spell
        ("A", dt.date(2013, 5, 8)): True,  # null end: still a member
        ("B", dt.date(2013, 5, 1)): False,  # no spell at all
    }


def test_mask_outside_universe_nulls_ranked_column_only(tmp_path: Path) -> None:
    members = universe.load_membership(_membership(tmp_path, [("A", "2013-05-02", None)]))
    bars = _bars([("A", dt.date(2013, 5, 1)), ("A", dt.date(2013, 5, 2))]).with_columns(
        pl.Series("score", [1.0, 2.0]), pl.Series("other", [5.0, 6.0])
    )
    masked = universe.mask_outside_universe(bars, members, ["score"])
    assert masked["score"].to_list() == [None, 2.0]
    assert masked["other"].to_list() == [5.0, 6.0]
    assert masked[universe.IN_UNIVERSE].to_list() == [0.0, 1.0]
    assert masked.height == bars.height


def test_load_membership_overlapping_spells_refused_naming_them(tmp_path: Path) -> None:
    path = _membership(tmp_path, [("A", "2013-01-01", "2013-06-30"), ("A", "2013-06-01", None)])
    with pytest.raises(ValueError, match=r"1 spells start before.*'symbol': 'A'"):
        universe.load_membership(path)


def test_load_membership_rename_to_unknown_symbol_refused(tmp_path: Path) -> None:
    path = _membership(tmp_path, [("BKNG", "2009-11-06", None)])
    assert universe.load_membership(path, {"PCLN": "BKNG"})["symbol"].to_list() == ["PCLN"]
    with pytest.raises(ValueError, match="ZZZZ"):
        universe.load_membership(path, {"PCLN": "ZZZZ"})


@pytest.fixture(scope="module")
def sp500_run() -> dict[str, object]:
    """Top-10 by 20-bar return on every 5th S&P symbol (101), with and without the mask."""
    raw = pl.read_parquet(SP500)
    symbols = sorted(raw["symbol"].unique().to_list())[::5]
    prep = (
        DataPreparer(raw.filter(pl.col("symbol").is_in(symbols)))
        .add_features()
        .validate(invalid_rows="quarantine")
    )
    members = universe.load_membership(MEMBERSHIP, RENAMES)
    panel = prep.to_panel()
    out: dict[str, object] = {"members": members}
    for name, frame in (
        ("masked", universe.mask_outside_universe(panel, members, ["ret_20"])),
        ("unmasked", panel),
    ):
        data = engine.MarketData.from_frame(
            frame, signal_columns=[], indicator_columns=prep.indicator_columns
        )
        out[name] = engine.BacktestEngine(
            data,
            engine.TopNStrategy("ret_20", n=10, rebalance_every=5),
            config=engine.ExecutionConfig(initial_cash=1_000_000.0),
        ).run()
    return out


@real_data
def test_entries_outside_universe_sp500_masked_run_has_none(sp500_run) -> None:
    masked, unmasked = sp500_run["masked"], sp500_run["unmasked"]
    members = sp500_run["members"]
    assert masked.trades.height > 500
    assert universe.entries_outside_universe(masked.trades, members).height == 0
    # Without the mask the same strategy buys stocks before they joined the index.
    outside = universe.entries_outside_universe(unmasked.trades, members)
    assert outside.height > 0


@real_data
def test_entries_inside_universe_check_fails_naming_a_mutated_entry(
    sp500_run, tmp_path: Path
) -> None:
    cfg = ExperimentConfig.model_validate(
        {
            "name": "pit",
            "data": {
                "prices": SP500.name,
                "universe": {"membership": MEMBERSHIP.name, "renames": RENAMES},
            },
        }
    )
    trades = sp500_run["masked"].trades
    passed = _universe_check(cfg, trades, DATA_ROOT)
    assert passed.passed and passed.metadata["n_violations"].value == 0
    # Mutation: an INCY entry decided on 2013-03-01; INCY joined the index on 2017-02-28.
    first = trades.head(1).with_columns(
        pl.lit("INCY").alias("symbol"),
        pl.lit(dt.datetime(2013, 3, 1, 21, tzinfo=dt.UTC)).alias("decision_timestamp"),
        pl.lit(10**6, dtype=trades.schema["trade_id"]).alias("trade_id"),
    )
    failed = _universe_check(cfg, pl.concat([trades, first]), DATA_ROOT)
    assert not failed.passed
    assert failed.metadata["n_violations"].value == 1
    assert "INCY" in str(failed.metadata["first_offending_rows"].value)
    assert "1000000" in str(failed.metadata["first_offending_rows"].value)


@real_data
def test_survivorship_gap_sp500_counts_members_without_prices() -> None:
    prices = to_prices_contract(pl.read_parquet(SP500))
    gap = universe.survivorship_gap(prices, universe.load_membership(MEMBERSHIP, RENAMES))
    # The data README: 119 members of 2013-02-08..2018-02-07 have no prices; 5 of them are the
    # price file's renamed tickers mapped above, so 114 remain; WYN is left unmatched.
    assert len(gap["members_without_prices"]) == 114
    assert gap["unmatched_symbols"] == ["WYN"]
    by_year = gap["by_year"]
    assert by_year["year"].to_list() == [2013, 2014, 2015, 2016, 2017, 2018]
    # Survivorship: the further back, the more of the index the file cannot see.
    shares = by_year["unseen_share"].to_list()
    assert shares == sorted(shares, reverse=True)
    assert 0.0 < gap["unseen_share"] < 0.5


def test_in_universe_flags_unsorted_bars_keep_their_order(tmp_path: Path) -> None:
    members = universe.load_membership(_membership(tmp_path, [("A", "2013-05-02", None)]))
    bars = _bars(
        [("A", dt.date(2013, 5, 1)), ("A", dt.date(2013, 5, 2)), ("B", dt.date(2013, 5, 2))]
    )
    shuffled = bars[[2, 1, 0]]
    assert universe.in_universe_flags(shuffled, members).to_list() == [False, True, False]


def _leaver_panel() -> pl.DataFrame:
    """A and B rise daily; B leaves the index after 2013-05-02 (its last member day)."""
    days = [dt.date(2013, 4, d) for d in (29, 30)] + [dt.date(2013, 5, d) for d in (1, 2, 3, 6, 7)]
    bars = _bars([(s, d) for d in days for s in ("A", "B")])
    return bars.with_columns(
        pl.when(pl.col("symbol") == "A").then(1.0).otherwise(2.0).alias("score"),
        (pl.col("close") + pl.int_range(pl.len()).cast(pl.Float64) * 0.01).alias("close"),
    )


@pytest.mark.parametrize(
    ("on_exit", "b_exit_day", "reason"),
    [("hold", None, None), ("close_next_open", dt.date(2013, 5, 6), "ExitOutsideUniverse")],
)
def test_on_exit_universe_leaver_held_or_closed_next_open(
    tmp_path: Path, on_exit: str, b_exit_day: dt.date | None, reason: str | None
) -> None:
    members = universe.load_membership(
        _membership(tmp_path, [("A", "2013-01-01", None), ("B", "2013-01-01", "2013-05-02")])
    )
    panel = universe.mask_outside_universe(_leaver_panel(), members, ["score"])
    rules = [universe.ExitOutsideUniverse()] if on_exit == "close_next_open" else []
    bt = engine.BacktestEngine(
        engine.MarketData.from_frame(
            panel, signal_columns=["score"], indicator_columns=[universe.IN_UNIVERSE]
        ),
        engine.TopNStrategy("score", n=2, rebalance_every=100),  # bought on day 1, never rebalanced
        risk_manager=engine.RiskManager(rules) if rules else None,
        config=engine.ExecutionConfig(initial_cash=100_000.0, close_at_end=False),
    )
    if rules:
        assert bt.compiled_reason is not None  # a pipeline rule: run in the Python loop
    result = bt.run()
    b_trades = result.trades.filter(pl.col("symbol") == "B")
    if b_exit_day is None:
        assert b_trades.height == 0  # still held: no closed trade
    else:
        row = b_trades.row(0, named=True)
        # Thursday 2 May is B's last member day; Friday 3 May's bar is the first outside, so
        # the exit is decided at its close and filled at Monday 6 May's open.
        assert row["exit_reason"] == reason
        assert row["exit_timestamp"].date() == b_exit_day
        assert (
            row["exit_price"]
            == panel.filter(
                (pl.col("symbol") == "B") & (pl.col("timestamp").dt.date() == b_exit_day)
            )["open"].item()
        )


def test_example_universe_config_validates_with_its_paths() -> None:
    from ml4t_pipeline.config import data_paths, load_config

    path = REPO_ROOT / "examples" / "sp500_top25_universe.yaml"
    cfg = load_config(path)
    assert cfg.data.universe is not None and cfg.data.universe.on_exit_universe == "hold"
    assert ("data.universe.membership", MEMBERSHIP.name) in data_paths(cfg)
    assert cfg.reporting.benchmark is not None and cfg.reporting.benchmark.symbol == "SPY"


def test_market_panel_universe_metadata_reports_gap_and_unmatched(tmp_path: Path) -> None:
    from ml4t_pipeline.config import UniverseConfig
    from ml4t_pipeline.defs.assets_data.panel_assets import _apply_universe

    _membership(tmp_path, [("A", "2013-01-01", None), ("GONE", "2013-01-01", "2013-04-30")])
    bars = _bars([("A", dt.date(2013, 4, 30)), ("B", dt.date(2013, 4, 30))]).with_columns(
        pl.Series("score", [1.0, 2.0])
    )
    spec = UniverseConfig(membership="members.parquet")
    masked, meta = _apply_universe(bars, spec, ["score"], tmp_path)
    assert masked["score"].to_list() == [1.0, None]
    gap = meta["survivorship_gap_by_year"].value.records[0].data
    # 2013-04-30: A (seen) and GONE (a member without prices) -> 1 of 2 member-days unseen.
    assert (gap["members"], gap["members_without_prices"], gap["unseen_share"]) == (2, 1, 0.5)
    assert meta["survivorship_members_without_prices"].value == "1: GONE"
    assert meta["universe_unmatched_symbols"].value.startswith("1 price symbols")
    assert meta["universe_unmatched_symbols"].value.endswith(": B")
