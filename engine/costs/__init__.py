"""Execution cost models (commission, slippage) and their registries for configs."""

from __future__ import annotations

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

COMMISSION_REGISTRY: dict[str, type[CommissionModel]] = {
    "None": NoCommission,
    "NoCommission": NoCommission,
    "Percentage": PercentageCommission,
    "PercentageCommission": PercentageCommission,
    "PerShare": PerShareCommission,
    "PerShareCommission": PerShareCommission,
    "PerTrade": PerTradeCommission,
    "PerTradeCommission": PerTradeCommission,
    "Tiered": TieredCommission,
    "TieredCommission": TieredCommission,
}
"""Commission classes by config name (short and full class names)."""

SLIPPAGE_REGISTRY: dict[str, type[SlippageModel]] = {
    "None": NoSlippage,
    "NoSlippage": NoSlippage,
    "FixedPercentage": FixedPercentageSlippage,
    "FixedPercentageSlippage": FixedPercentageSlippage,
    "FixedBps": FixedBpsSlippage,
    "FixedBpsSlippage": FixedBpsSlippage,
    "SpreadAware": SpreadAwareSlippage,
    "SpreadAwareSlippage": SpreadAwareSlippage,
    "VolumeAware": VolumeAwareSlippage,
    "VolumeAwareSlippage": VolumeAwareSlippage,
    "OrderTypeDependent": OrderTypeDependentSlippage,
    "OrderTypeDependentSlippage": OrderTypeDependentSlippage,
}
"""Slippage classes by config name (short and full class names)."""

__all__ = [
    "COMMISSION_REGISTRY",
    "SLIPPAGE_REGISTRY",
    "CommissionModel",
    "FixedBpsSlippage",
    "FixedPercentageSlippage",
    "NoCommission",
    "NoSlippage",
    "OrderTypeDependentSlippage",
    "PerShareCommission",
    "PerTradeCommission",
    "PercentageCommission",
    "SlippageModel",
    "SpreadAwareSlippage",
    "TieredCommission",
    "VolumeAwareSlippage",
]
