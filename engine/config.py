"""Execution settings of a run (a frozen, validated dataclass)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from engine.costs.commission import CommissionModel, NoCommission
from engine.costs.slippage import NoSlippage, SlippageModel

FILL_MODES = ("next_open", "close")


@dataclass(frozen=True)
class ExecutionConfig:
    """How orders are executed and accounted.

    Parameters
    ----------
    fill : {"next_open", "close"}, default "next_open"
        ``next_open``: market orders decided at bar t's close fill at t+1's open (the symbol's
        next bar). ``close``: market orders from the risk exits and the strategy fill at bar t's
        close (VectorBT's default, Backtrader's cheat-on-close); an order for a symbol without
        a bar at t waits and fills at that symbol's next open. Limit/stop orders and
        stop-loss/take-profit levels trigger from the next bar in both modes.
    commission : CommissionModel, default NoCommission()
    slippage : SlippageModel, default NoSlippage()
    initial_cash : float, default 1_000_000.0
        Currency, > 0.
    fractional_shares : bool, default False
        False: order quantities must be whole shares (helpers round down).
    allow_short : bool, default False
        False: a sell larger than the position is rejected (``short_not_allowed``).
    max_volume_participation : float or None, default None
        Largest fraction of a bar's volume one order may fill on that bar, in (0, 1] (rounded
        down to whole shares); the rest stays working for later bars. ``None``: no cap. Exits
        at stop-loss/take-profit levels and ``end_of_data`` closes are not capped.
    close_at_end : bool, default False
        True: close every open position at the last bar's close with ``exit_reason =
        "end_of_data"``. False: positions stay open and are not in ``trades``.

    Raises
    ------
    ValueError
        On an unknown fill mode, non-positive or non-finite cash, a model of the wrong type,
        or a participation cap outside (0, 1].
    """

    fill: str = "next_open"
    commission: CommissionModel = field(default_factory=NoCommission)
    slippage: SlippageModel = field(default_factory=NoSlippage)
    initial_cash: float = 1_000_000.0
    fractional_shares: bool = False
    allow_short: bool = False
    max_volume_participation: float | None = None
    close_at_end: bool = False

    def __post_init__(self) -> None:
        if self.fill not in FILL_MODES:
            raise ValueError(f"fill must be one of {FILL_MODES}, got {self.fill!r}")
        if not isinstance(self.commission, CommissionModel):
            raise ValueError(f"commission must be a CommissionModel, got {self.commission!r}")
        if not isinstance(self.slippage, SlippageModel):
            raise ValueError(f"slippage must be a SlippageModel, got {self.slippage!r}")
        cash = self.initial_cash
        if isinstance(cash, bool) or not isinstance(cash, int | float):
            raise ValueError(f"initial_cash must be a number, got {cash!r}")
        if not math.isfinite(cash) or cash <= 0:
            raise ValueError(f"initial_cash must be a finite number > 0, got {cash!r}")
        object.__setattr__(self, "initial_cash", float(cash))
        for name in ("fractional_shares", "allow_short", "close_at_end"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        cap = self.max_volume_participation
        if cap is not None and (
            isinstance(cap, bool)
            or not isinstance(cap, int | float)
            or not math.isfinite(cap)
            or not 0.0 < cap <= 1.0
        ):
            raise ValueError(f"max_volume_participation must be in (0, 1] or None, got {cap!r}")
