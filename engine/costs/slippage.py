"""Slippage models: the price a fill really gets, given the price the fill rule chose.

Contract: ``fill_price(price, quantity, bar, order_type) -> float``

- ``price``: the raw fill price chosen by the fill rule (the open, the close or a triggered
  level), in currency per share; it always lies within the bar's ``[low, high]``;
- ``quantity``: signed number of shares (positive buys, negative sells);
- ``bar``: a :class:`engine.data.BarView` of the fill's bar (OHLCV, optional bid/ask, any panel
  column, and the symbol's previous bar);
- ``order_type``: ``"market"``, ``"limit"``, ``"stop"``, ``"stop_limit"`` or ``"trailing_stop"``
  (intrabar stop-loss / take-profit levels count as ``"stop"`` / ``"limit"``);
- returns the price after slippage. Sign convention: slippage always hurts, so a buy pays
  ``>= price`` and a sell receives ``<= price``.

The engine records the slippage cost of every fill in currency as
``(price_after - price_before) * quantity`` (``>= 0``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping

from engine.data import BarView


def _check_fraction(name: str, value: float, upper: float = 1.0) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0.0 or value >= upper:
        raise ValueError(f"{name} must be a finite number in [0, {upper}), got {value!r}")
    return value


def _adverse(price: float, quantity: float, fraction: float) -> float:
    """Move ``price`` against the trader by ``fraction`` of itself."""
    if quantity > 0:
        return price * (1.0 + fraction)
    if quantity < 0:
        return price * (1.0 - fraction)
    return price


class SlippageModel(ABC):
    """Base class of slippage models (see the module docstring for the contract)."""

    @abstractmethod
    def fill_price(self, price: float, quantity: float, bar: BarView, order_type: str) -> float:
        """Return the fill price after slippage (currency per share)."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class NoSlippage(SlippageModel):
    """Fills at the raw price chosen by the fill rule."""

    def fill_price(self, price: float, quantity: float, bar: BarView, order_type: str) -> float:
        return price


class FixedPercentageSlippage(SlippageModel):
    """A fixed fraction of the price, against the trader.

    ``buy: price * (1 + pct)``; ``sell: price * (1 - pct)``

    Parameters
    ----------
    pct : float
        Fraction of price in ``[0, 1)``, e.g. ``0.0005`` for 5 bps.
    """

    def __init__(self, pct: float) -> None:
        self.pct = _check_fraction("pct", pct)

    def fill_price(self, price: float, quantity: float, bar: BarView, order_type: str) -> float:
        return _adverse(price, quantity, self.pct)


class FixedBpsSlippage(SlippageModel):
    """A fixed number of basis points of the price, against the trader.

    ``buy: price * (1 + bps / 10_000)``; ``sell: price * (1 - bps / 10_000)``

    Parameters
    ----------
    bps : float
        Basis points in ``[0, 10_000)``.
    """

    def __init__(self, bps: float) -> None:
        self.bps = _check_fraction("bps", bps, upper=10_000.0)

    def fill_price(self, price: float, quantity: float, bar: BarView, order_type: str) -> float:
        return _adverse(price, quantity, self.bps / 10_000.0)


def corwin_schultz_spread(high: float, low: float, prev_high: float, prev_low: float) -> float:
    """Relative bid-ask spread estimated from two consecutive bars' highs and lows.

    Corwin, S. A. and Schultz, P. (2012), "A Simple Way to Estimate Bid-Ask Spreads from Daily
    High and Low Prices", *Journal of Finance* 67(2), 719-760, equations (14), (18), (19):

    ``beta = ln(H1/L1)^2 + ln(H2/L2)^2``, ``gamma = ln(max(H1,H2)/min(L1,L2))^2``,
    ``alpha = (sqrt(2 beta) - sqrt(beta)) / (3 - 2 sqrt 2) - sqrt(gamma / (3 - 2 sqrt 2))``,
    ``S = 2 (e^alpha - 1) / (1 + e^alpha)``; negative estimates are set to 0 (as the paper
    does). Returns a fraction of price; ``nan`` if any input is not a positive finite number.
    """
    values = (high, low, prev_high, prev_low)
    if not all(math.isfinite(v) and v > 0 for v in values):
        return math.nan
    k = 3.0 - 2.0 * math.sqrt(2.0)
    beta = math.log(high / low) ** 2 + math.log(prev_high / prev_low) ** 2
    gamma = math.log(max(high, prev_high) / min(low, prev_low)) ** 2
    alpha = (math.sqrt(2.0 * beta) - math.sqrt(beta)) / k - math.sqrt(gamma / k)
    spread = 2.0 * (math.exp(alpha) - 1.0) / (1.0 + math.exp(alpha))
    return max(spread, 0.0)


