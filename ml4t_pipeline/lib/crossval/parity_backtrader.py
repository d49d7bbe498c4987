"""Backtrader driver of the parity scenarios (optional ``validation`` extra).

Written against Backtrader 1.9.78.123's own API; we only *call* Backtrader (GPL-3.0), nothing
of its source is copied. One ``PandasData`` feed per symbol; ``BackBroker(checksubmit=False)``
(cash checked when an order executes); the strategy reads the scenario's signal matrices by bar
index (``len(self) - 1``) so every framework trades the same decisions.

How each feature is written in Backtrader:

- market orders at the next open (``coc=False``) or at the decision close (``coc=True``,
  ``same_close``);
- stop-loss: a ``Stop`` sell (buy for shorts) at ``executed.price × (1 ∓ pct)`` submitted on the
  entry's fill notification; take-profit: a ``Limit`` order at ``× (1 ± pct)``; trailing stop:
  a ``StopTrail`` order with ``trailpercent``; when several exits are armed they share one OCO
  group (submitted stop, trailing, target in that order). A signal exit cancels them, then
  ``close()``s the position;
- bracket: ``buy_bracket`` / ``sell_bracket`` with a market parent and absolute
  ``stopprice`` / ``limitprice``;
- limit / stop entries: ``exectype=Limit`` / ``Stop`` with ``valid`` = the end of the next bar's
  date (a one-bar day order);
- commission: ``setcommission(commission=rate)`` (percent of value) or
  ``setcommission(commission=c, commtype=COMM_FIXED, stocklike=True)`` (per share);
- slippage: ``set_slippage_perc`` / ``set_slippage_fixed`` with ``slip_open=True`` (opening
  fills slip too), ``slip_match=True``, ``slip_out=True`` (the slipped price may leave the
  bar's range, as in our engine), ``slip_limit=True``; Backtrader does not slip stop levels of
  ``Stop`` orders differently from ours: only scenarios without levels use slippage;
- volume cap: ``broker.set_filler(fillers.FixedBarPerc(perc=100 × cap))``;
- target weights: ``order_target_percent``; time exit: ``close()`` at the close of the first
  bar with ``bars held >= N`` (bars counted from the entry fill bar).

Fills are read from ``order.executed.iterpending()`` at every ``Partial`` / ``Completed``
notification, so each partial execution is one row.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

import numpy as np

from ml4t_pipeline.lib.crossval.compare import FrameworkRun, fills_frame
from ml4t_pipeline.lib.crossval.scenarios import Scenario, ScenarioData


def _strategy_class(
    bt: Any, scenario: Scenario, data: ScenarioData, drop_looser_stop: bool = False
) -> Any:
    dates = list(data.inputs.close.index)
    index_of = {d.date(): k for k, d in enumerate(dates)}
    close = data.inputs.close.to_numpy()
    score = data.inputs.score.to_numpy()

    class ParityStrategy(bt.Strategy):  # type: ignore[misc, name-defined]
        def __init__(self, sink: dict[str, Any]) -> None:
            self._sink = sink
            self._index = {id(d): j for j, d in enumerate(self.datas)}
            self._exits: dict[int, list[Any]] = {}
            self._entry_bar: dict[int, int] = {}
            self._working: dict[int, Any] = {}
            self._closing: dict[int, Any] = {}
            self._best: dict[int, float] = {}  # best close since the fill bar (StopTrail's)

        def notify_order(self, order: Any) -> None:
            j = self._index[id(order.data)]
            if order.status in (order.Margin, order.Rejected):
                self._sink["rejected"] += 1
            if order.status not in (order.Partial, order.Completed):
                if not order.alive() and j in self._working and self._working[j].ref == order.ref:
                    self._working.pop(j, None)
                return
            for bit in order.executed.iterpending():
                self._sink["fills"].append(
                    (
                        bt.num2date(bit.dt).date(),
                        j,
                        float(bit.size),
                        float(bit.price),
                        float(bit.comm),
                        int(order.exectype),
                    )
                )
            order.executed.markpending()
            if order.status != order.Completed:
                return
            if j in self._working and self._working[j].ref == order.ref:
                self._working.pop(j, None)
            pos = self.getposition(order.data).size
            if pos == 0:
                for other in self._exits.pop(j, []):
                    if other.alive():
                        self.cancel(other)
                self._entry_bar.pop(j, None)
                return
            is_entry = (order.isbuy() and pos > 0) or (order.issell() and pos < 0)
            if not is_entry or order.exectype not in (
                bt.Order.Market,
                bt.Order.Limit,
                bt.Order.Stop,
                bt.Order.Close,
            ):
                return
            if order.parent is not None or self._exits.get(j):
                return
            self._entry_bar[j] = index_of[bt.num2date(order.executed.dt).date()]
            if scenario.bracket is None:
                self._arm(order, j, pos)

        def _arm(self, order: Any, j: int, pos: float) -> None:
            price = order.executed.price
            size = abs(pos)
            close_side = self.sell if pos > 0 else self.buy
            sign = 1.0 if pos > 0 else -1.0
            orders: list[Any] = []
            oco = None
            if scenario.stop_loss is not None:
                o = close_side(
                    data=order.data,
                    size=size,
                    exectype=bt.Order.Stop,
                    price=price * (1 - sign * scenario.stop_loss),
                )
                orders.append(o)
                oco = o
            if scenario.trailing is not None:
                o = close_side(
                    data=order.data,
                    size=size,
                    exectype=bt.Order.StopTrail,
                    trailpercent=scenario.trailing,
                    oco=oco,
                )
                orders.append(o)
                oco = oco or o
            if scenario.take_profit is not None:
                o = close_side(
                    data=order.data,
                    size=size,
                    exectype=bt.Order.Limit,
                    price=price * (1 + sign * scenario.take_profit),
                    oco=oco,
                )
                orders.append(o)
            self._exits[j] = orders
            self._best[j] = close[self._entry_bar[j], j]

        def _drop_fixed_stop(self, i: int, j: int, d: Any, pos: float) -> None:
            """``drop_looser_stop``: once the StopTrail's level is at or beyond the fixed Stop's,
            cancel the OCO group and resubmit the StopTrail (from the best close since the
            fill bar, so at the same level) and the target, without the fixed stop."""
            exits = self._exits.get(j, [])
            if scenario.stop_loss is None or scenario.trailing is None or len(exits) < 2:
                return
            stop, trail = exits[0], exits[1]
            if stop.exectype != bt.Order.Stop or not (stop.alive() and trail.alive()):
                return  # already dropped, or no longer armed
            pick = max if pos > 0 else min
            best = self._best[j] = pick(self._best[j], close[i, j])
            level, fixed = trail.created.price, stop.created.price
            if (pos > 0 and level < fixed) or (pos < 0 and level > fixed):
                return
            self.cancel(stop)  # cancels its OCO siblings too
            side = self.sell if pos > 0 else self.buy
            size = abs(pos)
            new = side(
                data=d,
                size=size,
                exectype=bt.Order.StopTrail,
                trailpercent=scenario.trailing,
                price=best,
            )
            orders = [new]
            if len(exits) > 2:
                target = exits[2].created.price
                orders.append(
                    side(data=d, size=size, exectype=bt.Order.Limit, price=target, oco=new)
                )
            self._exits[j] = orders

        def _flatten(self, j: int, data: Any) -> None:
            closing = self._closing.get(j)
            if closing is not None and closing.alive():
                return  # a capped exit still filling in parts already targets flat
            working = self._working.pop(j, None)
            if working is not None and working.alive():
                self.cancel(working)  # a capped entry still filling in parts
            for other in self._exits.pop(j, []):
                if other.alive():
                    self.cancel(other)
            self._entry_bar.pop(j, None)
            self._closing[j] = self.close(data=data)

        def _rank(self, i: int) -> None:
            """``ranked``: sell holdings outside the top ``n_top`` by score (cancelling their
            exits), then buy ``floor(weight × value / close)`` of each new one, in rank order."""
            row = score[i]
            valid = np.flatnonzero(np.isfinite(row))
            if valid.size == 0:
                return
            ranked = valid[np.argsort(-row[valid], kind="stable")][: scenario.n_top]
            target = set(ranked.tolist())
            for j, d in enumerate(self.datas):
                if self.getposition(d).size != 0 and j not in target:
                    self._flatten(j, d)
            equity = self.broker.getvalue()
            for j in ranked.tolist():
                d = self.datas[j]
                if self.getposition(d).size != 0 or j in self._working:
                    continue
                size = math.floor(scenario.target_weight * equity / close[i, j])
                if size > 0:
                    self._working[j] = self.buy(data=d, size=size)

        def next(self) -> None:
            i = len(self) - 1
            if scenario.kind == "ranked":
                self._rank(i)
                return
            if scenario.kind == "target_weights":
                if i % scenario.rebalance_every == 0:
                    for d in self.datas:
                        self.order_target_percent(data=d, target=scenario.target_weight)
                return
            for j, d in enumerate(self.datas):
                pos = self.getposition(d).size
                flat = pos == 0
                if scenario.bracket is None and pos != 0:
                    if (pos > 0 and data.exit_long[i, j]) or (pos < 0 and data.exit_short[i, j]):
                        self._flatten(j, d)
                        flat = True
                    elif (
                        scenario.time_exit is not None
                        and j in self._entry_bar
                        and i - self._entry_bar[j] >= scenario.time_exit
                    ):
                        self._flatten(j, d)
                        continue
                if drop_looser_stop and not flat:
                    self._drop_fixed_stop(i, j, d, pos)
                if not flat or (pos == 0 and j in self._working):
                    continue
                if scenario.direction != "short" and data.entry_long[i, j]:
                    self._enter(i, j, d, data.quantity[j])
                elif scenario.direction != "long" and data.entry_short[i, j]:
                    self._enter(i, j, d, -data.quantity[j])

        def _enter(self, i: int, j: int, d: Any, qty: float) -> None:
            if qty == 0:
                return
            sign = 1.0 if qty > 0 else -1.0
            size = abs(qty)
            c = close[i, j]
            if scenario.bracket is not None:
                stop_pct, target_pct = scenario.bracket
                bracket = self.buy_bracket if qty > 0 else self.sell_bracket
                orders = bracket(
                    data=d,
                    size=size,
                    exectype=bt.Order.Market,
                    stopprice=c * (1 - sign * stop_pct),
                    limitprice=c * (1 + sign * target_pct),
                )
                self._working[j] = orders[0]
                self._exits[j] = list(orders[1:])
                return
            side = self.buy if qty > 0 else self.sell
            if scenario.entry_order == "market":
                self._working[j] = side(data=d, size=size)
                return
            valid = dt.datetime.combine(dates[min(i + 1, len(dates) - 1)].date(), dt.time(23, 59))
            if scenario.entry_order == "limit":
                price = c * (1 - sign * scenario.entry_offset)
                exectype = bt.Order.Limit
            else:
                price = c * (1 + sign * scenario.entry_offset)
                exectype = bt.Order.Stop
            self._working[j] = side(
                data=d, size=size, exectype=exectype, price=price, valid=bt.date2num(valid)
            )

    return ParityStrategy


def run_backtrader_scenario(
    scenario: Scenario, data: ScenarioData, drop_looser_stop: bool = False
) -> FrameworkRun:
    """Run a signal or target-weight scenario through Backtrader.

    Parameters
    ----------
    scenario : Scenario
        ``kind`` ``"signals"`` or ``"target_weights"`` (``"topn"`` runs through
        :func:`ml4t_pipeline.lib.crossval.backtrader_run.run_backtrader`).
    data : ScenarioData
    drop_looser_stop : bool, default False
        ``False``: a fixed stop and a trailing stop stay in one OCO group (the natural
        Backtrader idiom; Backtrader fills the first-submitted one that triggers on a bar).
        ``True``: once the trailing level reaches the fixed stop, the fixed stop is cancelled
        (the trailing stop and the target are resubmitted at the same levels), so the tighter
        level is the one that fills, as our single stop level does; used only to show that
        the OCO order explains the remaining gap.

    Returns
    -------
    FrameworkRun
        ``framework="backtrader"``; fills stamped with the UTC close stamp of the fill bar;
        ``final_equity = broker.getvalue()`` after the last bar.

    Raises
    ------
    ImportError
        Backtrader is not installed (``validation`` extra).
    ValueError
        ``scenario.kind == "topn"``.
    """
    import backtrader as bt

    if scenario.kind == "topn":
        raise ValueError("topn scenarios run through backtrader_run.run_backtrader")
    cerebro = bt.Cerebro(stdstats=False, preload=True, runonce=True, cheat_on_open=False)
    broker = bt.brokers.BackBroker(
        cash=scenario.initial_cash, checksubmit=False, coc=scenario.fill == "close", coo=False
    )
    cerebro.broker = broker
    if scenario.commission is not None:
        kind, value = scenario.commission
        if kind == "percent":
            broker.setcommission(commission=value)
        else:
            broker.setcommission(
                commission=value, commtype=bt.CommInfoBase.COMM_FIXED, stocklike=True
            )
    if scenario.slippage is not None:
        kind, value = scenario.slippage
        setter = broker.set_slippage_perc if kind == "percent" else broker.set_slippage_fixed
        setter(value, slip_open=True, slip_limit=True, slip_match=True, slip_out=True)
    if scenario.volume_cap is not None:
        broker.set_filler(bt.broker.fillers.FixedBarPerc(perc=100.0 * scenario.volume_cap))
    inputs = data.inputs
    for symbol in inputs.symbols:
        frame = (
            inputs.open[[symbol]]
            .rename(columns={symbol: "open"})
            .assign(
                high=inputs.high[symbol],
                low=inputs.low[symbol],
                close=inputs.close[symbol],
                volume=data.volume[symbol],
            )
        )
        cerebro.adddata(bt.feeds.PandasData(dataname=frame, openinterest=None), name=symbol)
    sink: dict[str, Any] = {"fills": [], "rejected": 0}
    closed: list[int] = [0]
    cerebro.addstrategy(_strategy_class(bt, scenario, data, drop_looser_stop), sink=sink)
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="trades")
    start = time.perf_counter()
    strat = cerebro.run()[0]
    seconds = time.perf_counter() - start
    ta = strat.analyzers.trades.get_analysis()
    closed[0] = int(ta.get("total", {}).get("closed", 0)) if ta else 0
    stamp_of = {d.date(): ts for d, ts in zip(inputs.close.index, inputs.timestamps, strict=True)}
    rows = sink["fills"]
    names = {
        int(bt.Order.Market): "market",
        int(bt.Order.Close): "market",
        int(bt.Order.Limit): "limit",
        int(bt.Order.Stop): "stop",
        int(bt.Order.StopTrail): "trailing_stop",
    }
    fills = fills_frame(
        {
            "timestamp": [stamp_of[r[0]] for r in rows],
            "symbol": [inputs.symbols[r[1]] for r in rows],
            "quantity": [r[2] for r in rows],
            "price": [r[3] for r in rows],
            "commission": [r[4] for r in rows],
            "reason": [names.get(r[5], "other") for r in rows],
        }
    )
    return FrameworkRun(
        framework="backtrader",
        fills=fills,
        final_equity=float(cerebro.broker.getvalue()),
        n_closed_trades=closed[0],
        settings={"version": bt.__version__, "driver": "bt.Strategy (native orders)"},
        run_seconds=seconds,
        n_rejected=int(sink["rejected"]),
    )
