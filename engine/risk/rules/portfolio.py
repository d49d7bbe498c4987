"""Portfolio constraints enforced in order validation (hook B).

The rules keep their parameters, validation, state (``MaxDrawdownRule``'s resets) and reason
texts; what each limit decides is computed by the formulas of :mod:`engine.core.limits`, the
same functions the compiled driver's :func:`engine.core.limits.apply_limits` runs compiled.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from engine.core.limits import (
    V_ALLOW,
    V_REJECT,
    daily_loss_breached,
    drawdown_breached,
    grows,
    leverage_verdict,
    limit_applies,
    position_size_verdict,
    positions_full,
)
from engine.risk.batch import BatchDecision, PositionBatch
from engine.risk.context import PortfolioSnapshot, RiskContext
from engine.risk.decision import ExitType, OrderDecision, RiskDecision
from engine.risk.rules.base import RiskRule

if TYPE_CHECKING:
    from engine.orders import Order


def _fraction(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or not 0 < value < 1:
        raise ValueError(f"{name} must be a fraction in (0, 1), got {value!r}")
    return value


def _exposure(order: Order, portfolio: PortfolioSnapshot) -> tuple[float, float]:
    """(position incl. accepted working market orders, signed order quantity)."""
    return portfolio.exposure(order.sid), order.quantity


def increases_exposure(order: Order, portfolio: PortfolioSnapshot) -> bool:
    """False only for an order that shrinks the (position + pending) toward zero
    (:func:`engine.core.limits.grows`)."""
    return grows(*_exposure(order, portfolio))


def _decision(verdict: int, shares: float, reason: str) -> OrderDecision:
    """The order decision of a size limit's ``(verdict, shares)``
    (:mod:`engine.core.limits`)."""
    if verdict == V_ALLOW:
        return OrderDecision.allow()
    if verdict == V_REJECT:
        return OrderDecision.reject(reason)
    return OrderDecision.shrink(shares, reason)


def _order_price(order: Order, portfolio: PortfolioSnapshot) -> float:
    if math.isfinite(order.limit_price):
        return order.limit_price
    if math.isfinite(order.stop_price):
        return order.stop_price
    return portfolio.mark(order.sid)


class _PortfolioRule(RiskRule):
    evaluates_positions = False
    validates_orders = True

    def evaluate(self, context: RiskContext) -> RiskDecision:
        return RiskDecision.hold()


class MaxDailyLossRule(_PortfolioRule):
    """Halt new exposure for the rest of the day once the day's loss reaches a limit.

    Rejects exposure-increasing orders while ``equity − day_start_equity <= −max_loss_pct ×
    day_start_equity`` (day = UTC calendar day of the bar; equity marked at the bar's close).
    Orders that reduce positions pass.

    Parameters
    ----------
    max_loss_pct : float, default 0.02
        Fraction in (0, 1).
    priority : int, default 200
    """

    def __init__(self, max_loss_pct: float = 0.02, priority: int = 200) -> None:
        super().__init__(priority)
        self.max_loss_pct = _fraction("max_loss_pct", max_loss_pct)

    def reason_text(self, shrink: bool, value: float, limit: float) -> str:
        """The rejection reason for a daily P&L ``value`` (currency) past ``limit``."""
        return f"daily loss {value:.2f} beyond limit {limit:.2f}"

    def validate_order(self, order: Order, portfolio: PortfolioSnapshot) -> OrderDecision:
        """Reject an exposure-increasing ``order`` while the day's loss is past the limit."""
        breached, pnl, limit = daily_loss_breached(
            portfolio.equity, portfolio.day_start_equity, self.max_loss_pct
        )
        if breached and increases_exposure(order, portfolio):
            return OrderDecision.reject(self.reason_text(False, pnl, limit))
        return OrderDecision.allow()


DRAWDOWN_RESETS = ("never", "bars", "peak_at_halt")
"""The ``reset`` settings of :class:`MaxDrawdownRule`."""


class MaxDrawdownRule(_PortfolioRule):
    """Stop adding risk (or flatten) when the drawdown from the equity peak reaches a limit.

    ``drawdown = equity / peak − 1``, equity marked at the bar's close. While
    ``drawdown <= −max_drawdown`` the rule is *halted*: exposure-increasing orders are rejected
    (``action="halt"``); with ``action="flatten"`` every open position is also closed (a
    ``flatten_all`` exit at the next fill). Reducing orders always pass.

    ``reset`` says when a halted rule accepts new exposure again:

    - ``"never"`` (default): ``peak`` is the run's highest end-of-bar equity; the rule stays
      halted until equity is back within ``max_drawdown`` of it. A flat book cannot recover,
      so once a halt has emptied the book the run takes no new position: a kill switch, as a
      desk's or a prop firm's drawdown limit, which stops the strategy for a person to review.
      It is the default because re-arming is a choice with a parameter (after how long, from
      which peak) that no default can make for the user, and because it is what earlier runs
      and the compiled path (``engine.compiled``) computed.
    - ``"bars"``: halted for ``resume_after_bars`` bars (the bar of the breach is the first),
      then re-armed with the peak reset to the equity at that moment: the next halt needs a
      further ``max_drawdown`` loss from there.
    - ``"peak_at_halt"``: at the breach the peak is reset to the equity at the halt; halted for
      ``resume_after_bars`` bars (default 1: the breach bar only), then the drawdown is
      measured from that reset peak (raised by later highs). With ``action="flatten"`` this is
      LEAN's ``MaximumDrawdownPercentPortfolio``: liquidate, then start over from the
      liquidation equity.

    Bars are the run's timestamps (``bar_index``). With a reset, the rule also watches the
    equity at each close with an open position (hook C, one vectorised call per bar), so the
    new peak sees every close; such runs take the per-bar Python loop, not the compiled run.

    Parameters
    ----------
    max_drawdown : float, default 0.2
        Fraction in (0, 1).
    action : {"halt", "flatten"}, default "halt"
    priority : int, default 200
    reset : {"never", "bars", "peak_at_halt"}, default "never"
    resume_after_bars : int, optional
        Bars the halt lasts, ``>= 1``; required for ``reset="bars"``, default 1 for
        ``"peak_at_halt"``, not allowed for ``"never"``.

    Raises
    ------
    ValueError
        A bad ``max_drawdown``, ``action`` or ``reset``; ``resume_after_bars`` missing for
        ``"bars"``, given with ``"never"``, or not an int ``>= 1``.
    """

    def __init__(
        self,
        max_drawdown: float = 0.2,
        action: str = "halt",
        priority: int = 200,
        *,
        reset: str = "never",
        resume_after_bars: int | None = None,
    ) -> None:
        super().__init__(priority)
        self.max_drawdown = _fraction("max_drawdown", max_drawdown)
        if action not in ("halt", "flatten"):
            raise ValueError(f"action must be 'halt' or 'flatten', got {action!r}")
        if reset not in DRAWDOWN_RESETS:
            raise ValueError(f"reset must be one of {DRAWDOWN_RESETS}, got {reset!r}")
        if reset == "never" and resume_after_bars is not None:
            raise ValueError(
                "resume_after_bars needs reset='bars' or 'peak_at_halt' (reset='never' never "
                "resumes)"
            )
        if reset == "bars" and resume_after_bars is None:
            raise ValueError("reset='bars' needs resume_after_bars (bars the halt lasts, >= 1)")
        if reset == "peak_at_halt" and resume_after_bars is None:
            resume_after_bars = 1
        if resume_after_bars is not None and (
            isinstance(resume_after_bars, bool)
            or not isinstance(resume_after_bars, int)
            or resume_after_bars < 1
        ):
            raise ValueError(f"resume_after_bars must be an int >= 1, got {resume_after_bars!r}")
        self.action = action
        self.reset_mode = reset
        self.resume_after_bars = resume_after_bars
        self.evaluates_positions = action == "flatten" or reset != "never"
        # with a reset, watch every close with a position in one vectorised call (no contexts)
        self.vectorized = action == "halt" and reset != "never"
        self._halt_bar: int | None = None
        self._peak: float | None = None  # the peak since the last reset (None: the run's)
        self._run_peak_at_reset = 0.0

    def reset(self) -> None:
        """Forget the halt and the reset peak (a run starts)."""
        self._halt_bar = None
        self._peak = None
        self._run_peak_at_reset = 0.0

    def __repr__(self) -> str:
        extra = (
            ""
            if self.reset_mode == "never"
            else f", reset={self.reset_mode!r}, resume_after_bars={self.resume_after_bars}"
        )
        return (
            f"MaxDrawdownRule(max_drawdown={self.max_drawdown!r}, action={self.action!r}, "
            f"priority={self.priority}{extra})"
        )

    def _restart_peak(self, portfolio: PortfolioSnapshot) -> None:
        self._peak = portfolio.equity
        self._run_peak_at_reset = portfolio.peak_equity

    def _watch(self, portfolio: PortfolioSnapshot) -> None:
        """Raise the reset peak to the equity now and to any close since that beat the run's
        peak at the reset (the run's peak then holds the highest close since the reset)."""
        if self._peak is None:
            return
        peak = max(self._peak, portfolio.equity)
        if portfolio.peak_equity > self._run_peak_at_reset:
            peak = max(peak, portfolio.peak_equity)
        self._peak = peak

    def drawdown(self, portfolio: PortfolioSnapshot) -> float:
        """The drawdown the rule measures now (fraction, <= 0): from the run's peak, or from
        the peak of the last reset."""
        return self._measure(portfolio)[1]

    def _measure(self, portfolio: PortfolioSnapshot) -> tuple[bool, float]:
        """``(breached, drawdown)`` from the run's peak or the last reset's
        (:func:`engine.core.limits.drawdown_breached`)."""
        peak = portfolio.peak_equity if self._peak is None else self._peak
        return drawdown_breached(portfolio.equity, peak, self.max_drawdown)

    def _breached(self, portfolio: PortfolioSnapshot) -> bool:
        """True while the rule is halted (and starts a halt on a new breach)."""
        if self.reset_mode == "never":
            return self._measure(portfolio)[0]
        now = portfolio.bar_index
        resume = self.resume_after_bars or 1
        if self._halt_bar is not None:
            if now < self._halt_bar + resume:
                if self.reset_mode == "peak_at_halt":
                    self._watch(portfolio)
                return True
            self._halt_bar = None  # re-armed
            if self.reset_mode == "bars":
                self._restart_peak(portfolio)
        self._watch(portfolio)
        if self._measure(portfolio)[0]:
            self._halt_bar = now
            if self.reset_mode == "peak_at_halt":
                self._restart_peak(portfolio)
            return True
        return False

    def reason_text(self, shrink: bool, value: float, limit: float) -> str:
        """The rejection reason for a drawdown ``value`` (fraction, <= 0)."""
        return f"drawdown {value:.4f} beyond limit -{self.max_drawdown}"

    def _reason(self, portfolio: PortfolioSnapshot) -> str:
        if self._halt_bar is None or self.reset_mode == "never":
            return self.reason_text(False, portfolio.drawdown, 0.0)
        ends = self._halt_bar + (self.resume_after_bars or 1)
        return (
            f"drawdown limit -{self.max_drawdown} breached at bar {self._halt_bar}; halted "
            f"until bar {ends} (reset={self.reset_mode!r})"
        )

    def validate_order(self, order: Order, portfolio: PortfolioSnapshot) -> OrderDecision:
        """Reject an exposure-increasing ``order`` while the rule is halted."""
        if increases_exposure(order, portfolio) and self._breached(portfolio):
            return OrderDecision.reject(self._reason(portfolio))
        return OrderDecision.allow()

    def evaluate(self, context: RiskContext) -> RiskDecision:
        """``action="flatten"``: a flatten-all exit while halted; with a reset, watch the
        equity at this close. Otherwise hold."""
        portfolio = context.portfolio
        if self.action == "flatten" and self._breached(portfolio):
            return RiskDecision.exit(
                f"drawdown {self.drawdown(portfolio):.4f} beyond limit -{self.max_drawdown}",
                exit_type=ExitType.FLATTEN_ALL,
                priority=self.priority,
                rule=self.name,
            )
        if self.reset_mode != "never":
            self._breached(portfolio)  # watch the close
        return RiskDecision.hold()

    def evaluate_batch(self, batch: PositionBatch) -> BatchDecision | None:
        """Watch the equity at this close (``action="halt"`` with a reset); no decision."""
        self._breached(batch.portfolio)
        return None


class MaxLeverageRule(_PortfolioRule):
    """Keep gross exposure within ``max_leverage × equity``.

    Projected gross exposure = Σ |position + working market orders| × mark (accepted orders of
    this bar included). An exposure-increasing order is shrunk so the projection stays within
    the limit (rejected if nothing fits). Notional uses the order's limit/stop price if any,
    else the latest close.

    Parameters
    ----------
    max_leverage : float, default 1.0
        > 0.
    priority : int, default 190
    """

    def __init__(self, max_leverage: float = 1.0, priority: int = 190) -> None:
        super().__init__(priority)
        value = float(max_leverage)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"max_leverage must be a finite number > 0, got {max_leverage!r}")
        self.max_leverage = value

    def validate_order(self, order: Order, portfolio: PortfolioSnapshot) -> OrderDecision:
        """Pass, shrink or reject ``order`` (:func:`engine.core.limits.leverage_verdict`)."""
        current, q = _exposure(order, portfolio)
        price = _order_price(order, portfolio)
        if not limit_applies(current, q, price):
            return OrderDecision.allow()
        verdict, shares = leverage_verdict(
            current,
            q,
            price,
            portfolio.equity,
            portfolio.projected_gross_exposure(),
            self.max_leverage,
        )
        return _decision(verdict, shares, self.reason_text(verdict != V_REJECT, 0.0, 0.0))

    def reason_text(self, shrink: bool, value: float, limit: float) -> str:
        """The reason of a shrink (``shrink``) or a rejection."""
        if shrink:
            return f"gross leverage limit {self.max_leverage}"
        return f"gross leverage at limit {self.max_leverage}"