class SpreadAwareSlippage(SlippageModel):
    """Pay a fraction of the bid-ask spread.

    With quotes on the bar (``bid`` and ``ask`` columns, both finite and ``ask >= bid > 0``):
    ``buy: price + spread_fraction * (ask - bid)``, ``sell: price - spread_fraction * (ask - bid)``.
    Without quotes the relative spread ``S`` is estimated from this and the previous bar's
    high/low with :func:`corwin_schultz_spread` and the price moves by
    ``spread_fraction * S * price``. With neither (first bar of a symbol) ``fallback_pct`` of the
    price is used.

    Parameters
    ----------
    spread_fraction : float, default 0.5
        Fraction of the spread paid, in ``[0, 1]`` (0.5 = cross half the spread from the mid).
    fallback_pct : float, default 0.0
        Relative slippage when no spread can be computed, in ``[0, 1)``.
    """

    def __init__(self, spread_fraction: float = 0.5, fallback_pct: float = 0.0) -> None:
        self.spread_fraction = _check_fraction(
            "spread_fraction", spread_fraction, upper=1.0 + 1e-12
        )
        self.fallback_pct = _check_fraction("fallback_pct", fallback_pct)

    def fill_price(self, price: float, quantity: float, bar: BarView, order_type: str) -> float:
        if quantity == 0:
            return price
        sign = 1.0 if quantity > 0 else -1.0
        bid, ask = bar.bid, bar.ask
        if math.isfinite(bid) and math.isfinite(ask) and ask >= bid > 0:
            return price + sign * self.spread_fraction * (ask - bid)
        prev = bar.previous()
        if prev is not None:
            rel = corwin_schultz_spread(bar.high, bar.low, prev.high, prev.low)
            if math.isfinite(rel):
                return price * (1.0 + sign * self.spread_fraction * rel)
        return _adverse(price, quantity, self.fallback_pct)


class VolumeAwareSlippage(SlippageModel):
    """Square-root market impact.

    ``impact = coefficient * sigma * sqrt(|quantity| / volume)`` as a fraction of price, capped at
    ``max_impact``; ``buy: price * (1 + impact)``, ``sell: price * (1 - impact)``. ``sigma`` is
    the per-bar return volatility read from ``volatility_column`` of the fill's bar (e.g.
    ``vol_20``); if that column is absent or NaN the fallback is the bar's range
    ``(high - low) / close``. A bar with zero or NaN volume gets ``max_impact``.

    The square-root law is the standard empirical impact model: Almgren, Thum, Hauptmann and Li
    (2005), "Direct Estimation of Equity Market Impact", *Risk* 18(7); Tóth et al. (2011),
    "Anomalous price impact and the critical nature of liquidity in financial markets", *PRX* 1.
    The participation cap (fraction of bar volume a fill may take) is an execution setting:
    ``ExecutionConfig.max_volume_participation``.

    Parameters
    ----------
    coefficient : float, default 1.0
        Dimensionless impact coefficient (``Y`` in the literature, typically 0.5-1.5), ``>= 0``.
    volatility_column : str or None, default None
        Indicator column holding the per-bar return volatility (fraction).
    max_impact : float, default 0.1
        Upper bound of the impact as a fraction of price, in ``(0, 1)``.
    """

    def __init__(
        self,
        coefficient: float = 1.0,
        volatility_column: str | None = None,
        max_impact: float = 0.1,
    ) -> None:
        coefficient = float(coefficient)
        if not math.isfinite(coefficient) or coefficient < 0:
            raise ValueError(f"coefficient must be a finite number >= 0, got {coefficient!r}")
        self.coefficient = coefficient
        self.volatility_column = volatility_column
        self.max_impact = _check_fraction("max_impact", max_impact)
        if self.max_impact == 0.0:
            raise ValueError("max_impact must be > 0")

    def fill_price(self, price: float, quantity: float, bar: BarView, order_type: str) -> float:
        if quantity == 0:
            return price
        sigma = math.nan
        if self.volatility_column is not None and bar.has_column(self.volatility_column):
            sigma = bar[self.volatility_column]
        if not math.isfinite(sigma):
            sigma = (bar.high - bar.low) / bar.close if bar.close > 0 else 0.0
        volume = bar.volume
        if not math.isfinite(volume) or volume <= 0:
            impact = self.max_impact
        else:
            impact = min(
                self.coefficient * sigma * math.sqrt(abs(quantity) / volume), self.max_impact
            )
        return _adverse(price, quantity, max(impact, 0.0))


class OrderTypeDependentSlippage(SlippageModel):
    """Different slippage models for different order types.

    ``models`` maps an order type (``"market"``, ``"limit"``, ``"stop"``, ``"stop_limit"``,
    ``"trailing_stop"``) to a model; types not listed use ``default``.

    Parameters
    ----------
    models : mapping of str to SlippageModel
    default : SlippageModel, default NoSlippage()
    """

    ORDER_TYPES = ("market", "limit", "stop", "stop_limit", "trailing_stop")

    def __init__(
        self, models: Mapping[str, SlippageModel], default: SlippageModel | None = None
    ) -> None:
        for key, model in models.items():
            if key not in self.ORDER_TYPES:
                raise ValueError(f"unknown order type {key!r}; expected one of {self.ORDER_TYPES}")
            if not isinstance(model, SlippageModel):
                raise ValueError(f"models[{key!r}] must be a SlippageModel, got {model!r}")
        self.models = dict(models)
        self.default = default if default is not None else NoSlippage()

    def fill_price(self, price: float, quantity: float, bar: BarView, order_type: str) -> float:
        model = self.models.get(order_type, self.default)
        return model.fill_price(price, quantity, bar, order_type)
