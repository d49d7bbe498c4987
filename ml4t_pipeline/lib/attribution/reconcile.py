"""Reconciliation: an attribution table's parts against the total net P&L of the trades."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from ml4t_pipeline.lib.attribution.tables import TOTAL

_RECONCILE_TOLERANCE = 1e-6  # currency units, relative to max(1, |total|)


@dataclass(frozen=True)
class Reconciliation:
    """The parts of an attribution table against the total net P&L of the closed trades.

    Attributes
    ----------
    table : str
        Which table.
    parts : float
        Σ ``pnl_net_total`` over the table's part rows (currency).
    total : float
        Σ ``pnl_net`` over all closed trades (currency).
    n_parts_trades, n_trades : int
        Σ ``n_trades`` over the parts, and the number of closed trades.
    """

    table: str
    parts: float
    total: float
    n_parts_trades: int
    n_trades: int

    @property
    def difference(self) -> float:
        """``parts - total`` (currency)."""
        return self.parts - self.total

    @property
    def ok(self) -> bool:
        """True when the parts hold every trade and their P&L equals the total (to 1e-6)."""
        scale = max(1.0, abs(self.total))
        return (
            self.n_parts_trades == self.n_trades
            and abs(self.difference) <= _RECONCILE_TOLERANCE * scale
        )


def reconcile(table: pl.DataFrame, trades: pl.DataFrame, name: str = "") -> Reconciliation:
    """Compare an attribution table's parts with the total net P&L of ``trades``.

    Parameters
    ----------
    table : pl.DataFrame
        A table from this module (first column the key, a :data:`TOTAL` row, ``n_trades`` and
        ``pnl_net_total`` columns).
    trades : pl.DataFrame
        The closed trades it was built from (``pnl_net``).
    """
    key = table.columns[0]
    parts = table.filter(pl.col(key) != TOTAL)
    total = float(trades["pnl_net"].sum()) if trades.height else 0.0
    return Reconciliation(
        table=name or key,
        parts=float(parts["pnl_net_total"].sum()) if parts.height else 0.0,
        total=total,
        n_parts_trades=int(parts["n_trades"].sum()) if parts.height else 0,
        n_trades=trades.height,
    )


def reconciliation_line(result: Reconciliation) -> str:
    """One line of text: ``parts 1,234.56 = total net P&L of 40 closed trades 1,234.56 (ok)``."""
    verdict = "ok" if result.ok else "MISMATCH"
    return (
        f"reconciliation ({result.table}): parts sum to {result.parts:,.2f} over "
        f"{result.n_parts_trades:,} trades; total net P&L of the {result.n_trades:,} closed "
        f"trades is {result.total:,.2f}; difference {result.difference:,.6f} ({verdict})"
    )
