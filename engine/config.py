"""Execution settings of a run (a frozen, validated dataclass) and the framework presets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from engine.costs.commission import CommissionModel, NoCommission
from engine.costs.slippage import NoSlippage, SlippageModel
from engine.mechanics import CorporateActions, Delisting, Financing

FILL_MODES = ("next_open", "close")
BAR_EVENT_ORDERS = ("chronological", "stops_first")
STOP_ACTIVATIONS = ("next_bar", "entry_bar", "second_bar")
EXIT_CONFLICTS = ("open_sell_wins", "stop_wins")
CASH_CHECKS = ("execution", "submission")
TARGET_ROUNDINGS = ("position", "order")

EXECUTION_PRESETS: dict[str, dict[str, Any]] = {
    "backtrader": {
        "bar_event_order": "stops_first",
        "stop_activation": "next_bar",
        "exit_conflict": "open_sell_wins",
        "cash_check": "execution",
        "reentry_cooldown_bars": 0,
        "cash_tolerance": 0.0,
    },
    "vectorbt": {
        "bar_event_order": "stops_first",
        "stop_activation": "next_bar",
        "exit_conflict": "open_sell_wins",
        "cash_check": "execution",
        "reentry_cooldown_bars": 0,
        "cash_tolerance": 0.0,
    },
}
"""Fill-semantics fields of :class:`ExecutionConfig` that reproduce a framework's fills.