class MaxPositionSizeRule(_PortfolioRule):
    """Cap one symbol's position value at ``max_pct × equity``.

    ``|position + working orders + order| × price <= max_pct × equity``; a larger
    exposure-increasing order is shrunk to fit (rejected if already at the cap).

    Parameters
    ----------
    max_pct : float, default 0.1
        Fraction in (0, 1).
    priority : int, default 180
    """

    def __init__(self, max_pct: float = 0.1, priority: int = 180) -> None:
        super().__init__(priority)
        self.max_pct = _fraction("max_pct", max_pct)

    def validate_order(self, order: Order, portfolio: PortfolioSnapshot) -> OrderDecision:
        """Pass, shrink or reject ``order``
        (:func:`engine.core.limits.position_size_verdict`)."""
        current, q = _exposure(order, portfolio)
        verdict, shares = position_size_verdict(
            current, q, _order_price(order, portfolio), portfolio.equity, self.max_pct
        )
        return _decision(verdict, shares, self.reason_text(verdict != V_REJECT, 0.0, 0.0))

    def reason_text(self, shrink: bool, value: float, limit: float) -> str:
        """The reason of a shrink (``shrink``) or a rejection."""
        if shrink:
            return f"position cap {self.max_pct:.2%} of equity"
        return f"position already at {self.max_pct:.2%} of equity"


