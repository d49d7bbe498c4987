"""Planning of the compiled runs: which runs the compiled driver takes, and their inputs.

:func:`compiled_reason` says why a run must take the Python loop (``None``: the compiled
driver, :mod:`engine.compiled.topn`, runs it with the same results);
:func:`plan_topn` turns the strategy, rules and settings into the driver's tables
(:class:`engine.compiled.topn.TopNPlan`); :func:`variants_reason` says whether many runs on
one panel can share one pass of the variant driver (:mod:`engine.compiled.variants`). The
rules keep their validation and texts; this module only hands their parameters over, as
:class:`engine.risk.manager.BasicRulesKernel` does for the fixed-percent rules.

What qualifies (anything else runs the Python loop):

- a :class:`engine.MarketData` panel (not chunked) and a strategy that is exactly
  :class:`engine.TopNStrategy` (not a subclass);
- no risk manager, an empty one, or one whose rules are all exactly ``PriceBasedStopLoss``,
  ``PriceBasedTakeProfit``, ``DynamicTrailingStop`` (default ``trail_on`` and
  ``include_entry_bar``), ``TimeBasedExit``, ``BreakEvenRule``,
  ``PartialProfitTaking`` (at most one, at most 62 levels), ``VolatilityScaledStopLoss`` or
  ``VolatilityScaledTakeProfit`` (each ATR column a signal/indicator column of the data), or a
  ``RegimeDependentRule`` choosing between rules of these kinds but ``PartialProfitTaking``
  (its context column in the data's context), and portfolio limits at hook B
  that are exactly ``MaxDrawdownRule(action="halt")``, ``MaxDailyLossRule``,
  ``MaxPositionSizeRule``, ``MaxPositionsRule`` or ``MaxLeverageRule`` (at most 8192
  symbols);
- any built-in commission model (``NoCommission``, ``PercentageCommission``,
  ``PerShareCommission``, ``PerTradeCommission``, ``TieredCommission``) and slippage model
  (``NoSlippage``, ``FixedPercentageSlippage``, ``FixedBpsSlippage``, ``SpreadAwareSlippage``,
  ``VolumeAwareSlippage``, and ``OrderTypeDependentSlippage`` over those, with at most one
  bar setting per spread-aware and per volume-aware model; see :func:`plan_costs`);
- any fill-semantics setting: ``fill``, ``bar_event_order``, ``stop_activation`` (but
  ``"second_bar"``), ``exit_conflict``, ``cash_check``, ``reentry_cooldown_bars``,
  ``max_volume_participation`` and ``allow_short`` (``TopNStrategy`` is long only: a short
  comes only from a capped sell left working after a level exit closed the position; a run
  whose book then holds a short with position rules hands over to the Python loop), whole or
  fractional shares and ``close_at_end`` either way;
- any market mechanics (:mod:`engine.mechanics`): corporate actions (with or without pay
  dates), delistings and financing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, cast

import numpy as np
import numpy.typing as npt

from engine.chunked import ChunkedMarketData
from engine.compiled.cost_plan import (
    COMPILED_COMMISSIONS,
    COMPILED_SLIPPAGES,
    by_type_reason,
    cost_rows,
    plan_costs,
)
from engine.compiled.topn import (
    N_P,
    P_ALLOW_SHORT,
    P_CLOSE_AT_END,
    P_COOLDOWN,
    P_ENTRY_BAR,
    P_ENTRY_RULES,
    P_EVERY,
    P_FILL_CLOSE,
    P_FRACTIONAL,
    P_HAS_RULES,
    P_LEVELS_SET,
    P_N,
    P_STOP_WINS,
    P_STOPS_FIRST,
    P_SUBMISSION_CASH,
    P_TOL,
    P_VOLUME_CAP,
    P_WEIGHT,
    LimitText,
    TopNPlan,
)
from engine.config import ExecutionConfig
from engine.core.layout import (
    ATR_STOP,
    ATR_TAKE_PROFIT,
    BE_OFFSET,
    BE_TRIGGER,
    BREAKEVEN,
    CODE,
    FACTOR,
    GATE,
    GATE_ON,
    INPUT,
    KIND,
    L_DAILY_LOSS,
    L_DRAWDOWN,
    L_LEVERAGE,
    L_POSITION_SIZE,
    L_POSITIONS,
    LIM_KIND,
    LIM_PARAM,
    N_LIM,
    N_RULE_FIELDS,
    N_RULES_COLS,
    PARTIAL,
    PRIORITY,
    R_RULE0,
    SCALAR,
    STOP_LOSS,
    TAKE_PROFIT,
    TRAILING,
)
from engine.core.rules import MAX_PARTIAL_LEVELS, regime_flags
from engine.costs.commission import (
    TieredCommission,
)
from engine.costs.slippage import (
    OrderTypeDependentSlippage,
    SpreadAwareSlippage,
    VolumeAwareSlippage,
)
from engine.data import BarView, MarketData
from engine.mechanics import CompiledMechanics, compiled_mechanics, compiled_mechanics_reason
from engine.risk.manager import KERNEL_RULES, BasicRulesKernel
from engine.risk.rules.base import RiskRule
from engine.risk.rules.dynamic import (
    BreakEvenRule,
    PartialProfitTaking,
    VolatilityScaledStopLoss,
    VolatilityScaledTakeProfit,
)
from engine.risk.rules.portfolio import (
    MaxDailyLossRule,
    MaxDrawdownRule,
    MaxLeverageRule,
    MaxPositionSizeRule,
    MaxPositionsRule,
)
from engine.risk.rules.regime import RegimeDependentRule
from engine.strategies import TopNStrategy

if TYPE_CHECKING:
    from engine.risk.manager import RiskManager
    from engine.strategy import Strategy

FloatArray = npt.NDArray[np.float64]


def compiled_reason(
    data: MarketData | ChunkedMarketData,
    strategy: Strategy,
    risk: RiskManager | None,
    config: ExecutionConfig,
) -> str | None:
    """Why this run cannot take the compiled driver, or ``None`` when it can (module
    docstring).

    Returns
    -------
    str or None
        A short reason naming the first setting that rules it out.
    """
    if not isinstance(data, MarketData) or data.first_index != 0:
        return "chunked market data"
    if type(strategy) is not TopNStrategy:
        return f"strategy {type(strategy).__name__} is not TopNStrategy"
    if risk is not None and risk.rules:
        reason = _rules_reason(data, risk.rules)
        if reason is not None:
            return reason
    slippage = config.slippage
    if type(slippage) is OrderTypeDependentSlippage:
        reason = by_type_reason(slippage)
        if reason is not None:
            return reason
    elif type(slippage) not in COMPILED_SLIPPAGES:
        return "slippage model setting"
    if type(config.commission) not in COMPILED_COMMISSIONS:
        return "commission model setting"
    if config.stop_activation == "second_bar":  # Backtrader cheat-on-close timing
        return "stop_activation='second_bar' setting"
    # market mechanics (engine/mechanics/)
    return compiled_mechanics_reason(config.corporate_actions, config.delisting)


def _rules_reason(data: MarketData, rules: list[RiskRule]) -> str | None:
    """Why the compiled driver cannot run ``rules`` (:func:`compiled_reason`), or ``None``."""
    for rule in rules:
        kind = type(rule)
        if kind is RegimeDependentRule:
            regime = cast(RegimeDependentRule, rule)
            for member in (regime.above, regime.below):
                if member is not None and type(member) not in _MEMBER_RULES:
                    return f"RegimeDependentRule over {member.name} (no compiled form)"
            if regime.context_column not in data.context:
                return (
                    f"RegimeDependentRule context column {regime.context_column!r} not in the "
                    "market data's context"
                )
        elif kind not in _POSITION_RULES and _limit_row(rule) is None:
            return f"rule {rule.name} has no compiled form"
        if kind is MaxDrawdownRule and cast(MaxDrawdownRule, rule).reset_mode != "never":
            return f"rule {rule.name} with reset={cast(MaxDrawdownRule, rule).reset_mode!r}"
        levels = getattr(rule, "levels", ()) if kind is PartialProfitTaking else ()
        if len(levels) > MAX_PARTIAL_LEVELS:
            return f"PartialProfitTaking with more than {MAX_PARTIAL_LEVELS} levels"
    if sum(type(r) is PartialProfitTaking for r in rules) > 1:
        return "more than one PartialProfitTaking rule"
    for rule in _flat(rules):
        if not getattr(rule, "default_reference", True):  # DynamicTrailingStop trail_on...
            return f"rule {rule.name} with a non-default trailing reference price"
        if isinstance(rule, _ATR_RULES) and rule.atr_column not in data.columns:
            return f"{rule.name} ATR column {rule.atr_column!r} not in the data"
    if any(type(r) is MaxLeverageRule for r in rules) and data.n_symbols > 8192:
        return "MaxLeverageRule on more than 8192 symbols"
    return None


def _flat(rules: list[RiskRule]) -> list[RiskRule]:
    """``rules`` with each ``RegimeDependentRule`` replaced by its members."""
    out: list[RiskRule] = []
    for rule in rules:
        if isinstance(rule, RegimeDependentRule):
            out.extend(m for m in (rule.above, rule.below) if m is not None)
        else:
            out.append(rule)
    return out


def _capacity(n_t: int, n: int, n_sym: int) -> int:
    """First size of the order buffers (doubled while the kernel reports them full)."""
    return max(1024, n_t * (2 * n + 4) + 4 * n_sym + n + 8)


_MEMBER_RULES = (
    *KERNEL_RULES,
    BreakEvenRule,
    VolatilityScaledStopLoss,
    VolatilityScaledTakeProfit,
)
"""The rule types a compiled ``RegimeDependentRule`` may choose between."""
_ATR_RULES = (VolatilityScaledStopLoss, VolatilityScaledTakeProfit)
_POSITION_RULES = (*_MEMBER_RULES, PartialProfitTaking, RegimeDependentRule)


class _RuleTable(NamedTuple):
    """The compiled driver's position rules (:func:`_rule_table`)."""

    table: FloatArray
    """float64, shape (m, N_RULES_COLS) (:mod:`engine.core.layout`)."""
    names: list[str]
    """Rule names by code (code 0: ``""``)."""
    partial: FloatArray
    """The ``PartialProfitTaking`` levels, rows ``(return_pct, fraction)``."""
    inputs: FloatArray
    """float64, shape (k, n_rows): the rows' ``INPUT`` / ``GATE`` values per data row."""
    sets_levels: bool
    """Some rule sets a stop or target level."""


