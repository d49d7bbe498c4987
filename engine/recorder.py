"""The run's records turned into polars frames, once at the end, for both engine drivers.

The records themselves (one dtype per kind, the typed buffers) live in
:mod:`engine.core.records`; the Python driver appends to a :class:`Recorder`'s
:class:`~engine.core.records.Records` during the loop, the compiled driver hands over the
:class:`~engine.core.records.Records` its kernels filled. The frames are built the same way
from both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import polars as pl

from engine.core.layout import (
    EV_REJECTED,
    EVENT_NAMES,
    SR_ZERO_SHARES,
    STATUS_NAMES,
    T_MARKET,
    TIF_NAMES,
    TYPE_NAMES,
    UNPLACED,
)
from engine.core.records import RecordArray, Records
from engine.data import MarketData
from engine.orders import Order

UTC_US = pl.Datetime("us", "UTC")
_TYPE_CODES = {name: code for code, name in enumerate(TYPE_NAMES)}
_STATUS_CODES = {name: code for code, name in enumerate(STATUS_NAMES)}
_TIF_CODES = {name: code for code, name in enumerate(TIF_NAMES)}


@runtime_checkable
class OrderRecordSource(Protocol):
    """A run's orders by id, some held as order records (the Python driver's
    :class:`engine.broker.lane_rows.OrderLog`)."""

    def runs(self) -> Iterator[tuple[int, int, bool]]:
        """``(start, end, is_rows)`` runs of order ids: records (``order_records``) or
        :class:`engine.Order` objects (``self[k]``)."""
        ...

    def order_records(self, start: int, end: int) -> RecordArray:
        """The ``ORDER_DTYPE`` records of ids ``start:end`` (a run with ``is_rows``)."""
        ...

    def __getitem__(self, k: int) -> Order: ...


_EVENT_CODES = {name: code for code, name in enumerate(EVENT_NAMES)}


def _side(positive: np.ndarray[Any, Any], yes: str, no: str) -> pl.Series:
    """``yes`` where ``positive``, else ``no``, as a String series."""
    flags = pl.Series(positive, dtype=pl.Boolean)
    return pl.select(pl.when(flags).then(pl.lit(yes)).otherwise(pl.lit(no))).to_series()


def _names(names: list[str] | tuple[str, ...], codes: np.ndarray[Any, Any]) -> pl.Series:
    """``names[codes]`` as a String series (a gather, no per-row Python)."""
    table = pl.Series(list(names), dtype=pl.String)
    if codes.size == 0:
        return table.clear()
    return table.gather(pl.Series(codes, dtype=pl.Int64))


class Recorder:
    """The records of one run (:class:`engine.core.records.Records`) and their frames.

    Parameters
    ----------
    data : MarketData
        The market data of the run (timestamps, symbol names, named columns for the trades).
    records : Records, optional
        Records filled by the compiled driver; default: empty ones for the Python driver.
    """

    def __init__(self, data: MarketData, records: Records | None = None) -> None:
        self.data = data
        self.records = records if records is not None else Records()
        # the staging lists the broker appends one tuple to per fill / closed trade
        self.fills = self.records.fills
        self.trades = self.records.trades
        # entry_/exit_ signal and indicator values of the trades[:sealed], resolved before the
        # market data moved to another chunk window (see seal)
        self.sealed = 0
        self.sealed_values: dict[str, list[np.ndarray[Any, Any]]] = {}
        self._symbol_names: pl.Series | None = None

    def state(
        self, index: int, equity: float, cash: float, value: float, gross: float, n_positions: int
    ) -> None:
        """Append the portfolio state after bar ``index`` (currency; see ``STATE_DTYPE``)."""
        self.records.states.append((index, equity, cash, value, gross, n_positions))

    def rejection(
        self,
        index: int,
        order: Order,
        event: str,
        reason: str,
        rule: str = "",
        quantity: float | None = None,
    ) -> None:
        """Append a rejection / cancellation / expiry / shrink (``event``) of ``order`` at bar
        ``index``; ``quantity``: the shares concerned (default the order's quantity)."""
        records = self.records
        records.rejections.append(
            (
                index,
                order.order_id,
                order.sid,
                _TYPE_CODES[order.order_type],
                _EVENT_CODES[event],
                records.text_code(reason),
                records.text_code(rule),
                -1,
                0,
                order.quantity if quantity is None else quantity,
                np.nan,
                np.nan,
            )
        )

    def unplaced(self, index: int, sid: int, quantity: float, rule: str = "") -> None:
        """Append the rejection row of a market order for ``quantity`` shares (signed, before
        rounding) of symbol ``sid`` that was never placed at bar ``index`` because it rounds
        to zero shares (``order_id`` -1, reason ``rounds_to_zero_shares``, ``rule`` the risk
        rule that wanted it, empty for the strategy; the compiled driver writes the same row
        with :func:`engine.core.ledger.reject_unplaced`)."""
        records = self.records
        records.rejections.append(
            (
                index,
                UNPLACED,
                sid,
                T_MARKET,
                EV_REJECTED,
                SR_ZERO_SHARES,
                records.text_code(rule),
                -1,
                0,
                quantity,
                np.nan,
                np.nan,
            )
        )

    def seal(self) -> None:
        """Resolve the named columns at the decision rows of the trades recorded so far, from
        the current market data; called before the engine moves to the next chunk window."""
        records = self.records
        n = records.count("trades")
        if n == self.sealed:
            return
        data = self.data
        named = [*data.signal_columns, *data.indicator_columns]
        for prefix, field in (("entry", "decision_row"), ("exit", "exit_decision_row")):
            rows = records.values("trades", field, self.sealed)
            for c in named:
                key = f"{prefix}_{c}"
                self.sealed_values.setdefault(key, []).append(
                    self._values_at(rows, data.columns[c])
                )
        self.sealed = n

    def _named_values(
        self, key: str, rows: np.ndarray[Any, Any], column: np.ndarray[Any, Any]
    ) -> np.ndarray[Any, Any]:
        parts = self.sealed_values.get(key, [])
        tail = self._values_at(rows[self.sealed :], column)
        return np.concatenate([*parts, tail]) if parts else tail

    # ------------------------------------------------------------------ frames
    def _ts(self, index: list[int] | np.ndarray[Any, Any]) -> pl.Series:
        idx = np.asarray(index, dtype=np.int64)
        return pl.Series(self.data.timestamps[idx] if idx.size else idx).cast(UTC_US)

    def _symbols(self, sids: list[int] | np.ndarray[Any, Any]) -> pl.Series:
        """Symbol names of ids ``sids`` (a gather, no per-row Python)."""
        if self._symbol_names is None:
            self._symbol_names = pl.Series(self.data.symbols.tolist(), dtype=pl.String)
        arr = np.asarray(sids, dtype=np.int64)
        if arr.size == 0:
            return self._symbol_names.clear()
        return self._symbol_names.gather(pl.Series(arr, dtype=pl.Int64))

    def _values_at(
        self, rows: np.ndarray[Any, Any], column: np.ndarray[Any, Any]
    ) -> np.ndarray[Any, Any]:
        out = np.full(rows.size, np.nan)
        ok = rows >= 0
        out[ok] = column[rows[ok]]
        return out

    def states_frame(self, initial_cash: float, *, context: bool = True) -> pl.DataFrame:
        """One row per bar: equity, cash, leverage, returns and drawdown (see
        :class:`engine.BacktestResult`); ``initial_cash`` (currency) is the first bar's base.
        ``context=False`` leaves out the market context columns (a sweep's metrics do not read
        them)."""
        s = self.records.table("states")
        equity = np.ascontiguousarray(s["equity"])
        value = np.ascontiguousarray(s["positions_value"])
        gross = np.ascontiguousarray(s["gross"])
        prev = np.concatenate(([initial_cash], equity[:-1]))
        with np.errstate(divide="ignore", invalid="ignore"):
            ret = np.where(prev != 0, equity / prev - 1.0, 0.0)
            gross_lev = np.where(equity > 0, gross / equity, np.where(gross == 0, 0.0, np.inf))
            net_lev = np.where(equity > 0, value / equity, np.where(value == 0, 0.0, np.inf))
            peak = np.maximum.accumulate(np.concatenate(([initial_cash], equity)))[1:]
            dd = np.where(peak > 0, equity / peak - 1.0, 0.0)
        frame = pl.DataFrame(
            {
                "timestamp": self._ts(s["bar_index"]),
                "equity": equity,
                "cash": np.ascontiguousarray(s["cash"]),
                "positions_value": value,
                "gross_leverage": gross_lev,
                "net_leverage": net_lev,
                "n_positions": pl.Series(np.ascontiguousarray(s["n_positions"]), dtype=pl.Int64),
                "return": ret,
                "cumulative_return": equity / initial_cash - 1.0,
                "drawdown": np.minimum(dd, 0.0),
            }
        )
        idx = s["bar_index"]
        extra = {name: arr[idx] for name, arr in self.data.context.items()} if context else {}
        if extra:
            frame = frame.with_columns(
                [pl.Series(name, vals, dtype=pl.Float64) for name, vals in extra.items()]
            )
        return frame

    def fills_frame(self) -> pl.DataFrame:
        """Every fill (see :class:`engine.BacktestResult`)."""
        f = self.records.table("fills")
        qty = np.ascontiguousarray(f["quantity"])
        return pl.DataFrame(
            {
                "fill_id": pl.Series(np.arange(f.size, dtype=np.int64)),
                "order_id": pl.Series(np.ascontiguousarray(f["order_id"]), dtype=pl.Int64),
                "timestamp": self._ts(f["bar_index"]),
                "symbol": self._symbols(f["sid"]),
                "side": _side(qty > 0, "buy", "sell"),
                "quantity": qty,
                "price_before_slippage": np.ascontiguousarray(f["price_before_slippage"]),
                "price": np.ascontiguousarray(f["price"]),
                "commission": np.ascontiguousarray(f["commission"]),
                "slippage": np.ascontiguousarray(f["slippage"]),
                "order_type": _names(TYPE_NAMES, f["order_type"]),
                "reason": _names(self.records.reasons, f["reason"]),
            }
        )

    def trades_frame(self) -> pl.DataFrame:
        """Every closed trade or closed part of one, with P&L, costs, MFE/MAE and the named
        columns at the entry and exit decisions (see :class:`engine.BacktestResult`)."""
        t = self.records.table("trades")
        data = self.data
        n = t.size
        direction = np.asarray(t["direction"], dtype=np.float64)
        entry = np.asarray(t["entry_price"], dtype=np.float64)
        exit_ = np.asarray(t["exit_price"], dtype=np.float64)
        qty = np.asarray(t["quantity"], dtype=np.float64)
        e_comm = np.asarray(t["entry_commission"], dtype=np.float64)
        x_comm = np.asarray(t["exit_commission"], dtype=np.float64)
        slip = np.asarray(t["entry_slippage"], np.float64) + np.asarray(
            t["exit_slippage"], np.float64
        )
        best = np.asarray(t["best_price"], dtype=np.float64)
        worst = np.asarray(t["worst_price"], dtype=np.float64)
        entry_idx = np.asarray(t["entry_index"], dtype=np.int64)
        exit_idx = np.asarray(t["exit_index"], dtype=np.int64)
        pnl_gross = (exit_ - entry) * qty * direction
        comm = e_comm + x_comm
        pnl_net = pnl_gross - comm
        notional = entry * qty
        with np.errstate(divide="ignore", invalid="ignore"):
            ret = np.where(notional > 0, pnl_net / notional, 0.0)
            mfe = np.maximum(0.0, (best - entry) * direction) * qty
            mae = np.minimum(0.0, (worst - entry) * direction) * qty
            mfe_pct = np.where(notional > 0, mfe / notional, 0.0)
            mae_pct = np.where(notional > 0, mae / notional, 0.0)
        ts = data.timestamps
        days = (ts[exit_idx] - ts[entry_idx]) / 86_400e6 if n else np.zeros(0, dtype=np.float64)
        cols: dict[str, Any] = {
            "trade_id": pl.Series(np.arange(n, dtype=np.int64)),
            "symbol": self._symbols(t["sid"]),
            "side": _side(direction > 0, "long", "short"),
            "entry_timestamp": self._ts(entry_idx),
            "exit_timestamp": self._ts(exit_idx),
            "entry_price": entry,
            "exit_price": exit_,
            "quantity": qty,
            "entry_commission": e_comm,
            "exit_commission": x_comm,
            "commission": comm,
            "slippage": slip,
            "total_cost": comm + slip,
            "exit_reason": _names(self.records.reasons, t["exit_reason"]),
            "pnl_gross": pnl_gross,
            "pnl_net": pnl_net,
            "return_pct": ret,
            "pnl_percent": ret * 100.0,
            "bars_held": pl.Series(np.ascontiguousarray(t["bars_held"]), dtype=pl.Int64),
            "days_held": np.asarray(days, dtype=np.float64),
            "mfe": mfe,
            "mae": mae,
            "mfe_pct": mfe_pct,
            "mae_pct": mae_pct,
            "stop_loss_at_exit": np.asarray(t["stop_at_exit"], dtype=np.float64),
            "take_profit_at_exit": np.asarray(t["take_profit_at_exit"], dtype=np.float64),
            "partial": pl.Series(np.ascontiguousarray(t["partial"]), dtype=pl.Boolean),
            "decision_timestamp": self._ts(
                np.maximum(np.asarray(t["decision_index"], np.int64), 0)
            ),
        }
        d_rows = np.asarray(t["decision_row"], dtype=np.int64)
        x_rows = np.asarray(t["exit_decision_row"], dtype=np.int64)
        d_idx = np.asarray(t["decision_index"], dtype=np.int64)
        x_idx = np.asarray(t["exit_decision_index"], dtype=np.int64)
        named = [*data.signal_columns, *data.indicator_columns]
        for prefix, rows, idx in (("entry", d_rows, d_idx), ("exit", x_rows, x_idx)):
            for c in named:
                key = f"{prefix}_{c}"
                cols[key] = self._named_values(key, rows, data.columns[c])
            for c, arr in data.context.items():
                cols[f"{prefix}_{c}"] = self._values_at(idx, arr)
        frame = pl.DataFrame(cols)
        bad = d_idx < 0
        if bad.any():
            frame = frame.with_columns(
                pl.when(pl.Series(bad))
                .then(None)
                .otherwise(pl.col("decision_timestamp"))
                .alias("decision_timestamp")
            )
        return frame

    def rejections_frame(self) -> pl.DataFrame:
        """Rejected, cancelled, expired and shrunk orders (see :class:`engine.BacktestResult`)."""
        r = self.records.table("rejections")
        texts = self.records.texts
        return pl.DataFrame(
            {
                "timestamp": self._ts(r["bar_index"]),
                "order_id": pl.Series(np.ascontiguousarray(r["order_id"]), dtype=pl.Int64),
                "symbol": self._symbols(r["sid"]),
                "quantity": pl.Series(np.ascontiguousarray(r["quantity"]), dtype=pl.Float64),
                "order_type": _names(TYPE_NAMES, r["order_type"]),
                "event": _names(EVENT_NAMES, r["event"]),
                "reason": _names(texts, r["reason"]),
                "rule": _names(texts, r["rule"]),
            }
        )

    def _stage_orders(self, orders: Iterator[Order]) -> None:
        """Stage one record per order of ``orders`` (their fields as they are now)."""
        records = self.records
        reason_code = records.reason_code
        text_code = records.text_code
        records.orders.extend(
            (
                o.submit_index,
                o.sid,
                _TYPE_CODES[o.order_type],
                _STATUS_CODES[o.status],
                reason_code(o.reason),
                text_code(o.status_reason),
                _TIF_CODES[o.tif],
                o.parent_id,
                o.decision_row,
                o.quantity,
                o.filled,
                o.limit_price,
                o.stop_price,
            )
            for o in orders
        )

    def orders_frame(self, orders: Sequence[Order]) -> pl.DataFrame:
        """Every order with its final status; ``orders``: the Python driver's orders by id
        (recorded now; an :class:`OrderRecordSource` hands its order rows over as they are),
        empty when the records already hold the orders."""
        records = self.records
        if not orders:
            pass
        elif isinstance(orders, OrderRecordSource):
            for start, end, is_rows in orders.runs():
                if is_rows:
                    records.extend("orders", orders.order_records(start, end))
                else:
                    self._stage_orders(orders[k] for k in range(start, end))
        else:
            self._stage_orders(iter(orders))
        c = records.table("orders")
        n = c.size
        return pl.DataFrame(
            {
                "order_id": pl.Series(np.arange(n, dtype=np.int64)),
                "submitted": self._ts(np.maximum(c["submit_index"], 0)),
                "symbol": self._symbols(c["sid"]),
                "quantity": pl.Series(np.ascontiguousarray(c["quantity"]), dtype=pl.Float64),
                "filled": pl.Series(np.ascontiguousarray(c["filled"]), dtype=pl.Float64),
                "order_type": _names(TYPE_NAMES, c["order_type"]),
                "limit_price": pl.Series(np.ascontiguousarray(c["limit_price"]), dtype=pl.Float64),
                "stop_price": pl.Series(np.ascontiguousarray(c["stop_price"]), dtype=pl.Float64),
                "tif": _names(TIF_NAMES, c["tif"]),
                "status": _names(STATUS_NAMES, c["status"]),
                "reason": _names(records.reasons, c["reason"]),
                "status_reason": _names(records.texts, c["status_reason"]),
                "parent_id": pl.Series(np.ascontiguousarray(c["parent_id"]), dtype=pl.Int64),
            }
        )
