"""Zipline-reloaded in the parity matrix: a subprocess in its own virtual environment.

Zipline-reloaded 3.2.1 installs on Python 3.11 but pins ``pandas < 3`` (it would downgrade the
project's pandas 3.1 to 2.3.3, which vectorbt 1.2 cannot take), so it lives in a separate venv
(``python3 -m venv /work/zl-venv && /work/zl-venv/bin/pip install zipline-reloaded pyarrow``)
whose interpreter is given as ``zipline_python`` (or ``$ML4T_ZIPLINE_PYTHON``). The driver
script (``zipline_driver.py``) imports nothing of the project; inputs and fills travel as
Parquet files.

Semantics and our matching settings:

- Zipline's daily mode fills an order placed in ``handle_data`` of bar ``t`` at bar
  ``t + 1``'s **close**. Our engine has no "next close" fill, so our run decides on the
  signals one bar late and fills at that bar's close (``fill="close"``, signals delayed one
  bar): the same decision data, the same fill bar and price.
- Zipline stores prices as integer thousandths: every framework of a Zipline comparison reads
  prices rounded to 0.001.
- Zipline has no cash check (orders fill into negative cash) and its stop orders trigger on the
  bar's close in daily mode, so only scenarios without price levels, limits, caps or cash
  limits are expressed (:data:`ZIPLINE_SCENARIOS`).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from ml4t_pipeline.lib.crossval.compare import FrameworkRun
from ml4t_pipeline.lib.crossval.scenarios import Scenario, ScenarioData

ZIPLINE_SCENARIOS: frozenset[str] = frozenset(
    {
        "long_only",
        "long_short",
        "short_only",
        "commission_percent",
        "commission_per_share",
        "slippage_percent",
        "slippage_fixed",
    }
)
"""Catalogue scenarios expressed in Zipline's API (the others: :func:`zipline_reason`)."""

DRIVER = Path(__file__).with_name("zipline_driver.py")


def zipline_python(explicit: str | None = None) -> str | None:
    """The Zipline venv's interpreter: ``explicit``, else ``$ML4T_ZIPLINE_PYTHON``, else None."""
    return explicit or os.environ.get("ML4T_ZIPLINE_PYTHON") or None


def zipline_reason(scenario: Scenario) -> str | None:
    """Why ``scenario`` is not expressed in Zipline (None when it is)."""
    if scenario.name in ZIPLINE_SCENARIOS:
        return None
    if scenario.has_levels or scenario.bracket is not None:
        return (
            "Zipline's daily stop/limit orders trigger on the bar's close (no intrabar levels); "
            "not run"
        )
    if scenario.name == "cash_constrained":
        return "Zipline has no cash check: orders fill into negative cash"
    return "not written for Zipline yet (no-level signal scenarios only)"


def _round(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.round(3)


def zipline_view(scenario: Scenario, data: ScenarioData) -> tuple[Scenario, ScenarioData]:
    """Prices rounded to 0.001 for every framework; the scenario and data our engine runs."""
    inputs = data.inputs
    rounded = replace(
        inputs,
        open=_round(inputs.open),
        high=_round(inputs.high),
        low=_round(inputs.low),
        close=_round(inputs.close),
        panel=inputs.panel.with_columns(
            pl.col(c).round(3) for c in ("open", "high", "low", "close")
        ),
    )
    return scenario, replace(data, inputs=rounded)


def delayed(data: ScenarioData) -> ScenarioData:
    """The signals of bar ``t - 1`` at bar ``t`` (our side of a Zipline comparison)."""

    def shift(a: np.ndarray) -> np.ndarray:
        out = np.zeros_like(a)
        out[1:] = a[:-1]
        return out

    return replace(
        data,
        entry_long=shift(data.entry_long),
        exit_long=shift(data.exit_long),
        entry_short=shift(data.entry_short),
        exit_short=shift(data.exit_short),
    )


def run_zipline_scenario(scenario: Scenario, data: ScenarioData, python: str) -> FrameworkRun:
    """Run ``scenario`` through Zipline in the interpreter ``python`` (a subprocess).

    Parameters
    ----------
    scenario : Scenario
        One of :data:`ZIPLINE_SCENARIOS`.
    data : ScenarioData
        Already rounded (:func:`zipline_view`).
    python : str
        Path of the Zipline venv's ``python``.

    Returns
    -------
    FrameworkRun
        ``framework="zipline"``; ``commission`` is 0 in the fills (Zipline books it on the
        order), the final equity includes it.

    Raises
    ------
    RuntimeError
        The subprocess failed (its stderr tail is in the message).
    """
    inputs = data.inputs
    with tempfile.TemporaryDirectory(prefix="ml4t-zipline-") as tmp:
        work = Path(tmp)
        long = pd.concat(
            {f: getattr(inputs, f).stack() for f in ("open", "high", "low", "close")},
            axis=1,
        )
        long["volume"] = data.volume.stack()
        long = long.reset_index().rename(columns={"level_1": "symbol"})
        long.columns = ["date", "symbol", "open", "high", "low", "close", "volume"]
        long.to_parquet(work / "bars.parquet")
        signals = {}
        for name in ("entry_long", "exit_long", "entry_short", "exit_short"):
            arr = getattr(data, name)
            for j, s in enumerate(inputs.symbols):
                signals[f"{name}__{s}"] = arr[:, j]
        pd.DataFrame(signals).to_parquet(work / "signals.parquet")
        spec = {
            "symbols": list(inputs.symbols),
            "quantity": data.quantity.tolist(),
            "direction": scenario.direction,
            "commission": list(scenario.commission) if scenario.commission else None,
            "slippage": list(scenario.slippage) if scenario.slippage else None,
            "initial_cash": scenario.initial_cash,
        }
        (work / "spec.json").write_text(json.dumps(spec))
        env = {**os.environ, "ZIPLINE_ROOT": str(work / "zipline_root")}
        start = time.perf_counter()
        proc = subprocess.run(
            [python, str(DRIVER), str(work)], capture_output=True, text=True, env=env, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"zipline driver failed: {proc.stderr[-2000:]}")
        seconds = time.perf_counter() - start
        result = json.loads((work / "result.json").read_text())
        raw = pd.read_parquet(work / "fills.parquet")
    stamp_of = {d.date(): ts for d, ts in zip(inputs.close.index, inputs.timestamps, strict=True)}
    fills = pl.DataFrame(
        {
            "timestamp": [stamp_of[pd.Timestamp(d).date()] for d in raw["date"]],
            "symbol": raw["symbol"].astype(str).tolist(),
            "quantity": raw["quantity"].astype(float).tolist(),
            "price": raw["price"].astype(float).tolist(),
            "commission": [0.0] * len(raw),
            "reason": ["order"] * len(raw),
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC"), "symbol": pl.String},
    ).sort("timestamp", "symbol", maintain_order=True)
    return FrameworkRun(
        framework="zipline",
        fills=fills,
        final_equity=float(result["final_equity"]),
        n_closed_trades=0,
        settings={"driver": "zipline run_algorithm (subprocess)", "python": python},
        run_seconds=seconds,
    )
