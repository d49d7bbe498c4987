"""VectorBT driver of the parity scenarios (optional ``validation`` extra).

Written against VectorBT 1.2.0's own high-level API (``Portfolio.from_signals`` and
``Portfolio.from_orders``), never with our callbacks; we only *call* VectorBT (Apache-2.0 with
the Commons Clause), nothing of its source is copied.

How each feature is written:

- next-open fills: the signals decided at bar ``t``'s close are shifted to bar ``t + 1`` and
  ``price=open``; ``same_close``: unshifted signals, ``price=close``;
- one group with shared cash (``cash_sharing=True``), ``call_seq="default"`` (symbols in column
  order, as the other drivers submit them), ``allow_partial=False``;
- ``size`` = the scenario's shares per symbol, ``size_type="amount"``; a long/short crossover is
  ``upon_opposite_entry="reverse"`` (one order of twice the size: the comparison nets fills
  per bar, symbol and side);
- stops: ``sl_stop`` / ``tp_stop`` (fractions), ``sl_trail=True`` for the trailing stop,
  ``stop_entry_price=FillPrice``, ``stop_exit_price=StopLimit`` (the level, or the open on a
  gap); ``from_signals`` checks stops before the bar's signals (our ``exit_conflict=
  "stop_wins"``);
- bracket: per-entry ``sl_stop`` / ``tp_stop`` arrays that put the levels at the bracket's
  absolute prices (``1 - stop / open`` and ``target / open - 1`` at the entry bar);
- commission: ``fees`` (fraction of value) or ``fixed_fees`` = cost per share × the symbol's
  fixed order size (every order of a symbol has that size in the per-share scenario);
- slippage: ``slippage`` (fraction); a fixed amount per share is written into the ``price``
  array (open + amount on entry bars, open − amount on exit bars);
- time exit: exit signals where the position (from the shifted entries and exits) has been
  held the scenario's number of bars;
- target weights: ``from_orders(size=weight, size_type="targetpercent", price=open,
  val_price=previous close, size_granularity=1)``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from ml4t_pipeline.lib.crossval.compare import FrameworkRun, vectorbt_fills
from ml4t_pipeline.lib.crossval.scenarios import Scenario, ScenarioData


def _shift(a: np.ndarray) -> np.ndarray:
    out = np.zeros_like(a)
    out[1:] = a[:-1]
    return out


def _time_exits(entries: np.ndarray, exits: np.ndarray, max_bars: int) -> np.ndarray:
    """Fill-bar exit signals of a long-only position held ``max_bars`` bars (shifted frame)."""
    out = exits.copy()
    n, m = entries.shape
    for col in range(m):
        entry_bar = -1
        for k in range(n):
            if entry_bar < 0:
                if entries[k, col]:
                    entry_bar = k
            elif exits[k, col] or (k - 1 - entry_bar >= max_bars):
                out[k, col] = True
                entry_bar = -1
    return out


def run_vectorbt_scenario(scenario: Scenario, data: ScenarioData) -> FrameworkRun:
    """Run a signal or target-weight scenario through VectorBT's high-level API.

    Parameters
    ----------
    scenario : Scenario
        ``kind`` ``"signals"`` or ``"target_weights"``.
    data : ScenarioData

    Returns
    -------
    FrameworkRun
        ``framework="vectorbt"``; fills stamped with the UTC close stamp of the fill bar;
        ``final_equity`` = the group's value at the last close.

    Raises
    ------
    ValueError
        ``scenario`` is ``topn`` or in ``scenario.not_expressed["vectorbt"]``.
    """
    import vectorbt as vbt
    from vectorbt.portfolio.enums import StopEntryPrice, StopExitPrice

    if scenario.kind == "topn" or "vectorbt" in scenario.not_expressed:
        raise ValueError(f"scenario {scenario.name} is not expressed in VectorBT's API")
    inputs = data.inputs
    close = inputs.close
    openp = inputs.open
    shift = scenario.fill == "next_open"
    price = openp if shift else close
    common: dict[str, Any] = {
        "init_cash": scenario.initial_cash,
        "cash_sharing": True,
        "group_by": True,
        "call_seq": "default",
        "freq": "1D",
    }
    if scenario.commission is not None:
        kind, value = scenario.commission
        if kind == "percent":
            common["fees"] = value
        else:
            common["fixed_fees"] = pd.DataFrame(
                np.broadcast_to(value * data.quantity, close.shape).copy(),
                index=close.index,
                columns=close.columns,
            )
    start = time.perf_counter()
    if scenario.kind == "target_weights":
        rows = np.arange(len(close)) % scenario.rebalance_every == 0
        size = np.where(rows[:, None], scenario.target_weight, np.nan) * np.ones(close.shape)
        val_price = close.shift(1) if shift else close
        if shift:
            size = np.vstack([np.full((1, close.shape[1]), np.nan), size[:-1]])
        pf = vbt.Portfolio.from_orders(
            close,
            size=size,
            size_type="targetpercent",
            price=price,
            val_price=val_price,
            size_granularity=1.0,
            allow_partial=True,  # granularity rounding counts as partial; cash never binds
            **common,
        )
    else:
        f = _shift if shift else (lambda a: a.copy())
        long_ok = scenario.direction != "short"
        short_ok = scenario.direction != "long"
        signal_exits = scenario.bracket is None
        zero = np.zeros(close.shape, dtype=bool)
        entries = f(data.entry_long) if long_ok else zero
        exits = f(data.exit_long) if long_ok and signal_exits else zero
        short_entries = f(data.entry_short) if short_ok else zero
        short_exits = f(data.exit_short) if short_ok and signal_exits else zero
        if scenario.time_exit is not None:
            exits = _time_exits(entries, exits, scenario.time_exit)
        kw: dict[str, Any] = {}
        px = price.to_numpy().copy()
        if scenario.slippage is not None:
            kind, value = scenario.slippage
            if kind == "percent":
                kw["slippage"] = value
            else:
                px = np.where(entries, px + value, px - value)
                px = np.where(short_entries, price.to_numpy() - value, px)
        if scenario.stop_loss is not None or scenario.trailing is not None:
            kw["sl_stop"] = (
                scenario.trailing if scenario.trailing is not None else scenario.stop_loss
            )
            kw["sl_trail"] = scenario.trailing is not None
        if scenario.take_profit is not None:
            kw["tp_stop"] = scenario.take_profit
        if scenario.bracket is not None:
            stop_pct, target_pct = scenario.bracket
            dec = _shift_rows(close.to_numpy()) if shift else close.to_numpy()
            o = px
            long_sl = 1 - dec * (1 - stop_pct) / o
            long_tp = dec * (1 + target_pct) / o - 1
            short_sl = dec * (1 + stop_pct) / o - 1
            short_tp = 1 - dec * (1 - target_pct) / o
            sl = np.where(short_entries, short_sl, long_sl)
            tp = np.where(short_entries, short_tp, long_tp)
            kw["sl_stop"] = np.nan_to_num(np.clip(sl, 0.0, None), nan=0.0)
            kw["tp_stop"] = np.nan_to_num(np.clip(tp, 0.0, None), nan=0.0)
        if "sl_stop" in kw or "tp_stop" in kw:
            kw["stop_entry_price"] = StopEntryPrice.FillPrice
            kw["stop_exit_price"] = StopExitPrice.StopLimit
        pf = vbt.Portfolio.from_signals(
            close,
            entries=entries,
            exits=exits,
            short_entries=short_entries,
            short_exits=short_exits,
            size=np.broadcast_to(data.quantity, close.shape).copy(),
            size_type="amount",
            price=pd.DataFrame(px, index=close.index, columns=close.columns),
            open=openp,
            high=inputs.high,
            low=inputs.low,
            upon_opposite_entry="reverse",
            allow_partial=False,
            **kw,
            **common,
        )
    records = pf.orders.values
    final_equity = float(pf.value().iloc[-1])
    n_closed = int(pf.positions.closed.count().sum())
    seconds = time.perf_counter() - start
    fills = vectorbt_fills(records, inputs, ["order"] * len(records))
    return FrameworkRun(
        framework="vectorbt",
        fills=fills,
        final_equity=final_equity,
        n_closed_trades=n_closed,
        settings={
            "version": vbt.__version__,
            "driver": "from_orders" if scenario.kind == "target_weights" else "from_signals",
        },
        run_seconds=seconds,
    )


def _shift_rows(a: np.ndarray) -> np.ndarray:
    out = np.full_like(a, np.nan)
    out[1:] = a[:-1]
    return out
