"""Slippage models: the price a fill really gets, given the price the fill rule chose.

Contract: ``fill_price(price, quantity, bar, order_type) -> float``

- ``price``: the raw fill price chosen by the fill rule (the open, the close or a triggered
  level), in currency per share; it always lies within the bar's ``[low, high]``;
- ``quantity``: signed number of shares (positive buys, negative sells);
- ``bar``: a :class:`engine.data.BarView` of the fill's bar (OHLCV, optional bid/ask, any panel
  column, the symbol's previous bars, cached per-row series, and ``at_close``: whether the
  fill happens at the bar's close);
- ``order_type``: ``"market"``, ``"limit"``, ``"stop"``, ``"stop_limit"`` or ``"trailing_stop"``
  (intrabar stop-loss / take-profit levels count as ``"stop"`` / ``"limit"``);
- returns the price after slippage. Sign convention: slippage always hurts, so a buy pays
  ``>= price`` and a sell receives ``<= price``.

No look-ahead: a fill at the open or inside bar t may use only bar t's open and the bars
completed before it; a fill at bar t's close may use all of bar t (see
:class:`engine.data.BarView`). Each model's docstring says what it reads; the one stated
exception is ``VolumeAwareSlippage``'s default, the fill bar's total volume (the zipline/LEAN
convention). ``history_bars`` is the number of completed bars per symbol a model reads (a
:class:`engine.ChunkedMarketData` must carry at least that many across a chunk boundary).

The engine records the slippage cost of every fill in currency as
``(price_after - price_before) * quantity`` (``>= 0``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from engine.core.costs import (
    adverse_price,
    impact_price,
    quoted_spread,
    range_volatility,
    spread_price,
)
from engine.data import BarView, FloatArray, IntArray, MarketData


def _check_fraction(name: str, value: float, upper: float = 1.0) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0.0 or value >= upper:
        raise ValueError(f"{name} must be a finite number in [0, {upper}), got {value!r}")
    return value


class SlippageModel(ABC):
    """Base class of slippage models (see the module docstring for the contract)."""

    @abstractmethod
    def fill_price(self, price: float, quantity: float, bar: BarView, order_type: str) -> float:
        """Return the fill price after slippage (currency per share)."""

    @property
    def history_bars(self) -> int:
        """Completed bars per symbol before a fill's bar that the model reads (default 1)."""
        return 1

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class NoSlippage(SlippageModel):
    """Fills at the raw price chosen by the fill rule."""

    def fill_price(self, price: float, quantity: float, bar: BarView, order_type: str) -> float:
        """``price`` unchanged (currency per share)."""
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
        """``price × (1 ± pct)``: up for a buy, down for a sell (currency per share)."""
        return adverse_price(price, quantity, self.pct)


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
        """``price × (1 ± bps / 10,000)``: up for a buy, down for a sell (currency per share)."""
        return adverse_price(price, quantity, self.bps / 10_000.0)


_CS_K = 3.0 - 2.0 * math.sqrt(2.0)


def _cs_pairs(
    h1: FloatArray,
    l1: FloatArray,
    c1: FloatArray,
    h2: FloatArray,
    l2: FloatArray,
    signed: bool = False,
) -> FloatArray:
    """Two-day Corwin-Schultz estimates, overnight-adjusted, negatives set to 0 unless
    ``signed`` (elementwise).

    Day 1: high ``h1``, low ``l1``, close ``c1`` (NaN: no overnight adjustment); day 2: ``h2``,
    ``l2``. NaN where a high/low is not finite, not positive or ``high < low``.
    """
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        valid = (
            np.isfinite(h1)
            & np.isfinite(l1)
            & np.isfinite(h2)
            & np.isfinite(l2)
            & (l1 > 0)
            & (h1 >= l1)
            & (l2 > 0)
            & (h2 >= l2)
        )
        adjust = np.isfinite(c1) & (c1 > 0)
        # overnight move: a day-2 range entirely above (below) the day-1 close is shifted down
        # (up) so that its low (high) equals that close
        shift = np.where(adjust & (c1 < l2), c1 - l2, np.where(adjust & (c1 > h2), c1 - h2, 0.0))
        h2a = h2 + shift
        l2a = l2 + shift
        beta = np.log(h1 / l1) ** 2 + np.log(h2a / l2a) ** 2
        gamma = np.log(np.maximum(h1, h2a) / np.minimum(l1, l2a)) ** 2
        alpha = (np.sqrt(2.0 * beta) - np.sqrt(beta)) / _CS_K - np.sqrt(gamma / _CS_K)
        spread = 2.0 * (np.exp(alpha) - 1.0) / (1.0 + np.exp(alpha))
        out: FloatArray = np.where(valid, spread if signed else np.maximum(spread, 0.0), np.nan)
    return out