def _rule_table(data: MarketData, rules: list[RiskRule]) -> _RuleTable:
    """The run's position rules as the compiled driver's table: the vectorised rules first,
    then the per-position ones (``PartialProfitTaking``, the members of each
    ``RegimeDependentRule``, gated by its regime flag), each group in the manager's order,
    as the Python driver merges them (:meth:`engine.RiskManager.evaluate_positions`)."""
    chosen = [r for r in rules if type(r) in _POSITION_RULES]
    vector = [(r, -1, 0.0) for r in chosen if r.vectorized]
    scalar: list[tuple[RiskRule, int, float]] = []
    sources: list[tuple[str, str, float]] = []  # the rows of the inputs (_rule_inputs)
    for rule in chosen:
        if isinstance(rule, RegimeDependentRule):
            sources.append(("regime", rule.context_column, rule.threshold))
            for member, side in ((rule.above, 1.0), (rule.below, 0.0)):
                if member is not None:
                    scalar.append((member, len(sources) - 1, side))
        elif not rule.vectorized:
            scalar.append((rule, -1, 0.0))
    rows = [(*entry, False) for entry in vector] + [(*entry, True) for entry in scalar]
    names = [""]
    table = np.zeros((len(rows), N_RULES_COLS))
    table[:, INPUT] = -1.0
    partial = np.zeros((0, 2))
    for r, (rule, gate_row, side, is_scalar) in enumerate(rows):
        row = table[r]
        if type(rule) in KERNEL_RULES:
            row[:N_RULE_FIELDS] = BasicRulesKernel([rule]).rules[0]
        elif isinstance(rule, BreakEvenRule):
            row[KIND] = BREAKEVEN
            row[BE_TRIGGER] = rule.trigger_pct
            row[BE_OFFSET] = rule.offset_pct
        elif isinstance(rule, _ATR_RULES):
            row[KIND] = ATR_STOP if isinstance(rule, VolatilityScaledStopLoss) else ATR_TAKE_PROFIT
            row[FACTOR] = rule.atr_multiplier
            source = ("atr", rule.atr_column, 0.0)
            if source not in sources:
                sources.append(source)
            row[INPUT] = sources.index(source)
        elif isinstance(rule, PartialProfitTaking):
            row[KIND] = PARTIAL
            partial = rule.level_table
        row[CODE] = len(names)
        row[PRIORITY] = rule.priority
        row[GATE] = gate_row
        row[GATE_ON] = side
        row[SCALAR] = float(is_scalar)
        names.append(rule.name)
    level_kinds = (STOP_LOSS, TAKE_PROFIT, TRAILING, BREAKEVEN, ATR_STOP, ATR_TAKE_PROFIT)
    sets_levels = bool(np.isin(table[:, KIND], level_kinds).any())
    return _RuleTable(table, names, partial, _rule_inputs(data, sources), sets_levels)


