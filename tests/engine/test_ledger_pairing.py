"""One fill, two drivers: the Python broker and the compiled ledger book it the same way.

The TopN paired runs (``test_fastpath.py``) never short, add to or flip a position; here any
sequence of market fills on one symbol (buys, sells, adds, partial closes, flips through zero,
refused shorts and buys beyond the cash) goes through the broker's
:func:`engine.broker.accounting.execute` and through :func:`engine.core.ledger.execute_fill`, and
the cash, position, average price, realized P&L and every fill, trade and rejection record must
be identical.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import ExecutionConfig, MarketData, PercentageCommission
from engine.broker import Broker
from engine.broker.accounting import execute
from engine.core import layout, ledger
from engine.core.records import Records, empty_records
from engine.orders import OrderStatus
from engine.recorder import Recorder
from tests.engine.helpers import ts

KINDS = ("fills", "trades", "rejections")


def _panel(prices: list[float]) -> MarketData:
    frame = pl.DataFrame(
        {
            "timestamp": [ts(k) for k in range(len(prices))],
            "symbol": ["A"] * len(prices),
            "open": prices,
            "high": prices,
            "low": prices,
            "close": prices,
            "volume": [1e6] * len(prices),
        }
    ).with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))
    return MarketData.from_frame(frame)


def _python_driver(
    data: MarketData, steps: list[tuple[float, float]], config: ExecutionConfig
) -> tuple[Broker, Records]:
    records = Records()
    broker = Broker(data, config, None, Recorder(data, records))
    for k, (q, price) in enumerate(steps):
        broker.begin_bar(k)
        order = broker._new_order(0, q, submit_index=k, decision_row=k)
        order.transition(OrderStatus.ACCEPTED)
        execute(broker, order, q, price, k)
    return broker, records


def _compiled_driver(
    steps: list[tuple[float, float]], config: ExecutionConfig
) -> tuple[dict[str, Any], Records]:
    cap = len(steps) + 1
    fstate = np.full((layout.N_FLOAT_FIELDS, 1), np.nan)
    fstate[layout.QTY] = 0.0
    fstate[layout.AVG] = 0.0
    istate = np.zeros((layout.N_INT_FIELDS, 1), dtype=np.int64)
    aux_i = np.zeros((layout.N_A, 1), dtype=np.int64)
    aux_f = np.zeros((layout.N_B, 1))
    pending = np.zeros(1)
    orders = empty_records("orders", cap)
    out = {kind: empty_records(kind, cap) for kind in KINDS}
    counts = np.zeros(layout.N_C, dtype=np.int64)
    acc = np.full(layout.N_ACC, config.initial_cash)
    acc[layout.ACC_REALIZED] = 0.0
    for k, (q, price) in enumerate(steps):
        o = ledger.new_order(
            0, q, layout.T_MARKET, layout.R_STRATEGY, k, k, np.nan, np.nan, orders, counts, pending
        )
        layout.set_status(orders, o, layout.S_ACCEPTED)
        commission = config.commission.compute(q, price, 0)
        ledger.execute_fill(
            o, q, price, price, commission, k, k, config.cash_tolerance, config.allow_short,
            False, fstate, istate, pending, aux_i, aux_f, orders, out["fills"], out["trades"],
            out["rejections"], counts, acc,
        )  # fmt: skip
    records = Records()
    for kind, index in (("fills", layout.C_FILLS), ("trades", layout.C_TRADES)):
        records.extend(kind, out[kind][: counts[index]])
    records.extend("rejections", out["rejections"][: counts[layout.C_REJ]])
    state = {
        "cash": acc[layout.ACC_CASH],
        "realized": acc[layout.ACC_REALIZED],
        "qty": fstate[layout.QTY, 0],
        "avg": fstate[layout.AVG, 0],
        "open_qty": aux_f[layout.B_QTY, 0],
        "open_commission": aux_f[layout.B_COMM, 0],
    }
    return state, records


def _assert_records_equal(a: Any, b: Any, kind: str) -> None:
    """Same dtype and the same value in every field (NaN equal to NaN)."""
    assert a.dtype == b.dtype, kind
    for name in a.dtype.names:
        np.testing.assert_array_equal(a[name], b[name], err_msg=f"{kind}.{name}")


@st.composite
def _run(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(1, 25))
    quantities = draw(st.lists(st.integers(-40, 40).filter(bool), min_size=n, max_size=n))
    prices = draw(st.lists(st.integers(100, 20_000).map(lambda c: c / 100), min_size=n, max_size=n))
    return {
        "steps": [(float(q), p) for q, p in zip(quantities, prices, strict=True)],
        "cash": draw(st.sampled_from([500.0, 5_000.0, 1e6])),
        "short": draw(st.booleans()),
        "rate": draw(st.sampled_from([0.0, 0.001])),
    }


@settings(max_examples=150, deadline=None)
@given(_run())
def test_ledger_python_and_compiled_fills_book_identically(run: dict[str, Any]) -> None:
    steps = run["steps"]
    config = ExecutionConfig(
        initial_cash=run["cash"],
        allow_short=run["short"],
        commission=PercentageCommission(run["rate"]),
    )
    broker, py_records = _python_driver(_panel([p for _, p in steps]), steps, config)
    state, nb_records = _compiled_driver(steps, config)
    assert broker.cash == state["cash"]
    assert broker._realized == state["realized"]
    assert broker.qty[0] == state["qty"]
    assert broker._avg[0] == state["avg"]
    trade = broker.trades.get(0)
    if trade is None:
        assert state["open_qty"] == 0.0
    else:
        assert (trade.quantity, trade.commission) == (state["open_qty"], state["open_commission"])
    for kind in KINDS:
        _assert_records_equal(py_records.table(kind), nb_records.table(kind), kind)


def test_ledger_pairing_covers_flip_and_refusals() -> None:
    """A hand-built sequence: buy, add, flip through zero to a short, refused buy."""
    steps = [(10.0, 100.0), (5.0, 110.0), (-20.0, 120.0), (1_000.0, 130.0)]
    config = ExecutionConfig(initial_cash=5_000.0, allow_short=True)
    broker, py_records = _python_driver(_panel([p for _, p in steps]), steps, config)
    state, nb_records = _compiled_driver(steps, config)
    trades = py_records.table("trades")
    # the 15-share long (average (10 × 100 + 5 × 110) / 15) closed at 120, 5 short left open
    assert trades["quantity"].tolist() == [15.0]
    assert trades["entry_price"][0] == (10 * 100.0 + 5 * 110.0) / 15
    assert broker.qty[0] == state["qty"] == -5.0
    rejections = py_records.table("rejections")
    assert rejections["reason"].tolist() == [layout.SR_CASH]
    for kind in KINDS:
        _assert_records_equal(py_records.table(kind), nb_records.table(kind), kind)
