"""The market-order lane (engine.broker.lane) gives the same run as the general passes.

Each case runs one scripted strategy twice: with the lane (the default in plain settings) and
with the lane switched off (``lane_settings`` patched to refuse), and compares every record:
fills, trades, orders, rejections, portfolio states and open positions.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import (
    BacktestEngine,
    BacktestResult,
    BarBatch,
    ChunkedMarketData,
    ExecutionConfig,
    FixedBpsSlippage,
    FixedPercentageSlippage,
    MarketData,
    PercentageCommission,
    PerShareCommission,
    PerTradeCommission,
    SpreadAwareSlippage,
    Strategy,
    TieredCommission,
)
from engine.broker import broker as broker_module
from engine.broker import lane_rows, state
from engine.broker.broker import Broker
from engine.costs.commission import CommissionModel
from engine.costs.slippage import SlippageModel
from engine.recorder import Recorder
from tests.engine.helpers import make_panel

SYMBOLS = ["AAA", "BBB", "CCC"]
Action = tuple[int, int, str, float]  # bar, symbol index, kind, quantity


class Scripted(Strategy):
    """Plays ``actions``: ``buy``/``sell`` q shares, ``close`` the position, ``cancel`` the
    oldest working order of the symbol, ``limit`` a buy limit order at half the close (an order
    outside the lane); records every order's status at each bar."""

    def __init__(self, actions: list[Action]) -> None:
        self.actions = actions
        self.seen: list[tuple[int, str, float]] = []

    def record_working(self, k: int) -> None:
        """Note every working order's status and filled shares at bar ``k``."""
        for order in self.broker.open_orders():
            self.seen.append((k, order.status.value, order.filled))

    def on_timestamp_batch(
        self, timestamp: datetime, batch: BarBatch, context: dict[str, float]
    ) -> None:
        broker = self.broker
        k = batch.index
        self.record_working(k)
        for bar, sym, kind, q in self.actions:
            if bar != k:
                continue
            symbol = SYMBOLS[sym]
            if kind == "buy":
                broker.submit(symbol, q)
            elif kind == "sell":
                broker.submit(symbol, -q)
            elif kind == "close":
                broker.close_position(symbol)
            elif kind == "cancel":
                working = broker.open_orders(symbol)
                if working:
                    broker.cancel(working[0], "strategy_cancel")
            elif kind == "limit" and math.isfinite(broker.price(symbol)):
                broker.submit(symbol, q, limit_price=broker.price(symbol) * 0.5)


def _bars(draw: st.DrawFn, n: int) -> list[tuple[float, float, float, float] | None]:
    out: list[tuple[float, float, float, float] | None] = []
    price = draw(st.floats(5.0, 50.0))
    for _ in range(n):
        if draw(st.integers(0, 4)) == 0:
            out.append(None)  # no bar for the symbol at this timestamp
            continue
        o = price * draw(st.floats(0.95, 1.05))
        c = price * draw(st.floats(0.95, 1.05))
        out.append((o, max(o, c) * 1.01, min(o, c) * 0.99, c))
        price = c
    return out


@st.composite
def scripted_runs(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(3, 12))
    bars = {sym: _bars(draw, n) for sym in SYMBOLS}
    for seq in bars.values():
        # every symbol has a bar somewhere: one without any is not in the market data, and the
        # script's orders for it are refused as unknown (KeyError) before either pass runs
        if all(bar is None for bar in seq):
            seq[0] = (10.0, 10.5, 9.5, 10.0)
    actions = draw(
        st.lists(
            st.tuples(
                st.integers(0, n - 1),
                st.integers(0, len(SYMBOLS) - 1),
                st.sampled_from(["buy", "buy", "sell", "close", "cancel", "limit"]),
                st.sampled_from([1.0, 3.0, 10.0, 400.0]),
            ),
            max_size=25,
        )
    )
    return {
        "bars": bars,
        "actions": actions,
        "cash": draw(st.sampled_from([500.0, 5_000.0, 100_000.0])),
        "short": draw(st.booleans()),
        "close_at_end": draw(st.booleans()),
    }