def _rule_inputs(data: MarketData, sources: list[tuple[str, str, float]]) -> FloatArray:
    """The per-row inputs of the rule table (``_RuleTable.inputs``), one row per source: an
    ATR column ``("atr", name, 0.0)`` as it is, a regime ``("regime", context column,
    threshold)`` as flags (1.0 where the column's value at the row's timestamp is above the
    threshold, :func:`engine.core.rules.regime_flags`); computed once per data and sources
    (cached on ``data``)."""
    if not sources:
        return np.zeros((0, 0))

    def build(data: MarketData) -> FloatArray:
        out = np.empty((len(sources), data.n_rows))
        counts = np.diff(data.offsets)
        for k, (kind, name, threshold) in enumerate(sources):
            if kind == "atr":
                out[k] = data.columns[name]
            else:
                per_bar = regime_flags(
                    np.ascontiguousarray(data.context[name], np.float64), threshold
                )
                out[k] = np.repeat(per_bar, counts)
        return out

    inputs: FloatArray = BarView(data, 0).derived(f"compiled_rule_inputs:{sources!r}", build)
    return inputs


def _limit_row(rule: RiskRule) -> tuple[int, float] | None:
    """``(L_* code, parameter)`` of a portfolio limit the compiled driver runs at hook B;
    ``None`` for any other rule."""
    kind = type(rule)
    if kind is MaxLeverageRule:
        return L_LEVERAGE, cast(MaxLeverageRule, rule).max_leverage
    if kind is MaxDrawdownRule:
        drawdown = cast(MaxDrawdownRule, rule)
        return (L_DRAWDOWN, drawdown.max_drawdown) if drawdown.action == "halt" else None
    if kind is MaxDailyLossRule:
        return L_DAILY_LOSS, cast(MaxDailyLossRule, rule).max_loss_pct
    if kind is MaxPositionSizeRule:
        return L_POSITION_SIZE, cast(MaxPositionSizeRule, rule).max_pct
    if kind is MaxPositionsRule:
        return L_POSITIONS, float(cast(MaxPositionsRule, rule).max_positions)
    return None


