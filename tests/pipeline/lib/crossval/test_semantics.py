"""Hand-built cases that isolate each execution semantic the frameworks can disagree on.

Each case is a few bars of 2-3 symbols, run through Backtrader (reference settings and
``checksubmit=True``), VectorBT (``from_order_func`` callbacks; ``from_signals`` where its own
semantics matter) and our engine. Expected fills are worked out by hand in the comments.
Findings: /tmp/specs/CROSSVAL_FINDINGS.md (the engine settings each case motivates).
"""

from __future__ import annotations

from typing import Any

import pytest

from ml4t_pipeline.lib.crossval.compare import FrameworkRun, compare_fills, run_ml4t
from ml4t_pipeline.lib.crossval.reference import ReferenceInputs, ReferenceSpec, inputs_from_wide

bt = pytest.importorskip("backtrader")
vbt = pytest.importorskip("vectorbt")

from ml4t_pipeline.lib.crossval.backtrader_run import (  # noqa: E402
    BacktraderSettings,
    run_backtrader,
)
from ml4t_pipeline.lib.crossval.vectorbt_run import run_vectorbt  # noqa: E402

D = ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]


def spec(n: int, weight: float) -> ReferenceSpec:
    return ReferenceSpec(n=n, weight=weight, commission_rate=0.0, initial_cash=1000.0)


def rows(run: FrameworkRun) -> list[tuple[str, str, float, float, str]]:
    """(date, symbol, signed qty, price, reason) per fill, in (timestamp, symbol) order."""
    return [
        (str(t.date()), s, q, round(p, 10), r)
        for t, s, q, p, r in run.fills.select(
            "timestamp", "symbol", "quantity", "price", "reason"
        ).iter_rows()
    ]


def all_runs(inputs: ReferenceInputs, sp: ReferenceSpec) -> dict[str, FrameworkRun]:
    return {
        "backtrader": run_backtrader(inputs, sp),
        "backtrader_checksubmit": run_backtrader(inputs, sp, BacktraderSettings(checksubmit=True)),
        "vectorbt": run_vectorbt(inputs, sp),
        "ml4t": run_ml4t(inputs, sp),
    }


def flat(value: float, n: int) -> list[float]:
    return [value] * n


def prices(**cols: Any) -> dict[str, dict[str, list[float]]]:
    return cols


# ---------------------------------------------------------------- 1. order of one bar's events
@pytest.fixture(scope="module")
def event_order_runs() -> dict[str, FrameworkRun]:
    # n=2, 45 % each, cash 1000. Close 0: top = A, B -> 45 sh each @10 on bar 1 (cash 100).
    # Close 1: top = C, A -> sell B, buy C floor(450/10) = 45. Bar 2: A opens 9.8, trades down
    # to 9.0 -> its 9.5 stop triggers *intrabar*; B sells @10 at the open; C opens 13 -> the buy
    # costs 585. Cash at the open after B's sale is 550 < 585; with the stop's 427.5 it is 977.5.
    inputs = inputs_from_wide(
        D[:3],
        open={"A": [10, 10, 9.8], "B": [10, 10, 10], "C": [10, 10, 13]},
        high={"A": [10, 10, 9.8], "B": [10, 10, 10], "C": [10, 10, 14]},
        low={"A": [10, 10, 9.0], "B": [10, 10, 10], "C": [10, 10, 13]},
        close={"A": [10, 10, 9.2], "B": [10, 10, 10], "C": [10, 10, 14]},
        score={"A": [2, 2, 2], "B": [1, 1, 1], "C": [0, 3, 3]},
    )
    return all_runs(inputs, spec(2, 0.45))


def test_event_order_frameworks_stop_exit_funds_same_bar_open_buy(
    event_order_runs: dict[str, FrameworkRun],
) -> None:
    expected = [
        ("2024-01-03", "A", 45.0, 10.0, "market"),
        ("2024-01-03", "B", 45.0, 10.0, "market"),
        ("2024-01-04", "A", -45.0, 9.5, "stop"),
        ("2024-01-04", "B", -45.0, 10.0, "market"),
        ("2024-01-04", "C", 45.0, 13.0, "market"),
    ]
    for name in ("backtrader", "backtrader_checksubmit", "vectorbt"):
        assert rows(event_order_runs[name]) == expected, name
        assert event_order_runs[name].final_equity == pytest.approx(392.5 + 45 * 14)


