"""The run's records: one structured dtype per record kind and the typed buffers both drivers fill.

Each record kind (orders, fills, trades, rejections, portfolio states) has one NumPy
structured dtype below; it is the only declaration of that record's fields. The compiled
driver writes the records from its kernels into arrays of these dtypes
(:func:`empty_records`); the Python driver appends plain tuples in the dtype's field order to
the staging lists of a :class:`Records` (an append is cheaper than a NumPy row write from
Python; the order type and reason of fills and trades as names, :data:`STAGED_NAMES`), which
become arrays of the same dtype once, when read (:meth:`Records.table`).
:class:`engine.recorder.Recorder` turns the arrays into the result's polars frames, the same
conversion for both drivers.

Strings are codes: ``order_type`` indexes :data:`engine.core.layout.TYPE_NAMES`, ``status``
:data:`~engine.core.layout.STATUS_NAMES`, ``tif`` :data:`~engine.core.layout.TIF_NAMES`,
``event`` :data:`~engine.core.layout.EVENT_NAMES`; ``reason`` / ``exit_reason`` of orders,
fills and trades index :attr:`Records.reasons` (who wanted the order: ``"strategy"``, a rule's
name, ...); ``status_reason`` of orders and ``reason`` / ``rule`` of rejections index
:attr:`Records.texts`. Units: quantities in shares (signed: positive buys), prices in currency
per share, commission, slippage, cash and equity in currency; ``*_index`` fields are bar
(timestamp) indices and ``*_row`` fields market-data rows (-1: none).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.core.layout import (
    C_FILLS,
    C_ORDERS,
    C_REJ,
    C_TRADES,
    FIXED_REASONS,
    N_C,
    STATUS_REASONS,
    TYPE_NAMES,
)

_I = np.int64
_F = np.float64

ORDER_DTYPE = np.dtype(
    [
        ("submit_index", _I),
        ("sid", _I),
        ("order_type", _I),
        ("status", _I),
        ("reason", _I),
        ("status_reason", _I),
        ("tif", _I),
        ("parent_id", _I),
        ("decision_row", _I),
        ("quantity", _F),
        ("filled", _F),
        ("limit_price", _F),
        ("stop_price", _F),
    ]
)
"""One order (its id is its row): the decision bar, symbol id, codes, the bracket parent
(-1: none), the decision row, requested and filled shares, limit and stop prices (NaN: none)."""

FILL_DTYPE = np.dtype(
    [
        ("order_id", _I),
        ("bar_index", _I),
        ("sid", _I),
        ("quantity", _F),
        ("price_before_slippage", _F),
        ("price", _F),
        ("commission", _F),
        ("slippage", _F),
        ("order_type", _I),
        ("reason", _I),
    ]
)
"""One fill (its id is its row): ``price = price_before_slippage`` moved by the slippage
model; ``slippage = (price - price_before_slippage) × quantity`` (currency)."""

TRADE_DTYPE = np.dtype(
    [
        ("sid", _I),
        ("direction", _F),
        ("entry_index", _I),
        ("exit_index", _I),
        ("entry_price", _F),
        ("exit_price", _F),
        ("quantity", _F),
        ("entry_commission", _F),
        ("exit_commission", _F),
        ("entry_slippage", _F),
        ("exit_slippage", _F),
        ("exit_reason", _I),
        ("bars_held", _I),
        ("best_price", _F),
        ("worst_price", _F),
        ("decision_row", _I),
        ("decision_index", _I),
        ("exit_decision_row", _I),
        ("exit_decision_index", _I),
        ("stop_at_exit", _F),
        ("take_profit_at_exit", _F),
        ("partial", np.bool_),
    ]
)
"""One closed trade, or the closed part of one (``partial``): direction +1 long / -1 short,
entry price = the average entry price, the entry commission and slippage pro rata."""

REJECTION_DTYPE = np.dtype(
    [
        ("bar_index", _I),
        ("order_id", _I),
        ("sid", _I),
        ("order_type", _I),
        ("event", _I),
        ("reason", _I),
        ("rule", _I),
        ("limit", _I),
        ("shrink_text", _I),
        ("quantity", _F),
        ("value", _F),
        ("bound", _F),
    ]
)
"""One rejection, cancellation, expiry or shrink of an order (``quantity``: the shares it
concerned). ``limit``, ``shrink_text``, ``value``, ``bound``: a compiled portfolio limit's row
(-1: none) and what its reason text is made of; resolved into ``reason`` / ``rule`` after the
run."""

STATE_DTYPE = np.dtype(
    [
        ("bar_index", _I),
        ("equity", _F),
        ("cash", _F),
        ("positions_value", _F),
        ("gross", _F),
        ("n_positions", _I),
    ]
)
"""The portfolio after one bar: equity = cash + positions value (net), gross = Σ |value|."""

Kind = Literal["orders", "fills", "trades", "rejections", "states"]
DTYPES: dict[str, np.dtype[Any]] = {
    "orders": ORDER_DTYPE,
    "fills": FILL_DTYPE,
    "trades": TRADE_DTYPE,
    "rejections": REJECTION_DTYPE,
    "states": STATE_DTYPE,
}
"""The dtype of each record kind."""

RecordArray = npt.NDArray[np.void]

TAIL_SLOT: dict[str, int] = {
    "orders": C_ORDERS,
    "fills": C_FILLS,
    "trades": C_TRADES,
    "rejections": C_REJ,
    "states": N_C,
}
"""Where :attr:`Records.tail_counts` keeps the count of each kind's appended rows: at the
ledger's count slot of that kind (``counts[C_FILLS]`` ...), the states after them."""

