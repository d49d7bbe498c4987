"""Portfolio constraints enforced in order validation (hook B)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

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


def _grows(current: float, q: float) -> bool:
    """False only for a quantity ``q`` that shrinks ``current`` toward zero."""
    return not (current * q < 0 and abs(q) <= abs(current) + 1e-9)


def increases_exposure(order: Order, portfolio: PortfolioSnapshot) -> bool:
    """False only for an order that shrinks the (position + pending) toward zero."""
    return _grows(*_exposure(order, portfolio))


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
        limit = -self.max_loss_pct * portfolio.day_start_equity
        if portfolio.daily_pnl <= limit and increases_exposure(order, portfolio):
            return OrderDecision.reject(self.reason_text(False, portfolio.daily_pnl, limit))
        return OrderDecision.allow()


class MaxDrawdownRule(_PortfolioRule):
    """Stop adding risk (or flatten) when the drawdown from the equity peak reaches a limit.

    ``drawdown = equity / peak_equity − 1`` (peak of end-of-bar equity). While
    ``drawdown <= −max_drawdown``: exposure-increasing orders are rejected (``action="halt"``);
    with ``action="flatten"`` every open position is also closed (a ``flatten_all`` exit at
    the next fill). Reducing orders always pass.

    Parameters
    ----------
    max_drawdown : float, default 0.2
        Fraction in (0, 1).
    action : {"halt", "flatten"}, default "halt"
    priority : int, default 200
    """

    def __init__(
        self, max_drawdown: float = 0.2, action: str = "halt", priority: int = 200
    ) -> None:
        super().__init__(priority)
        self.max_drawdown = _fraction("max_drawdown", max_drawdown)
        if action not in ("halt", "flatten"):
            raise ValueError(f"action must be 'halt' or 'flatten', got {action!r}")
        self.action = action
        self.evaluates_positions = action == "flatten"

    def _breached(self, portfolio: PortfolioSnapshot) -> bool:
        return portfolio.drawdown <= -self.max_drawdown

    def reason_text(self, shrink: bool, value: float, limit: float) -> str:
        """The rejection reason for a drawdown ``value`` (fraction, <= 0)."""
        return f"drawdown {value:.4f} beyond limit -{self.max_drawdown}"

    def validate_order(self, order: Order, portfolio: PortfolioSnapshot) -> OrderDecision:
        if self._breached(portfolio) and increases_exposure(order, portfolio):
            return OrderDecision.reject(self.reason_text(False, portfolio.drawdown, 0.0))
        return OrderDecision.allow()

    def evaluate(self, context: RiskContext) -> RiskDecision:
        if self.action == "flatten" and self._breached(context.portfolio):
            return RiskDecision.exit(
                f"drawdown {context.drawdown:.4f} beyond limit -{self.max_drawdown}",
                exit_type=ExitType.FLATTEN_ALL,
                priority=self.priority,
                rule=self.name,
            )
        return RiskDecision.hold()


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
        current, q = _exposure(order, portfolio)
        if not _grows(current, q):
            return OrderDecision.allow()
        price = _order_price(order, portfolio)
        if not math.isfinite(price) or price <= 0:
            return OrderDecision.allow()
        room = self.max_leverage * portfolio.equity - portfolio.projected_gross_exposure()
        extra = (abs(current + q) - abs(current)) * price
        if extra <= room + 1e-9:
            return OrderDecision.allow()
        if room <= 0:
            return OrderDecision.reject(self.reason_text(False, 0.0, 0.0))
        # same side: every share adds exposure; a flip first removes |current| shares of it
        shares = room / price if current * q >= 0 else 2.0 * abs(current) + room / price
        return OrderDecision.shrink(
            math.copysign(min(abs(q), shares), q), self.reason_text(True, 0.0, 0.0)
        )

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
        current, q = _exposure(order, portfolio)
        if not _grows(current, q):
            return OrderDecision.allow()
        price = _order_price(order, portfolio)
        if not math.isfinite(price) or price <= 0:
            return OrderDecision.allow()
        cap_shares = self.max_pct * portfolio.equity / price
        if abs(current + q) <= cap_shares + 1e-9:
            return OrderDecision.allow()
        allowed = cap_shares - abs(current) if current * q > 0 else cap_shares + abs(current)
        if allowed <= 0:
            return OrderDecision.reject(self.reason_text(False, 0.0, 0.0))
        return OrderDecision.shrink(
            math.copysign(min(abs(q), allowed), q), self.reason_text(True, 0.0, 0.0)
        )

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
        if portfolio.exposure(order.sid) != 0:
            return OrderDecision.allow()
        if portfolio.projected_positions() >= self.max_positions:
            return OrderDecision.reject(self.reason_text(False, 0.0, 0.0))
        return OrderDecision.allow()

    def reason_text(self, shrink: bool, value: float, limit: float) -> str:
        """The rejection reason."""
        return f"already {self.max_positions} positions"
