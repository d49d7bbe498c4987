"""Every attribution table of one run, from scratch or from the assets' tables, and its files."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from ml4t_pipeline.lib.attribution.carry import carry_attribution
from ml4t_pipeline.lib.attribution.ic import forward_returns, ic_summary, information_coefficient
from ml4t_pipeline.lib.attribution.reconcile import reconcile, reconciliation_line
from ml4t_pipeline.lib.attribution.tables import (
    by_exit_reason,
    by_regime,
    by_signal_decile,
    cost_attribution,
    default_regime_column,
)
from ml4t_pipeline.lib.output import to_json_safe

#: Output file name (in an ``ml4t run`` folder) of each table :func:`attribute_run` returns.
ATTRIBUTION_FILES = {
    "by_exit_reason": "attribution_by_exit_reason.parquet",
    "by_signal_decile": "attribution_by_signal.parquet",
    "information_coefficient": "information_coefficient.parquet",
    "by_regime": "attribution_by_regime.parquet",
    "cost_attribution": "cost_attribution.parquet",
}
#: Output file names of the market mechanics' tables (:func:`add_mechanics`), written only
#: for runs that have them.
MECHANICS_FILES = {
    "carry_attribution": "carry_attribution.parquet",
    "corporate_actions": "corporate_actions.parquet",
}


def attribute_run(
    trades: pl.DataFrame,
    portfolio_states: pl.DataFrame,
    *,
    signals: pl.DataFrame | None = None,
    prices: pl.DataFrame | None = None,
    signal: str = "score",
    horizon: int = 1,
    regime_column: str | None = None,
    periods_per_year: float = 252.0,
) -> dict[str, Any]:
    """Every attribution table of one run (what ``ml4t run`` writes and the report shows).

    Returns
    -------
    dict
        ``by_exit_reason``, ``by_signal_decile`` (when ``entry_<signal>`` exists),
        ``information_coefficient`` (per period, when signals and prices are given),
        ``ic_summary`` (dict), ``by_regime`` (when a regime column exists; see
        :func:`default_regime_column`), ``cost_attribution``, ``carry_attribution`` (dividends
        and financing, :func:`carry_attribution`, under market mechanics) and
        ``reconciliation`` (table name → :class:`Reconciliation`). Keys whose inputs are
        missing are absent.
    """
    out: dict[str, Any] = {"by_exit_reason": by_exit_reason(trades)}
    entry_signal = f"entry_{signal}"
    if entry_signal in trades.columns:
        out["by_signal_decile"] = by_signal_decile(trades, entry_signal)
    if signals is not None and prices is not None and signal in signals.columns:
        ic = information_coefficient(
            forward_returns(signals, prices, signal=signal, horizon=horizon)
        )
        out["information_coefficient"] = ic
        out["ic_summary"] = ic_summary(ic, horizon)
    column = regime_column or default_regime_column(trades)
    if column is not None:
        states = portfolio_states if column in portfolio_states.columns else None
        out["by_regime"] = by_regime(
            trades, column, portfolio_states=states, periods_per_year=periods_per_year
        )
        out["regime_column"] = column
    out["cost_attribution"] = cost_attribution(trades)
    carry = carry_attribution(portfolio_states)
    if carry is not None:
        out["carry_attribution"] = carry
    out["reconciliation"] = {
        name: reconcile(out[name], trades, name)
        for name in ("by_exit_reason", "by_signal_decile", "by_regime", "cost_attribution")
        if name in out
    }
    return out


def from_tables(
    trades: pl.DataFrame,
    *,
    by_exit_reason: pl.DataFrame,
    cost_attribution: pl.DataFrame,
    by_signal: Mapping[str, pl.DataFrame] | None = None,
    by_regime: pl.DataFrame | None = None,
    regime_column: str | None = None,
) -> dict[str, Any]:
    """The dict :func:`attribute_run` returns, from tables already computed (the attribution
    assets' values): nothing is recomputed but the reconciliations.

    Parameters
    ----------
    trades : pl.DataFrame
        The closed trades the tables were computed from (for the reconciliations).
    by_exit_reason, cost_attribution : pl.DataFrame
        :func:`by_exit_reason` and :func:`cost_attribution` of ``trades``.
    by_signal : Mapping[str, pl.DataFrame], optional
        ``deciles`` (:func:`by_signal_decile`), ``information_coefficient`` and ``ic_summary``
        (one row of :func:`ic_summary`); any may be absent.
    by_regime : pl.DataFrame, optional
        :func:`by_regime` of ``trades`` by ``regime_column``.
    regime_column : str, optional
        The regime table's column (default: :func:`default_regime_column` of ``trades``).

    Returns
    -------
    dict
        Keys as :func:`attribute_run`.
    """
    out: dict[str, Any] = {"by_exit_reason": by_exit_reason}
    signal_tables = dict(by_signal or {})
    if "deciles" in signal_tables:
        out["by_signal_decile"] = signal_tables["deciles"]
    if "information_coefficient" in signal_tables:
        out["information_coefficient"] = signal_tables["information_coefficient"]
    if "ic_summary" in signal_tables and signal_tables["ic_summary"].height:
        out["ic_summary"] = signal_tables["ic_summary"].row(0, named=True)
    if by_regime is not None:
        out["by_regime"] = by_regime
        out["regime_column"] = regime_column or default_regime_column(trades)
    out["cost_attribution"] = cost_attribution
    out["reconciliation"] = {
        name: reconcile(out[name], trades, name)
        for name in ("by_exit_reason", "by_signal_decile", "by_regime", "cost_attribution")
        if name in out
    }
    return out


def write_attribution(tables: Mapping[str, Any], output_dir: str | Path) -> list[Path]:
    """Write the tables of :func:`attribute_run` as Parquet (zstd) into ``output_dir``.

    File names are :data:`ATTRIBUTION_FILES` (and :data:`MECHANICS_FILES` when present);
    ``ic_summary`` and the reconciliations go to
    ``attribution_summary.json``. Each file is written to a temporary name and renamed.

    Returns
    -------
    list[Path]
        The files written.
    """
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key, filename in {**ATTRIBUTION_FILES, **MECHANICS_FILES}.items():
        if key in tables:
            target = folder / filename
            tmp = target.with_name(f".{filename}.tmp")
            tables[key].write_parquet(tmp, compression="zstd")
            tmp.replace(target)
            written.append(target)
    summary = {
        "ic_summary": tables.get("ic_summary"),
        "regime_column": tables.get("regime_column"),
        "reconciliation": {
            name: {
                "parts": r.parts,
                "total": r.total,
                "difference": r.difference,
                "ok": r.ok,
                "line": reconciliation_line(r),
            }
            for name, r in tables.get("reconciliation", {}).items()
        },
    }
    target = folder / "attribution_summary.json"
    tmp = target.with_name(".attribution_summary.json.tmp")
    strict = to_json_safe(summary)  # NaN/inf -> null: strict JSON (RFC 8259)
    tmp.write_text(
        json.dumps(strict, indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    )
    tmp.replace(target)
    written.append(target)
    return written


def _json_default(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
