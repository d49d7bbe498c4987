"""The position-rule decisions of engine.core.rules: hand-checked cases in both forms (plain
Python, as the Python driver calls them, and compiled, as the compiled driver does)."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import BreakEvenRule
from engine.core import rules

FORMS = pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "plain"])


def _breakeven(compiled: bool) -> Callable[..., float]:
    return rules.breakeven_stop_nb if compiled else rules.breakeven_stop


def _partial(compiled: bool) -> Callable[..., Any]:
    return rules.partial_take_nb if compiled else rules.partial_take


@FORMS
@pytest.mark.parametrize(
    ("direction", "best", "trigger", "offset", "expected"),
    [
        # long: 125 / 100 - 1 = 0.25 reaches the trigger exactly -> stop at the entry
        (1.0, 125.0, 0.25, 0.0, 100.0),
        # long: excursion 0.5 > 0.25, offset 0.25 -> 100 * 1.25
        (1.0, 150.0, 0.25, 0.25, 125.0),
        # long: excursion 0.125 < 0.25 -> not triggered
        (1.0, 112.5, 0.25, 0.0, math.nan),
        # short: best (lowest low) 75 -> excursion 0.25, offset 0.125 -> 100 * 0.875
        (-1.0, 75.0, 0.25, 0.125, 87.5),
        # short whose price only rose: excursion clipped to 0 -> not triggered
        (-1.0, 110.0, 0.25, 0.0, math.nan),
        # no best price yet -> not triggered
        (1.0, math.nan, 0.25, 0.0, math.nan),
    ],
)
def test_breakeven_stop_hand_checked(
    compiled: bool, direction: float, best: float, trigger: float, offset: float, expected: float
) -> None:
    level = _breakeven(compiled)(direction, 100.0, best, trigger, offset)
    if math.isnan(expected):
        assert math.isnan(level)
    else:
        assert level == expected


LEVELS = np.array([[0.25, 0.25], [0.5, 0.5]])


@FORMS
@pytest.mark.parametrize(
    ("done", "direction", "close", "held", "expected"),
    [
        # long, return 0.25: the first level, 0.25 of the 80 original shares
        (0, 1.0, 125.0, 80.0, (20.0, 0b01)),
        # long, return 0.5 with the first level used: the second, 0.5 x 80
        (0b01, 1.0, 150.0, 60.0, (40.0, 0b11)),
        # both levels on one bar add up: 20 + 40
        (0, 1.0, 150.0, 80.0, (60.0, 0b11)),
        # both used: nothing more
        (0b11, 1.0, 200.0, 20.0, (0.0, 0b11)),
        # return below the first level: nothing
        (0, 1.0, 120.0, 80.0, (0.0, 0)),
        # capped at the shares held: 60 wanted, 30 held
        (0, 1.0, 150.0, 30.0, (30.0, 0b11)),
        # short: close 75 is a return of 0.25
        (0, -1.0, 75.0, 80.0, (20.0, 0b01)),
        # short whose price rose: a negative return, nothing
        (0, -1.0, 125.0, 80.0, (0.0, 0)),
    ],
)
def test_partial_take_hand_checked(
    compiled: bool,
    done: int,
    direction: float,
    close: float,
    held: float,
    expected: tuple[float, int],
) -> None:
    size, new_done = _partial(compiled)(LEVELS, done, direction, 100.0, close, 80.0, held)
    assert (size, new_done) == expected


finite = st.floats(0.01, 1e4, allow_nan=False, allow_infinity=False)
fraction = st.floats(0.001, 0.999)


@settings(max_examples=200, deadline=None)
@given(
    long=st.booleans(),
    entry=finite,
    best=finite,
    trigger=fraction,
    offset=st.floats(0.0, 0.999),
)
def test_breakeven_forms_and_batch_agree_bit_for_bit(
    long: bool, entry: float, best: float, trigger: float, offset: float
) -> None:
    direction = 1.0 if long else -1.0
    plain = rules.breakeven_stop(direction, entry, best, trigger, offset)
    compiled = rules.breakeven_stop_nb(direction, entry, best, trigger, offset)
    batch = rules.breakeven_stops(
        np.array([direction]), np.array([entry]), np.array([best]), trigger, offset
    )[0]
    assert np.array_equal([plain, compiled, batch], [plain] * 3, equal_nan=True)


def test_breakeven_rule_per_position_and_batch_paths_decide_alike() -> None:
    """Entry 184.10, best 202.51, trigger 0.1: ``202.51 / 184.10 - 1`` rounds to 0.1 or above
    (the batch path moved the stop) while the per-position path's former formula, the MFE in
    currency over the entry notional, rounded below 0.1 (it held). Both now call
    :func:`engine.core.rules.breakeven_stop`."""
    rule = BreakEvenRule(trigger_pct=0.1, offset_pct=0.0)
    position = SimpleNamespace(
        is_long=True, direction=1.0, entry_price=184.1, max_price=202.51, min_price=180.0
    )
    decision = rule.evaluate(position)  # type: ignore[arg-type]
    batch = SimpleNamespace(
        is_long=np.array([True]),
        direction=np.array([1.0]),
        entry_price=np.array([184.1]),
        max_price=np.array([202.51]),
        min_price=np.array([180.0]),
    )
    batch_decision = rule.evaluate_batch(batch)  # type: ignore[arg-type]
    assert batch_decision is not None and batch_decision.stop_loss is not None
    assert decision.update_stop_loss == 184.1 == batch_decision.stop_loss[0]


def test_partial_profit_taking_plain_form_takes_more_than_62_levels() -> None:
    """The compiled form keeps used levels in an int64 (at most 62, the plan checks it); the
    rule's plain form keeps them in a Python int: a 70th level still fires once."""
    n = rules.MAX_PARTIAL_LEVELS + 8
    table = np.array([(0.01 * (k + 1), 1.0 / n) for k in range(n)])
    size, done = rules.partial_take(table, 0, 1.0, 100.0, 200.0, 700.0, 700.0)
    assert done == (1 << n) - 1 and size == pytest.approx(700.0)
    again, _ = rules.partial_take(table, done, 1.0, 100.0, 200.0, 700.0, 700.0)
    assert again == 0.0