STAGED_NAMES: dict[str, dict[str, str]] = {
    "fills": {"order_type": "types", "reason": "reasons"},
    "trades": {"exit_reason": "reasons"},
}
"""The fields the Python driver stages as names, not codes (the fill's order type and
reason, the trade's exit reason: strings it holds anyway); coded when the rows are typed."""
_TYPE_CODES = {name: code for code, name in enumerate(TYPE_NAMES)}
_POLARS_TYPES: dict[str, Any] = {"i": pl.Int64, "f": pl.Float64, "b": pl.Boolean}


def empty_records(kind: Kind, capacity: int) -> RecordArray:
    """An uninitialised buffer of ``capacity`` records of ``kind`` (for the compiled driver).

    Raises
    ------
    KeyError
        If ``kind`` is not a record kind.
    """
    return np.empty(capacity, dtype=DTYPES[kind])


def _check_dtype(kind: Kind, records: RecordArray) -> None:
    """Raise ``TypeError`` unless ``records`` has the dtype of ``kind``."""
    if records.dtype != DTYPES[kind]:
        raise TypeError(f"{kind} records must have dtype {DTYPES[kind]}, got {records.dtype}")


class Records:
    """The records of one run, by kind, with the code tables of their strings.

    Parameters
    ----------
    reasons : sequence of str, optional
        The first reason names (default :data:`engine.core.layout.FIXED_REASONS`); the
        compiled driver passes those plus its rules' names, in code order.

    Attributes
    ----------
    orders, fills, trades, rejections, states : list of tuple
        Staging lists of the Python driver: one tuple per record, in the dtype's field order
        (the fields of :data:`STAGED_NAMES` as names).
    reasons : list of str
        Names of the ``reason`` codes.
    texts : list of str
        Texts of the ``status_reason`` / rejection ``reason`` and ``rule`` codes (the first are
        :data:`engine.core.layout.STATUS_REASONS`, so their ``SR_*`` codes index it).
    """

    __slots__ = (
        "orders",
        "fills",
        "trades",
        "rejections",
        "states",
        "reasons",
        "texts",
        "reason_codes",
        "_text_codes",
        "_typed",
        "tails",
        "tail_counts",
    )
    reason_codes: dict[str, int]
    """Reason name -> code, for a caller's fast lookup (:meth:`reason_code` adds)."""

    def __init__(self, reasons: Sequence[str] = FIXED_REASONS) -> None:
        self.orders: list[tuple[Any, ...]] = []
        self.fills: list[tuple[Any, ...]] = []
        self.trades: list[tuple[Any, ...]] = []
        self.rejections: list[tuple[Any, ...]] = []
        self.states: list[tuple[Any, ...]] = []
        self.reasons: list[str] = list(reasons)
        self.texts: list[str] = list(STATUS_REASONS)
        self.reason_codes: dict[str, int] = {}
        for code, name in enumerate(self.reasons):
            self.reason_codes.setdefault(name, code)
        self._text_codes: dict[str, int] = {}
        for code, text in enumerate(self.texts):
            self._text_codes.setdefault(text, code)
        self._typed: dict[str, list[RecordArray]] = {kind: [] for kind in DTYPES}
        # typed rows appended since the last staged row (extend, or a kernel writing into
        # reserve's buffer): one growable buffer per kind, its rows [:tail_counts[TAIL_SLOT[
        # kind]]] logically after every part of _typed; the counts sit at the ledger's count
        # slots (C_FILLS, ...), so a kernel's ``counts`` argument can be this array itself
        self.tails: dict[str, RecordArray] = {
            kind: np.empty(0, dtype=dtype) for kind, dtype in DTYPES.items()
        }
        self.tail_counts: npt.NDArray[np.int64] = np.zeros(N_C + 1, dtype=np.int64)

    def reason_code(self, name: str) -> int:
        """The code of reason ``name`` (added on first use)."""
        code = self.reason_codes.get(name)
        if code is None:
            code = self.reason_codes[name] = len(self.reasons)
            self.reasons.append(name)
        return code

    def text_code(self, text: str) -> int:
        """The code of status-reason / rejection text ``text`` (added on first use)."""
        code = self._text_codes.get(text)
        if code is None:
            code = self._text_codes[text] = len(self.texts)
            self.texts.append(text)
        return code

    def extend(self, kind: Kind, records: RecordArray) -> None:
        """Append typed ``records`` of ``kind`` (after everything recorded so far; copied).

        Raises
        ------
        TypeError
            If ``records`` is not of the kind's dtype.
        """
        _check_dtype(kind, records)
        tail, start = self.reserve(kind, records.size)
        end = start + records.size
        tail[start:end] = records
        self.tail_counts[TAIL_SLOT[kind]] = end

    def adopt(self, kind: Kind, records: RecordArray) -> None:
        """Append typed ``records`` of ``kind`` without copying them: they become part of this
        object, which a caller must not change while it is read (:meth:`extend` copies).

        Raises
        ------
        TypeError
            If ``records`` is not of the kind's dtype.
        """
        _check_dtype(kind, records)
        self._flush(kind)
        self._seal_tail(kind)
        self._typed[kind].append(records)

    def reserve(self, kind: Kind, n: int) -> tuple[RecordArray, int]:
        """A buffer of ``kind`` records with room for ``n`` more, and the row where they go:
        a kernel writes rows ``start:end`` of it, then :meth:`commit` takes them (no copy).
        """
        self._flush(kind)
        slot = TAIL_SLOT[kind]
        start = int(self.tail_counts[slot])
        tail = self.tails[kind]
        if start + n > tail.size:
            grown = np.empty(max(start + n, 2 * tail.size, 256), DTYPES[kind])
            grown[:start] = tail[:start]
            self.tails[kind] = tail = grown
        return tail, start

    def make_room(self, kinds: Sequence[Kind], n: int) -> int:
        """:meth:`reserve` ``n`` rows of each of ``kinds``; return the fewest free rows of
        their buffers (at least ``n``)."""
        free = []
        for kind in kinds:
            tail, start = self.reserve(kind, n)
            free.append(tail.size - start)
        return min(free)

    def commit(self, kind: Kind, end: int) -> None:
        """Take the rows written into the :meth:`reserve` buffer of ``kind`` up to ``end``."""
        self.tail_counts[TAIL_SLOT[kind]] = end

    def _seal_tail(self, kind: Kind) -> None:
        # the rows appended since the last staged row become a part (the buffer is reused)
        slot = TAIL_SLOT[kind]
        n = int(self.tail_counts[slot])
        if n:
            self._typed[kind].append(self.tails[kind][:n].copy())
            self.tail_counts[slot] = 0

    def _flush(self, kind: Kind) -> None:
        staged: list[tuple[Any, ...]] = getattr(self, kind)
        if staged:
            self._seal_tail(kind)
            self._typed[kind].append(self._typed_rows(kind, staged))
            staged.clear()

    def _typed_rows(self, kind: Kind, staged: list[tuple[Any, ...]]) -> RecordArray:
        """Staged rows as records (the names of :data:`STAGED_NAMES` as their codes).

        Transposed by polars: no Python object per value, so converting a long run's rows
        triggers no collection of the run's many live objects.
        """
        dtype = DTYPES[kind]
        named = STAGED_NAMES.get(kind, {})
        names = dtype.names or ()
        schema = {
            name: pl.String if name in named else _POLARS_TYPES[dtype[name].kind] for name in names
        }
        frame = pl.DataFrame(staged, schema=schema, orient="row", strict=False)
        out = np.empty(len(staged), dtype=dtype)
        for name in names:
            column = frame.get_column(name)
            table = named.get(name)
            if table == "reasons":
                for reason in column.unique().to_list():
                    self.reason_code(reason)
                column = column.replace_strict(self.reason_codes, return_dtype=pl.Int64)
            elif table is not None:
                column = column.replace_strict(_TYPE_CODES, return_dtype=pl.Int64)
            out[name] = column.to_numpy()
        return out

    def values(self, kind: Kind, field: str, start: int = 0) -> npt.NDArray[Any]:
        """Field ``field`` of the records ``start:`` of ``kind`` so far, as a new array,
        without converting the staged rows (cheap to call while a run goes on).

        Raises
        ------
        KeyError
            If ``kind`` or ``field`` is unknown.
        """
        dtype = DTYPES[kind]
        column = dtype.names.index(field) if dtype.names else -1
        parts = []
        for part in self._typed[kind]:
            if start < part.size:
                parts.append(part[field][start:])
            start = max(start - part.size, 0)
        tail_n = int(self.tail_counts[TAIL_SLOT[kind]])
        if tail_n:
            if start < tail_n:
                parts.append(self.tails[kind][field][start:tail_n].copy())
            start = max(start - tail_n, 0)
        staged: list[tuple[Any, ...]] = getattr(self, kind)
        rows = itertools.islice(staged, start, None)
        tail = np.fromiter(
            (row[column] for row in rows), dtype=dtype[field], count=max(len(staged) - start, 0)
        )
        return np.concatenate([*parts, tail]) if parts else tail

    def count(self, kind: Kind) -> int:
        """Number of records of ``kind`` so far."""
        staged: list[tuple[Any, ...]] = getattr(self, kind)
        tail_n = int(self.tail_counts[TAIL_SLOT[kind]])
        return sum(part.size for part in self._typed[kind]) + tail_n + len(staged)

    def table(self, kind: Kind) -> RecordArray:
        """Every record of ``kind`` so far, as one array of the kind's dtype (the staged rows
        are converted once and kept typed)."""
        self._flush(kind)
        self._seal_tail(kind)
        parts = self._typed[kind]
        if not parts:
            return np.empty(0, dtype=DTYPES[kind])
        if len(parts) > 1:
            parts[:] = [np.concatenate(parts)]
        return parts[0]
