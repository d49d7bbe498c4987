"""The market-order lane's arrays as one compiled argument (a numba ``StructRef``).

The lane calls its compiled kernels once or twice a bar; passing each of their ~25 arrays as
its own argument costs ~50-60 ns an array to unbox (~1.5 µs a bar's step). A
:class:`LaneRefs` holds references to those arrays (not copies: a kernel reading
``refs.fstate`` reads the broker's own array), so a call unboxes one object. The lane makes a
new one whenever one of the arrays is replaced (a new market-data window, a grown book,
order rows or record buffer: :func:`engine.broker.lane.step_args`).

Only :func:`lane_refs` makes them (compiled and cached on disk like every kernel); Python
reads no field of one (each field read from Python would compile a getter).
"""

from __future__ import annotations

from typing import Any

from numba.core import types
from numba.experimental import structref

from engine.core.jit import njit
from engine.core.records import RecordArray
from engine.data import FloatArray, IntArray

__all__ = ["LANE_FIELDS", "LaneRefs", "lane_refs"]

LANE_FIELDS: tuple[str, ...] = (
    "book", "orders", "fills", "trades", "rejections",
    "sym_id", "open_", "high", "low", "close", "ordinal",
    "tolerance", "allow_short", "fstate", "istate", "pending", "aux_i", "aux_f",
    "counts", "acc", "held", "cost_params", "tiers", "tier_state", "cost_rows",
)  # fmt: skip
"""The fields of :class:`LaneRefs`, in the order of
:func:`engine.broker.lane.lane_open_step`'s arguments from ``book`` on."""


@structref.register
class LaneRefsType(types.StructRef):
    """numba's type of :class:`LaneRefs` (one per combination of its fields' types)."""

    def preprocess_fields(self, fields: Any) -> tuple[tuple[str, Any], ...]:
        """The fields' types without literal values (an int field is an int64, not ``3``)."""
        return tuple((name, types.unliteral(typ)) for name, typ in fields)  # type: ignore[no-untyped-call]


class LaneRefs(structref.StructRefProxy):
    """The lane's arrays and settings, by reference, as one argument of a compiled call
    (the fields of :data:`LANE_FIELDS`; made by :func:`lane_refs`). The annotations below
    are for the type checker; compiled code reads the fields, Python does not."""

    __slots__ = ()
    book: IntArray
    orders: RecordArray
    fills: RecordArray
    trades: RecordArray
    rejections: RecordArray
    sym_id: IntArray
    open_: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    ordinal: IntArray
    tolerance: float
    allow_short: bool
    fstate: FloatArray
    istate: IntArray
    pending: FloatArray
    aux_i: IntArray
    aux_f: FloatArray
    counts: IntArray
    acc: FloatArray
    held: IntArray
    cost_params: FloatArray
    tiers: FloatArray
    tier_state: FloatArray
    cost_rows: FloatArray


structref.define_proxy(LaneRefs, LaneRefsType, list(LANE_FIELDS))  # type: ignore[no-untyped-call]


@njit
def lane_refs(
    book: Any, orders: Any, fills: Any, trades: Any, rejections: Any,
    sym_id: Any, open_: Any, high: Any, low: Any, close: Any, ordinal: Any,
    tolerance: Any, allow_short: Any, fstate: Any, istate: Any, pending: Any, aux_i: Any,
    aux_f: Any, counts: Any, acc: Any, held: Any, cost_params: Any, tiers: Any,
    tier_state: Any, cost_rows: Any,
) -> LaneRefs:  # fmt: skip
    """A :class:`LaneRefs` over the given arrays (references: nothing is copied) and
    settings; the arguments of :func:`engine.broker.lane.lane_open_step` from ``book`` on
    (their shapes, dtypes and units there)."""
    return LaneRefs(  # type: ignore[no-untyped-call]
        book, orders, fills, trades, rejections, sym_id, open_, high, low, close, ordinal,
        tolerance, allow_short, fstate, istate, pending, aux_i, aux_f, counts, acc, held,
        cost_params, tiers, tier_state, cost_rows,
    )  # fmt: skip
