"""The parity scenario catalogue (issue 31): one execution feature per scenario, on real data.

Every signal scenario trades the same per-symbol crossover signals on real S&P 500 bars
(``sp500_5yr_daily_ohlcv.parquet``): the ``fast``-bar simple moving average of the close
crossing above the ``slow``-bar one is a long entry (short exit), crossing below a long exit
(short entry), both known at the bar's close. Each symbol trades a fixed number of shares,
``floor(position_value / first close)``, so the three frameworks size every order identically
without reading equity. A scenario then switches on one feature (a stop-loss, a commission
model, a limit entry, ...) and says which framework can express it and which setting explains
a remaining gap.

Drivers, each written against its own framework's API:

- ours: :class:`ScenarioStrategy` (``engine.Strategy``) + ``engine.RiskManager`` rules under a
  named execution preset (``ExecutionConfig.preset``);
- Backtrader: ``parity_backtrader.run_backtrader_scenario`` (a ``bt.Strategy`` with native
  ``Stop`` / ``Limit`` / ``StopTrail`` / bracket orders, ``BackBroker`` slippage, commission and
  volume filler);
- VectorBT: ``parity_vectorbt.run_vectorbt_scenario`` (``Portfolio.from_signals`` /
  ``from_orders``: ``sl_stop``, ``tp_stop``, ``sl_trail``, ``fees``, ``fixed_fees``,
  ``slippage``).

The top-N scenario (``topn_stop``) reuses the issue-7 drivers (``backtrader_run``,
``vectorbt_run``); its VectorBT run is written as ``from_order_func`` callbacks that restate our
semantics, so it is marked ``driver="callbacks"`` in the matrix.

The concepts, one module each: a scenario and our engine settings for it
(:mod:`~ml4t_pipeline.lib.crossval.scenario_spec`), its inputs
(:mod:`~ml4t_pipeline.lib.crossval.scenario_inputs`), its run through our engine
(:mod:`~ml4t_pipeline.lib.crossval.scenario_engine`); this module holds the catalogue and which
experiment features it covers, and re-exports the others' public names.
"""

from __future__ import annotations

from typing import Any

from ml4t_pipeline.lib.crossval.scenario_engine import run_ml4t_scenario
from ml4t_pipeline.lib.crossval.scenario_inputs import (
    SMALL_PANEL_SYMBOLS,
    ScenarioData,
    load_prices,
    panel_symbols,
    prepare_inputs,
    scenario_data,
)
from ml4t_pipeline.lib.crossval.scenario_spec import FRAMEWORKS, FixedAmountSlippage, Scenario

__all__ = [
    "FEATURE_SCENARIOS",
    "FRAMEWORKS",
    "SMALL_PANEL_SYMBOLS",
    "FixedAmountSlippage",
    "Scenario",
    "ScenarioData",
    "catalogue",
    "experiment_features",
    "feature_coverage",
    "get_scenario",
    "load_prices",
    "panel_symbols",
    "prepare_inputs",
    "run_ml4t_scenario",
    "scenario_data",
]

_NO_LIMIT_VBT = (
    "open-source VectorBT 1.2.0 has no limit or stop entry orders (from_signals fills "
    "signals at `price`; there is no pending order book)"
)

_ONE_SL_SLOT = (
    "from_signals has one stop-loss slot: sl_stop is either fixed or trailing (sl_trail), "
    "so a fixed stop and a trailing stop cannot both be armed"
)

_TRAIL_BOTH: dict[str, dict[str, Any]] = {
    "backtrader": {"trail_on": "close"},
    "vectorbt": {"include_entry_bar": False},
}
"""Our trailing stop's reference price per framework: Backtrader's StopTrail ratchets on each
bar's close from the close of the fill bar (``trail_on="close"``); VectorBT's ``sl_trail``
high-water mark starts at the entry fill and takes the highs of the bars after the entry bar
(``include_entry_bar=False``)."""

_TRAIL_BT_ONLY = {"backtrader": _TRAIL_BOTH["backtrader"]}

_TRAIL_BT = (
    "trailing reference price: Backtrader's StopTrail ratchets on each bar's close "
    "(Order.trailadjust(close)) from the close of the fill bar; ours by default on the highs "
    "(lows for shorts) from the entry fill: DynamicTrailingStop(trail_on='close')"
)

_TRAIL_VBT = (
    "trailing high-water mark: from_signals starts it at the entry fill and takes the highs "
    "of the bars after the entry bar only; ours by default includes the entry bar's high "
    "(after the open fill): DynamicTrailingStop(include_entry_bar=False)"
)

