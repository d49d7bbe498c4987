"""The compiled form of a run's slippage and commission models (:func:`plan_costs`).

Used by every compiled path that charges costs: the TopN driver's plan
(:func:`engine.compiled.plan.plan_topn`) and the Python driver's market-order lane
(:func:`engine.broker.lane.lane_costs`). Imports only the cost models, the market data and the
core's cost layout (:mod:`engine.core.costs`), so the broker can use it without reaching the
strategies.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engine.core import costs as core_costs
from engine.core.costs import Costs
from engine.core.layout import TYPE_NAMES
from engine.costs.commission import (
    CommissionModel,
    NoCommission,
    PercentageCommission,
    PerShareCommission,
    PerTradeCommission,
    TieredCommission,
)
from engine.costs.slippage import (
    FixedBpsSlippage,
    FixedPercentageSlippage,
    NoSlippage,
    OrderTypeDependentSlippage,
    SlippageModel,
    SpreadAwareSlippage,
    VolumeAwareSlippage,
)
from engine.data import BarView, MarketData

__all__ = [
    "COMPILED_COMMISSIONS",
    "COMPILED_SLIPPAGES",
    "by_type_reason",
    "cost_rows",
    "plan_costs",
    "row_key",
]

FloatArray = npt.NDArray[np.float64]

COMPILED_COMMISSIONS = (
    NoCommission,
    PercentageCommission,
    PerShareCommission,
    PerTradeCommission,
    TieredCommission,
)
"""The commission models with a compiled form (exact types; a subclass may price otherwise)."""
COMPILED_SLIPPAGES = (
    NoSlippage,
    FixedPercentageSlippage,
    FixedBpsSlippage,
    SpreadAwareSlippage,
    VolumeAwareSlippage,
)
"""The slippage models with a compiled form (exact types), besides
``OrderTypeDependentSlippage`` over them (:func:`by_type_reason`)."""


def plan_costs(data: MarketData, slippage: SlippageModel, commission: CommissionModel) -> Costs:
    """The compiled form of a run's slippage and commission models (types in
    :func:`engine.compiled.plan.compiled_reason`'s list): their parameters, and the per-row
    series the slippage reads, computed by the models' own methods (the Corwin-Schultz
    estimate, the completed bars' mean volume), so both drivers read the same values.

    Raises
    ------
    TypeError
        If a model has no compiled form.
    """
    params = np.zeros(core_costs.N_COST_PARAMS)
    rows: FloatArray = np.zeros((core_costs.N_ROWS, 0))
    if isinstance(slippage, OrderTypeDependentSlippage):
        params[core_costs.SLIP_KIND] = core_costs.SLIP_BY_TYPE
        for code, name in enumerate(TYPE_NAMES):
            model = slippage.models.get(name, slippage.default)
            start = core_costs.slippage_block(core_costs.SLIP_BY_TYPE, code)
            model_rows = _slippage_slots(data, model, params[start : start + core_costs.N_SLIP])
            if model_rows.shape[1] == 0:
                continue
            if rows.shape[1] == 0:
                rows = np.full_like(model_rows, np.nan)
            # each model's own rows (compiled_reason admits one setting per kind)
            own = _SPREAD_ROWS if isinstance(model, SpreadAwareSlippage) else _IMPACT_ROWS
            for r in (*own, core_costs.ROW_HIGH, core_costs.ROW_LOW, core_costs.ROW_CLOSE):
                rows[r] = model_rows[r]
    else:
        rows = _slippage_slots(data, slippage, params[: core_costs.N_SLIP])
    tiers = np.zeros((0, 2))
    if isinstance(commission, PercentageCommission):
        params[core_costs.COMM_KIND] = core_costs.COMM_PERCENT
        params[core_costs.COMM_A] = commission.rate
    elif isinstance(commission, PerShareCommission):
        params[core_costs.COMM_KIND] = core_costs.COMM_PER_SHARE
        params[core_costs.COMM_A] = commission.cost
        params[core_costs.COMM_B] = commission.minimum
        cap = commission.maximum_pct
        params[core_costs.COMM_C] = np.nan if cap is None else cap
    elif isinstance(commission, PerTradeCommission):
        params[core_costs.COMM_KIND] = core_costs.COMM_PER_TRADE
        params[core_costs.COMM_A] = commission.cost
    elif isinstance(commission, TieredCommission):
        params[core_costs.COMM_KIND] = core_costs.COMM_TIERED
        tiers = np.asarray(commission.tiers, dtype=np.float64).reshape(-1, 2).copy()
    elif not isinstance(commission, NoCommission):
        raise TypeError(f"{commission!r} has no compiled form")
    plain = params[core_costs.SLIP_KIND] == core_costs.SLIP_NONE and (
        params[core_costs.COMM_KIND] != core_costs.COMM_TIERED
    )
    if plain:  # 1-D: the compiled driver's kernel for this run holds no slippage code
        rows = np.zeros(0)
    elif rows.shape[1] == 0:
        rows = np.zeros((core_costs.N_ROWS, 0))
    return Costs(params=params, tiers=tiers, tier_state=np.array([np.nan, 0.0]), rows=rows)


_SPREAD_ROWS = (core_costs.ROW_BID, core_costs.ROW_ASK, core_costs.ROW_SPREAD)
_IMPACT_ROWS = (core_costs.ROW_SIGMA, core_costs.ROW_VOLUME)


def _slippage_slots(data: MarketData, slippage: SlippageModel, slots: FloatArray) -> FloatArray:
    """Write the compiled form of ``slippage`` (not ``OrderTypeDependentSlippage``) into
    ``slots`` (float64, shape (N_SLIP,), laid out as the ``SLIP_*`` slots of
    :class:`engine.core.costs.Costs`); return the per-row values it reads (``Costs.rows``,
    shape (N_ROWS, 0) when it reads none).

    Raises
    ------
    TypeError
        If the model has no compiled form.
    """
    if isinstance(slippage, FixedPercentageSlippage | FixedBpsSlippage):
        slots[core_costs.SLIP_KIND] = core_costs.SLIP_FRACTION
        fraction = (
            slippage.pct
            if isinstance(slippage, FixedPercentageSlippage)
            else slippage.bps / 10_000.0
        )
        slots[core_costs.SLIP_A] = fraction
    elif isinstance(slippage, SpreadAwareSlippage):
        slots[core_costs.SLIP_KIND] = core_costs.SLIP_SPREAD
        slots[core_costs.SLIP_A] = slippage.spread_fraction
        slots[core_costs.SLIP_B] = slippage.fallback_pct
        return cost_rows(data, slippage)
    elif isinstance(slippage, VolumeAwareSlippage):
        slots[core_costs.SLIP_KIND] = core_costs.SLIP_IMPACT
        slots[core_costs.SLIP_A] = slippage.coefficient
        slots[core_costs.SLIP_B] = slippage.max_impact
        slots[core_costs.SLIP_C] = float(slippage.volume == "bar")
        return cost_rows(data, slippage)
    elif not isinstance(slippage, NoSlippage):
        raise TypeError(f"{slippage!r} has no compiled form")
    return np.zeros((core_costs.N_ROWS, 0))


def row_key(slippage: SpreadAwareSlippage | VolumeAwareSlippage) -> str:
    """The settings that decide a model's per-row values (``cost_rows``' cache key)."""
    if isinstance(slippage, SpreadAwareSlippage):
        return f"compiled_rows:spread:{slippage.window}:{slippage.min_periods}:{slippage.clamp}"
    return (
        f"compiled_rows:impact:{slippage.volatility_column}:{slippage.volume}:"
        f"{slippage.volume_window}"
    )


def by_type_reason(slippage: OrderTypeDependentSlippage) -> str | None:
    """Why an ``OrderTypeDependentSlippage`` has no compiled form (``None``: it has one): a
    model without one, or two spread-aware (volume-aware) models whose per-row values differ
    (window, clamp; volatility column, volume)."""
    keys: dict[type, set[str]] = {}
    for model in (slippage.default, *slippage.models.values()):
        if type(model) not in COMPILED_SLIPPAGES:
            return f"OrderTypeDependentSlippage with {type(model).__name__}"
        if isinstance(model, SpreadAwareSlippage | VolumeAwareSlippage):
            keys.setdefault(type(model), set()).add(row_key(model))
    if any(len(v) > 1 for v in keys.values()):
        return "OrderTypeDependentSlippage with two models of one kind on different bars"
    return None


def cost_rows(data: MarketData, slippage: SpreadAwareSlippage | VolumeAwareSlippage) -> FloatArray:
    """The per-row values ``slippage`` reads (``Costs.rows``, float64, shape (N_ROWS,
    n_rows)), computed once per market data and model settings (cached on ``data``)."""
    key = row_key(slippage)

    def build(data: MarketData) -> FloatArray:
        rows = np.full((core_costs.N_ROWS, data.close.size), np.nan)
        rows[core_costs.ROW_HIGH] = data.high
        rows[core_costs.ROW_LOW] = data.low
        rows[core_costs.ROW_CLOSE] = data.close
        if isinstance(slippage, SpreadAwareSlippage):
            for code, name in ((core_costs.ROW_BID, "bid"), (core_costs.ROW_ASK, "ask")):
                if name in data.columns:
                    rows[code] = data.columns[name]
            rows[core_costs.ROW_SPREAD] = slippage.spread_series(data)
            return rows
        column = slippage.volatility_column
        if column is not None and column in data.columns:
            rows[core_costs.ROW_SIGMA] = data.columns[column]
        by_bar = slippage.volume == "bar"
        rows[core_costs.ROW_VOLUME] = data.volume if by_bar else slippage.mean_volume_series(data)
        return rows

    rows: FloatArray = BarView(data, 0).derived(key, build)
    return rows
