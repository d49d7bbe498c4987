"""Shared pieces of the experiment configuration: limits, the environment variables, the
strict base model, bounded numbers and the errors."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

DATA_ROOT_ENV = "ML4T_DATA_ROOT"
"""Environment variable naming the data root (relative data paths resolve against it)."""
ALLOW_OUTSIDE_ROOT_ENV = "ML4T_ALLOW_OUTSIDE_DATA_ROOT"
"""Set to ``1`` (or ``true``/``yes``) to allow data paths outside the data root (off by default)."""
DEMO_PRICES = "demo"
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
"""File suffixes :func:`load_config` reads (``.json`` is parsed as JSON, the others as YAML)."""

MAX_BARS = 10_000
"""Upper bound of bar-count settings (``n``, ``rebalance_every``, ``max_bars``, cooldowns)."""
MAX_ROWS = 100_000
"""Upper bound of row/period settings (``periods_per_year``, ``min_train_periods``, fill limits)."""
MAX_CASH = 1e12
"""Upper bound of ``initial_cash`` (currency) and of any number in a rule or cost spec."""


# ---------------------------------------------------------------------------------------------
# Bounded number types


def _no_bool(value: Any) -> Any:
    # pydantic's lax mode reads true/false as 1/0; a boolean given for a number is a mistake
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {value!r}")
    return value


_NUMBER = BeforeValidator(_no_bool)


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class ConfigError(ValueError):
    """Raised when an experiment file cannot be read or does not validate."""


class DataPathError(ConfigError):
    """Raised when a data path resolves outside the data root."""