def corwin_schultz_spread(
    high: float, low: float, prev_high: float, prev_low: float, prev_close: float | None = None
) -> float:
    """Relative bid-ask spread estimated from two consecutive bars (one two-day estimate).

    Corwin, S. A. and Schultz, P. (2012), "A Simple Way to Estimate Bid-Ask Spreads from Daily
    High and Low Prices", *Journal of Finance* 67(2), 719-760, equations (14), (18), (19), with
    day 1 = the previous bar (``prev_*``) and day 2 = this bar (``high``, ``low``):

    ``beta = ln(H1/L1)^2 + ln(H2/L2)^2``, ``gamma = ln(max(H1,H2)/min(L1,L2))^2``,
    ``alpha = (sqrt(2 beta) - sqrt(beta)) / (3 - 2 sqrt 2) - sqrt(gamma / (3 - 2 sqrt 2))``,
    ``S = 2 (e^alpha - 1) / (1 + e^alpha)``, and a negative ``S`` is set to 0.

    Overnight adjustment (the paper's correction for overnight returns; given ``prev_close``
    ``C1``): if day 2's low is above ``C1`` the price is taken to have risen overnight, and
    day 2's high and low are both lowered by ``L2 - C1``; if day 2's high is below ``C1`` both
    are raised by ``C1 - H2``. Without ``prev_close`` no adjustment is made.

    Returns
    -------
    float
        The spread as a fraction of price, ``>= 0``; ``nan`` if a high or low is not a
        positive finite number or a bar has ``high < low``.
    """
    c1 = math.nan if prev_close is None else float(prev_close)

    def arr(x: float) -> FloatArray:
        return np.array([float(x)], dtype=np.float64)

    return float(_cs_pairs(arr(prev_high), arr(prev_low), arr(c1), arr(high), arr(low))[0])


def corwin_schultz_estimates(
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    prev_row: IntArray,
    signed: bool = False,
) -> FloatArray:
    """The two-day estimate of :func:`corwin_schultz_spread` at every row, vectorised.

    Row ``r``'s value pairs the symbol's previous bar ``prev_row[r]`` (day 1, its close used
    for the overnight adjustment) with bar ``r`` (day 2); NaN for a symbol's first bar
    (``prev_row[r] < 0``) and for invalid bars. Negative estimates are set to 0 unless
    ``signed``. Shapes (N,), float64.
    """
    out = np.full(high.size, np.nan, dtype=np.float64)
    rows = np.flatnonzero(prev_row >= 0)
    prev = prev_row[rows]
    out[rows] = _cs_pairs(high[prev], low[prev], close[prev], high[rows], low[rows], signed)
    return out


