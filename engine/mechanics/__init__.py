"""Market mechanics on raw prices: corporate actions, delistings and financing.

Three settings of :class:`engine.ExecutionConfig`, all off by default (a run without them
is exactly the run it was before they existed):

- :class:`CorporateActions` (``corporate_actions=``): splits and cash dividends applied to
  the portfolio on each ex-date, for a run on **raw** (unadjusted) prices;
- :class:`Delisting` (``delisting=``): a position whose symbol's data ends, or stops for
  longer than ``gap_sessions`` sessions, is closed at its last bar (``exit_reason =
  "delisted"``);
- :class:`Financing` (``financing=``): interest on cash and the short borrow fee, accrued
  per bar.

:class:`MarketMechanics` is their run-time state; the broker of the Python driver calls it
at the bar boundary (corporate actions and financing, before the open's fills) and after
the close's fills (delistings). The ledger formulas are the core's kernels
(:mod:`engine.core.actions`, :mod:`engine.core.financing`); the compiled TopN driver
(:mod:`engine.compiled.topn`) calls the same kernels at the same point of its bar, so both
drivers give identical records; the delisting decisions are :mod:`engine.core.delisting`'s.

One module per concept, the names re-exported here:

- :mod:`engine.mechanics.table`: the corporate-actions table and its schedule;
- :mod:`engine.mechanics.delisting`: the delisting setting and the delisting rows;
- :mod:`engine.mechanics.financing`: the financing setting and the borrow rates;
- :mod:`engine.mechanics.outputs`: the event table and the per-bar cash lines;
- :mod:`engine.mechanics.python_driver`: the Python driver's run-time state;
- :mod:`engine.mechanics.compiled`: the compiled driver's plan and outputs.
"""

from __future__ import annotations

from engine.mechanics.compiled import (
    M_ACTIONS,
    M_BASIS,
    M_CREDIT,
    M_DEBIT,
    M_DELIST_RETURN,
    M_DELISTING,
    M_FINANCING,
    M_REASON,
    N_M,
    CompiledMechanics,
    CompiledOutput,
    compiled_mechanics,
    compiled_mechanics_reason,
    compiled_outputs,
    fresh_compiled,
)
from engine.mechanics.delisting import Delisting, delisting_rows
from engine.mechanics.financing import DAY_COUNTS, Financing, borrow_rates
from engine.mechanics.outputs import MechanicsOutput, add_state_columns, events_frame
from engine.mechanics.python_driver import Broker, MarketMechanics
from engine.mechanics.table import (
    CORPORATE_ACTION_COLUMNS,
    MAX_LISTED,
    CorporateActions,
    CorporateActionsError,
    listed_rows,
)

__all__ = [
    "CORPORATE_ACTION_COLUMNS",
    "DAY_COUNTS",
    "MAX_LISTED",
    "M_ACTIONS",
    "M_BASIS",
    "M_CREDIT",
    "M_DEBIT",
    "M_DELISTING",
    "M_DELIST_RETURN",
    "M_FINANCING",
    "M_REASON",
    "N_M",
    "Broker",
    "CompiledMechanics",
    "CompiledOutput",
    "CorporateActions",
    "CorporateActionsError",
    "Delisting",
    "Financing",
    "MarketMechanics",
    "MechanicsOutput",
    "add_state_columns",
    "borrow_rates",
    "compiled_mechanics",
    "compiled_mechanics_reason",
    "compiled_outputs",
    "delisting_rows",
    "events_frame",
    "fresh_compiled",
    "listed_rows",
]