_TRAIL_KNOBS = {"backtrader": _TRAIL_BT, "vectorbt": _TRAIL_VBT}

_OCO_BT = (
    "OCO sibling order: Backtrader matches the orders of one OCO group in submission order and "
    "fills the first that triggers, so on a bar that reaches both the fixed Stop (submitted "
    "first) and the StopTrail it fills the fixed stop at its own lower level, even when the "
    "trailing level was crossed first or the bar opened below it; ours keeps one level per "
    "position, the tighter of the two. Not an engine setting (it is the order of Backtrader's "
    "pending queue, not a price rule): the Backtrader driver's drop_looser_stop=True (cancel "
    "the fixed stop once the trailing level passes it) closes the gap"
)

_STOP_WINS = {"vectorbt": {"exit_conflict": "stop_wins"}}
_RANKED_VBT = (
    "from_signals cannot rank symbols and size each entry from the equity at the decision "
    "close; the issue-7 from_order_func callbacks (topn_stop) restate our rules and carry "
    "only a fixed stop"
)

_COC_BT = (
    "cheat-on-close timing: Backtrader (coc=True) executes the close fill in the next bar's "
    "broker cycle, so the stop submitted on its notification is first checked two bars after "
    "the entry close; ours by default (fill='close', stop_activation='next_bar') on the next "
    "bar: ExecutionConfig(stop_activation='second_bar')"
)
_COC_SETTINGS = {"backtrader": {"stop_activation": "second_bar"}, **_STOP_WINS}

_BRACKET_VBT = (
    "not expressible in VectorBT: when the entry opens through the bracket's absolute stop, "
    "the level lies above the entry fill, and from_signals takes sl_stop as a fraction >= 0 "
    "below it (a negative stop raises 'Stop value must be 0 or greater'); the driver clips it "
    "to the fill. Ours and Backtrader keep the absolute level. No engine setting: the level "
    "is the user's"
)

_TARGET_ROUNDING = (
    "target rounding: our default order_target_percent floors the target position (a sell "
    "rounds up); Backtrader (getsize of the value difference) and VectorBT (size_granularity) "
    "truncate the order size: ExecutionConfig(target_rounding='order')"
)
_ORDER_ROUNDING = {"target_rounding": "order"}


