"""Experiment configuration: one YAML file per experiment, validated by pydantic models.

An experiment file has the sections ``data``, ``strategy``, ``risk_rules``, ``execution`` and
``reporting`` (after the seeds' configuration schema). Unknown keys anywhere are errors, and every
error message names the offending key. The same objects can be built in Python::

    cfg = ExperimentConfig(
        name="my_test",
        data=DataConfig(prices="demo"),
        strategy={"type": "TopN", "signal": "score", "n": 2},
    )

Relative data paths resolve against the ``ML4T_DATA_ROOT`` environment variable (see
:func:`resolve_data_path`); ``prices: demo`` selects the real daily OHLCV shipped in the
``bokeh-sampledata`` package, so the demo needs no file at all.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DATA_ROOT_ENV = "ML4T_DATA_ROOT"
DEMO_PRICES = "demo"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSignalsConfig(_Strict):
    """Signals made by the pipeline's own walk-forward scikit-learn model.

    Attributes
    ----------
    model : {"ridge", "gbm"}
        Ridge regression on cross-sectionally standardised features, or a small
        histogram gradient-boosting model.
    horizon : int
        Forecast horizon in bars: the model predicts the ``horizon``-bar forward return.
    min_train_periods : int
        Distinct timestamps required before the first fit; earlier bars get no score.
    retrain : {"monthly"}
        Refit at the first bar of every calendar month (expanding window).
    alpha : float
        Ridge penalty.
    """

    model: Literal["ridge", "gbm"] = "ridge"
    horizon: int = Field(5, ge=1, le=250)
    min_train_periods: int = Field(252, ge=20)
    retrain: Literal["monthly"] = "monthly"
    alpha: float = Field(1.0, gt=0)


class FileSignalsConfig(_Strict):
    """Signals read from a user's Parquet/CSV file: timestamp, symbol, one column per score.

    ``columns`` names the score columns to use (all Float64 columns when omitted).
    """

    path: str
    columns: list[str] | None = None


class ContextConfig(_Strict):
    """Market-wide context stored once per timestamp.

    ``source: market`` derives the equal-weight market return and its 20-bar volatility from
    the prices; ``source: vix`` reads CBOE's VIX history from ``path`` (stamped at its 16:15 New
    York close, so it is visible from the next daily bar); ``source: file`` reads any table with
    a ``timestamp`` column and the named ``columns``.
    """

    source: Literal["market", "vix", "file"] = "market"
    path: str | None = None
    columns: list[str] | None = None

    @field_validator("path")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        return v.strip() if v else v


class DataConfig(_Strict):
    """Where the data comes from and how strictly it is checked.

    Attributes
    ----------
    prices : str
        ``demo`` (bokeh-sampledata's daily stocks) or a path to a Parquet/CSV file or directory.
    signals : ModelSignalsConfig | FileSignalsConfig
        The pipeline's own walk-forward model (default) or a user's score file.
    features : str
        ``computed`` (indicators computed from prices) or a path to a features table.
    context : ContextConfig
        Market-wide values (one row per timestamp).
    signal_available_at : {"market_close", "market_open", "next_day", "available_at"}
        When a signal row becomes usable: at its own bar's close, at 09:30 New York that day,
        at the next weekday's open, or at the time in its explicit ``available_at`` column. A
        signal is visible from the first bar whose close is at or after that time.
    validation : {"fast", "standard", "paranoid"}
        Validation level (seeds' names). ``fast`` checks names, dtypes and a sample of rows (and
        says so); ``standard`` checks every row; ``paranoid`` adds signal timing and staleness.
    bar_length : str | None
        For intraday price files whose timestamps mark the bar *start* (e.g. ``"1m"``, ``"1h"``):
        the bar length used to restamp them at the bar close. None for daily files.
    max_fill_bars : int | None
        How many bars a signal value may be carried forward (None: until the next signal).
    max_signal_age_bars : int | None
        Under ``paranoid``: a signal older than this many of its symbol's bars is reported.
    invalid_rows : {"fail", "quarantine"}
        ``fail`` stops the run and names the rows; ``quarantine`` keeps them in their own table
        (``prices_quarantine``) and leaves them out of the backtest.
    symbols : list[str] | None
        Restrict the universe (None = every symbol in the prices).
    """

    prices: str = DEMO_PRICES
    signals: ModelSignalsConfig | FileSignalsConfig = Field(default_factory=ModelSignalsConfig)
    features: str = "computed"
    context: ContextConfig = Field(default_factory=ContextConfig)
    signal_available_at: Literal["market_close", "market_open", "next_day", "available_at"] = (
        "market_close"
    )
    validation: Literal["fast", "standard", "paranoid"] = "standard"
    invalid_rows: Literal["fail", "quarantine"] = "fail"
    symbols: list[str] | None = None
    bar_length: str | None = None
    max_fill_bars: int | None = Field(None, ge=0)
    max_signal_age_bars: int | None = Field(None, ge=1)


class StrategyConfig(_Strict):
    """The strategy by registry name (``TopN``) and its parameters.

    ``TopN`` holds the ``n`` symbols with the highest ``signal`` value, equal weight ``1/n`` of
    equity (or ``weight``), rebalancing every ``rebalance_every`` bars.
    """

    type: str = "TopN"
    signal: str = "score"
    n: int = Field(25, ge=1)
    rebalance_every: int = Field(1, ge=1)
    weight: float | None = Field(None, gt=0, le=1)

    def engine_spec(self) -> dict[str, Any]:
        """Return the dict that :func:`engine.build_strategy` accepts."""
        return self.model_dump(exclude_none=True)


class ExecutionConfig(_Strict):
    """Fill mode, costs, cash.

    ``fill``: ``next_open`` (default; a decision at bar t's close trades at t+1's open) or
    ``close`` (same bar's close). ``commission`` and ``slippage`` are registry specs such as
    ``{type: Percentage, rate: 0.001}``. ``initial_cash`` is in currency units.
    """

    fill: Literal["next_open", "close"] = "next_open"
    commission: dict[str, Any] = Field(default_factory=lambda: {"type": "Percentage", "rate": 0.0})
    slippage: dict[str, Any] = Field(default_factory=lambda: {"type": "NoSlippage"})
    initial_cash: float = Field(1_000_000.0, gt=0)
    fractional_shares: bool = False
    allow_short: bool = False
    preset: Literal["backtrader", "vectorbt"] | None = None


class ReportingConfig(_Strict):
    """Report settings: annual risk-free rate (fraction) and bars per year for annualising."""

    risk_free_rate: float = Field(0.0, ge=-0.1, le=0.5)
    periods_per_year: int = Field(252, ge=1)
    title: str | None = None


class ExperimentConfig(_Strict):
    """One experiment: the whole YAML file."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    risk_rules: list[dict[str, Any]] = Field(default_factory=list)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    reporting: ReportingConfig = Field(default_factory=ReportingConfig)

    @field_validator("risk_rules")
    @classmethod
    def _rules_have_type(cls, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, rule in enumerate(rules):
            if "type" not in rule:
                raise ValueError(f"risk_rules[{i}] has no 'type' (got keys {sorted(rule)})")
        return rules

    def config_hash(self) -> str:
        """Return a short SHA-256 of the canonical JSON of this config (lineage key)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class ConfigError(ValueError):
    """Raised when an experiment file cannot be read or does not validate."""


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate one experiment YAML file.

    Raises
    ------
    ConfigError
        If the file is missing, is not YAML, or breaks the schema; the message lists every
        offending key with its location (e.g. ``execution.fil: Extra inputs are not permitted``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError(f"{path}: invalid experiment config:\n" + "\n".join(lines)) from exc
    _check_engine_specs(cfg, path)
    return cfg


def _check_engine_specs(cfg: ExperimentConfig, source: Path | str) -> None:
    """Build every engine component once so bad rule names or parameters fail at load time."""
    import engine

    checks: list[tuple[str, Any, dict[str, Any]]] = [
        ("strategy", engine.build_strategy, cfg.strategy.engine_spec()),
        ("execution.commission", engine.build_commission, cfg.execution.commission),
        ("execution.slippage", engine.build_slippage, cfg.execution.slippage),
    ]
    checks += [(f"risk_rules[{i}]", engine.build_rule, r) for i, r in enumerate(cfg.risk_rules)]
    for where, build, spec in checks:
        try:
            build(dict(spec))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: {where}: {exc}") from exc


def resolve_data_path(value: str, *, data_root: str | Path | None = None) -> Path:
    """Resolve a data path from a config.

    Absolute paths are used as they are. Relative paths resolve against ``data_root`` or else
    the ``ML4T_DATA_ROOT`` environment variable, or else the current directory.

    Raises
    ------
    FileNotFoundError
        If the resolved path does not exist; the message names the variable to set.
    """
    p = Path(value).expanduser()
    if not p.is_absolute():
        root = data_root if data_root is not None else os.environ.get(DATA_ROOT_ENV)
        p = (Path(root) / p) if root else (Path.cwd() / p)
    if not p.exists():
        raise FileNotFoundError(
            f"data file {p} not found (relative data paths resolve against ${DATA_ROOT_ENV}, "
            f"currently {os.environ.get(DATA_ROOT_ENV)!r})"
        )
    return p.resolve()