def test_event_order_engine_chronological_rejects_buy_before_stop_cash(
    event_order_runs: dict[str, FrameworkRun],
) -> None:
    ours = event_order_runs["ml4t"]
    cmp = compare_fills(ours.fills, event_order_runs["backtrader"].fills)
    assert cmp.n_extra == 0
    assert [(r["symbol"], r["quantity"]) for r in cmp.missing.iter_rows(named=True)] == [
        ("C", 45.0)
    ]
    assert ours.n_rejected == 1
    assert ours.final_equity == pytest.approx(100 + 450 + 427.5)


# ---------------------------------------------------------------- 2. stop activation bar
def test_stop_activation_all_frameworks_ignore_entry_bar_low() -> None:
    # Entry 50 @10 on bar 1 whose low (9.0) is below the 9.5 stop: nobody exits on bar 1.
    inputs = inputs_from_wide(
        D[:3],
        open={"A": [10, 10, 10], "B": flat(10, 3)},
        high={"A": [10, 10, 10], "B": flat(10, 3)},
        low={"A": [10, 9, 9.9], "B": flat(10, 3)},
        close={"A": [10, 10, 10], "B": flat(10, 3)},
        score={"A": [2, 2, 2], "B": [1, 1, 1]},
    )
    for name, run in all_runs(inputs, spec(1, 0.5)).items():
        assert rows(run) == [("2024-01-03", "A", 50.0, 10.0, "market")], name


def test_stop_activation_vectorbt_from_signals_ignores_entry_bar_low() -> None:
    import pandas as pd

    idx = pd.DatetimeIndex(D)
    o = pd.Series([10.0, 10.0, 10.0, 10.0], idx)
    low = pd.Series([10.0, 9.0, 9.9, 9.0], idx)
    entries = pd.Series([False, True, False, False], idx)
    pf = vbt.Portfolio.from_signals(
        o,
        entries,
        ~entries & False,
        price=o,
        open=o,
        high=o,
        low=low,
        sl_stop=0.05,
        init_cash=1000.0,
        size=10.0,
    )
    orders = pf.orders.records_readable
    # the stop first fires on bar 3 (low 9.0), not on the entry bar 1 (also low 9.0)
    assert orders["Price"].tolist() == [10.0, 9.5]
    assert orders["Timestamp"].dt.strftime("%Y-%m-%d").tolist() == ["2024-01-03", "2024-01-05"]


# ---------------------------------------------------------------- 3. cash check timing
def test_cash_check_checksubmit_refuses_at_creation_price_others_fill_at_open() -> None:
    # n=2, 60 % each (over-allocated on purpose). Close 0: A and B 60 sh each, sized @10.
    # Bar 1: A costs 600 (cash 400); B opens at 6 -> costs 360 <= 400: fills at execution.
    # checksubmit pseudo-executes at the creation price 10: 400 - 600 < 0 -> refused.
    inputs = inputs_from_wide(
        D[:2],
        open={"A": [10, 10], "B": [10, 6]},
        high={"A": [10, 10], "B": [10, 10]},
        low={"A": [10, 10], "B": [10, 6]},
        close={"A": [10, 10], "B": [10, 8]},
        score={"A": [2, 2], "B": [1, 1]},
    )
    runs = all_runs(inputs, spec(2, 0.6))
    both = [("2024-01-03", "A", 60.0, 10.0, "market"), ("2024-01-03", "B", 60.0, 6.0, "market")]
    for name in ("backtrader", "vectorbt", "ml4t"):
        assert rows(runs[name]) == both, name
    assert rows(runs["backtrader_checksubmit"]) == both[:1]
    assert runs["backtrader_checksubmit"].n_rejected == 1


# ---------------------------------------------------------------- 4. stop vs open sell, same bar
STOP_VS_SELL = inputs_from_wide(
    D,
    # Entry A 50 @10 on bar 1 (stop 9.5). Close 2: B overtakes A -> sell A, buy B. Bar 3: A
    # opens 9.8 (above the stop) and trades down to 9.0 (through it).
    open={"A": [10, 10, 10, 9.8], "B": flat(10, 4)},
    high={"A": [10, 10, 10, 9.8], "B": flat(10, 4)},
    low={"A": [10, 10, 10, 9.0], "B": flat(10, 4)},
    close={"A": [10, 10, 10, 9.1], "B": flat(10, 4)},
    score={"A": [2, 2, 1, 1], "B": [1, 1, 2, 2]},
)