def catalogue() -> list[Scenario]:
    """Every scenario of the parity matrix, in table order.

    Returns
    -------
    list of Scenario
        At least 16 scenarios; names are unique.
    """
    sc = [
        Scenario("long_only", "Long only, market orders at the next open"),
        Scenario(
            "long_short",
            "Long/short: a crossover reverses the position",
            direction="both",
        ),
        Scenario("short_only", "Short only", direction="short"),
        Scenario(
            "stop_loss",
            "Long, 4 % stop-loss from the entry fill",
            stop_loss=0.04,
            engine_overrides=_STOP_WINS,
            knobs={"vectorbt": "exit_conflict=stop_wins (from_signals: stop before signal)"},
        ),
        Scenario(
            "take_profit",
            "Long, 6 % take-profit",
            take_profit=0.06,
            engine_overrides=_STOP_WINS,
        ),
        Scenario(
            "stop_loss_take_profit",
            "Long, 4 % stop-loss and 6 % take-profit (stop wins a bar touching both)",
            stop_loss=0.04,
            take_profit=0.06,
            engine_overrides=_STOP_WINS,
        ),
        Scenario(
            "commission_percent",
            "Long, 0.1 % commission on traded value",
            commission=("percent", 0.001),
        ),
        Scenario(
            "commission_per_share",
            "Long, $0.005 per share commission",
            commission=("per_share", 0.005),
        ),
        Scenario(
            "slippage_percent",
            "Long, 0.05 % slippage against the trader",
            slippage=("percent", 0.0005),
        ),
        Scenario(
            "slippage_fixed",
            "Long, $0.02 per share slippage against the trader",
            slippage=("fixed", 0.02),
        ),
        Scenario(
            "trailing_stop",
            "Long, 5 % trailing stop",
            trailing=0.05,
            engine_overrides=_STOP_WINS,
            trail_settings=_TRAIL_BOTH,
            knobs=_TRAIL_KNOBS,
        ),
        Scenario(
            "short_trailing_stop",
            "Short, 5 % trailing stop",
            direction="short",
            trailing=0.05,
            engine_overrides=_STOP_WINS,
            trail_settings=_TRAIL_BOTH,
            knobs=_TRAIL_KNOBS,
        ),
        Scenario(
            "trailing_take_profit",
            "Long, 5 % trailing stop and 8 % take-profit",
            trailing=0.05,
            take_profit=0.08,
            engine_overrides=_STOP_WINS,
            trail_settings=_TRAIL_BOTH,
            knobs=_TRAIL_KNOBS,
        ),
        Scenario(
            "trailing_stop_loss",
            "Long, 6 % trailing stop and 3 % fixed stop-loss",
            trailing=0.06,
            stop_loss=0.03,
            not_expressed={"vectorbt": _ONE_SL_SLOT},
            trail_settings=_TRAIL_BT_ONLY,
            knobs={"backtrader": _OCO_BT},
        ),
        Scenario(
            "three_rules",
            "Long, 3 % stop-loss, 6 % trailing stop and 8 % take-profit",
            stop_loss=0.03,
            trailing=0.06,
            take_profit=0.08,
            not_expressed={"vectorbt": _ONE_SL_SLOT},
            trail_settings=_TRAIL_BT_ONLY,
            knobs={"backtrader": _OCO_BT},
        ),
        Scenario(
            "bracket",
            "Long bracket: market entry with a 4 % stop and an 8 % target child (no signal exit)",
            bracket=(0.04, 0.08),
            engine_overrides=_STOP_WINS,
            knobs={"vectorbt": _BRACKET_VBT},
        ),
        Scenario(
            "limit_entry",
            "Long, day limit entry 1 % below the decision close",
            entry_order="limit",
            entry_offset=0.01,
            not_expressed={"vectorbt": _NO_LIMIT_VBT},
        ),
        Scenario(
            "stop_entry",
            "Long, day stop entry 1 % above the decision close",
            entry_order="stop",
            entry_offset=0.01,
            not_expressed={"vectorbt": _NO_LIMIT_VBT},
        ),
        Scenario(
            "volume_cap",
            "Long, each order fills at most 0.002 % of the bar's volume per bar",
            volume_cap=2e-5,
            position_value=50_000.0,
            initial_cash=5_000_000.0,
            not_expressed={
                "vectorbt": "from_signals/from_orders have no volume participation limit "
                "(an order fills whole or is refused)"
            },
        ),
        Scenario(
            "time_exit",
            "Long, exit after 10 bars held (or on the signal)",
            time_exit=10,
        ),
        Scenario(
            "same_close",
            "Long with a 4 % stop-loss, market orders at the decision bar's close",
            fill="close",
            stop_loss=0.04,
            engine_overrides=_COC_SETTINGS,
            knobs={"backtrader": _COC_BT},
        ),
        Scenario(
            "target_weights",
            "Rebalance to 7 % of equity in each symbol every 21 bars",
            kind="target_weights",
            target_weight=0.07,
            commission=("percent", 0.001),
            engine_overrides={"backtrader": _ORDER_ROUNDING, "vectorbt": _ORDER_ROUNDING},
            knobs={"backtrader": _TARGET_ROUNDING, "vectorbt": _TARGET_ROUNDING},
        ),
        Scenario(
            "cash_constrained",
            "Long with $40,000 cash for 12 symbols of $10,000: buys refused for lack of cash",
            initial_cash=40_000.0,
            commission=("percent", 0.001),
        ),
        Scenario(
            "stress_1000_bars",
            "Stress: long/short, stop-loss, take-profit, commission, 1,000 bars",
            direction="both",
            stop_loss=0.04,
            take_profit=0.08,
            commission=("percent", 0.001),
            n_bars=1000,
            engine_overrides=_STOP_WINS,
        ),
        Scenario(
            "topn_take_profit",
            "Top-3 by 20-day return, 30 % of equity each, 6 % take-profit, 0.1 % commission",
            kind="ranked",
            target_weight=0.3,
            take_profit=0.06,
            commission=("percent", 0.001),
            not_expressed={"vectorbt": _RANKED_VBT},
        ),
        Scenario(
            "topn_stop_loss_take_profit",
            "Top-3 by 20-day return, 4 % stop-loss and 6 % take-profit",
            kind="ranked",
            target_weight=0.3,
            stop_loss=0.04,
            take_profit=0.06,
            commission=("percent", 0.001),
            not_expressed={"vectorbt": _RANKED_VBT},
        ),
        Scenario(
            "topn_trailing_stop",
            "Top-3 by 20-day return, 5 % trailing stop",
            kind="ranked",
            target_weight=0.3,
            trailing=0.05,
            commission=("percent", 0.001),
            not_expressed={"vectorbt": _RANKED_VBT},
            trail_settings=_TRAIL_BT_ONLY,
            knobs={"backtrader": _TRAIL_BT},
        ),
        Scenario(
            "topn_stop",
            "Top-25 by 20-day return, 5 % stop, 0.1 % commission (issue 7 reference)",
            kind="topn",
        ),
    ]
    names = [s.name for s in sc]
    if len(set(names)) != len(names):
        raise AssertionError("duplicate scenario names")
    return sc


