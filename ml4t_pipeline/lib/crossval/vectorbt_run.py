"""Run the reference experiment in VectorBT 1.2.0 with ``Portfolio.from_order_func`` callbacks.

We only *call* VectorBT (Apache-2.0 with the Commons Clause, optional ``validation`` extra);
nothing of its source is copied here.

``from_signals`` cannot express this spec (it has no "rank, then size from this close's equity"
and its stops take priority over an opening sell), so the spec is written as three numba
callbacks of the flexible simulator (``flexible=True``, one group, shared cash):

- ``pre_segment`` (bar ``i``, before any fill): build the bar's execution queue in the order a
  Backtrader broker would work its pending orders (``backtrader_run``): first every live stop
  that bar ``i`` triggers (entered before bar ``i``; the open at or below the stop fills at the
  open, else a low at or below it fills at the stop), then the market sells decided at close
  ``i - 1``, then the market buys decided at close ``i - 1`` in rank order, all at the open;
- ``flex_order`` (called until it returns column -1): hand VectorBT the next queued order. A buy
  is refused (counted, never partially filled) when ``cash - qty*open - qty*open*rate < 0`` at
  that moment, which is the execution-time cash check of Backtrader's ``BackBroker``; a filled
  buy arms a stop at ``open * (1 - stop_pct)``, live from bar ``i + 1``;
- ``post_segment`` (bar ``i``'s close, after the fills): ``equity = cash + sum(qty*close)``,
  rank finite scores (descending, ties by column = symbol order), queue a sell for every
  holding outside the top ``n`` (its stop is dropped) and a buy of
  ``floor(weight * equity / close)`` shares for every top-``n`` symbol without a position.

Orders are sent with ``allow_partial=False`` and ``raise_reject=True``: our callbacks already
decide which orders fill, so a VectorBT refusal would be a bug and stops the run.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import vectorbt as vbt
from numba import njit
from vectorbt.portfolio import nb as vnb
from vectorbt.portfolio.enums import Direction

from ml4t_pipeline.lib.crossval.compare import FrameworkRun, vectorbt_fills
from ml4t_pipeline.lib.crossval.reference import ReferenceInputs, ReferenceSpec

VECTORBT_VERSION = "1.2.0"
"""The VectorBT version the reference figures were measured with."""

# kinds of queued executions (also the ``reason`` of the fill)
_STOP, _SELL, _BUY = 0, 1, 2
# slots of the int64 ``meta`` array
_Q_LEN, _Q_POS, _N_NEXT, _N_REJECTED, _N_ORDERS = 0, 1, 2, 3, 4


@njit(cache=True)
def _pre_segment_nb(c: Any, *state: Any) -> Any:
    (
        openp,
        high,
        low,
        close,
        score,
        params,
        stop_px,
        stop_from,
        q_col,
        q_kind,
        q_price,
        q_size,
        nxt_col,
        nxt_kind,
        nxt_size,
        meta,
        kind_log,
        stop_hit,
    ) = state
    i = c.i
    n_q = 0
    for col in range(c.from_col, c.to_col):
        if c.last_position[col] > 0 and not np.isnan(stop_px[col]) and stop_from[col] <= i:
            level = stop_px[col]
            price = np.nan
            if openp[i, col] <= level:
                price = openp[i, col]
            elif low[i, col] <= level:
                price = level
            if not np.isnan(price):
                q_col[n_q] = col
                q_kind[n_q] = _STOP
                q_price[n_q] = price
                q_size[n_q] = -c.last_position[col]
                n_q += 1
                stop_hit[col] = i
    for k in range(meta[_N_NEXT]):
        col = nxt_col[k]
        if nxt_kind[k] == _SELL and stop_hit[col] == i:
            continue  # the stop kept for this sell (stop_wins) already closes the position
        q_col[n_q] = col
        q_kind[n_q] = nxt_kind[k]
        q_price[n_q] = openp[i, col]
        if nxt_kind[k] == _SELL:
            q_size[n_q] = -c.last_position[col]
        else:
            q_size[n_q] = nxt_size[k]
        n_q += 1
    meta[_N_NEXT] = 0
    meta[_Q_LEN] = n_q
    meta[_Q_POS] = 0
    return state


@njit(cache=True)
def _flex_order_nb(c: Any, *state: Any) -> Any:
    (
        openp,
        high,
        low,
        close,
        score,
        params,
        stop_px,
        stop_from,
        q_col,
        q_kind,
        q_price,
        q_size,
        nxt_col,
        nxt_kind,
        nxt_size,
        meta,
        kind_log,
        stop_hit,
    ) = state
    rate = params[3]
    while meta[_Q_POS] < meta[_Q_LEN]:
        k = meta[_Q_POS]
        meta[_Q_POS] = k + 1
        col = q_col[k]
        kind = q_kind[k]
        price = q_price[k]
        size = q_size[k]
        if size == 0.0:
            continue
        if kind == _BUY:
            remaining = c.last_cash[c.group] - size * price
            remaining = remaining - size * price * rate
            if remaining < 0.0:
                meta[_N_REJECTED] += 1
                continue
            stop_px[col] = price * (1.0 - params[2])
            stop_from[col] = c.i + 1
        else:
            stop_px[col] = np.nan
        kind_log[meta[_N_ORDERS]] = kind
        meta[_N_ORDERS] += 1
        order = vnb.order_nb(
            size=size,
            price=price,
            direction=Direction.LongOnly,
            fees=rate,
            allow_partial=False,
            raise_reject=True,
        )
        return col, order
    return -1, vnb.order_nothing_nb()


@njit(cache=True)
def _post_segment_nb(c: Any, *state: Any) -> None:
    (
        openp,
        high,
        low,
        close,
        score,
        params,
        stop_px,
        stop_from,
        q_col,
        q_kind,
        q_price,
        q_size,
        nxt_col,
        nxt_kind,
        nxt_size,
        meta,
        kind_log,
        stop_hit,
    ) = state
    i = c.i
    n_top = int(params[0])
    weight = params[1]
    pos_value = 0.0
    for col in range(c.from_col, c.to_col):
        if c.last_position[col] != 0:
            pos_value += c.last_position[col] * close[i, col]
    equity = c.last_cash[c.group] + pos_value
    row = score[i, c.from_col : c.to_col]
    valid = np.flatnonzero(np.isfinite(row))
    if valid.size == 0:
        return
    order = np.argsort(-row[valid], kind="mergesort")  # stable: ties keep column order
    ranked = valid[order][:n_top] + c.from_col
    in_top = np.zeros(c.to_col - c.from_col, dtype=np.bool_)
    for col in ranked:
        in_top[col - c.from_col] = True
    n_next = 0
    for col in range(c.from_col, c.to_col):
        if c.last_position[col] != 0 and not in_top[col - c.from_col]:
            if params[4] == 0.0:
                stop_px[col] = np.nan
            nxt_col[n_next] = col
            nxt_kind[n_next] = _SELL
            nxt_size[n_next] = 0.0
            n_next += 1
    for col in ranked:
        if c.last_position[col] == 0:
            qty = np.floor(weight * equity / close[i, col])
            if qty > 0:
                nxt_col[n_next] = col
                nxt_kind[n_next] = _BUY
                nxt_size[n_next] = qty
                n_next += 1
    meta[_N_NEXT] = n_next


def run_vectorbt(
    inputs: ReferenceInputs, spec: ReferenceSpec | None = None, stop_wins: bool = False
) -> FrameworkRun:
    """Run the reference spec through ``vbt.Portfolio.from_order_func`` and return its fills.

    Parameters
    ----------
    inputs : ReferenceInputs
        Wide open/high/low/close/score matrices (``reference.build_reference_inputs``).
    spec : ReferenceSpec, optional
        Strategy parameters; default the issue-7 reference.
    stop_wins : bool, default False
        ``False`` (the reference, as Backtrader): a holding sold at the open has its stop
        cancelled at the close the sell was decided. ``True`` (as ``from_signals``, whose stops
        take priority over exit signals): the stop stays armed; when it triggers on the sell's
        bar it fills (at the stop, or the open on a gap) and the market sell is dropped.

    Returns
    -------
    FrameworkRun
        ``framework="vectorbt"``; fills stamped with the UTC close stamp of the fill bar;
        ``final_equity`` = the group's value at the last close; ``n_closed_trades`` = closed
        positions (``pf.positions.closed``).

    Raises
    ------
    ValueError
        From VectorBT, if it refuses an order the callbacks decided to fill (a bug).

    Notes
    -----
    The first call compiles the callbacks with numba (cached on disk afterwards).
    """
    spec = spec or ReferenceSpec()
    n_rows, n_cols = inputs.close.shape
    as_array = [
        np.ascontiguousarray(f.to_numpy(dtype=np.float64))
        for f in (inputs.open, inputs.high, inputs.low, inputs.close, inputs.score)
    ]
    cap = 2 * n_cols + 1
    max_orders = n_rows * (spec.n * 3 + 1)
    state = (
        *as_array,
        np.array(
            [spec.n, spec.weight, spec.stop_pct, spec.commission_rate, float(stop_wins)],
            dtype=np.float64,
        ),
        np.full(n_cols, np.nan),  # stop_px
        np.zeros(n_cols, dtype=np.int64),  # stop_from
        np.zeros(cap, dtype=np.int64),  # q_col
        np.zeros(cap, dtype=np.int64),  # q_kind
        np.zeros(cap),  # q_price
        np.zeros(cap),  # q_size
        np.zeros(cap, dtype=np.int64),  # nxt_col
        np.zeros(cap, dtype=np.int64),  # nxt_kind
        np.zeros(cap),  # nxt_size
        np.zeros(5, dtype=np.int64),  # meta
        np.full(max_orders, -1, dtype=np.int64),  # kind_log
        np.full(n_cols, -1, dtype=np.int64),  # stop_hit: last bar a stop triggered
    )
    start = time.perf_counter()
    pf = vbt.Portfolio.from_order_func(
        inputs.close,
        _flex_order_nb,
        flexible=True,
        init_cash=spec.initial_cash,
        cash_sharing=True,
        group_by=True,
        call_pre_segment=True,
        call_post_segment=True,
        pre_segment_func_nb=_pre_segment_nb,
        pre_segment_args=state,
        post_segment_func_nb=_post_segment_nb,
        post_segment_args=state,
        max_orders=max_orders,
        freq="1D",
    )
    records = pf.orders.values
    final_equity = float(pf.value().iloc[-1])
    n_closed = int(pf.positions.closed.count().sum())
    seconds = time.perf_counter() - start
    meta, kind_log = state[-3], state[-2]
    if len(records) != meta[_N_ORDERS]:
        raise ValueError(
            f"VectorBT recorded {len(records)} orders, the callbacks sent {meta[_N_ORDERS]}"
        )
    kinds = kind_log[: len(records)]
    fills = vectorbt_fills(records, inputs, np.where(kinds == _STOP, "stop", "market").tolist())
    return FrameworkRun(
        framework="vectorbt",
        fills=fills,
        final_equity=final_equity,
        n_closed_trades=n_closed,
        settings={
            "version": vbt.__version__,
            "method": "from_order_func(flexible=True)",
            "stop_wins": stop_wins,
        },
        run_seconds=seconds,
        n_rejected=int(meta[_N_REJECTED]),
    )
