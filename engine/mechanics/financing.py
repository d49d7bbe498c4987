"""The financing setting (:class:`Financing`: interest on cash, short borrow fees) and the
per-symbol borrow rates of a run; the accrual is :mod:`engine.core.financing`'s."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from engine.data import MarketData

FloatArray = npt.NDArray[np.float64]

DAY_COUNTS = {"actual/360": 360.0, "actual/365": 365.0}
"""Day-count conventions of :class:`Financing`: elapsed calendar days over the basis."""


def _rate(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not -1.0 <= value <= 1.0
    ):
        raise ValueError(f"{name} must be an annual rate (fraction) in [-1, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Financing:
    """Interest on cash and the short borrow fee, accrued per bar (annual simple rates).

    For the interval from one bar's close to the next (``days`` = elapsed calendar time in
    days; a weekend counts its three days), on the cash and positions held over it, booked
    into the cash at the start of the later bar (formulas: :mod:`engine.core.financing`):
    interest ``cash × rate × days / basis`` (``credit_rate`` on positive cash,
    ``debit_rate`` on negative cash) and borrow fee ``Σ |short shares| × previous close ×
    borrow rate × days / basis``.

    Parameters
    ----------
    credit_rate : float, default 0.0
        Annual rate paid on positive cash, in [-1, 1].
    debit_rate : float, default 0.0
        Annual rate charged on negative cash, in [-1, 1].
    borrow_rate : float, default 0.0
        Annual borrow fee on short market value, for symbols not in ``borrow_rates``.
    borrow_rates : mapping of str to float, optional
        Per-symbol annual borrow fees (hard-to-borrow names).
    day_count : {"actual/360", "actual/365"}, default "actual/360"
        The basis (USD money-market convention: actual/360).
    """

    credit_rate: float = 0.0
    debit_rate: float = 0.0
    borrow_rate: float = 0.0
    borrow_rates: Mapping[str, float] = field(default_factory=dict)
    day_count: str = "actual/360"

    def __post_init__(self) -> None:
        for name in ("credit_rate", "debit_rate", "borrow_rate"):
            object.__setattr__(self, name, _rate(name, getattr(self, name)))
        if not isinstance(self.borrow_rates, Mapping):
            raise ValueError(f"borrow_rates must be a mapping, got {self.borrow_rates!r}")
        rates = {str(k): _rate(f"borrow_rates[{k!r}]", v) for k, v in self.borrow_rates.items()}
        object.__setattr__(self, "borrow_rates", rates)
        if self.day_count not in DAY_COUNTS:
            raise ValueError(
                f"day_count must be one of {sorted(DAY_COUNTS)}, got {self.day_count!r}"
            )

    @property
    def basis(self) -> float:
        """Days in the day-count year (360 or 365)."""
        return DAY_COUNTS[self.day_count]

    def __hash__(self) -> int:
        return hash((self.credit_rate, self.debit_rate, self.borrow_rate, self.day_count))


def borrow_rates(data: MarketData, financing: Financing | None) -> FloatArray:
    """Annual borrow fee per symbol id (float64, n_symbols; 0 without financing)."""
    rates = np.zeros(data.n_symbols)
    if financing is not None:
        rates[:] = financing.borrow_rate
        index = data.symbol_index
        for symbol, rate in financing.borrow_rates.items():
            if symbol in index:
                rates[index[symbol]] = rate
    return rates
