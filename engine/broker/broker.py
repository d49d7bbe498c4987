"""The Python driver's broker: the face the engine loop, the strategies and the market
mechanics call.

:class:`Broker` is :class:`engine.broker.state.BrokerState` (the run state) with the public
methods: the strategy's queries (position, price, open orders), the bar clock, the state
recording and the output of open positions, the chunk-boundary hand-over, and, bound from the
plain functions of the sibling modules, order intake (:mod:`engine.broker.intake`), the fill
passes (:mod:`engine.broker.passes`) and the risk hooks (:mod:`engine.broker.hooks`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from engine.broker import hooks, intake, passes
from engine.broker.lane import lane_costs, lane_settings, lane_step
from engine.broker.lane_rows import OrderRows
from engine.broker.state import BrokerState
from engine.core import layout
from engine.data import BarBatch, IntArray, MarketData
from engine.orders import Order, OrderStatus
from engine.risk import kernels

if TYPE_CHECKING:
    from engine.config import ExecutionConfig
    from engine.events import Fill
    from engine.recorder import Recorder
    from engine.risk.manager import RiskManager

_DAY_US = 86_400_000_000


class Broker(BrokerState):
    """Run state and matching for one backtest run (see :mod:`engine.broker`).

    Parameters
    ----------
    data : MarketData
        The run's market data.
    config : ExecutionConfig
        Fill, cost and cash settings.
    risk_manager : RiskManager or None
        The risk rules (hooks B, C, D), if any.
    recorder : Recorder
        Where fills, trades, rejections and portfolio states are written.
    on_fill : callable or None
        Called with each :class:`engine.events.Fill` (the strategy's ``on_fill``).
    """

    def __init__(
        self,
        data: MarketData,
        config: ExecutionConfig,
        risk_manager: RiskManager | None,
        recorder: Recorder,
        on_fill: Callable[[Fill], None] | None = None,
    ) -> None:
        super().__init__(data, config, risk_manager, recorder, on_fill)
        if lane_settings(self):
            self._lane = OrderRows(recorder.records, data.n_symbols, names=self._names)
            self._lane.costs = lane_costs(self)
            self.orders.bind(self._lane)

    # ------------------------------------------------------------------ queries
    def position(self, symbol: str) -> float:
        """Signed shares of ``symbol`` held (0.0 if none).

        Raises
        ------
        KeyError
            If ``symbol`` is not in the market data.
        """
        return float(self.qty[self.data.resolve(symbol)])

    def price(self, symbol: str) -> float:
        """The latest close of ``symbol`` (currency per share; NaN before its first bar).

        Raises
        ------
        KeyError
            If ``symbol`` is not in the market data.
        """
        return float(self.marks[self.data.resolve(symbol)])

    def position_value(self, symbol: str) -> float:
        """Signed shares × latest close of ``symbol`` (currency; 0.0 when flat).

        Raises
        ------
        KeyError
            If ``symbol`` is not in the market data.
        """
        sid = self.data.resolve(symbol)
        q = float(self.qty[sid])
        return q * float(self.marks[sid]) if q != 0 else 0.0

    def unrealized_pnl_pct(self, symbol: str) -> float:
        """``(close / average entry price - 1) × direction`` of the position in ``symbol``
        (fraction; 0.0 when flat).

        Raises
        ------
        KeyError
            If ``symbol`` is not in the market data.
        """
        sid = self.data.resolve(symbol)
        q = float(self.qty[sid])
        if q == 0:
            return 0.0
        return (float(self.marks[sid]) / float(self._avg[sid]) - 1.0) * math.copysign(1.0, q)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Working orders (submitted, accepted or partially filled), of ``symbol`` or of
        every symbol, in submission order.

        Raises
        ------
        KeyError
            If ``symbol`` is not in the market data.
        """
        sid = None if symbol is None else self.data.resolve(symbol)
        return [
            o
            for o in (*self._lane_orders(), *self.book, *self._new_orders)
            if o.is_active and (sid is None or o.sid == sid)
        ]

    def _lane_orders(self) -> list[Order]:
        """The working orders of the market-order lane (:mod:`engine.broker.lane`), in
        order."""
        if self._lane is None:
            return []
        orders = self.orders
        return [orders[o] for o in self._lane.working()]

    def shares_for_value(self, symbol: str, value: float) -> float:
        """Shares worth ``value`` (currency; negative counts as 0) at the latest close,
        rounded toward zero to whole shares unless fractional.

        Raises
        ------
        KeyError
            If ``symbol`` is not in the market data.
        ValueError
            If the symbol has had no bar yet.
        """
        sid = self.data.resolve(symbol)
        price = float(self.marks[sid])
        if not math.isfinite(price) or price <= 0:
            raise ValueError(f"no price yet for {symbol!r}: it has not had a bar")
        return self.round_quantity(max(value, 0.0) / price)

    def referenced_rows(self) -> IntArray:
        """Market-data rows the run state still points at (latest bars, decision bars of
        working orders and open trades): what a chunk boundary must carry over."""
        rows = [int(o.decision_row) for o in (*self.book, *self._new_orders) if o.is_active]
        lane = self._lane
        if lane is not None:  # the lane's rows directly (no order view needed)
            rows.extend(lane.decision_row[lane.working()].tolist())
        rows.extend(self._new_entries.values())
        extra = np.asarray(rows, dtype=np.int64)
        trades = self._aux_i[layout.A_DROW, self.trades.sids()]
        return np.concatenate(
            (self.last_row[self.last_row >= 0], extra[extra >= 0], trades[trades >= 0])
        )

    def rebase(self, data: MarketData, remap: IntArray | None) -> None:
        """Switch to another window of chunked market data; ``remap[old_row]`` is the row in
        ``data`` (every row from :meth:`referenced_rows` is carried); ``None``: row numbers
        are unchanged."""
        self.data = data
        self._index_lists(data)
        if self._lane is not None:  # its cached call arguments hold the old window's arrays
            self._lane.refs = None
            self._lane.bound = False  # the entries are taken for the window's array types
        if remap is None:
            return
        seen = self.last_row >= 0
        self.last_row[seen] = remap[self.last_row[seen]]
        lane = self._lane
        if lane is not None:  # the lane's rows directly (no order view needed)
            ids = np.asarray(lane.working(), dtype=np.int64)
            rows = lane.decision_row[ids]
            carried_ids = ids[rows >= 0]
            lane.decision_row[carried_ids] = remap[rows[rows >= 0]]
        for order in (*self.book, *self._new_orders):
            if order.is_active and order.decision_row >= 0:
                order.decision_row = int(remap[order.decision_row])
        open_ = self.trades.sids()
        drow = self._aux_i[layout.A_DROW]
        carried = open_[drow[open_] >= 0]
        drow[carried] = remap[drow[carried]]
        self._new_entries = {
            sid: int(remap[row]) if row >= 0 else row for sid, row in self._new_entries.items()
        }

    def begin_bar(self, index: int) -> None:
        """Start timestamp ``index``: its data rows, latest rows per symbol, clock and day
        (a new UTC day resets the day-start equity and the day's fill count)."""
        self.i = index
        offsets = self._offsets
        lo = offsets[index]
        self.lo = lo
        hi = offsets[index + 1]
        self.hi = hi
        if self._lane is None:  # else the lane's step does it (engine.broker.lane)
            kernels.set_last_rows(lo, hi, self.data.sym_id, self.last_row)
        self._now = self._datetimes[index]
        now_us = self._stamps[index]
        self.now_us = now_us
        day = now_us // _DAY_US
        if day != self._day:
            self._day_start = self._last_equity
            self._day = day
            self._fills_today = 0
        if self.mechanics is not None:
            self.mechanics.begin_bar(self)

    def lane_bars(
        self,
        first: int,
        stop: int,
        strategy_step: Callable[[int, int, int], None],
        on_batch: Callable[[datetime, BarBatch, dict[str, float]], None] | None = None,
        context: dict[str, float] | None = None,
    ) -> int:
        """Run timestamps ``first:stop`` of the current window while the market-order lane
        lasts (:mod:`engine.broker.lane`; the engine's loop does the same steps with the
        general passes): per bar, the clock (:meth:`begin_bar`), steps 1-2 in one compiled
        call (:func:`engine.broker.lane.lane_step`, which first accepts the orders of the
        bar before), ``strategy_step(index, lo, hi)`` (step 3; with ``on_batch``, a batch
        strategy's ``on_timestamp_batch``, it is called directly instead, with the bar's
        datetime, :class:`engine.BarBatch` and ``context``) and the portfolio state (step 6).
        Step 4 of a bar is the lane's acceptance of its new orders, done by the next bar's
        call, or here after the last bar run; with the lane's settings steps 5 and the
        market mechanics have nothing to do.

        Returns
        -------
        int
            The first timestamp not run: ``stop``, or the bar after the one during which an
            order outside the lane ended it (that bar's steps 4-6 done by the general
            passes).
        """
        rows = self._lane
        if rows is None:
            return first
        states = self._recorder.records.states
        begin_bar = self.begin_bar
        data = self.data
        datetimes = self._datetimes
        batch_context = {} if context is None else context
        for i in range(first, stop):
            begin_bar(i)  # with the lane on: no last-rows pass here, no market mechanics
            lane_step(self, rows)
            if on_batch is not None:
                on_batch(datetimes[i], BarBatch(data, i, self.lo, self.hi), batch_context)
            else:
                strategy_step(i, self.lo, self.hi)
            if self._lane is None:  # an order outside the lane ended it during step 3
                self.validate_new_orders()
                self.fill_at_close()
                self.record_state()
                return i + 1
            _, n_fills, value, gross, n_held = rows.value
            if n_fills != self.n_fills:  # fills since the step: value the portfolio again
                self.record_state()
                continue
            cash = self.cash
            equity = cash + value
            states.append((i, equity, cash, value, gross, n_held))
            self._last_equity = equity
            if equity > self._peak:
                self._peak = equity
        rows.accept()
        return stop

    def record_state(self) -> None:
        """Step 6: mark to market at the close and append the portfolio state."""
        lane = self._lane
        if lane is not None and lane.value[0] == self.i and lane.value[1] == self.n_fills:
            # valued by the lane's step, and no fill since (nothing else moves the marks)
            _, _, value, gross, n_held = lane.value
        else:
            held = self.held()
            value, gross = (
                kernels.portfolio_value(held, self.qty, self.marks) if held.size else (0.0, 0.0)
            )
            n_held = int(held.size)
        equity = self.cash + value
        if self.mechanics is not None:
            equity += self.mechanics.receivable
        self._recorder.state(self.i, equity, self.cash, value, gross, n_held)
        self._last_equity = equity
        if equity > self._peak:
            self._peak = equity

    def open_positions_frame(self) -> pl.DataFrame:
        """Positions still open (see :class:`engine.BacktestResult.open_positions`)."""
        rows = []
        for trade in self.trades.values():
            sid = trade.sid
            q = float(self.qty[sid])
            avg = float(self._avg[sid])
            mark = float(self.marks[sid])
            rows.append(
                (
                    str(self.data.symbols[sid]),
                    "long" if q > 0 else "short",
                    q,
                    avg,
                    mark,
                    int(self.data.timestamps[trade.entry_index]),
                    trade.commission,
                    (mark - avg) * q - trade.commission,
                    float(self._stop[sid]),
                    float(self._tp[sid]),
                )
            )
        schema = {
            "symbol": pl.String,
            "side": pl.String,
            "quantity": pl.Float64,
            "avg_price": pl.Float64,
            "mark": pl.Float64,
            "entry_timestamp": pl.Int64,
            "entry_commission": pl.Float64,
            "unrealized_pnl": pl.Float64,
            "stop_loss": pl.Float64,
            "take_profit": pl.Float64,
        }
        frame = pl.DataFrame(rows, schema=schema, orient="row")
        return frame.with_columns(pl.col("entry_timestamp").cast(pl.Datetime("us", "UTC")))

    def end_order(self, order: Order, status: OrderStatus, reason: str, event: str) -> None:
        """Move ``order`` to the terminal ``status`` (cancelled, rejected, expired), release
        its pending quantity and record ``reason`` with the rejection ``event`` row. Used by
        the market mechanics (:mod:`engine.mechanics`) for delisted symbols.

        Raises
        ------
        RuntimeError
            If the order may not move to ``status`` (the core's transition matrix,
            :data:`engine.orders.TRANSITIONS`).
        """
        self._finish(order, status, reason, event)

    def positions_changed(self) -> None:
        """Forget the cached ids of held symbols (after quantities changed outside a fill,
        e.g. a split)."""
        self._held = None

    # ------------------------------------------------------------------ bound steps
    # plain functions over the run state, bound as methods (no extra call on the hot path)
    submit = intake.submit
    order_target_value = intake.order_target_value
    close_position = intake.close_position
    submit_batch = intake.submit_batch
    close_positions = intake.close_positions
    replace = intake.replace
    record_unplaced = intake.record_unplaced
    fill_pending_at_open = passes.fill_pending_at_open
    chronological_step = passes.chronological_step
    stops_first_step = passes.stops_first_step
    check_levels = passes.check_levels
    update_marks = passes.update_marks
    fill_at_close = passes.fill_at_close
    close_all = passes.close_all
    close_at = passes.close_at
    position_batch = hooks.position_batch
    apply_actions = hooks.apply_actions
    flush_entries = hooks.flush_entries
    validate_new_orders = hooks.validate_new_orders
    check_submission_cash = hooks.check_submission_cash
