"""Helpers for the data-input tests: a small real price slice, a score file, one ``ml4t run``.

The slice is 6 S&P symbols x ``n_days`` trading days of the shared daily file (naive dates, as
stored); the scores are a 5-bar momentum per symbol, one row per bar. ``run_cli`` runs the real
``ml4t run`` in-process and returns its exit code and everything it printed.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from ml4t_pipeline.cli import main
from ml4t_pipeline.defs.io_managers import read_value
from ml4t_pipeline.runner import DATA_ASSETS, materialize_experiment

SYMBOLS = ("AAPL", "IBM", "JPM", "KO", "MSFT", "XOM")


def price_slice(data_root: Path, n_days: int = 120) -> pl.DataFrame:
    """The first ``n_days`` trading days of ``SYMBOLS``, sorted by (symbol, timestamp)."""
    raw = pl.read_parquet(data_root / "sp500_5yr_daily_ohlcv.parquet").filter(
        pl.col("symbol").is_in(SYMBOLS)
    )
    days = raw["timestamp"].unique().sort().head(n_days)
    return raw.filter(pl.col("timestamp").is_in(days.implode())).sort("symbol", "timestamp")


def momentum_scores(prices: pl.DataFrame) -> pl.DataFrame:
    """5-bar momentum per symbol, stamped with the plain trading date (``pl.Date``)."""
    return (
        prices.sort("symbol", "timestamp")
        .select(
            pl.col("timestamp").dt.date(),
            "symbol",
            (pl.col("close") / pl.col("close").shift(5).over("symbol") - 1).alias("score"),
        )
        .drop_nulls("score")
    )


def experiment(signals: str = "scores.parquet", **data: Any) -> dict[str, Any]:
    """A top-2 experiment on ``prices.parquet`` with a signal file; ``data`` overrides keys."""
    return {
        "name": "exp",
        "data": {
            "prices": "prices.parquet",
            "signals": {"path": signals},
            "features": "computed",
            "context": {"source": "market"},
            "invalid_rows": "fail",
            **data,
        },
        "strategy": {"type": "TopN", "signal": "score", "n": 2, "rebalance_every": 5},
        "execution": {"fill": "next_open", "initial_cash": 100_000},
    }


@dataclass
class Lab:
    """A data root and a configs folder under one temporary folder."""

    base: Path

    @property
    def data(self) -> Path:
        path = self.base / "data"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def config(self, cfg: dict[str, Any], name: str = "exp") -> Path:
        path = self.base / "configs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path


@dataclass(frozen=True)
class CliResult:
    code: int
    printed: str  # stdout + stderr


def run_cli(config: Path, out: Path, data_root: Path) -> CliResult:
    """``ml4t run CONFIG --output OUT`` in-process with ``ML4T_DATA_ROOT=data_root``."""
    stdout, stderr = io.StringIO(), io.StringIO()
    previous = os.environ.get("ML4T_DATA_ROOT")
    os.environ["ML4T_DATA_ROOT"] = str(data_root)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(["run", str(config), "--output", str(out)])
    finally:
        if previous is None:
            os.environ.pop("ML4T_DATA_ROOT", None)
        else:
            os.environ["ML4T_DATA_ROOT"] = previous
    return CliResult(code, stdout.getvalue() + stderr.getvalue())


@dataclass(frozen=True)
class Prepared:
    """The data assets of one experiment, materialized without the backtest."""

    success: bool
    checks: dict[str, bool]  # check name -> passed
    storage: Path
    key: str
    metadata: dict[str, dict[str, Any]]  # asset -> its materialization's metadata values

    def value(self, asset: str) -> Any:
        return read_value(self.storage / asset / self.key)


def prepare(config: Path, storage: Path, data_root: Path) -> Prepared:
    """Materialize the data assets (prices ... market_panel) of ``config`` in-process."""
    previous = os.environ.get("ML4T_DATA_ROOT")
    os.environ["ML4T_DATA_ROOT"] = str(data_root)
    try:
        result = materialize_experiment(config, storage, selection=DATA_ASSETS)
    finally:
        if previous is None:
            os.environ.pop("ML4T_DATA_ROOT", None)
        else:
            os.environ["ML4T_DATA_ROOT"] = previous
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    metadata = {
        m.asset_key.to_user_string(): {k: getattr(v, "value", v) for k, v in m.metadata.items()}
        for m in (
            e.step_materialization_data.materialization
            for e in result.get_asset_materialization_events()
        )
    }
    return Prepared(result.success, checks, storage, config.stem, metadata)