def _plan_mechanics(
    data: MarketData, config: ExecutionConfig, rule_names: list[str]
) -> CompiledMechanics | None:
    """The market mechanics of the run (None without any); with ``delisting`` the reason
    ``"delisted"`` of the closing orders is added to ``rule_names`` (codes after the rules')."""
    if not config.has_mechanics:
        return None
    reason = -1
    if config.delisting is not None:
        reason = R_RULE0 + len(rule_names)
        rule_names.append("delisted")
    return compiled_mechanics(
        data, config.corporate_actions, config.financing, config.delisting, reason
    )


def plan_topn(
    data: MarketData, strategy: TopNStrategy, risk: RiskManager | None, config: ExecutionConfig
) -> TopNPlan:
    """The inputs of the compiled run of ``strategy`` (a run :func:`compiled_reason` admits).

    Raises
    ------
    ValueError
        If the strategy's signal is not a signal/indicator column of ``data``.
    """
    if strategy.signal not in data.columns:
        raise ValueError(
            f"TopNStrategy signal {strategy.signal!r} is not a signal/indicator column of "
            f"the market data (have {sorted(data.columns)})"
        )
    rule_table = _rule_table(data, list(risk.rules) if risk is not None else [])
    rules = rule_table.table
    limit_rules = list(risk.order_rules) if risk is not None else []
    limits = np.zeros((len(limit_rules), N_LIM))
    for r, rule in enumerate(limit_rules):
        row = _limit_row(rule)
        if row is None:
            raise ValueError(f"{rule!r} is not a compiled limit (see compiled_reason)")
        limits[r, LIM_KIND], limits[r, LIM_PARAM] = row
    weight = strategy.weight if strategy.weight is not None else 1.0 / strategy.n
    params = np.zeros(N_P)
    params[P_N] = strategy.n
    params[P_EVERY] = strategy.rebalance_every
    params[P_WEIGHT] = weight
    params[P_TOL] = config.cash_tolerance
    params[P_FRACTIONAL] = float(config.fractional_shares)
    params[P_STOPS_FIRST] = float(config.bar_event_order == "stops_first")
    params[P_CLOSE_AT_END] = float(config.close_at_end)
    params[P_ENTRY_RULES] = float(risk is not None and bool(risk.entry_rules))
    params[P_LEVELS_SET] = float(rule_table.sets_levels)
    params[P_HAS_RULES] = float(rules.shape[0] > 0)
    cap = config.max_volume_participation
    params[P_VOLUME_CAP] = 0.0 if cap is None else cap
    params[P_ALLOW_SHORT] = float(config.allow_short)
    params[P_COOLDOWN] = config.reentry_cooldown_bars
    params[P_STOP_WINS] = float(config.exit_conflict == "stop_wins")
    params[P_ENTRY_BAR] = float(config.stop_activation == "entry_bar")
    params[P_SUBMISSION_CASH] = float(config.cash_check == "submission")
    params[P_FILL_CLOSE] = float(config.fill == "close")
    mechanics = _plan_mechanics(data, config, rule_table.names)  # may add a reason name
    return TopNPlan(
        signal=np.ascontiguousarray(data.columns[strategy.signal], dtype=np.float64),
        inputs=rule_table.inputs,
        params=params,
        rules=rules,
        partial=rule_table.partial,
        limits=limits,
        rule_names=rule_table.names,
        limit_rules=cast(list[LimitText], limit_rules),
        capacity=_capacity(data.n_timestamps, strategy.n, data.n_symbols),
        initial_cash=config.initial_cash,
        costs=plan_costs(data, config.slippage, config.commission),
        mechanics=mechanics,
    )