``"backtrader"``: Backtrader 1.9.78.123 with ``BackBroker(checksubmit=False)``, market orders at
the next open, the stop-loss submitted as a ``Stop`` order on the entry's fill notification and
cancelled by the strategy when it submits its exit (``broker.setcommission(commission=rate)``).
``"vectorbt"``: VectorBT 1.2.0 ``Portfolio.from_order_func(flexible=True)`` with the strategy
written as callbacks (stops, then sells, then buys at each open; ``allow_partial=False``; an
exact cash check). VectorBT's ``from_signals`` instead gives stops priority over exit signals:
use ``ExecutionConfig.preset("vectorbt", exit_conflict="stop_wins")`` for that.
Both presets leave ``fill``, costs, cash and shorting to the caller; the strategy's submission
order (sells before buys, buys in rank order, as :class:`engine.TopNStrategy` does) is part of
the contract. Keys are field names; values are plain (YAML-friendly) field values.
"""


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


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
    bar_event_order : {"chronological", "stops_first"}, default "chronological"
        Order of one bar's events in step 1 (fills against bar t).

        ``chronological`` (honest): the market orders decided at close t-1 fill at t's open
        first (in submission order), then resting orders (stop/limit/stop-limit/trailing,
        bracket children) are matched against the bar in submission order (a gap fills them at
        the open price), then the stop-loss / take-profit levels of open positions are checked
        against the bar's high/low. An opening buy can only spend cash that exists at the open.

        ``stops_first`` (**a small look-ahead**, Backtrader's pending-queue order, also the
        VectorBT callback run): before any opening market order, every resting order
        (stop/limit/stop-limit/trailing, bracket children) and every live position level is
        evaluated against the whole bar (gap through the level → the open, else touched → the
        level) and its fills and cash are booked; then the market orders fill at the open in
        submission order. The open's buys may thus spend the cash of an exit that really
        happens later in the bar. Positions exited in that pass are flat when their queued
        market exit comes up (see ``exit_conflict``). Matches Backtrader
        (``checksubmit`` either way) and VectorBT ``from_order_func`` callbacks.
    stop_activation : {"next_bar", "entry_bar"}, default "next_bar"
        First bar on which a stop-loss / take-profit level set from an entry fill is checked.
        ``next_bar``: the bar after the fill (Backtrader, VectorBT callbacks and
        ``from_signals`` all do this). ``entry_bar``: levels of entries filled in step 1 (at the
        open or by a resting order) are also checked against the rest of the entry bar, after
        the fill: touched → exit at the level (at the open only if the level is already at or
        beyond it, i.e. the position is stopped the moment it is filled). An
        **optimistic-path assumption**: a daily bar does not say whether its low came after
        the open. Bracket children and fills at the close always start on the next bar.
        ``second_bar`` (Backtrader with cheat-on-close, ``coc=True``, which executes the close
        fill in the next bar's broker cycle, so the stop the strategy submits on the fill's
        notification is first checked one bar later): levels of entries filled at the close
        (``fill="close"``) of timestamp t are first checked at timestamp t + 2; other fills
        as ``next_bar``. The level is still set, and a trailing level ratcheted, at t + 1.
    exit_conflict : {"open_sell_wins", "stop_wins"}, default "open_sell_wins"
        A market exit queued for bar t's open (strategy or risk exit, reducing the position)
        and the position's stop-loss / take-profit on the same bar. ``open_sell_wins``: the
        queued exit suspends the position's levels and bracket children for bar t (Backtrader,
        whose strategy cancels the stop when it submits the sell; VectorBT callbacks); it
        fills at the open. If it does not fill (no bar, rejected, capped), the levels are
        checked after the open's fills. ``stop_wins`` (requires ``stops_first``; VectorBT
        ``from_signals`` priority, also a look-ahead: at the open it "knows" the low): the
        levels stay armed; a level that triggers on bar t fills (level, or the open on a gap)
        and the queued market exit is cancelled (``cancelled``, reason
        ``position_closed_by_stop``); otherwise the exit fills at the open.
    cash_check : {"execution", "submission"}, default "execution"
        ``execution``: a buy is refused (``insufficient_cash``) when its fill price × quantity
        + commission exceeds the cash at that moment (Backtrader ``checksubmit=False``,
        VectorBT callbacks). ``submission`` (Backtrader's ``checksubmit=True``): after step 4
        of bar t, the orders accepted at bar t are also pseudo-executed in submission order
        against the cash at t's close, each at its creation price (market: the decision
        close; stop and stop-limit: the stop price; limit: the limit price; trailing: its
        current stop), a sell adding ``|q|·p − commission`` (only up to the long position
        when shorting is off) and a buy subtracting ``q·p + commission``; an order leaving the
        running cash below ``-cash_tolerance`` is rejected (``insufficient_cash_at_submission``).
        Accepted orders are still checked at execution. Two Backtrader artefacts are *not*
        emulated: it counts the entry bar's new stop orders as pseudo-sells at their stop
        price, and a stop submitted on the entry bar cannot be cancelled at that bar's close,
        so its stop and the strategy's sell can both execute and open a short (here the
        position's levels are not orders and ``short_not_allowed`` would refuse that sell).
    reentry_cooldown_bars : int, default 0
        After a stop-loss exit (position stop level or bracket stop child) filled on bar t,
        strategy orders for that symbol in the stopped position's direction decided at the
        closes of bars t … t+k-1 (timestamps of the run) are rejected at submission (reason
        ``reentry_cooldown``). ``0``: off (Backtrader and VectorBT have no cooldown). ``1``:
        no re-entry decided on the stop bar's close (the seeds' engine).
    cash_tolerance : float, default 1e-7
        Currency a buy may exceed the cash by and still fill (absorbs float rounding of
        ``price × qty + commission``). ``0.0``: exact, as Backtrader (``cash − q·p − comm <
        0`` refuses) and the VectorBT callback run. VectorBT's own ``order_nb`` check uses a
        relative tolerance instead and, with its default ``allow_partial=True``, shrinks an
        unaffordable buy; this engine always refuses it whole.
    target_rounding : {"position", "order"}, default "position"
        How ``order_target_value`` / ``order_target_percent`` round to whole shares (unless
        ``fractional_shares``). ``position``: the target position ``value / close`` is
        rounded toward zero, then the order is the difference (a sell that reduces a long can
        thus be one share larger than the value asks). ``order`` (Backtrader's
        ``order_target_percent``, which sizes ``getsize`` of the value difference, and
        VectorBT's ``size_granularity=1``): the order ``value / close − position`` is rounded
        toward zero, so the position may end up to one share beyond the target.
    corporate_actions : CorporateActions or None, default None
        Splits and cash dividends applied on each ex-date, for raw (unadjusted) prices:
        held quantities × ratio, per-share prices and levels and working orders' prices ÷
        ratio, dividends credited to longs and debited from shorts (on the pay date when
        given), one row per event in ``BacktestResult.corporate_actions``
        (:class:`engine.mechanics.CorporateActions`). Both drivers.
    delisting : Delisting or None, default None
        Close positions of symbols whose data ends or stops for longer than a gap
        (``exit_reason = "delisted"``) and reject orders for them
        (:class:`engine.mechanics.Delisting`). None: a position whose data ends stays open at
        its last close. Not with :class:`ChunkedMarketData`. Both drivers.
    financing : Financing or None, default None
        Interest on cash and short borrow fees accrued per bar
        (:class:`engine.mechanics.Financing`); the per-bar amounts are the
        ``portfolio_states`` columns ``interest`` and ``borrow_fee``. Both drivers.

    Raises
    ------
    ValueError
        On an unknown fill mode or setting value, non-positive or non-finite cash, a model of
        the wrong type, a participation cap outside (0, 1], a negative or non-integer cooldown,
        a negative or non-finite cash tolerance, or ``exit_conflict="stop_wins"`` without
        ``bar_event_order="stops_first"``.

    Examples
    --------
    >>> ExecutionConfig.preset("backtrader").bar_event_order
    'stops_first'
    >>> ExecutionConfig.preset("vectorbt", exit_conflict="stop_wins").exit_conflict
    'stop_wins'
    """

    fill: str = "next_open"
    commission: CommissionModel = field(default_factory=NoCommission)
    slippage: SlippageModel = field(default_factory=NoSlippage)
    initial_cash: float = 1_000_000.0
    fractional_shares: bool = False
    allow_short: bool = False
    max_volume_participation: float | None = None
    close_at_end: bool = False
    bar_event_order: str = "chronological"
    stop_activation: str = "next_bar"
    exit_conflict: str = "open_sell_wins"
    cash_check: str = "execution"
    reentry_cooldown_bars: int = 0
    cash_tolerance: float = 1e-7
    target_rounding: str = "position"
    # market mechanics (engine/mechanics/); None = off, the run is unchanged
    corporate_actions: CorporateActions | None = None
    delisting: Delisting | None = None
    financing: Financing | None = None

    def __post_init__(self) -> None:
        self._check_mechanics()
        _check_choice("fill", self.fill, FILL_MODES)
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
        _check_choice("bar_event_order", self.bar_event_order, BAR_EVENT_ORDERS)
        _check_choice("stop_activation", self.stop_activation, STOP_ACTIVATIONS)
        _check_choice("exit_conflict", self.exit_conflict, EXIT_CONFLICTS)
        _check_choice("cash_check", self.cash_check, CASH_CHECKS)
        _check_choice("target_rounding", self.target_rounding, TARGET_ROUNDINGS)
        k = self.reentry_cooldown_bars
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"reentry_cooldown_bars must be an int >= 0, got {k!r}")
        tol = self.cash_tolerance
        if (
            isinstance(tol, bool)
            or not isinstance(tol, int | float)
            or not math.isfinite(tol)
            or tol < 0
        ):
            raise ValueError(f"cash_tolerance must be a finite number >= 0, got {tol!r}")
        object.__setattr__(self, "cash_tolerance", float(tol))
        if self.exit_conflict == "stop_wins" and self.bar_event_order != "stops_first":
            raise ValueError(
                "exit_conflict='stop_wins' needs bar_event_order='stops_first': under "
                "'chronological' the queued open sell always fills before the bar's stop"
            )

    def _check_mechanics(self) -> None:
        for name, kind in (
            ("corporate_actions", CorporateActions),
            ("delisting", Delisting),
            ("financing", Financing),
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise ValueError(f"{name} must be a {kind.__name__} or None, got {value!r}")

    @property
    def has_mechanics(self) -> bool:
        """True when corporate actions, delistings or financing are set."""
        return not (
            self.corporate_actions is None and self.delisting is None and self.financing is None
        )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ExecutionConfig:
        """A config with a framework's fill semantics (:data:`EXECUTION_PRESETS`).

        Parameters
        ----------
        name : {"backtrader", "vectorbt"}
        **overrides
            Any ``ExecutionConfig`` field (costs, cash, ... or a preset setting itself).

        Returns
        -------
        ExecutionConfig

        Raises
        ------
        ValueError
            An unknown preset name, an unknown field, or an invalid combination.
        """
        if name not in EXECUTION_PRESETS:
            raise ValueError(
                f"unknown execution preset {name!r}; known: {sorted(EXECUTION_PRESETS)}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown ExecutionConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**{**EXECUTION_PRESETS[name], **overrides})
