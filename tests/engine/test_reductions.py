"""The compiled reductions of compute_metrics (engine.compiled.reductions) equal numpy's bits:
the sweep's variant passes compute their trials' metrics with them."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.compiled.reductions import N_R, as_reductions, pairwise_sum, reduce_records
from engine.core.records import STATE_DTYPE, TRADE_DTYPE
from engine.metrics import RunReductions, reduce_run


def _bits(value: float) -> bytes:
    return struct.pack("<d", value)


def _same(got: RunReductions, want: RunReductions) -> None:
    for name, a, b in zip(RunReductions._fields, got, want, strict=True):
        assert type(a) is type(b) and _bits(float(a)) == _bits(float(b)), (name, a, b)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 127, 128, 129, 255, 1259, 8191, 8192, 20_001])
def test_pairwise_sum_equals_numpy_sum_bit_for_bit(n: int) -> None:
    rng = np.random.default_rng(n)
    # wide magnitudes and both signs: the order of the additions shows in the last bits
    values = rng.normal(0.0, 1.0, n) * 10.0 ** rng.integers(-6, 7, n)
    for lo in (0, 3):
        part = values[lo:]
        assert _bits(pairwise_sum(values, lo, part.size)) == _bits(float(np.sum(part)))


def _runs(
    equity: list[float], n_positions: list[int], pnl: list[tuple[float, float, float]]
) -> tuple[np.ndarray, np.ndarray]:
    states = np.zeros(len(equity), dtype=STATE_DTYPE)
    states["bar_index"] = np.arange(len(equity))
    states["equity"] = equity
    states["n_positions"] = n_positions
    trades = np.zeros(len(pnl), dtype=TRADE_DTYPE)
    for k, (entry, exit_, qty) in enumerate(pnl):
        trades[k]["entry_price"], trades[k]["exit_price"], trades[k]["quantity"] = entry, exit_, qty
        trades[k]["direction"] = 1.0 if k % 3 else -1.0
        trades[k]["entry_commission"] = 0.001 * entry * qty
        trades[k]["exit_commission"] = 0.0025 * exit_ * qty
    return states, trades


def _pnl_net(trades: np.ndarray) -> np.ndarray:
    # Recorder.trades_frame's pnl_net
    gross = (
        (trades["exit_price"] - trades["entry_price"]) * trades["quantity"] * trades["direction"]
    )
    return gross - (trades["entry_commission"] + trades["exit_commission"])


def _compiled(states: np.ndarray, trades: np.ndarray, e0: float, rf: float) -> RunReductions:
    n = states.size
    returns, equity = np.empty(n), np.empty(n)
    out = np.full(N_R, np.nan)
    assert reduce_records(
        states, trades, e0, rf, returns, equity, np.empty((2, max(n, trades.size))), out
    )
    assert equity.tobytes() == np.ascontiguousarray(states["equity"]).tobytes()
    return as_reductions(out, 0.0)


money = st.floats(1.0, 1e7, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(
    start=money,
    steps=st.lists(st.floats(-0.2, 0.2), min_size=0, max_size=700),
    flat=st.integers(0, 5),
    held=st.lists(st.integers(0, 30), min_size=700, max_size=700),
    pnl=st.lists(st.tuples(money, money, st.floats(0.0, 1e4)), max_size=300),
    rate=st.sampled_from([0.0, 0.02, -0.01]),
    ppy=st.sampled_from([252.0, 12.0, 98_280.0]),
)
def test_reduce_records_equals_reduce_run_bit_for_bit(
    start: float,
    steps: list[float],
    flat: int,
    held: list[int],
    pnl: list[tuple[float, float, float]],
    rate: float,
    ppy: float,
) -> None:
    equity = list(start * np.cumprod(1.0 + np.asarray(steps)))
    equity[:0] = [start] * flat  # flat bars: zero returns, a peak held
    if len(equity) > 4:
        equity[len(equity) // 2] = 0.0  # a zero equity: the next return is 0.0
    states, trades = _runs(equity, held[: len(equity)], pnl)
    rf = (1.0 + rate) ** (1.0 / ppy) - 1.0
    want = reduce_run(
        np.asarray(equity, dtype=np.float64), states["n_positions"], _pnl_net(trades), start, rf
    )
    _same(_compiled(states, trades, start, rf), want)


def test_reduce_records_returns_are_the_states_frames_returns() -> None:
    states, trades = _runs([100.0, 110.0, 0.0, 50.0, 55.0], [0, 1, 1, 0, 2], [])
    returns = np.empty(5)
    out = np.empty(N_R)
    assert reduce_records(states, trades, 100.0, 0.0, returns, np.empty(5), np.empty((2, 5)), out)
    # r_t = E_t / E_{t-1} - 1 against 100 before the first bar; 0.0 after the zero equity
    assert returns.tolist() == [0.0, 0.10000000000000009, -1.0, 0.0, 0.10000000000000009]
    assert (out[7], out[1]) == (0.6, 55.0)  # exposure: 3 of 5 bars held; final equity


def test_reduce_records_leaves_non_finite_equity_to_numpy() -> None:
    states, trades = _runs([100.0, float("nan"), 90.0], [1, 1, 1], [])
    out = np.full(N_R, -7.0)
    ok = reduce_records(states, trades, 100.0, 0.0, np.empty(3), np.empty(3), np.empty((2, 3)), out)
    assert not ok and (out == -7.0).all()