class MaxPositionsRule(_PortfolioRule):
    """At most ``max_positions`` symbols held (counting accepted working market orders).

    An order that opens a new symbol (position + working orders is 0) is rejected when the
    number of symbols with a non-zero position + working orders is already ``max_positions``.

    Parameters
    ----------
    max_positions : int, default 20
        >= 1.
    priority : int, default 170
    """

    def __init__(self, max_positions: int = 20, priority: int = 170) -> None:
        super().__init__(priority)
        if isinstance(max_positions, bool) or not isinstance(max_positions, int):
            raise ValueError(f"max_positions must be an int >= 1, got {max_positions!r}")
        if max_positions < 1:
            raise ValueError(f"max_positions must be an int >= 1, got {max_positions!r}")
        self.max_positions = max_positions

    def validate_order(self, order: Order, portfolio: PortfolioSnapshot) -> OrderDecision:
        """Reject an ``order`` opening a symbol when the book is full
        (:func:`engine.core.limits.positions_full`)."""
        current = portfolio.exposure(order.sid)
        if current != 0:  # the count is only needed for an order opening a symbol
            return OrderDecision.allow()
        if positions_full(current, portfolio.projected_positions(), self.max_positions):
            return OrderDecision.reject(self.reason_text(False, 0.0, 0.0))
        return OrderDecision.allow()

    def reason_text(self, shrink: bool, value: float, limit: float) -> str:
        """The rejection reason."""
        return f"already {self.max_positions} positions"