def get_scenario(name: str) -> Scenario:
    """The catalogue scenario called ``name``.

    Raises
    ------
    KeyError
        Unknown name (the known names are listed).
    """
    for s in catalogue():
        if s.name == name:
            return s
    raise KeyError(f"unknown scenario {name!r}; known: {[s.name for s in catalogue()]}")


FEATURE_SCENARIOS: dict[str, str] = {
    "topn": "topn_stop",
    "stop_loss": "stop_loss",
    "take_profit": "take_profit",
    "trailing_stop": "trailing_stop",
    "time_exit": "time_exit",
    "commission_percent": "commission_percent",
    "commission_per_share": "commission_per_share",
    "slippage_percent": "slippage_percent",
    "slippage_fixed": "slippage_fixed",
    "short": "long_short",
    "volume_cap": "volume_cap",
    "same_close": "same_close",
}
"""An experiment feature → the catalogue scenario that checks its semantics."""

_RULE_FEATURES = {
    "PriceBasedStopLoss": "stop_loss",
    "PriceBasedTakeProfit": "take_profit",
    "DynamicTrailingStop": "trailing_stop",
    "TimeBasedExit": "time_exit",
}

_COMMISSION_FEATURES = {
    "Percentage": "commission_percent",
    "PercentageCommission": "commission_percent",
    "PerShare": "commission_per_share",
    "PerShareCommission": "commission_per_share",
}

_SLIPPAGE_FEATURES = {
    "FixedPercentage": "slippage_percent",
    "FixedPercentageSlippage": "slippage_percent",
    "FixedBps": "slippage_percent",
    "FixedBpsSlippage": "slippage_percent",
}


def experiment_features(
    strategy: str,
    rules: list[str],
    commission: str | None,
    slippage: str | None,
    fill: str,
    allow_short: bool,
    volume_cap: bool,
) -> list[str]:
    """The parity features an experiment uses (keys of :data:`FEATURE_SCENARIOS`), or
    ``"unknown:<name>"`` for a part no catalogue scenario covers.

    Parameters
    ----------
    strategy : str
        Strategy type (``"TopN"``, ...).
    rules : list of str
        Risk rule types, in config order.
    commission, slippage : str, optional
        Model type names (``None``, ``"None"``, ``"NoCommission"``, ``"NoSlippage"``: none).
    fill : {"next_open", "close"}
    allow_short, volume_cap : bool
    """
    out: list[str] = ["topn" if strategy in ("TopN", "TopNStrategy") else f"unknown:{strategy}"]
    for rule in rules:
        out.append(_RULE_FEATURES.get(rule, f"unknown:{rule}"))
    if commission not in (None, "None", "NoCommission"):
        out.append(_COMMISSION_FEATURES.get(str(commission), f"unknown:{commission}"))
    if slippage not in (None, "None", "NoSlippage"):
        out.append(_SLIPPAGE_FEATURES.get(str(slippage), f"unknown:{slippage}"))
    if fill == "close":
        out.append("same_close")
    if allow_short:
        out.append("short")
    if volume_cap:
        out.append("volume_cap")
    return list(dict.fromkeys(out))


def feature_coverage(features: list[str]) -> list[dict[str, Any]]:
    """Per feature and framework: the catalogue scenario, whether the framework's own API
    expresses it, and the setting behind a known gap.

    Returns
    -------
    list of dict
        Keys ``feature``, ``scenario`` (None for an unknown feature), ``framework``,
        ``expressed`` (bool), ``note`` (the not-expressed reason or the gap's setting, else
        ``""``).
    """
    rows: list[dict[str, Any]] = []
    for feature in features:
        name = FEATURE_SCENARIOS.get(feature)
        for framework in FRAMEWORKS:
            if name is None:
                rows.append(
                    {
                        "feature": feature,
                        "scenario": None,
                        "framework": framework,
                        "expressed": False,
                        "note": "no catalogue scenario",
                    }
                )
                continue
            s = get_scenario(name)
            reason = s.not_expressed.get(framework)
            rows.append(
                {
                    "feature": feature,
                    "scenario": name,
                    "framework": framework,
                    "expressed": reason is None,
                    "note": reason or s.knobs.get(framework, ""),
                }
            )
    return rows
