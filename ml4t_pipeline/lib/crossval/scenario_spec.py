"""One parity scenario (:class:`Scenario`): a strategy variant, the frameworks that can express
it, and our ``ExecutionConfig`` for the comparison with each framework."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

FRAMEWORKS: tuple[str, ...] = ("backtrader", "vectorbt")
"""Reference frameworks of the matrix, in table order."""


@dataclass(frozen=True)
class Scenario:
    """One row group of the parity matrix: a strategy variant and how each framework runs it.

    Parameters
    ----------
    name : str
        Identifier (snake case), the ``scenario`` column of the matrix.
    title : str
        One-line description for the docs table.
    kind : {"signals", "target_weights", "topn", "ranked"}
        ``signals``: the crossover signals (module docstring). ``target_weights``: every
        ``rebalance_every`` bars, target ``target_weight`` of equity in every symbol
        (``order_target_percent``). ``topn``: the issue-7 reference strategy through its own
        drivers. ``ranked``: ``engine.TopNStrategy`` on the 20-day return (``n_top``,
        ``target_weight`` of equity per new position, every bar) with the scenario's rules,
        against a Backtrader strategy that ranks and sizes the same way.
    direction : {"long", "short", "both"}
    stop_loss, take_profit, trailing : float, optional
        Fractions from the entry fill (trailing: from the best price since entry).
    bracket : tuple of (float, float), optional
        ``(stop_pct, target_pct)``: the entry carries absolute stop-loss / take-profit children
        at the decision close × (1 ∓ pct); exits come only from the children.
    time_exit : int, optional
        Exit at the close of the first bar with ``bars_held >= time_exit`` (entry bar = 0).
    entry_order : {"market", "limit", "stop"}
        Entry order type; limit / stop entries are day orders at the decision close
        × (1 ∓ ``entry_offset``) (limit below, stop above for a long).
    entry_offset : float
    commission : tuple of (str, float), optional
        ``("percent", rate)`` of traded value or ``("per_share", currency per share)``.
    slippage : tuple of (str, float), optional
        ``("percent", fraction)`` or ``("fixed", currency per share)``, against the trader.
    fill : {"next_open", "close"}
    volume_cap : float, optional
        Largest fraction of a bar's volume one order may fill on that bar.
    initial_cash, position_value : float
        Currency.
    n_bars : int, optional
        Use only the first ``n_bars`` bars of the panel.
    n_symbols : int, optional
        Use only the first ``n_symbols`` symbols of the panel.
    rebalance_every, target_weight : int, float
        ``target_weights`` scenarios (``target_weight`` also sizes ``ranked`` entries).
    n_top : int
        ``ranked`` scenarios: symbols held.
    not_expressed : dict of str to str
        Framework → why the scenario cannot be written with that framework's own API.
    engine_overrides : dict of str to dict
        Framework → extra ``ExecutionConfig`` fields our run uses beside the preset when
        compared with that framework (e.g. VectorBT ``from_signals``: ``exit_conflict =
        "stop_wins"``).
    trail_settings : dict of str to dict
        Framework → ``DynamicTrailingStop`` keywords our run uses when compared with that
        framework (``trail_on="close"`` for Backtrader's ``StopTrail``,
        ``include_entry_bar=False`` for VectorBT's ``sl_trail``).
    knobs : dict of str to str
        Framework → the semantic setting that explains a remaining gap, or that the matrix
        switches on to close it (empty when none is involved).
    fast, slow : int
        Moving-average windows, bars.
    """

    name: str
    title: str
    kind: str = "signals"
    direction: str = "long"
    stop_loss: float | None = None
    take_profit: float | None = None
    trailing: float | None = None
    bracket: tuple[float, float] | None = None
    time_exit: int | None = None
    entry_order: str = "market"
    entry_offset: float = 0.0
    commission: tuple[str, float] | None = None
    slippage: tuple[str, float] | None = None
    fill: str = "next_open"
    volume_cap: float | None = None
    initial_cash: float = 1_000_000.0
    position_value: float = 10_000.0
    n_bars: int | None = None
    n_symbols: int | None = None
    rebalance_every: int = 21
    target_weight: float = 0.0
    n_top: int = 3
    not_expressed: dict[str, str] = field(default_factory=dict)
    engine_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    trail_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    knobs: dict[str, str] = field(default_factory=dict)
    fast: int = 10
    slow: int = 30

    def __post_init__(self) -> None:
        if self.kind not in ("signals", "target_weights", "topn", "ranked"):
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        if self.direction not in ("long", "short", "both"):
            raise ValueError(f"{self.name}: unknown direction {self.direction!r}")
        if self.entry_order not in ("market", "limit", "stop"):
            raise ValueError(f"{self.name}: unknown entry_order {self.entry_order!r}")
        if self.fill not in ("next_open", "close"):
            raise ValueError(f"{self.name}: unknown fill {self.fill!r}")
        unknown = sorted(set(self.not_expressed) - set(FRAMEWORKS))
        if unknown:
            raise ValueError(f"{self.name}: not_expressed names unknown frameworks {unknown}")

    @property
    def has_levels(self) -> bool:
        """True when positions carry stop-loss / take-profit / trailing levels."""
        return any(x is not None for x in (self.stop_loss, self.take_profit, self.trailing))

    def engine_config(self, framework: str) -> Any:
        """Our ``ExecutionConfig`` for the comparison with ``framework`` (its preset; no
        preset for a framework without one, e.g. Zipline)."""
        from engine import (
            EXECUTION_PRESETS,
            ExecutionConfig,
            FixedPercentageSlippage,
            NoCommission,
            NoSlippage,
            PercentageCommission,
            PerShareCommission,
        )

        commission: Any = NoCommission()
        if self.commission is not None:
            kind, value = self.commission
            commission = (
                PercentageCommission(value) if kind == "percent" else PerShareCommission(value)
            )
        slippage: Any = NoSlippage()
        if self.slippage is not None:
            kind, value = self.slippage
            slippage = (
                FixedPercentageSlippage(value) if kind == "percent" else FixedAmountSlippage(value)
            )
        fields: dict[str, Any] = {
            "fill": self.fill,
            "commission": commission,
            "slippage": slippage,
            "initial_cash": self.initial_cash,
            "allow_short": self.direction != "long",
            "max_volume_participation": self.volume_cap,
            **self.engine_overrides.get(framework, {}),
        }
        if framework in EXECUTION_PRESETS:
            return ExecutionConfig.preset(framework, **fields)
        return ExecutionConfig(**fields)  # no preset (Zipline: fill="close", see parity_zipline)


def _fixed_amount_slippage_class() -> type:
    from engine import SlippageModel

    class _FixedAmountSlippage(SlippageModel):
        """A fixed amount per share against the trader (Backtrader ``slip_fixed``).

        ``buy: price + amount``; ``sell: price - amount`` (currency per share, >= 0).
        """

        def __init__(self, amount: float) -> None:
            if not (math.isfinite(amount) and amount >= 0):
                raise ValueError(f"amount must be a finite number >= 0, got {amount!r}")
            self.amount = float(amount)

        def __repr__(self) -> str:
            return f"FixedAmountSlippage(amount={self.amount})"

        def fill_price(self, price: float, quantity: float, bar: Any, order_type: str) -> float:
            return price + self.amount if quantity > 0 else price - self.amount

    return _FixedAmountSlippage


def FixedAmountSlippage(amount: float) -> Any:  # noqa: N802 - reads as the model's class name
    """A slippage model moving every fill ``amount`` currency per share against the trader.

    The engine has fractional models only (``FixedPercentageSlippage``, ``FixedBpsSlippage``);
    this small ``engine.SlippageModel`` is Backtrader's ``slip_fixed`` for the parity scenario.

    Raises
    ------
    ValueError
        ``amount`` negative or not finite.
    """
    return _fixed_amount_slippage_class()(amount)
