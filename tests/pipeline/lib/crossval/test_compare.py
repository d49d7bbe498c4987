"""compare_fills / compare_runs on small hand-built fills tables."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from ml4t_pipeline.lib.crossval.compare import (
    FrameworkRun,
    compare_fills,
    compare_runs,
)

T1 = datetime(2024, 1, 2, 21, tzinfo=UTC)
T2 = datetime(2024, 1, 3, 21, tzinfo=UTC)


def fills(rows: list[tuple[datetime, str, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "timestamp": [r[0] for r in rows],
            "symbol": [r[1] for r in rows],
            "quantity": [r[2] for r in rows],
            "price": [r[3] for r in rows],
            "commission": [abs(r[2] * r[3]) * 0.001 for r in rows],
        },
        schema={
            "timestamp": pl.Datetime("us", "UTC"),
            "symbol": pl.String,
            "quantity": pl.Float64,
            "price": pl.Float64,
            "commission": pl.Float64,
        },
    )


def test_compare_fills_identical_tables_identical() -> None:
    a = fills([(T1, "A", 10, 5.0), (T2, "A", -10, 6.0)])
    result = compare_fills(a, a.clone())
    assert (result.n_matched, result.n_missing, result.n_extra, result.n_mismatched) == (2, 0, 0, 0)
    assert result.identical


def test_compare_fills_missing_and_extra_rows_counted() -> None:
    ours = fills([(T1, "A", 10, 5.0), (T2, "B", 3, 7.0)])
    theirs = fills([(T1, "A", 10, 5.0), (T2, "C", 4, 8.0)])
    result = compare_fills(ours, theirs)
    assert result.n_matched == 1
    assert result.missing["symbol"].to_list() == ["C"]
    assert result.extra["symbol"].to_list() == ["B"]
    assert not result.identical
    assert result.first_difference()["kind"].to_list() == ["extra", "missing"]


def test_compare_fills_price_within_tol_ok_beyond_mismatched() -> None:
    theirs = fills([(T1, "A", 10, 5.0), (T1, "B", 10, 5.0)])
    ours = fills([(T1, "A", 10, 5.0 + 5e-7), (T1, "B", 10, 5.01)])
    result = compare_fills(ours, theirs, price_tol=1e-6)
    assert result.n_matched == 2
    assert result.n_mismatched == 1
    assert result.max_price_diff == pytest.approx(0.01)
    bad = result.matched.filter(~pl.col("ok"))
    assert bad["symbol"].to_list() == ["B"]


def test_compare_fills_quantity_difference_mismatched() -> None:
    result = compare_fills(fills([(T1, "A", 11, 5.0)]), fills([(T1, "A", 10, 5.0)]))
    assert result.n_mismatched == 1
    assert result.matched["quantity_diff"].to_list() == [1.0]


def test_compare_fills_buy_and_sell_same_bar_keyed_by_side() -> None:
    # a stop exit and a re-entry of one symbol on one bar must not pair with each other
    ours = fills([(T1, "A", -10, 9.5), (T1, "A", 12, 9.6)])
    theirs = fills([(T1, "A", 12, 9.6), (T1, "A", -10, 9.5)])
    assert compare_fills(ours, theirs).identical


def test_compare_fills_repeated_key_paired_in_order() -> None:
    ours = fills([(T1, "A", 10, 5.0), (T1, "A", 20, 5.0)])
    theirs = fills([(T1, "A", 10, 5.0)])
    result = compare_fills(ours, theirs)
    assert (result.n_matched, result.n_extra) == (1, 1)
    assert result.extra["quantity"].to_list() == [20.0]


def test_compare_fills_missing_column_raises() -> None:
    with pytest.raises(ValueError, match="commission"):
        compare_fills(fills([(T1, "A", 1, 1.0)]).drop("commission"), fills([(T1, "A", 1, 1.0)]))


def test_compare_fills_zero_quantity_raises() -> None:
    with pytest.raises(ValueError, match="zero quantity"):
        compare_fills(fills([(T1, "A", 0, 1.0)]), fills([(T1, "A", 1, 1.0)]))


def test_compare_fills_negative_tolerance_raises() -> None:
    a = fills([(T1, "A", 1, 1.0)])
    with pytest.raises(ValueError, match="price_tol"):
        compare_fills(a, a, price_tol=-1.0)


def test_compare_fills_timestamp_dtype_mismatch_raises() -> None:
    a = fills([(T1, "A", 1, 1.0)])
    b = a.with_columns(pl.col("timestamp").dt.replace_time_zone(None))
    with pytest.raises(ValueError, match="timestamp dtypes differ"):
        compare_fills(a, b)


def test_compare_runs_equity_gap_and_summary() -> None:
    a = fills([(T1, "A", 10, 5.0), (T2, "A", -10, 6.0)])
    ours = FrameworkRun("ml4t", a, final_equity=1009.985, n_closed_trades=1)
    theirs = FrameworkRun("backtrader", a.clone(), final_equity=1009.98, n_closed_trades=1)
    cmp = compare_runs(ours, theirs)
    assert cmp.equity_gap == pytest.approx(0.005)
    assert cmp.agrees(equity_tol=0.01)
    assert not cmp.agrees(equity_tol=0.001)
    text = cmp.summary_markdown()
    assert "| fills | 2 | 2 | +0 |" in text
    assert "**Identical.**" in text


def test_compare_runs_trade_count_gap_not_identical() -> None:
    a = fills([(T1, "A", 10, 5.0)])
    cmp = compare_runs(
        FrameworkRun("ml4t", a, 1000.0, 1), FrameworkRun("vectorbt", a.clone(), 1000.0, 0)
    )
    assert cmp.trade_count_gap == 1
    assert not cmp.agrees()
    assert "**Not identical.**" in cmp.summary_markdown()
