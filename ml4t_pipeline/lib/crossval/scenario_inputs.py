"""A parity scenario's inputs, identical for every framework: the real S&P 500 bars of the panel's
symbols and the crossover signals and share sizes of the scenario (:class:`ScenarioData`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from ml4t_pipeline.lib.crossval.reference import (
    SP500_FILE,
    ReferenceInputs,
    build_reference_inputs,
    select_clean_symbols,
)
from ml4t_pipeline.lib.crossval.scenario_spec import Scenario

SMALL_PANEL_SYMBOLS = 12
"""Symbols of the default panel (evenly spaced over the clean S&P symbols, by name)."""


@dataclass(frozen=True)
class ScenarioData:
    """The prepared inputs of a scenario run (identical for every framework).

    Attributes
    ----------
    inputs : ReferenceInputs
        Wide OHLC (and the issue-7 ``score``) matrices and the long panel.
    volume : pandas.DataFrame
        Wide volume, shares, same shape as ``inputs.close``.
    entry_long, exit_long, entry_short, exit_short : numpy.ndarray
        Boolean ``(n_bars, n_symbols)``: the crossover signals at each bar's close.
    quantity : numpy.ndarray
        Float ``(n_symbols,)``: shares per entry, ``floor(position_value / first close)``.
    """

    inputs: ReferenceInputs
    volume: pd.DataFrame
    entry_long: np.ndarray
    exit_long: np.ndarray
    entry_short: np.ndarray
    exit_short: np.ndarray
    quantity: np.ndarray

    @property
    def symbols(self) -> tuple[str, ...]:
        """Column order of every matrix."""
        return self.inputs.symbols


def load_prices(data_root: Path) -> pl.DataFrame:
    """The real S&P 500 daily file under ``data_root``.

    Raises
    ------
    FileNotFoundError
        The file is not there (path named).
    """
    path = Path(data_root) / SP500_FILE
    if not path.exists():
        raise FileNotFoundError(f"parity data file not found: {path}")
    return pl.read_parquet(path)


def panel_symbols(prices: pl.DataFrame, n_symbols: int | None) -> list[str]:
    """``n_symbols`` clean symbols spread evenly over the sorted clean list (all when None)."""
    clean = select_clean_symbols(prices)
    if n_symbols is None or n_symbols >= len(clean):
        return clean
    if n_symbols < 1:
        raise ValueError(f"n_symbols must be >= 1, got {n_symbols}")
    picks = np.linspace(0, len(clean) - 1, n_symbols).round().astype(int)
    return [clean[k] for k in picks]


def prepare_inputs(
    prices: pl.DataFrame, symbols: list[str], n_bars: int | None = None
) -> tuple[ReferenceInputs, pd.DataFrame]:
    """Reference inputs and the wide volume for ``symbols``, on the first ``n_bars`` dates."""
    if n_bars is not None:
        dates = prices["timestamp"].unique().sort().head(n_bars)
        prices = prices.filter(pl.col("timestamp").is_in(dates.implode()))
    inputs = build_reference_inputs(prices, symbols)
    volume = (
        prices.filter(pl.col("symbol").is_in(symbols))
        .with_columns(pl.col("timestamp").cast(pl.Datetime("us")).alias("date"))
        .pivot(on="symbol", index="date", values="volume")
        .sort("date")
        .select("date", *inputs.symbols)
        .to_pandas()
        .set_index("date")
        .astype("float64")
    )
    volume.index = inputs.close.index
    return inputs, volume


def scenario_data(
    inputs: ReferenceInputs, volume: pd.DataFrame, scenario: Scenario
) -> ScenarioData:
    """Signals and sizes of ``scenario`` on prepared inputs (restricted to its bars/symbols).

    With ``fill="close"`` the last bar carries no signal (no framework can fill a decision of
    the last close in Backtrader's cheat-on-close, which fills it a broker cycle later)."""
    if scenario.n_bars is not None and scenario.n_bars < inputs.n_dates:
        inputs, volume = _head(inputs, volume, scenario.n_bars)
    if scenario.n_symbols is not None and scenario.n_symbols < len(inputs.symbols):
        keep = list(inputs.symbols[: scenario.n_symbols])
        inputs = _subset(inputs, keep)
        volume = volume[keep]
    close = inputs.close.to_numpy()
    fast = inputs.close.rolling(scenario.fast).mean().to_numpy()
    slow = inputs.close.rolling(scenario.slow).mean().to_numpy()
    above = fast > slow
    valid = np.isfinite(fast) & np.isfinite(slow)
    prev_above = np.vstack([above[:1], above[:-1]])
    prev_valid = np.vstack([np.zeros_like(valid[:1]), valid[:-1]])
    both = valid & prev_valid
    up = both & above & ~prev_above
    down = both & ~above & prev_above
    if scenario.fill == "close":
        # no decision at the last close: Backtrader's cheat-on-close executes a close order
        # in the next bar's broker cycle, and after the last bar there is none
        up[-1] = down[-1] = False
    qty = np.floor(scenario.position_value / close[0])
    return ScenarioData(
        inputs=inputs,
        volume=volume,
        entry_long=up,
        exit_long=down,
        entry_short=down,
        exit_short=up,
        quantity=qty,
    )


def _head(inputs: ReferenceInputs, volume: pd.DataFrame, n: int) -> tuple[ReferenceInputs, Any]:
    stamps = inputs.timestamps[:n]
    panel = inputs.panel.filter(
        pl.col("timestamp").is_in(pl.Series(stamps).cast(pl.Datetime("us", "UTC")).implode())
    )
    return (
        replace(
            inputs,
            open=inputs.open.iloc[:n],
            high=inputs.high.iloc[:n],
            low=inputs.low.iloc[:n],
            close=inputs.close.iloc[:n],
            score=inputs.score.iloc[:n],
            timestamps=stamps,
            panel=panel,
        ),
        volume.iloc[:n],
    )


def _subset(inputs: ReferenceInputs, symbols: list[str]) -> ReferenceInputs:
    return replace(
        inputs,
        symbols=tuple(symbols),
        open=inputs.open[symbols],
        high=inputs.high[symbols],
        low=inputs.low[symbols],
        close=inputs.close[symbols],
        score=inputs.score[symbols],
        panel=inputs.panel.filter(pl.col("symbol").is_in(symbols)),
    )
