"""Fill-semantics settings of ExecutionConfig, each isolated on a hand-built case.

The cases are those of the cross-framework findings (tests/pipeline/lib/crossval/test_semantics.py
runs the same panels through Backtrader and VectorBT): a few bars of 2-3 symbols, a top-n
strategy on a ``score`` signal, a 5 % stop-loss below the entry fill, no commission, cash 1000.
Bar k is (open, high, low, close); the expected fills are worked out in the comments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl
import pytest

from engine import (
    EXECUTION_PRESETS,
    BacktestEngine,
    BacktestResult,
    ExecutionConfig,
    MarketData,
    PriceBasedStopLoss,
    RiskManager,
    TieredCommission,
    TopNStrategy,
)
from tests.engine.helpers import T0, Bar, make_panel, run

FLAT: Bar = (10, 10, 10, 10)


def top_n(
    bars: Mapping[str, Sequence[Bar]],
    scores: Mapping[str, Sequence[float]],
    n: int,
    weight: float,
    **settings: Any,
) -> BacktestResult:
    panel = make_panel(bars, signals={"score": scores})
    data = MarketData.from_frame(panel, signal_columns=["score"])
    cfg = ExecutionConfig(initial_cash=1000.0, **settings)
    strategy = TopNStrategy("score", n=n, weight=weight)
    return BacktestEngine(data, strategy, RiskManager([PriceBasedStopLoss(0.05)]), cfg).run()


def fills(result: BacktestResult) -> list[tuple[int, str, float, float, str]]:
    """(bar, symbol, signed quantity, price, order type) per fill, in fill order."""
    return [
        ((t - T0).days, s, q, round(p, 10), k)
        for t, s, q, p, k in result.fills.select(
            "timestamp", pl.col("symbol").cast(pl.String), "quantity", "price", "order_type"
        ).iter_rows()
    ]


def events(result: BacktestResult) -> list[tuple[int, str, str, str]]:
    """(bar, symbol, event, reason) per rejection/cancellation row."""
    return [
        ((t - T0).days, s, e, r)
        for t, s, e, r in result.rejections.select(
            "timestamp", pl.col("symbol").cast(pl.String), "event", "reason"
        ).iter_rows()
    ]


# ---------------------------------------------------------------- 1. bar_event_order
# n=2, 45 % each. Close 0: A, B -> 45 sh each @10 on bar 1 (cash 100). Close 1 (equity 1000):
# top = C, A -> sell B, buy C 45. Bar 2: A opens 9.8 and trades to 9.0 (its 9.5 stop
# triggers intrabar); B sells @10 at the open; C opens at 13 -> the buy costs 585.
EVENT_BARS = {
    "A": [FLAT, FLAT, (9.8, 9.8, 9.0, 9.2)],
    "B": [FLAT, FLAT, FLAT],
    "C": [FLAT, FLAT, (13, 14, 13, 14)],
}
EVENT_SCORES = {"A": [2, 2, 2], "B": [1, 1, 1], "C": [0, 3, 3]}
ENTRIES = [(1, "A", 45.0, 10.0, "market"), (1, "B", 45.0, 10.0, "market")]


def test_bar_event_order_chronological_open_buy_cannot_spend_later_stop_cash() -> None:
    result = top_n(EVENT_BARS, EVENT_SCORES, 2, 0.45)
    # open: sell B (cash 550) then buy C needs 585 -> refused; then the stop exits A @9.5
    assert fills(result) == [
        *ENTRIES,
        (2, "B", -45.0, 10.0, "market"),
        (2, "A", -45.0, 9.5, "stop"),
    ]
    assert events(result) == [(2, "C", "rejected", "insufficient_cash")]
    assert result.final_equity == pytest.approx(100 + 450 + 427.5)


@pytest.mark.parametrize("preset", ["backtrader", "vectorbt"])
def test_bar_event_order_stops_first_stop_cash_funds_open_buy(preset: str) -> None:
    result = top_n(EVENT_BARS, EVENT_SCORES, 2, 0.45, **EXECUTION_PRESETS[preset])
    # stop A @9.5 (+427.5) first, then sell B (+450), then buy C 45 @13 (977.5 - 585 = 392.5)
    assert fills(result) == [
        *ENTRIES,
        (2, "A", -45.0, 9.5, "stop"),
        (2, "B", -45.0, 10.0, "market"),
        (2, "C", 45.0, 13.0, "market"),
    ]
    assert result.portfolio_states["cash"][-1] == pytest.approx(392.5)
    assert result.final_equity == pytest.approx(392.5 + 45 * 14)


def test_bar_event_order_stops_first_resting_stop_order_funds_open_buy() -> None:
    # A 50 @10 on bar 1 (cash 500); at close 1 a resting stop sell of A @9.5 and a buy of B 55
    # (550 > 500). Bar 2: A trades to 9.0 -> the stop order gives +475 before B's open fill.
    bars = {"A": [FLAT, FLAT, (10, 10, 9.0, 9.2)], "B": [FLAT, FLAT, FLAT]}
    plan = {
        0: lambda s: s.buy("A", 50),
        1: lambda s: (s.sell("A", 50, stop_price=9.5), s.buy("B", 55)),
    }
    chrono = run(make_panel(bars), plan, initial_cash=1000.0)
    first = run(make_panel(bars), plan, initial_cash=1000.0, bar_event_order="stops_first")
    assert fills(chrono)[1:] == [(2, "A", -50.0, 9.5, "stop")]
    assert events(chrono) == [(2, "B", "rejected", "insufficient_cash")]
    assert fills(first)[1:] == [(2, "A", -50.0, 9.5, "stop"), (2, "B", 55.0, 10.0, "market")]


# ---------------------------------------------------------------- 2. stop_activation
# Entry A 50 @10 on bar 1 whose low 9.0 is below the 9.5 stop; bar 2 low 9.9.
ACTIVATION_BARS = {"A": [FLAT, (10, 10, 9.0, 10), (10, 10, 9.9, 10)], "B": [FLAT] * 3}
ACTIVATION_SCORES = {"A": [2, 2, 2], "B": [1, 1, 1]}


@pytest.mark.parametrize("order", ["chronological", "stops_first"])
def test_stop_activation_next_bar_ignores_entry_bar_low(order: str) -> None:
    result = top_n(ACTIVATION_BARS, ACTIVATION_SCORES, 1, 0.5, bar_event_order=order)
    assert fills(result) == [(1, "A", 50.0, 10.0, "market")]


@pytest.mark.parametrize("order", ["chronological", "stops_first"])
def test_stop_activation_entry_bar_exits_at_level_on_entry_bar(order: str) -> None:
    result = top_n(
        ACTIVATION_BARS,
        ACTIVATION_SCORES,
        1,
        0.5,
        bar_event_order=order,
        stop_activation="entry_bar",
    )
    # bar 1: in @10, out @9.5 (cash 975); close 1 re-buys floor(487.5 / 10) = 48 @ bar 2's open;
    # bar 2's low 9.9 stays above that entry's 9.5 stop
    assert fills(result) == [
        (1, "A", 50.0, 10.0, "market"),
        (1, "A", -50.0, 9.5, "stop"),
        (2, "A", 48.0, 10.0, "market"),
    ]
    trade = result.trades.row(0, named=True)
    assert trade["bars_held"] == 0 and trade["pnl_net"] == pytest.approx(-25.0)


# ---------------------------------------------------------------- 3. exit_conflict
def conflict_bars(bar3_open: float) -> dict[str, list[Bar]]:
    # Entry A 50 @10 on bar 1 (stop 9.5). Close 2: B overtakes A -> sell A, buy B 50. Bar 3:
    # A opens at ``bar3_open`` and trades down to 9.0 (through the stop).
    return {"A": [FLAT, FLAT, FLAT, (bar3_open, bar3_open, 9.0, 9.1)], "B": [FLAT] * 4}


CONFLICT_SCORES = {"A": [2, 2, 1, 1], "B": [1, 1, 2, 2]}


@pytest.mark.parametrize(
    "settings",
    [{}, {"bar_event_order": "stops_first"}, dict(EXECUTION_PRESETS["backtrader"])],
)
def test_exit_conflict_open_sell_wins_sells_at_open_stop_never_fills(
    settings: dict[str, Any],
) -> None:
    result = top_n(conflict_bars(9.8), CONFLICT_SCORES, 1, 0.5, **settings)
    assert fills(result) == [
        (1, "A", 50.0, 10.0, "market"),
        (3, "A", -50.0, 9.8, "market"),
        (3, "B", 50.0, 10.0, "market"),
    ]
    assert result.final_equity == pytest.approx(990.0)


def test_exit_conflict_stop_wins_stop_fills_and_queued_sell_is_cancelled() -> None:
    result = top_n(
        conflict_bars(9.8),
        CONFLICT_SCORES,
        1,
        0.5,
        bar_event_order="stops_first",
        exit_conflict="stop_wins",
    )
    assert fills(result) == [
        (1, "A", 50.0, 10.0, "market"),
        (3, "A", -50.0, 9.5, "stop"),
        (3, "B", 50.0, 10.0, "market"),
    ]
    assert events(result) == [(3, "A", "cancelled", "position_closed_by_stop")]
    assert result.final_equity == pytest.approx(975.0)


@pytest.mark.parametrize(
    ("conflict", "kind"), [("open_sell_wins", "market"), ("stop_wins", "stop")]
)
def test_exit_conflict_gap_through_stop_same_price_either_way(conflict: str, kind: str) -> None:
    # bar 3 opens at 9.4, below the 9.5 stop: both exit 50 @9.4; only the order type differs
    result = top_n(
        conflict_bars(9.4),
        CONFLICT_SCORES,
        1,
        0.5,
        bar_event_order="stops_first",
        exit_conflict=conflict,
    )
    assert fills(result)[1] == (3, "A", -50.0, 9.4, kind)
    assert result.final_equity == pytest.approx(970.0)


def test_exit_conflict_stop_wins_needs_stops_first() -> None:
    with pytest.raises(ValueError, match="stop_wins.*stops_first"):
        ExecutionConfig(exit_conflict="stop_wins")


# ---------------------------------------------------------------- 4. cash_check
# n=2, 60 % each (over-allocated on purpose). Close 0: A and B 60 sh each, sized @10.
# Bar 1: A costs 600 (cash 400); B opens at 6 -> costs 360.
CASH_BARS = {"A": [FLAT, FLAT], "B": [FLAT, (6, 10, 6, 8)]}
CASH_SCORES = {"A": [2, 2], "B": [1, 1]}


def test_cash_check_execution_both_buys_fill_at_open_prices() -> None:
    result = top_n(CASH_BARS, CASH_SCORES, 2, 0.6)
    assert fills(result) == [(1, "A", 60.0, 10.0, "market"), (1, "B", 60.0, 6.0, "market")]


def test_cash_check_submission_refuses_at_creation_price() -> None:
    # pseudo-execution at the decision close 10: 1000 - 600 = 400, then 400 - 600 < 0
    result = top_n(CASH_BARS, CASH_SCORES, 2, 0.6, cash_check="submission")
    assert fills(result) == [(1, "A", 60.0, 10.0, "market")]
    # close 1 tries again: 75 sh @8 (60 % of equity 1000) = 600 > cash 400 -> refused again
    assert events(result) == [
        (0, "B", "rejected", "insufficient_cash_at_submission"),
        (1, "B", "rejected", "insufficient_cash_at_submission"),
    ]


def test_cash_check_submission_counts_earlier_sells_then_still_checks_at_execution() -> None:
    # event-order case, close 1: sell B (+450 at 10) then buy C 45 (-450 at 10) from cash 100:
    # accepted at submission; at execution C costs 585 > 550 -> refused there (chronological)
    result = top_n(EVENT_BARS, EVENT_SCORES, 2, 0.45, cash_check="submission")
    assert events(result) == [(2, "C", "rejected", "insufficient_cash")]


# ---------------------------------------------------------------- 5. reentry_cooldown_bars
# Entry A 50 @10; bar 2 low 9.0 -> stop @9.5 (cash 975). A is still the top score at close 2
# -> buy floor(0.5 * 975 / 9.2) = 52 @ bar 3's open 9.2 unless a cooldown refuses it.
REENTRY_BARS = {
    "A": [FLAT, FLAT, (10, 10, 9.0, 9.2), (9.2, 9.2, 9.2, 9.2)],
    "B": [FLAT] * 4,
}
REENTRY_SCORES = {"A": [2, 2, 2, 2], "B": [1, 1, 1, 1]}


def test_reentry_cooldown_off_rebuys_next_open() -> None:
    result = top_n(REENTRY_BARS, REENTRY_SCORES, 1, 0.5)
    assert fills(result)[-1] == (3, "A", 52.0, 9.2, "market")
    assert events(result) == []


@pytest.mark.parametrize(("k", "refused_at"), [(1, [2]), (2, [2, 3])])
def test_reentry_cooldown_refuses_buys_decided_within_k_bars_of_stop(
    k: int, refused_at: list[int]
) -> None:
    result = top_n(REENTRY_BARS, REENTRY_SCORES, 1, 0.5, reentry_cooldown_bars=k)
    assert fills(result) == [(1, "A", 50.0, 10.0, "market"), (2, "A", -50.0, 9.5, "stop")]
    assert events(result) == [(b, "A", "rejected", "reentry_cooldown") for b in refused_at]


# ---------------------------------------------------------------- 6. cash_tolerance
@pytest.mark.parametrize(("tolerance", "filled"), [(1e-7, True), (0.0, False)])
def test_cash_tolerance_buy_short_by_5e8(tolerance: float, filled: bool) -> None:
    # 100 shares at 10.0000000005 cost 1000.00000005: 5e-8 more than the cash
    bars = {"A": [FLAT, (10.0000000005, 11, 9, 10)]}
    result = run(
        make_panel(bars),
        {0: lambda s: s.buy("A", 100)},
        initial_cash=1000.0,
        cash_tolerance=tolerance,
    )
    assert (result.fills.height == 1) is filled
    assert (events(result) == [(1, "A", "rejected", "insufficient_cash")]) is not filled


# ---------------------------------------------------------------- presets and validation
def test_presets_set_the_findings_values() -> None:
    for name in ("backtrader", "vectorbt"):
        cfg = ExecutionConfig.preset(name)
        assert (cfg.bar_event_order, cfg.stop_activation, cfg.exit_conflict) == (
            "stops_first",
            "next_bar",
            "open_sell_wins",
        )
        assert (cfg.cash_check, cfg.reentry_cooldown_bars, cfg.cash_tolerance) == (
            "execution",
            0,
            0.0,
        )
        assert cfg.fill == "next_open"


def test_preset_overrides_apply_and_defaults_stay_honest() -> None:
    cfg = ExecutionConfig.preset("vectorbt", exit_conflict="stop_wins", initial_cash=5.0)
    assert (cfg.exit_conflict, cfg.initial_cash) == ("stop_wins", 5.0)
    default = ExecutionConfig()
    assert (default.bar_event_order, default.exit_conflict, default.cash_check) == (
        "chronological",
        "open_sell_wins",
        "execution",
    )
    assert (default.reentry_cooldown_bars, default.cash_tolerance) == (0, 1e-7)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("zipline",), "unknown execution preset 'zipline'"),
        (("backtrader",), "unknown ExecutionConfig field"),
    ],
)
def test_preset_bad_name_or_field_raises(args: tuple[str], match: str) -> None:
    overrides = {"stop_pct": 0.05} if args == ("backtrader",) else {}
    with pytest.raises(ValueError, match=match):
        ExecutionConfig.preset(*args, **overrides)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bar_event_order", "stops_last"),
        ("stop_activation", "same_bar"),
        ("exit_conflict", "both"),
        ("cash_check", "never"),
        ("reentry_cooldown_bars", -1),
        ("reentry_cooldown_bars", 1.5),
        ("reentry_cooldown_bars", True),
        ("cash_tolerance", -1e-9),
        ("cash_tolerance", float("nan")),
    ],
)
def test_execution_config_bad_setting_raises_naming_it(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        ExecutionConfig(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("conflict", "expected"),
    [
        ("open_sell_wins", [(3, "A", -50.0, 9.8, "market")]),
        ("stop_wins", [(3, "A", -50.0, 9.5, "stop")]),
    ],
)
def test_exit_conflict_applies_to_bracket_stop_children(
    conflict: str, expected: list[tuple[int, str, float, float, str]]
) -> None:
    # bracket buy A 50 (stop child 9.5) fills @10 on bar 1; close 2 queues a market sell;
    # bar 3 opens 9.8 and trades to 9.0
    plan = {0: lambda s: s.buy("A", 50, stop_loss=9.5), 2: lambda s: s.sell("A", 50)}
    result = run(
        make_panel(conflict_bars(9.8)),
        plan,
        initial_cash=1000.0,
        bar_event_order="stops_first",
        exit_conflict=conflict,
    )
    assert fills(result)[1:] == expected
    assert result.open_positions.height == 0


def test_cash_check_submission_does_not_advance_stateful_commission() -> None:
    # the pseudo-execution prices a TieredCommission on a copy: fills and fees are unchanged
    tiers = TieredCommission([(0, 0.01), (500, 0.001)])
    kwargs: dict[str, Any] = {"commission": tiers}
    a = top_n(CASH_BARS, CASH_SCORES, 2, 0.3, **kwargs)
    b = top_n(CASH_BARS, CASH_SCORES, 2, 0.3, cash_check="submission", **kwargs)
    assert fills(a) == fills(b) == [(1, "A", 30.0, 10.0, "market"), (1, "B", 30.0, 6.0, "market")]
    # first fill 300 at 1 %, then the month's notional (300) is still below 500: 1 % again
    assert b.fills["commission"].to_list() == pytest.approx([3.0, 1.8])