def test_stop_vs_open_sell_backtrader_vectorbt_callbacks_engine_open_sell_wins() -> None:
    expected = [
        ("2024-01-03", "A", 50.0, 10.0, "market"),
        ("2024-01-05", "A", -50.0, 9.8, "market"),
        ("2024-01-05", "B", 50.0, 10.0, "market"),
    ]
    for name, run in all_runs(STOP_VS_SELL, spec(1, 0.5)).items():
        assert rows(run) == expected, name


def test_stop_vs_open_sell_vectorbt_stop_wins_fills_at_stop() -> None:
    run = run_vectorbt(STOP_VS_SELL, spec(1, 0.5), stop_wins=True)
    assert rows(run)[1] == ("2024-01-05", "A", -50.0, 9.5, "stop")
    assert run.final_equity == pytest.approx(975.0)


def test_stop_vs_open_sell_vectorbt_from_signals_stop_has_priority() -> None:
    import pandas as pd

    idx = pd.DatetimeIndex(D)
    o = STOP_VS_SELL.open["A"]
    o.index = idx
    low = STOP_VS_SELL.low["A"]
    low.index = idx
    entries = pd.Series([False, True, False, False], idx)
    exits = pd.Series([False, False, False, True], idx)  # decided at close 2, at bar 3's open
    pf = vbt.Portfolio.from_signals(
        o,
        entries,
        exits,
        price=o,
        open=o,
        high=o,
        low=low,
        sl_stop=0.05,
        init_cash=1000.0,
        size=50.0,
    )
    assert pf.orders.records_readable["Price"].tolist() == [10.0, 9.5]


def test_exit_decided_on_entry_bar_checksubmit_stop_uncancellable_goes_short() -> None:
    # Entry A 50 @10 on bar 1; at close 1 B overtakes A -> sell A. Bar 2 opens 9.4 (gap through
    # the 9.5 stop). With checksubmit the stop (submitted on bar 1) cannot be cancelled at
    # close 1, so both the stop and the market sell execute @9.4: A ends short 50.
    inputs = inputs_from_wide(
        D[:3],
        open={"A": [10, 10, 9.4], "B": flat(10, 3)},
        high={"A": [10, 10, 9.4], "B": flat(10, 3)},
        low={"A": [10, 10, 9.0], "B": flat(10, 3)},
        close={"A": [10, 10, 9.2], "B": flat(10, 3)},
        score={"A": [2, 1, 1], "B": [1, 2, 2]},
    )
    runs = all_runs(inputs, spec(1, 0.5))
    single = [
        ("2024-01-03", "A", 50.0, 10.0, "market"),
        ("2024-01-04", "A", -50.0, 9.4, "market"),
        ("2024-01-04", "B", 50.0, 10.0, "market"),
    ]
    for name in ("backtrader", "vectorbt", "ml4t"):
        assert rows(runs[name]) == single, name
    a_qty = runs["backtrader_checksubmit"].fills.filter(symbol="A")["quantity"].sum()
    assert a_qty == -50.0


# ---------------------------------------------------------------- 5. re-entry after a stop
def test_reentry_after_stop_all_frameworks_rebuy_next_open() -> None:
    # Entry A 50 @10; bar 2 low 9.0 -> stop 9.5 (cash 975). A is still the top score at close 2
    # and not held -> buy floor(0.5 * 975 / 9.2) = 52 @ bar 3's open 9.2. No cooldown anywhere.
    inputs = inputs_from_wide(
        D,
        open={"A": [10, 10, 10, 9.2], "B": flat(10, 4)},
        high={"A": [10, 10, 10, 9.2], "B": flat(10, 4)},
        low={"A": [10, 10, 9.0, 9.2], "B": flat(10, 4)},
        close={"A": [10, 10, 9.2, 9.2], "B": flat(10, 4)},
        score={"A": [2, 2, 2, 2], "B": [1, 1, 1, 1]},
    )
    for name, run in all_runs(inputs, spec(1, 0.5)).items():
        assert rows(run)[-1] == ("2024-01-05", "A", 52.0, 9.2, "market"), name
