"""Run the reference experiment in Backtrader 1.9.78.123 (optional ``validation`` extra).

We only *call* Backtrader (GPL-3.0); nothing of its source is copied here.

How the spec maps onto Backtrader
---------------------------------
One ``PandasData`` feed per symbol (sorted by name), ``BackBroker`` with
``setcommission(commission=rate)`` (a fraction: ``CommissionInfo`` has ``percabs=True``),
``cheat_on_open=False`` and ``coc=False`` (market orders fill at the next bar's open).
The strategy reads the score matrix by bar index (``len(self) - 1``), so the three frameworks
rank exactly the same numbers. Each ``next()``:

1. rank finite scores (descending, ties by symbol order), target the first ``n``;
2. for every holding outside the target: cancel its stop order, then ``close()`` it (market);
3. ``equity = broker.getvalue()`` (cash + positions at this close); for every target symbol
   without a position, in rank order, ``buy(size=floor(weight * equity / close))``.

When a buy completes (``notify_order``), a sell ``Order.Stop`` at
``executed.price * (1 - stop_pct)`` for the executed size is submitted. Notifications arrive
before ``next()`` of the fill bar, so the stop enters the broker's queue ahead of that bar's
new market orders and is first examined on the bar after the entry bar.

What the Backtrader broker then does (``BackBroker.next``), which decides the fills:

- ``checksubmit=True`` (Backtrader's default; *not* the reference setting): at the start of
  the next bar, every order submitted since the previous bar is *pseudo-executed in submission
  order* at its creation price (the close it was created at, the stop price for stops) against
  the cash at that close; an order leaving cash < 0 is refused (``Margin``). Stop sells
  submitted for that bar's entries count as closing their positions in that pseudo-execution,
  so they raise the cash available to the buys checked after them.
- The pending queue is then executed once, oldest order first: the stops of earlier entries,
  then the market sells, then the market buys, each at the open (stops: at the stop price, or
  at the open when the open gaps through it). A buy whose cost plus commission exceeds the cash
  at that moment is refused (``Margin``) even if it passed the submission check. Stop exits
  triggered anywhere in the bar therefore fund the same bar's opening buys.
- ``broker.cancel`` only removes orders already in the pending queue. With ``checksubmit=True``
  a stop submitted on the entry bar is still in the *submitted* queue at that bar's ``next()``
  and cannot be cancelled there (see ``BacktraderSettings.checksubmit``); with
  ``checksubmit=False`` (the reference setting) every order goes straight to the pending queue.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ml4t_pipeline.lib.crossval.compare import FrameworkRun, fills_frame
from ml4t_pipeline.lib.crossval.reference import ReferenceInputs, ReferenceSpec

BACKTRADER_VERSION = "1.9.78.123"
"""The Backtrader version the reference figures were measured with."""


@dataclass(frozen=True)
class BacktraderSettings:
    """Backtrader knobs that decide the reference run's fills.

    The defaults reproduce the issue-7 reference figures (12,918 fills, 6,447 closed trades,
    final equity 761,782.62).

    Parameters
    ----------
    checksubmit : bool, default False
        ``BackBroker(checksubmit=...)``. ``False``: orders go straight into the pending queue
        and cash is checked only when an opening fill executes. ``True`` (Backtrader's own
        default): orders also get a pseudo-execution cash check at the next bar's start, at
        their creation price, and sit in a *submitted* queue until then, where
        ``broker.cancel`` cannot reach them. A stop submitted on the entry bar then survives the
        strategy's cancel when the symbol leaves the target on that same bar, and if it triggers
        on the next bar it executes before the market sell, which then opens a short
        (reference run: 14,555 fills, 7,236 closed trades, 651,225.52, 742 fills leaving a short
        position). That is not the reference spec (long only), hence ``False``.
    sells_first : bool, default True
        Submit the sells of holdings that left the target before the buys of new entries (the
        pending queue executes in submission order, so the sells' cash funds the buys).
    """

    checksubmit: bool = False
    sells_first: bool = True


def _make_strategy(bt: Any, spec: ReferenceSpec, settings: BacktraderSettings) -> Any:
    class TopNStop(bt.Strategy):  # type: ignore[misc, name-defined]
        def __init__(self, score: np.ndarray, close: np.ndarray, sink: dict[str, Any]) -> None:
            self._score = score
            self._close = close
            self._sink = sink
            self._stops: dict[int, Any] = {}
            self._index = {id(d): j for j, d in enumerate(self.datas)}
            self._fills: list[tuple[Any, ...]] = sink["fills"]

        def notify_order(self, order: Any) -> None:
            j = self._index[id(order.data)]
            if order.status in (order.Margin, order.Rejected):
                self._sink["rejected"] += 1
                return
            if order.status != order.Completed:
                return
            ex = order.executed
            is_stop = order.exectype == bt.Order.Stop
            self._fills.append(
                (bt.num2date(ex.dt), j, float(ex.size), float(ex.price), float(ex.comm), is_stop)
            )
            if order.isbuy():
                stop = self.sell(
                    data=order.data,
                    size=ex.size,
                    exectype=bt.Order.Stop,
                    price=ex.price * (1.0 - spec.stop_pct),
                )
                self._stops[j] = stop
            elif is_stop:
                self._stops.pop(j, None)

        def notify_trade(self, trade: Any) -> None:
            if trade.isclosed:
                self._sink["closed"] += 1

        def next(self) -> None:
            i = len(self) - 1
            row = self._score[i]
            valid = np.flatnonzero(np.isfinite(row))
            if valid.size == 0:
                return
            ranked = valid[np.argsort(-row[valid], kind="stable")][: spec.n]
            target = set(ranked.tolist())
            sells = []
            for j, data in enumerate(self.datas):
                if self.getposition(data).size != 0 and j not in target:
                    sells.append((j, data))
            buys = [
                (int(j), self.datas[j]) for j in ranked if self.getposition(self.datas[j]).size == 0
            ]

            def do_sells() -> None:
                for j, data in sells:
                    stop = self._stops.pop(j, None)
                    if stop is not None and stop.alive():
                        self.broker.cancel(stop)  # False while still in the submitted queue
                    self.close(data=data)

            def do_buys() -> None:
                equity = self.broker.getvalue()
                for j, data in buys:
                    size = math.floor(spec.weight * equity / self._close[i, j])
                    if size > 0:
                        self.buy(data=data, size=size)

            if settings.sells_first:
                do_sells()
                do_buys()
            else:
                do_buys()
                do_sells()

    return TopNStop


def run_backtrader(
    inputs: ReferenceInputs,
    spec: ReferenceSpec | None = None,
    settings: BacktraderSettings | None = None,
) -> FrameworkRun:
    """Run the reference spec through Backtrader and return its fills.

    Parameters
    ----------
    inputs : ReferenceInputs
        Wide open/high/low/close/score matrices (``reference.build_reference_inputs``).
    spec : ReferenceSpec, optional
        Strategy parameters; default the issue-7 reference.
    settings : BacktraderSettings, optional
        Broker/strategy knobs; the defaults reproduce the issue-7 reference figures.

    Returns
    -------
    FrameworkRun
        ``framework="backtrader"``; fills stamped with the UTC close stamp of the fill bar;
        ``final_equity = broker.getvalue()`` after the last bar; ``n_closed_trades`` counts
        ``notify_trade`` calls with ``trade.isclosed``.

    Raises
    ------
    ImportError
        Backtrader is not installed (``pip install 'ml4t-pipeline[validation]'``).
    """
    import backtrader as bt

    spec = spec or ReferenceSpec()
    settings = settings or BacktraderSettings()
    cerebro = bt.Cerebro(stdstats=False, preload=True, runonce=True, cheat_on_open=False)
    cerebro.broker = bt.brokers.BackBroker(
        cash=spec.initial_cash, checksubmit=settings.checksubmit, coc=False, coo=False
    )
    cerebro.broker.setcommission(commission=spec.commission_rate)
    for symbol in inputs.symbols:
        frame = (
            inputs.open[[symbol]]
            .rename(columns={symbol: "open"})
            .assign(
                high=inputs.high[symbol],
                low=inputs.low[symbol],
                close=inputs.close[symbol],
                volume=0.0,
            )
        )
        cerebro.adddata(bt.feeds.PandasData(dataname=frame, openinterest=None), name=symbol)
    sink: dict[str, Any] = {"fills": [], "closed": 0, "rejected": 0}
    cerebro.addstrategy(
        _make_strategy(bt, spec, settings),
        score=inputs.score.to_numpy(),
        close=inputs.close.to_numpy(),
        sink=sink,
    )
    start = time.perf_counter()
    cerebro.run()
    seconds = time.perf_counter() - start
    final_equity = float(cerebro.broker.getvalue())
    stamp_of = {d.date(): ts for d, ts in zip(inputs.close.index, inputs.timestamps, strict=True)}
    rows = sink["fills"]
    fills = fills_frame(
        {
            "timestamp": [stamp_of[r[0].date()] for r in rows],
            "symbol": [inputs.symbols[r[1]] for r in rows],
            "quantity": [r[2] for r in rows],
            "price": [r[3] for r in rows],
            "commission": [r[4] for r in rows],
            "reason": ["stop" if r[5] else "market" for r in rows],
        }
    )
    return FrameworkRun(
        framework="backtrader",
        fills=fills,
        final_equity=final_equity,
        n_closed_trades=int(sink["closed"]),
        settings={"version": bt.__version__, **asdict(settings)},
        run_seconds=seconds,
        n_rejected=int(sink["rejected"]),
    )