def _run(
    data: MarketData | ChunkedMarketData,
    actions: list[Action],
    config: ExecutionConfig,
    use_lane: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[BacktestResult, list[tuple[int, str, float]]]:
    with monkeypatch.context() as patch:
        if not use_lane:
            patch.setattr(broker_module, "lane_settings", lambda broker: False)
        strategy = Scripted(actions)
        result = BacktestEngine(data, strategy, config=config).run()
    return result, strategy.seen


def _lane_and_general_runs(
    data: MarketData, actions: list[Action], config: ExecutionConfig
) -> list[tuple[BacktestResult, list[tuple[int, str, float]]]]:
    """The scripted actions run four ways: with and without the lane, each by one call per
    order (``Scripted``) and by batch calls (``Batched``); each result with what it saw."""
    runs = []
    for use_lane in (True, False):
        for kind in (Scripted, Batched):
            with pytest.MonkeyPatch.context() as patch:
                if not use_lane:
                    patch.setattr(broker_module, "lane_settings", lambda broker: False)
                strategy = kind(actions)
                runs.append((BacktestEngine(data, strategy, config=config).run(), strategy.seen))
    return runs


def _assert_same(a: BacktestResult, b: BacktestResult) -> None:
    for name in ("fills", "trades", "orders", "rejections", "portfolio_states", "open_positions"):
        left: pl.DataFrame = getattr(a, name)
        right: pl.DataFrame = getattr(b, name)
        assert left.equals(right, null_equal=True), name


@settings(max_examples=60, deadline=None)
@given(scripted_runs())
def test_lane_scripted_market_orders_match_general_passes(run: dict[str, Any]) -> None:
    data = MarketData.from_frame(make_panel(run["bars"]))
    config = ExecutionConfig(
        initial_cash=run["cash"], allow_short=run["short"], close_at_end=run["close_at_end"]
    )
    with pytest.MonkeyPatch.context() as monkeypatch:
        with_lane, seen_lane = _run(data, run["actions"], config, True, monkeypatch)
        without, seen = _run(data, run["actions"], config, False, monkeypatch)
    _assert_same(with_lane, without)
    assert seen_lane == seen


def test_lane_is_taken_in_plain_settings_only() -> None:
    data = MarketData.from_frame(make_panel({"AAA": [(10.0, 11.0, 9.0, 10.0)] * 3}))
    assert Broker(data, ExecutionConfig(), None, Recorder(data))._lane is not None
    # costs that read no bar and keep no state between fills take the lane
    cheap = ExecutionConfig(slippage=FixedBpsSlippage(5.0), commission=PercentageCommission(0.001))
    assert Broker(data, cheap, None, Recorder(data))._lane is not None
    spread = ExecutionConfig(slippage=SpreadAwareSlippage())
    assert Broker(data, spread, None, Recorder(data))._lane is None
    tiered = ExecutionConfig(commission=TieredCommission([(0.0, 0.001)]))
    assert Broker(data, tiered, None, Recorder(data))._lane is None

    class Rounded(FixedPercentageSlippage):  # a subclass may price otherwise: no lane
        pass

    own = ExecutionConfig(slippage=Rounded(0.001))
    assert Broker(data, own, None, Recorder(data))._lane is None
    at_close = ExecutionConfig(fill="close")
    assert Broker(data, at_close, None, Recorder(data))._lane is None


_LANE_COSTS: list[tuple[SlippageModel | None, CommissionModel | None]] = [
    (FixedPercentageSlippage(0.002), None),
    (FixedBpsSlippage(7.5), PercentageCommission(0.001)),
    (None, PerShareCommission(0.01, minimum=1.0, maximum_pct=0.005)),
    (FixedPercentageSlippage(0.001), PerTradeCommission(2.5)),
]


@pytest.mark.parametrize("costs", range(len(_LANE_COSTS)))
@settings(max_examples=25, deadline=None)
@given(run=scripted_runs())
def test_lane_with_cost_models_matches_general_passes(costs: int, run: dict[str, Any]) -> None:
    # the lane prices each fill at the open with the run's slippage and commission: fills,
    # trades, orders, rejections (cash checks include the commission), states equal the
    # general passes' (per order and in batches)
    slippage, commission = _LANE_COSTS[costs]
    data = MarketData.from_frame(make_panel(run["bars"]))
    config = ExecutionConfig(
        initial_cash=run["cash"],
        allow_short=run["short"],
        close_at_end=run["close_at_end"],
        **({"slippage": slippage} if slippage is not None else {}),
        **({"commission": commission} if commission is not None else {}),
    )
    assert Broker(data, config, None, Recorder(data))._lane is not None
    with pytest.MonkeyPatch.context() as monkeypatch:
        with_lane, seen_lane = _run(data, run["actions"], config, True, monkeypatch)
        without, seen = _run(data, run["actions"], config, False, monkeypatch)
    _assert_same(with_lane, without)
    assert seen_lane == seen


def test_lane_limit_order_moves_working_orders_to_the_book(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # AAA has no bar at 1 and 2: its market order from bar 0 is still working when the limit
    # order of bar 1 ends the lane, and must fill at bar 3 ahead of the later orders
    bars = {
        "AAA": [(10.0, 10.5, 9.5, 10.0), None, None, (11.0, 11.5, 10.5, 11.0)],
        "BBB": [(20.0, 20.5, 19.5, 20.0)] * 4,
    }
    actions: list[Action] = [(0, 0, "buy", 5.0), (1, 1, "limit", 2.0), (2, 0, "sell", 2.0)]
    data = MarketData.from_frame(make_panel(bars))
    config = ExecutionConfig()
    with_lane, seen_lane = _run(data, actions, config, True, monkeypatch)
    without, seen = _run(data, actions, config, False, monkeypatch)
    _assert_same(with_lane, without)
    assert seen_lane == seen
    assert with_lane.fills.get_column("quantity").to_list() == [5.0, -2.0]


def test_lane_orders_working_across_chunk_boundaries_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(3)
    n = 12
    bars: dict[str, list[tuple[float, float, float, float] | None]] = {}
    for sym in SYMBOLS:
        seq: list[tuple[float, float, float, float] | None] = []
        for k in range(n):
            p = 10.0 + k + rng.random()
            seq.append(None if (sym == "CCC" and 3 <= k <= 6) else (p, p + 1, p - 1, p))
        bars[sym] = seq
    signal = {"signal": {sym: [float(k) for k in range(n)] for sym in SYMBOLS}}
    panel = make_panel(bars, signals=signal)
    actions: list[Action] = [
        (2, 2, "buy", 5.0),  # CCC: no bar 3-6, the order waits across a boundary
        (1, 0, "buy", 3.0),
        (5, 0, "close", 0.0),
        (7, 2, "close", 0.0),
        (8, 1, "buy", 2.0),
    ]
    stamps = panel.get_column("timestamp").unique().sort()
    cuts = [stamps[0], stamps[4], stamps[8], stamps[-1] + (stamps[1] - stamps[0])]
    chunks = [
        panel.filter((pl.col("timestamp") >= lo) & (pl.col("timestamp") < hi))
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)
    ]
    config = ExecutionConfig()

    def chunked() -> ChunkedMarketData:
        return ChunkedMarketData(chunks, symbols=SYMBOLS, signal_columns=["signal"])

    with_lane, _ = _run(chunked(), actions, config, True, monkeypatch)
    without, _ = _run(chunked(), actions, config, False, monkeypatch)
    whole = MarketData.from_frame(panel, signal_columns=["signal"])
    in_memory, _ = _run(whole, actions, config, True, monkeypatch)
    _assert_same(with_lane, without)
    _assert_same(with_lane, in_memory)
    assert with_lane.trades.get_column("entry_signal").to_list() == [1.0, 2.0]


def test_lane_record_order_reads_and_writes_its_row() -> None:
    data = MarketData.from_frame(make_panel({"AAA": [(10.0, 11.0, 9.0, 10.0)] * 2}))
    broker = Broker(data, ExecutionConfig(), None, Recorder(data))
    broker.begin_bar(0)
    broker.chronological_step()  # the lane's step 1 sets the bar's rows
    order = broker.submit("AAA", 4.0)
    assert isinstance(order, lane_rows.RecordOrder)
    assert (order.quantity, order.filled, order.status.value) == (4.0, 0.0, "submitted")
    assert (order.submit_index, order.decision_row, order.reason) == (0, 0, "strategy")
    order.quantity = 3.0
    order.submit_index = 0
    order.decision_row = -1
    order.transition(state.CANCELLED, "by_test")
    row = broker._lane.rows[order.order_id] if broker._lane is not None else None
    assert row is not None
    assert (row["quantity"], row["decision_row"], order.status_reason) == (3.0, -1, "by_test")
    assert order.status is state.CANCELLED


class Batched(Scripted):
    """Plays the same ``actions`` as :class:`Scripted`, each bar's run of consecutive buys /
    sells (one ``submit_batch``) or closes (one ``close_positions``) placed in one call."""

    def on_timestamp_batch(
        self, timestamp: datetime, batch: BarBatch, context: dict[str, float]
    ) -> None:
        broker = self.broker
        k = batch.index
        self.record_working(k)
        todo = [(sym, kind, q) for bar, sym, kind, q in self.actions if bar == k]
        while todo:
            kind = "close" if todo[0][1] == "close" else "order"
            run = []
            while todo and ("close" if todo[0][1] == "close" else "order") == kind:
                run.append(todo.pop(0))
            ids = [sym for sym, _, _ in run]
            if kind == "close":
                broker.close_positions(ids)
            else:
                broker.submit_batch(ids, [q if k == "buy" else -q for _, k, q in run])


@settings(max_examples=40, deadline=None)
@given(scripted_runs())
def test_lane_batch_orders_match_one_call_per_order(run: dict[str, Any]) -> None:
    data = MarketData.from_frame(make_panel(run["bars"]))
    config = ExecutionConfig(
        initial_cash=run["cash"], allow_short=run["short"], close_at_end=run["close_at_end"]
    )
    actions = [a for a in run["actions"] if a[2] in ("buy", "sell", "close")]
    results = _lane_and_general_runs(data, actions, config)
    for result, seen in results[1:]:
        _assert_same(result, results[0][0])
        assert seen == results[0][1]


@pytest.mark.parametrize("use_lane", [True, False])
def test_lane_batch_orders_bad_input_places_nothing(use_lane: bool) -> None:
    data = MarketData.from_frame(make_panel({"AAA": [(10.0, 11.0, 9.0, 10.0)] * 2}))
    broker = Broker(data, ExecutionConfig(), None, Recorder(data))
    if not use_lane:
        broker._lane = None
    broker.begin_bar(0)
    broker.chronological_step()
    with pytest.raises(ValueError, match="fractional_shares=False"):
        broker.submit_batch([0, 0], [2.0, 1.5])
    with pytest.raises(ValueError, match="outside 0..0"):
        broker.submit_batch([0, 1], 2.0)
    with pytest.raises(ValueError, match="outside 0..0"):
        broker.close_positions([3])
    with pytest.raises(ValueError, match="shape of ids"):
        broker.submit_batch([0, 0], [2.0])
    assert broker.orders == []
    assert float(broker.pending[0]) == 0.0
    ids = broker.submit_batch(np.array([0, 0]), np.array([2.0, 3.0]))
    assert ids.tolist() == [0, 1]
    assert float(broker.pending[0]) == 5.0
    assert broker.close_positions([0, 0]).tolist() == [2]  # the second nets to zero
    assert broker.orders[2].quantity == -5.0


def test_lane_batch_orders_strided_or_read_only_arrays_place_what_they_hold() -> None:
    # the compiled intake is bound for contiguous arrays: ids and quantities with a step, or
    # read-only ones, must still be read element by element as NumPy sees them
    bars = {sym: [(10.0, 11.0, 9.0, 10.0)] * 2 for sym in ("AAA", "BBB", "CCC")}
    data = MarketData.from_frame(make_panel(bars))
    broker = Broker(data, ExecutionConfig(), None, Recorder(data))
    assert broker._lane is not None
    broker.begin_bar(0)
    broker.chronological_step()
    assert broker.submit_batch(np.array([0]), 1.0).tolist() == [0]  # contiguous first
    ids = np.array([2, 9, 1, 9, 0, 9])[::2]  # 2, 1, 0 (9 would be outside the universe)
    quantities = np.array([3.0, 0.5, 4.0, 0.5, 5.0, 0.5])[::2]
    assert broker.submit_batch(ids, quantities).tolist() == [1, 2, 3]
    frozen = np.array([1, 2])
    frozen.flags.writeable = False
    assert broker.close_positions(np.array([1, 9, 2])[::2]).tolist() == [4, 5]
    assert broker.close_positions(frozen).tolist() == []  # netted to zero already
    placed = [(order.sid, order.quantity) for order in broker.orders]
    assert placed == [(0, 1.0), (2, 3.0), (1, 4.0), (0, 5.0), (1, -4.0), (2, -3.0)]


def test_lane_orders_beyond_the_first_row_buffer_match_general_passes() -> None:
    # 4,900 orders in one bar: the order rows grow past their first buffer (4,096 rows);
    # each row is written whole when placed (the grown part is not blanked first), so every
    # field of the orders frame must still equal the general passes'
    bars = {sym: [(10.0, 10.5, 9.5, 10.0)] * 3 for sym in SYMBOLS}
    actions: list[Action] = [(0, k % 3, "buy", 1.0) for k in range(2_500)]
    actions += [(0, k % 3, "sell", 1.0) for k in range(2_400)]  # AAA left long 34 shares
    actions += [(1, 0, "close", 0.0), (1, 1, "buy", 2.0)]
    data = MarketData.from_frame(make_panel(bars))
    config = ExecutionConfig(initial_cash=1_000_000.0, allow_short=True)
    results = [result for result, _ in _lane_and_general_runs(data, actions, config)]
    for result in results[1:]:
        _assert_same(result, results[0])
    orders = results[0].orders
    assert orders.height == 4_902 and orders.get_column("status").unique().to_list() == ["filled"]


def test_lane_many_orders_in_one_bar_match_general_passes() -> None:
    # 20 orders of one bar: the lane accepts a long run of consecutive ids at once
    bars = {sym: [(10.0, 10.5, 9.5, 10.0)] * 3 for sym in SYMBOLS}
    actions: list[Action] = [(0, k % 3, "buy", 1.0 + k) for k in range(20)]
    actions += [(1, 0, "close", 0.0), (1, 2, "sell", 4.0)]
    data = MarketData.from_frame(make_panel(bars))
    config = ExecutionConfig(initial_cash=1_000.0)
    results = [result for result, _ in _lane_and_general_runs(data, actions, config)]
    for result in results[1:]:
        _assert_same(result, results[0])
    # 1,000 of cash: the buys fill in order until one would overdraw it
    assert results[0].fills.height > 1 and results[0].rejections.height > 0