@FORMS
@pytest.mark.parametrize(
    ("direction", "side", "atr", "expected"),
    [
        # long stop-loss 2 ATRs below the entry: 100 - 2 x 2.5
        (1.0, -1.0, 2.5, 95.0),
        # short stop-loss above: 100 + 2 x 2.5
        (-1.0, -1.0, 2.5, 105.0),
        # long take-profit above
        (1.0, 1.0, 2.5, 105.0),
        # no usable ATR (first bars of a symbol, a bad value): no level
        (1.0, -1.0, math.nan, math.nan),
        (1.0, -1.0, 0.0, math.nan),
        (1.0, -1.0, -1.0, math.nan),
        (1.0, -1.0, math.inf, math.nan),
    ],
)
def test_atr_level_hand_checked(
    compiled: bool, direction: float, side: float, atr: float, expected: float
) -> None:
    form = rules.atr_level_nb if compiled else rules.atr_level
    level = form(100.0, direction, side, 2.0, atr)
    assert level == expected or (math.isnan(level) and math.isnan(expected))


def test_atr_levels_batch_equals_scalar_form() -> None:
    entry = np.array([100.0, 50.0, 80.0])
    direction = np.array([1.0, -1.0, 1.0])
    atr = np.array([2.5, 1.0, np.nan])
    batch = rules.atr_levels(entry, direction, -1.0, 1.5, atr)
    scalar = [
        rules.atr_level(e, d, -1.0, 1.5, a) for e, d, a in zip(entry, direction, atr, strict=True)
    ]
    assert np.array_equal(batch, scalar, equal_nan=True)
    assert batch[0] == 96.25 and batch[1] == 51.5
