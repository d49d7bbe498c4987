"""Commission models: one small class per broker fee schedule.

Every model answers one question: *what does this fill cost in commission?* The contract is
``compute(quantity, price, timestamp_us) -> float``:

- ``quantity``: signed number of shares of the fill (positive buys, negative sells);
- ``price``: fill price in currency per share, after slippage;
- ``timestamp_us``: the fill's bar timestamp in microseconds since the Unix epoch (UTC), used by
  models whose rate depends on time (``TieredCommission``'s monthly volume);
- returns the commission in currency, always ``>= 0`` and paid by the trader on both sides.

Models may keep state (``TieredCommission`` remembers the month's traded notional); the engine
calls :meth:`CommissionModel.reset` at the start of every run so runs stay deterministic.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from engine.core.costs import (
    month_number,
    per_share_commission,
    per_trade_commission,
    percentage_commission,
    tiered_commission,
)


def _check_non_negative(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


class CommissionModel(ABC):
    """Base class of commission models (see the module docstring for the contract)."""

    @abstractmethod
    def compute(self, quantity: float, price: float, timestamp_us: int) -> float:
        """Return the commission in currency (>= 0) for a fill of ``quantity`` at ``price``."""

    def reset(self) -> None:  # noqa: B027 - optional hook, stateless models need nothing
        """Forget any state kept between fills (called by the engine when a run starts)."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class NoCommission(CommissionModel):
    """Free trading: every fill costs 0."""

    def compute(self, quantity: float, price: float, timestamp_us: int) -> float:
        """Zero: no commission on any fill (currency)."""
        return 0.0


class PercentageCommission(CommissionModel):
    """A fixed fraction of the traded notional.

    ``commission = rate * |quantity| * price``

    Parameters
    ----------
    rate : float
        Fraction of notional, e.g. ``0.001`` for 0.1 % (10 bps). Must be in ``[0, 1)``.

    Raises
    ------
    ValueError
        If ``rate`` is negative, not finite or ``>= 1``.
    """

    def __init__(self, rate: float) -> None:
        self.rate = _check_non_negative("rate", rate)
        if self.rate >= 1.0:
            raise ValueError(f"rate is a fraction of notional and must be < 1, got {rate!r}")

    def compute(self, quantity: float, price: float, timestamp_us: int) -> float:
        """``rate * |quantity| * price`` in currency
        (:func:`engine.core.costs.percentage_commission`)."""
        return percentage_commission(self.rate, quantity, price)


class PerShareCommission(CommissionModel):
    """A fee per share with a minimum per order and a cap as a fraction of notional.

    ``commission = min(max(cost * |quantity|, minimum), maximum_pct * |quantity| * price)``

    This is the shape of US broker tiered-by-share pricing (e.g. 0.005 USD per share, 1 USD
    minimum, at most 1 % of the trade value). When the cap is below the minimum the cap wins.

    Parameters
    ----------
    cost : float
        Currency per share, ``>= 0``.
    minimum : float, default 0.0
        Minimum commission per fill in currency, ``>= 0``.
    maximum_pct : float or None, default None
        Cap as a fraction of notional (``0.01`` = 1 %); ``None`` means no cap.
    """

    def __init__(self, cost: float, minimum: float = 0.0, maximum_pct: float | None = None) -> None:
        self.cost = _check_non_negative("cost", cost)
        self.minimum = _check_non_negative("minimum", minimum)
        self.maximum_pct = (
            None if maximum_pct is None else _check_non_negative("maximum_pct", maximum_pct)
        )

    def compute(self, quantity: float, price: float, timestamp_us: int) -> float:
        """The fee in currency (:func:`engine.core.costs.per_share_commission`); 0 for an
        empty fill."""
        cap = math.nan if self.maximum_pct is None else self.maximum_pct
        return per_share_commission(self.cost, self.minimum, cap, quantity, price)


class PerTradeCommission(CommissionModel):
    """A flat fee per fill, whatever its size.

    ``commission = cost`` (0 for an empty fill).

    Parameters
    ----------
    cost : float
        Currency per fill, ``>= 0``.
    """

    def __init__(self, cost: float) -> None:
        self.cost = _check_non_negative("cost", cost)

    def compute(self, quantity: float, price: float, timestamp_us: int) -> float:
        """``cost`` in currency for a non-empty fill, else 0."""
        return per_trade_commission(self.cost, quantity)


class TieredCommission(CommissionModel):
    """A percentage rate that falls as the month's traded notional grows.

    ``commission = rate_k * |quantity| * price`` where ``k`` is the highest tier whose
    threshold is ``<=`` the notional already traded in the fill's calendar month (UTC) *before*
    this fill. The fill's notional is then added to the month's total.

    Parameters
    ----------
    tiers : sequence of (threshold, rate)
        Monthly notional thresholds in currency (the first must be 0) with their rate as a
        fraction of notional, thresholds strictly increasing, e.g.
        ``[(0, 0.0010), (1e6, 0.0008), (1e7, 0.0005)]``.

    Raises
    ------
    ValueError
        If ``tiers`` is empty, does not start at 0, is not strictly increasing or has a rate
        outside ``[0, 1)``.
    """

    def __init__(self, tiers: Sequence[Sequence[float]]) -> None:
        parsed: list[tuple[float, float]] = []
        for tier in tiers:
            if len(tier) != 2:
                raise ValueError(f"each tier must be (threshold, rate), got {tier!r}")
            threshold = _check_non_negative("tier threshold", tier[0])
            rate = _check_non_negative("tier rate", tier[1])
            if rate >= 1.0:
                raise ValueError(f"tier rate must be < 1, got {rate!r}")
            parsed.append((threshold, rate))
        if not parsed or parsed[0][0] != 0.0:
            raise ValueError(f"tiers must be non-empty and start at threshold 0, got {tiers!r}")
        if any(b[0] <= a[0] for a, b in zip(parsed, parsed[1:], strict=False)):
            raise ValueError(f"tier thresholds must be strictly increasing, got {tiers!r}")
        self.tiers = parsed
        self._tiers = np.array(parsed, dtype=np.float64).reshape(-1, 2)
        self._state = np.array([math.nan, 0.0])

    def reset(self) -> None:
        """Forget the month and its traded notional."""
        self._state = np.array([math.nan, 0.0])

    def __copy__(self) -> TieredCommission:
        """A copy with its own month state (a copy's fills must not advance this model's)."""
        twin = TieredCommission.__new__(TieredCommission)
        twin.__dict__.update(self.__dict__)
        twin._state = self._state.copy()
        return twin

    def compute(self, quantity: float, price: float, timestamp_us: int) -> float:
        """The tier's rate times the fill's notional, in currency; adds the notional to the
        month's (:func:`engine.core.costs.tiered_commission`, the month of ``timestamp_us``
        in UTC)."""
        return tiered_commission(
            self._tiers, self._state, quantity, price, month_number(timestamp_us)
        )