def _chain_mean(
    values: FloatArray,
    prev_row: IntArray,
    ordinal: IntArray,
    window: int,
    min_periods: int,
    pairs: bool,
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Mean of the finite ``values`` at each row and its symbol's ``window - 1`` earlier rows.

    Returns the means (NaN where fewer than ``min_periods`` values are finite) and a mask of
    the rows whose chain of earlier bars was cut (a chunk window that did not carry enough
    bars: a row with earlier bars, ``ordinal > 0``, whose ``prev_row`` is missing). ``pairs``:
    each value also reads its row's previous bar (a two-bar estimate), so the chain must
    reach one bar further. The terms are added in the same order (newest first) whatever the
    window, so a chunked run gives the same bits as a whole-panel run.
    """
    n = values.size
    total = np.zeros(n, dtype=np.float64)
    count = np.zeros(n, dtype=np.int64)
    cut = np.zeros(n, dtype=bool)
    cur = np.arange(n, dtype=np.int64)
    for k in range(window):
        alive = cur >= 0
        at = np.where(alive, cur, 0)
        v = values[at]
        ok = alive & np.isfinite(v)
        total += np.where(ok, v, 0.0)
        count += ok
        nxt = np.where(alive, prev_row[at], -1)
        if pairs or k < window - 1:
            cut |= alive & (nxt < 0) & (ordinal[at] > 0)
        cur = nxt
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count >= min_periods, total / np.maximum(count, 1), np.nan)
    return mean, cut


def _check_count(name: str, value: int, lower: int = 1) -> int:
    """``value`` as an int ``>= lower`` (a whole float such as ``20.0`` from a config is
    accepted)."""
    whole = isinstance(value, int | np.integer) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or value < lower:
        raise ValueError(f"{name} must be an integer >= {lower}, got {value!r}")
    return int(value)


def _cut_history(model: SlippageModel, bar: BarView) -> ValueError:
    return ValueError(
        f"{model!r} reads each symbol's last {model.history_bars} completed bars, but the "
        f"market data carried fewer for {bar.symbol} at {bar.timestamp} across a chunk "
        f"boundary: build ChunkedMarketData(..., history_bars={model.history_bars}) or more"
    )


CLAMP_MODES = ("pairs", "mean")
"""``SpreadAwareSlippage(clamp=...)`` choices."""


class SpreadAwareSlippage(SlippageModel):
    """Pay a fraction of the bid-ask spread known when the fill happens.

    ``buy: price + spread_fraction * spread``, ``sell: price - spread_fraction * spread``,
    where ``spread`` in currency per share comes from, in this order:

    1. **Quotes**: ``ask - bid`` of the last quote at or before the fill. A quote is stamped at
       its bar's close, so a fill at the open or inside bar t uses the quote of the symbol's
       previous bar (t-1's close); a fill at bar t's close (``bar.at_close``) uses bar t's.
       Used when both are finite and ``ask >= bid > 0``.
    2. **Corwin-Schultz estimate** ``S * price`` from completed bars only, ``S`` being the mean
       of the two-day estimates of :func:`corwin_schultz_spread` (Corwin and Schultz 2012,
       *Journal of Finance* 67(2), 719-760: overnight-adjusted, each negative two-day
       estimate set to 0 before averaging, as in the paper's monthly estimates) over the last
       ``window`` pairs of consecutive bars of the symbol, i.e. its last ``window + 1``
       bars. A fill at the open or inside bar t averages the pairs ending at t-1 (bars
       t-window-1 .. t-1); a fill at t's close (``bar.at_close``) the pairs ending at t. A
       pair with an invalid bar (``high < low``, non-positive prices) is skipped; fewer than
       ``min_periods`` valid pairs give no estimate. With ``clamp="mean"`` the signed two-day
       estimates are averaged and a negative mean is set to 0 instead: less upward bias
       where the true spread is small against the daily volatility (large caps), at the cost
       of departing from the paper's main estimate. Consecutive bars are the symbol's own
       (a missing day joins the bars around it). The paper's replacement of no-trade days'
       ranges is not done. The per-row series is computed once per market data (vectorised)
       and read at the fill's row.
    3. ``fallback_pct * price`` when neither is available (a symbol's first ``min_periods``
       bars).

    Parameters
    ----------
    spread_fraction : float, default 0.5
        Fraction of the spread paid, in ``[0, 1]`` (0.5 = cross half the spread from the mid).
    fallback_pct : float, default 0.0
        Relative slippage when no spread is known, in ``[0, 1)``.
    window : int, default 20
        Two-day estimates averaged (about one trading month of daily bars), ``>= 1``.
    min_periods : int, optional
        Valid two-day estimates needed for an estimate, in ``[1, window]``; default
        ``window``.
    clamp : {"pairs", "mean"}, default "pairs"
        Where negative estimates are set to 0: each two-day estimate before averaging (the
        paper) or the mean.

    Raises
    ------
    ValueError
        Bad parameters (constructor); at a fill, a chunk window that carried fewer than
        :attr:`history_bars` bars of the symbol (see :class:`engine.ChunkedMarketData`).
    """

    def __init__(
        self,
        spread_fraction: float = 0.5,
        fallback_pct: float = 0.0,
        window: int = 20,
        min_periods: int | None = None,
        clamp: str = "pairs",
    ) -> None:
        self.spread_fraction = _check_fraction(
            "spread_fraction", spread_fraction, upper=1.0 + 1e-12
        )
        self.fallback_pct = _check_fraction("fallback_pct", fallback_pct)
        self.window = _check_count("window", window)
        self.min_periods = (
            self.window if min_periods is None else _check_count("min_periods", min_periods)
        )
        if self.min_periods > self.window:
            raise ValueError(
                f"min_periods must be <= window ({self.window}), got {self.min_periods}"
            )
        if clamp not in CLAMP_MODES:
            raise ValueError(f"clamp must be one of {CLAMP_MODES}, got {clamp!r}")
        self.clamp = clamp
        self._key = f"corwin_schultz:{self.window}:{self.min_periods}:{self.clamp}"

    @property
    def history_bars(self) -> int:
        """Completed bars per symbol the estimate reads: ``window + 1``."""
        return self.window + 1

    def _series(self, data: MarketData) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        signed = self.clamp == "mean"
        pairs = corwin_schultz_estimates(data.high, data.low, data.close, data.prev_row, signed)
        mean, cut = _chain_mean(
            pairs, data.prev_row, data.ordinal, self.window, self.min_periods, pairs=True
        )
        if signed:
            mean = np.maximum(mean, 0.0)  # NaN (too few pairs) stays NaN
        return mean, cut

    def spread_series(self, data: MarketData) -> FloatArray:
        """The relative spread ``S`` known at each row's close (the value :meth:`estimate`
        reads for a fill whose last completed bar is that row; NaN where none).

        Returns
        -------
        ndarray
            float64, shape (n_rows,), fractions of price; cached on ``data`` (the same
            array the Python driver's fills read).
        """
        mean, _ = BarView(data, 0).derived(self._key, self._series)
        return mean

    def estimate(self, bar: BarView) -> float:
        """The relative spread ``S`` known at a fill on ``bar`` (NaN when none).

        Raises
        ------
        ValueError
            The symbol's history was cut by a chunk boundary.
        """
        known = bar if bar.at_close else bar.previous()
        if known is None:
            return math.nan
        mean, cut = bar.derived(self._key, self._series)
        if cut[known.row]:
            raise _cut_history(self, bar)
        return float(mean[known.row])

    def fill_price(self, price: float, quantity: float, bar: BarView, order_type: str) -> float:
        """Price ± ``spread_fraction`` × the known spread (class docstring;
        :func:`engine.core.costs.spread_price`), currency per share.

        Raises
        ------
        ValueError
            The symbol's history was cut by a chunk boundary (estimate needed).
        """
        if quantity == 0:
            return price
        quoted = bar if bar.at_close else bar.previous()
        spread = math.nan if quoted is None else quoted_spread(quoted.bid, quoted.ask)
        relative = self.estimate(bar) if math.isnan(spread) else math.nan
        return spread_price(
            price, quantity, self.spread_fraction, spread, relative, self.fallback_pct
        )


VOLUME_SOURCES = ("bar", "completed")
"""``VolumeAwareSlippage(volume=...)`` choices."""


class VolumeAwareSlippage(SlippageModel):
    """Square-root market impact.

    ``impact = coefficient * sigma * sqrt(|quantity| / volume)`` as a fraction of price, capped at
    ``max_impact``; ``buy: price * (1 + impact)``, ``sell: price * (1 - impact)``.

    - ``sigma`` (per-bar return volatility, a fraction) is read from a bar completed before
      the fill: the symbol's previous bar for a fill at the open or inside the bar, the fill
      bar itself for a fill at its close (``bar.at_close``). It is that bar's
      ``volatility_column`` (e.g. ``vol_20``), or when the column is absent or NaN that bar's
      range ``(high - low) / close``.
    - ``volume`` with ``volume="bar"`` (default) is the **fill bar's total volume**, which a
      fill at the open cannot know yet. This is the common convention of zipline
      (``VolumeShareSlippage``) and LEAN (``VolumeShareSlippageModel``), which size the
      impact with the volume of the bar the order fills in. ``volume="completed"`` uses the
      mean volume of the last ``volume_window`` completed bars instead (``1``: the previous
      bar's volume; a fill at the close counts its own bar as completed); a symbol with
      fewer completed bars uses those it has.
    - No completed bar (a symbol's first bar), a zero/NaN volume or a NaN ``sigma`` gets
      ``max_impact``.

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
    volume : {"bar", "completed"}, default "bar"
        Which volume divides the order size (see above).
    volume_window : int, default 1
        Completed bars averaged with ``volume="completed"``, ``>= 1``.

    Raises
    ------
    ValueError
        Bad parameters (constructor); at a fill, a chunk window that carried fewer than
        :attr:`history_bars` bars of the symbol.
    """

    def __init__(
        self,
        coefficient: float = 1.0,
        volatility_column: str | None = None,
        max_impact: float = 0.1,
        volume: str = "bar",
        volume_window: int = 1,
    ) -> None:
        coefficient = float(coefficient)
        if not math.isfinite(coefficient) or coefficient < 0:
            raise ValueError(f"coefficient must be a finite number >= 0, got {coefficient!r}")
        self.coefficient = coefficient
        self.volatility_column = volatility_column
        self.max_impact = _check_fraction("max_impact", max_impact)
        if self.max_impact == 0.0:
            raise ValueError("max_impact must be > 0")
        if volume not in VOLUME_SOURCES:
            raise ValueError(f"volume must be one of {VOLUME_SOURCES}, got {volume!r}")
        self.volume = volume
        self.volume_window = _check_count("volume_window", volume_window)
        self._key = f"mean_volume:{self.volume_window}"

    @property
    def history_bars(self) -> int:
        """Completed bars per symbol read: ``volume_window`` with ``volume="completed"``,
        else 1 (the previous bar's volatility)."""
        return self.volume_window if self.volume == "completed" else 1

    def _mean_volume(self, data: MarketData) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        return _chain_mean(
            data.volume, data.prev_row, data.ordinal, self.volume_window, 1, pairs=False
        )

    def mean_volume_series(self, data: MarketData) -> FloatArray:
        """The mean volume of the ``volume_window`` bars ending at each row (shares), the
        value a ``volume="completed"`` fill reads at its last completed bar.

        Returns
        -------
        ndarray
            float64, shape (n_rows,); cached on ``data``.
        """
        mean, _ = BarView(data, 0).derived(self._key, self._mean_volume)
        return mean

    def _volume(self, bar: BarView, known: BarView | None) -> float:
        if self.volume == "bar":
            return bar.volume
        if known is None:
            return math.nan
        if self.volume_window == 1:
            return known.volume
        mean, cut = bar.derived(self._key, self._mean_volume)
        if cut[known.row]:
            raise _cut_history(self, bar)
        return float(mean[known.row])

    def fill_price(self, price: float, quantity: float, bar: BarView, order_type: str) -> float:
        """Price moved by the square-root impact (class docstring;
        :func:`engine.core.costs.impact_price`), currency per share.

        Raises
        ------
        ValueError
            ``volume="completed"`` and the symbol's history was cut by a chunk boundary.
        """
        if quantity == 0:
            return price
        known = bar if bar.at_close else bar.previous()
        sigma = math.nan
        if known is not None:
            if self.volatility_column is not None and known.has_column(self.volatility_column):
                sigma = known[self.volatility_column]
            if not math.isfinite(sigma):
                sigma = range_volatility(known.high, known.low, known.close)
        volume = self._volume(bar, known)
        return impact_price(price, quantity, self.coefficient, sigma, volume, self.max_impact)


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

    @property
    def history_bars(self) -> int:
        """The largest ``history_bars`` of the models."""
        return max(m.history_bars for m in (self.default, *self.models.values()))

    def fill_price(self, price: float, quantity: float, bar: BarView, order_type: str) -> float:
        """The price from the model configured for the order's type (``order_type``), else
        from the default model.
        """
        model = self.models.get(order_type, self.default)
        return model.fill_price(price, quantity, bar, order_type)