def variants_reason(
    data: MarketData | ChunkedMarketData,
    runs: Sequence[tuple[Strategy, RiskManager | None, ExecutionConfig]],
) -> str | None:
    """Why these runs on ``data`` cannot share one pass of the variant driver
    (:mod:`engine.compiled.variants`), or ``None`` when they can.

    They can when each run qualifies alone (:func:`compiled_reason`), none has corporate
    actions or financing, and they differ only in what the driver keeps per variant: the
    strategy's ``n``, ``rebalance_every`` and ``weight``, the parameters of the same rules and
    limits in the same order (e.g. ``stop_pct``, ``max_bars``; a ``PartialProfitTaking`` with
    the same number of levels), the commission model and its rates (a ``TieredCommission``
    with the same number of tiers, or none), the slippage model's parameters (one model type;
    ``SpreadAwareSlippage`` / ``VolumeAwareSlippage`` reading the same per-row series: the
    same ``window``, ``min_periods``, ``clamp`` / ``volatility_column``, ``volume``,
    ``volume_window``), the initial
    cash, and any other execution setting the compiled driver reads per run
    (``fractional_shares``, ``close_at_end``, ``bar_event_order``, ``cash_tolerance``). They
    rank the same signal column.

    Returns
    -------
    str or None
        A short reason naming the first run (by position) and setting that rules it out.
    """
    if not runs:
        return "no runs"
    first_key: tuple[object, ...] | None = None
    for k, (strategy, risk, config) in enumerate(runs):
        reason = compiled_reason(data, strategy, risk, config)
        if reason is not None:
            return f"run {k}: {reason}"
        if config.has_mechanics:
            return f"run {k}: corporate actions or financing"
        top = cast(TopNStrategy, strategy)
        rules = list(risk.rules) if risk is not None else []
        # the rule table's shape (rules of a RegimeDependentRule included) and the per-row
        # inputs its rules read (ATR columns, regime flags: one array per set of sources,
        # cached on the data), which the variants share
        table = _rule_table(cast(MarketData, data), rules)
        inputs = id(table.inputs) if table.inputs.size else table.inputs.shape
        slippage = config.slippage
        # the per-row series a spread- or volume-aware model reads (one array per setting,
        # cached on the data): equal settings share it, parameters like fallback_pct may vary
        rows = None
        if isinstance(slippage, SpreadAwareSlippage | VolumeAwareSlippage):
            rows = id(cost_rows(cast(MarketData, data), slippage))
        commission = config.commission
        tiers = len(commission.tiers) if isinstance(commission, TieredCommission) else -1
        key = (
            top.signal,
            tuple(type(r) for r in rules),
            (table.table.shape, table.partial.shape),
            inputs,
            type(slippage),
            rows,
            tiers,
        )
        if first_key is None:
            first_key = key
        elif key != first_key:
            names = (
                "signal", "rules", "rule tables", "rule inputs (ATR columns, regimes)",
                "slippage model", "slippage settings", "commission tiers",
            )  # fmt: skip
            what = next(n for n, a, b in zip(names, key, first_key, strict=True) if a != b)
            return f"run {k}: its {what} differ from run 0's"
    return None
