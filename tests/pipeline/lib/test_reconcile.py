"""Independent reconciliation of engine outputs, hand-checked on tiny cases."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from ml4t_pipeline.lib.reconcile import (
    entries_before_signal_available,
    equity_mismatches,
    rebuild_equity,
)


def _ts(day: int) -> datetime:
    return datetime(2020, 1, day, 21, tzinfo=UTC)


PANEL = pl.DataFrame(
    {
        "timestamp": [_ts(1), _ts(1), _ts(2), _ts(2), _ts(3)],
        "symbol": ["A", "B", "A", "B", "B"],  # A has no bar on day 3
        "close": [10.0, 20.0, 11.0, 19.0, 18.0],
        "signal_available_at": [_ts(1), _ts(1), _ts(2), _ts(3), _ts(3)],
    }
)


def test_rebuild_equity_marks_missing_bar_at_last_close() -> None:
    fills = pl.DataFrame(
        {
            "timestamp": [_ts(2), _ts(2)],
            "symbol": ["A", "B"],
            "quantity": [10.0, 5.0],
            "price": [10.5, 19.5],
            "commission": [1.0, 0.5],
        }
    )
    out = rebuild_equity(fills, PANEL, initial_cash=1000.0)
    cash_after = 1000.0 - 105.0 - 1.0 - 97.5 - 0.5
    assert out["cash"].to_list() == [1000.0, cash_after, cash_after]
    # day 3: A marked at its last close 11.0, B at 18.0
    assert out["equity"].to_list() == [1000.0, cash_after + 110 + 95, cash_after + 110 + 90]


def test_equity_mismatches_flags_only_the_wrong_bar() -> None:
    fills = pl.DataFrame(
        {
            "timestamp": [_ts(1)],
            "symbol": ["A"],
            "quantity": [1.0],
            "price": [10.0],
            "commission": [0.0],
        }  # fmt: skip
    )
    states = pl.DataFrame(
        {
            "timestamp": [_ts(1), _ts(2), _ts(3)],
            "equity": [100.0, 101.0, 150.0],
            "cash": [90.0, 90.0, 90.0],
        }  # fmt: skip
    )
    bad = equity_mismatches(states, fills, PANEL, initial_cash=100.0)
    assert bad["timestamp"].to_list() == [_ts(3)]


def test_equity_mismatches_no_fills_is_flat_cash() -> None:
    states = pl.DataFrame(
        {"timestamp": [_ts(1), _ts(2), _ts(3)], "equity": [5.0] * 3, "cash": [5.0] * 3}
    )
    empty = pl.DataFrame(
        schema={"timestamp": pl.Datetime("us", "UTC"), "symbol": pl.String,
                "quantity": pl.Float64, "price": pl.Float64, "commission": pl.Float64}
    )  # fmt: skip
    assert equity_mismatches(states, empty, PANEL, initial_cash=5.0).height == 0


def test_entries_before_signal_available_finds_early_entry() -> None:
    trades = pl.DataFrame(
        {
            "trade_id": [1, 2, 3],
            "symbol": ["A", "B", "B"],
            "decision_timestamp": [_ts(1), _ts(2), _ts(3)],
            "entry_timestamp": [_ts(2), _ts(3), _ts(3)],
        }
    )
    bad = entries_before_signal_available(trades, PANEL)
    # trade 2 acted on day 2 on B's signal that only became available on day 3
    assert bad["trade_id"].to_list() == [2]


def test_entries_before_signal_available_decision_bar_missing_from_panel_is_offending() -> None:
    trades = pl.DataFrame(
        {
            "trade_id": [1, 2],
            "symbol": ["A", "A"],
            "decision_timestamp": [_ts(1), _ts(9)],  # no panel bar at day 9
            "entry_timestamp": [_ts(2), _ts(9)],
        }
    )
    panel = PANEL.with_columns(pl.col("symbol").cast(pl.Categorical))
    bad = entries_before_signal_available(trades, panel)
    assert bad["trade_id"].to_list() == [2]
    assert bad["signal_available_at"].to_list() == [None]
