"""Trade attribution: where the P&L came from — exit rule, signal decile, regime and costs.

Every table is built from the closed trades of a run (the engine's ``trades`` frame: one row
per round trip with ``pnl_gross``, ``commission``, ``slippage``, ``pnl_net``, ``exit_reason``,
``entry_<column>`` values, ``bars_held``, ``mfe``/``mae``). Each attribution table has one row
per part and a last row whose key is :data:`TOTAL` computed over all trades directly; the parts'
``pnl_net_total`` sum to it (:func:`reconcile` checks this and :func:`reconciliation_line` says
it in words). No trade is dropped: a trade without a value to group by (a null score or a null
regime value) goes to the part :data:`MISSING`.

The information coefficient (IC) is computed from the whole signal table, not only the traded
names: for each period (signal timestamp) the Spearman rank correlation between the score and
the symbol's realised forward return (Grinold & Kahn, *Active Portfolio Management*, ch. 6).

Dagster-free; the assets in ``ml4t_pipeline.defs.assets_attribution`` call these functions.

The concepts, one module each: the tables (:mod:`.tables`), the market mechanics' carry lines
(:mod:`.carry`), the information coefficient (:mod:`.ic`), the reconciliation
(:mod:`.reconcile`) and a whole run with its files (:mod:`.run`); this package re-exports
their public names.
"""

from __future__ import annotations

from ml4t_pipeline.lib.attribution.carry import CARRY_COLUMNS, add_mechanics, carry_attribution
from ml4t_pipeline.lib.attribution.ic import forward_returns, ic_summary, information_coefficient
from ml4t_pipeline.lib.attribution.reconcile import Reconciliation, reconcile, reconciliation_line
from ml4t_pipeline.lib.attribution.run import (
    ATTRIBUTION_FILES,
    MECHANICS_FILES,
    attribute_run,
    from_tables,
    write_attribution,
)
from ml4t_pipeline.lib.attribution.tables import (
    MISSING,
    REGIME_PREFERENCE,
    TOTAL,
    by_exit_reason,
    by_regime,
    by_signal_decile,
    cost_attribution,
    default_regime_column,
)

__all__ = [
    "ATTRIBUTION_FILES",
    "CARRY_COLUMNS",
    "MECHANICS_FILES",
    "MISSING",
    "REGIME_PREFERENCE",
    "TOTAL",
    "Reconciliation",
    "add_mechanics",
    "attribute_run",
    "by_exit_reason",
    "by_regime",
    "by_signal_decile",
    "carry_attribution",
    "cost_attribution",
    "default_regime_column",
    "forward_returns",
    "from_tables",
    "ic_summary",
    "information_coefficient",
    "reconcile",
    "reconciliation_line",
    "write_attribution",
]
