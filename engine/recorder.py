"""Column buffers filled during the loop and turned into polars frames once at the end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from engine.data import MarketData
from engine.orders import Order

if TYPE_CHECKING:
    from engine.fastpath import CompiledRun

UTC_US = pl.Datetime("us", "UTC")

FILL_DTYPES: dict[str, pl.DataType] = {
    "fill_id": pl.Int64(),
    "order_id": pl.Int64(),
    "bar_index": pl.Int64(),
    "sid": pl.Int64(),
    "quantity": pl.Float64(),
    "price_before_slippage": pl.Float64(),
    "price": pl.Float64(),
    "commission": pl.Float64(),
    "slippage": pl.Float64(),
    "order_type": pl.String(),
    "reason": pl.String(),
}
FILL_FIELDS = tuple(FILL_DTYPES)
TRADE_FIELDS = (
    "sid",
    "direction",
    "entry_index",
    "exit_index",
    "entry_price",
    "exit_price",
    "quantity",
    "entry_commission",
    "exit_commission",
    "entry_slippage",
    "exit_slippage",
    "exit_reason",
    "bars_held",
    "best_price",
    "worst_price",
    "decision_row",
    "decision_index",
    "exit_decision_row",
    "exit_decision_index",
    "stop_at_exit",
    "take_profit_at_exit",
    "partial",
)
_INT_TRADE_FIELDS = {
    "sid",
    "entry_index",
    "exit_index",
    "bars_held",
    "decision_row",
    "decision_index",
    "exit_decision_row",
    "exit_decision_index",
}
TRADE_DTYPES: dict[str, pl.DataType] = {
    k: pl.Int64()
    if k in _INT_TRADE_FIELDS
    else pl.String()
    if k == "exit_reason"
    else pl.Boolean()
    if k == "partial"
    else pl.Float64()
    for k in TRADE_FIELDS
}


def _columns(rows: list[tuple[Any, ...]], fields: tuple[str, ...]) -> dict[str, list[Any]]:
    if not rows:
        return {k: [] for k in fields}
    return {k: list(col) for k, col in zip(fields, zip(*rows, strict=True), strict=True)}


def _typed_columns(
    rows: list[tuple[Any, ...]], dtypes: dict[str, pl.DataType]
) -> dict[str, pl.Series]:
    """Row tuples (fields in ``dtypes`` order) as one typed series per field, transposed in
    polars rather than through Python lists (NaN stays NaN; an int in a float field is cast)."""
    frame = pl.DataFrame(rows, schema=dtypes, orient="row", strict=False)
    return {name: frame.get_column(name) for name in dtypes}


def _side(positive: np.ndarray[Any, Any], yes: str, no: str) -> pl.Series:
    """``yes`` where ``positive``, else ``no``, as a String series."""
    flags = pl.Series(positive, dtype=pl.Boolean)
    return pl.select(pl.when(flags).then(pl.lit(yes)).otherwise(pl.lit(no))).to_series()


class Recorder:
    """Append-only Python-list buffers for fills, trades, rejections and portfolio states."""

    def __init__(self, data: MarketData) -> None:
        self.data = data
        # portfolio states, one entry per bar
        self.s_index: list[int] = []
        self.s_equity: list[float] = []
        self.s_cash: list[float] = []
        self.s_value: list[float] = []
        self.s_gross: list[float] = []
        self.s_npos: list[int] = []
        # fills: one tuple per fill, in FILL_FIELDS order
        self.fills: list[tuple[Any, ...]] = []
        # closed trades (or closed parts of trades): one tuple per row, in TRADE_FIELDS order
        self.trades: list[tuple[Any, ...]] = []
        # entry_/exit_ signal and indicator values of trades[:sealed], resolved before the
        # market data moved to another chunk window (see seal)
        self.sealed = 0
        self.sealed_values: dict[str, list[np.ndarray[Any, Any]]] = {}
        # typed column buffers of a compiled run (engine.fastpath), read instead of the lists
        self.compiled: CompiledRun | None = None
        self._symbol_names: pl.Series | None = None
        # rejections / cancellations / expiries / shrinks
        self.r: dict[str, list[Any]] = {
            k: []
            for k in (
                "bar_index",
                "order_id",
                "sid",
                "quantity",
                "order_type",
                "event",
                "reason",
                "rule",
            )
        }

    def state(
        self, index: int, equity: float, cash: float, value: float, gross: float, n_positions: int
    ) -> None:
        self.s_index.append(index)
        self.s_equity.append(equity)
        self.s_cash.append(cash)
        self.s_value.append(value)
        self.s_gross.append(gross)
        self.s_npos.append(n_positions)

    def rejection(
        self,
        index: int,
        order: Order,
        event: str,
        reason: str,
        rule: str = "",
        quantity: float | None = None,
    ) -> None:
        r = self.r
        r["bar_index"].append(index)
        r["order_id"].append(order.order_id)
        r["sid"].append(order.sid)
        r["quantity"].append(order.quantity if quantity is None else quantity)
        r["order_type"].append(order.order_type.value)
        r["event"].append(event)
        r["reason"].append(reason)
        r["rule"].append(rule)

    def seal(self) -> None:
        """Resolve the named columns at the decision rows of the trades recorded so far, from
        the current market data; called before the engine moves to the next chunk window."""
        if len(self.trades) == self.sealed:
            return
        data = self.data
        named = [*data.signal_columns, *data.indicator_columns]
        new = self.trades[self.sealed :]
        k_entry = TRADE_FIELDS.index("decision_row")
        k_exit = TRADE_FIELDS.index("exit_decision_row")
        for prefix, k in (("entry", k_entry), ("exit", k_exit)):
            rows = np.fromiter((t[k] for t in new), dtype=np.int64, count=len(new))
            for c in named:
                key = f"{prefix}_{c}"
                self.sealed_values.setdefault(key, []).append(
                    self._values_at(rows, data.columns[c])
                )
        self.sealed = len(self.trades)

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

    def _state_columns(self) -> dict[str, Any]:
        if self.compiled is not None:
            return self.compiled.states
        return {
            "bar_index": np.asarray(self.s_index, dtype=np.int64),
            "equity": np.asarray(self.s_equity, dtype=np.float64),
            "cash": np.asarray(self.s_cash, dtype=np.float64),
            "positions_value": np.asarray(self.s_value, dtype=np.float64),
            "gross": np.asarray(self.s_gross, dtype=np.float64),
            "n_positions": np.asarray(self.s_npos, dtype=np.int64),
        }

    def states_frame(self, initial_cash: float) -> pl.DataFrame:
        s = self._state_columns()
        equity = s["equity"]
        value = s["positions_value"]
        gross = s["gross"]
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
                "cash": s["cash"],
                "positions_value": value,
                "gross_leverage": gross_lev,
                "net_leverage": net_lev,
                "n_positions": pl.Series(s["n_positions"], dtype=pl.Int64),
                "return": ret,
                "cumulative_return": equity / initial_cash - 1.0,
                "drawdown": np.minimum(dd, 0.0),
            }
        )
        idx = s["bar_index"]
        extra = {name: arr[idx] for name, arr in self.data.context.items()}
        if extra:
            frame = frame.with_columns(
                [pl.Series(name, vals, dtype=pl.Float64) for name, vals in extra.items()]
            )
        return frame

    def _fill_columns(self) -> dict[str, Any]:
        if self.compiled is not None:
            return self.compiled.fills
        return _typed_columns(self.fills, FILL_DTYPES)

    def fills_frame(self) -> pl.DataFrame:
        f = self._fill_columns()
        qty = np.asarray(f["quantity"], dtype=np.float64)
        return pl.DataFrame(
            {
                "fill_id": pl.Series(f["fill_id"], dtype=pl.Int64),
                "order_id": pl.Series(f["order_id"], dtype=pl.Int64),
                "timestamp": self._ts(f["bar_index"]),
                "symbol": self._symbols(f["sid"]),
                "side": _side(qty > 0, "buy", "sell"),
                "quantity": qty,
                "price_before_slippage": np.asarray(f["price_before_slippage"], np.float64),
                "price": np.asarray(f["price"], np.float64),
                "commission": np.asarray(f["commission"], np.float64),
                "slippage": np.asarray(f["slippage"], np.float64),
                "order_type": pl.Series(f["order_type"], dtype=pl.String),
                "reason": pl.Series(f["reason"], dtype=pl.String),
            }
        )

    def _trade_columns(self) -> dict[str, Any]:
        if self.compiled is not None:
            return self.compiled.trades
        return _typed_columns(self.trades, TRADE_DTYPES)

    def trades_frame(self) -> pl.DataFrame:
        t = self._trade_columns()
        data = self.data
        n = len(t["sid"])
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
            "exit_reason": pl.Series(t["exit_reason"], dtype=pl.String),
            "pnl_gross": pnl_gross,
            "pnl_net": pnl_net,
            "return_pct": ret,
            "pnl_percent": ret * 100.0,
            "bars_held": pl.Series(t["bars_held"], dtype=pl.Int64),
            "days_held": np.asarray(days, dtype=np.float64),
            "mfe": mfe,
            "mae": mae,
            "mfe_pct": mfe_pct,
            "mae_pct": mae_pct,
            "stop_loss_at_exit": np.asarray(t["stop_at_exit"], dtype=np.float64),
            "take_profit_at_exit": np.asarray(t["take_profit_at_exit"], dtype=np.float64),
            "partial": pl.Series(t["partial"], dtype=pl.Boolean),
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
        r: dict[str, Any] = self.compiled.rejections if self.compiled is not None else self.r
        return pl.DataFrame(
            {
                "timestamp": self._ts(r["bar_index"]),
                "order_id": pl.Series(r["order_id"], dtype=pl.Int64),
                "symbol": self._symbols(r["sid"]),
                "quantity": pl.Series(r["quantity"], dtype=pl.Float64),
                "order_type": pl.Series(r["order_type"], dtype=pl.String),
                "event": pl.Series(r["event"], dtype=pl.String),
                "reason": pl.Series(r["reason"], dtype=pl.String),
                "rule": pl.Series(r["rule"], dtype=pl.String),
            }
        )

    def orders_frame(self, orders: list[Order]) -> pl.DataFrame:
        if self.compiled is not None:
            c = self.compiled.orders
            return pl.DataFrame(
                {
                    "order_id": pl.Series(c["order_id"], dtype=pl.Int64),
                    "submitted": self._ts(np.maximum(c["submit_index"], 0)),
                    "symbol": self._symbols(c["sid"]),
                    "quantity": pl.Series(c["quantity"], dtype=pl.Float64),
                    "filled": pl.Series(c["filled"], dtype=pl.Float64),
                    "order_type": c["order_type"],
                    "limit_price": pl.Series(c["limit_price"], dtype=pl.Float64),
                    "stop_price": pl.Series(c["stop_price"], dtype=pl.Float64),
                    "tif": c["tif"],
                    "status": c["status"],
                    "reason": c["reason"],
                    "status_reason": c["status_reason"],
                    "parent_id": pl.Series(c["parent_id"], dtype=pl.Int64),
                }
            )
        fields = (
            "order_id",
            "submit_index",
            "symbol",
            "quantity",
            "filled",
            "order_type",
            "limit_price",
            "stop_price",
            "tif",
            "status",
            "reason",
            "status_reason",
            "parent_id",
        )
        rows = [
            (
                o.order_id,
                o.submit_index,
                o.symbol,
                o.quantity,
                o.filled,
                str.__str__(o.order_type),
                o.limit_price,
                o.stop_price,
                str.__str__(o.tif),
                str.__str__(o.status),
                o.reason,
                o.status_reason,
                o.parent_id,
            )
            for o in orders
        ]
        c = _columns(rows, fields)
        return pl.DataFrame(
            {
                "order_id": pl.Series(c["order_id"], dtype=pl.Int64),
                "submitted": self._ts([max(i, 0) for i in c["submit_index"]]),
                "symbol": pl.Series(c["symbol"], dtype=pl.String),
                "quantity": pl.Series(c["quantity"], dtype=pl.Float64),
                "filled": pl.Series(c["filled"], dtype=pl.Float64),
                "order_type": pl.Series(c["order_type"], dtype=pl.String),
                "limit_price": pl.Series(c["limit_price"], dtype=pl.Float64),
                "stop_price": pl.Series(c["stop_price"], dtype=pl.Float64),
                "tif": pl.Series(c["tif"], dtype=pl.String),
                "status": pl.Series(c["status"], dtype=pl.String),
                "reason": pl.Series(c["reason"], dtype=pl.String),
                "status_reason": pl.Series(c["status_reason"], dtype=pl.String),
                "parent_id": pl.Series(c["parent_id"], dtype=pl.Int64),
            }
        )
