"""The data layout of the compiled TopN driver (:mod:`engine.compiled.topn`).

The slots of a run's scalar parameters (``P_*``, :attr:`TopNPlan.params`) and the status
codes :func:`engine.compiled.topn.run_topn` leaves in ``counts[C_STATUS]`` (``ST_*``); the
inputs of one run (:class:`TopNPlan`, built by :func:`engine.compiled.plan.plan_topn`) and
what the driver needs of a portfolio limit after it (:class:`LimitText`); the tuples the
compiled kernels pass around (:class:`Bars`, :class:`Tables`, :class:`RunState`,
:class:`RunRecords`; flat tuples of arrays, as numba reference-counts every array of a nested
tuple at each use); and the run state before the first bar (:func:`init_state`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from engine.core.costs import Costs
from engine.core.layout import (
    A_PARTIAL_ENTRY,
    A_STOPPED_AT,
    ACC_REALIZED,
    AVG,
    C_DAY,
    LAST_ROW,
    QTY,
)
from engine.core.records import RecordArray
from engine.mechanics import CompiledMechanics

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

ST_OK, ST_FULL, ST_SHORT_BOOK, ST_FRACTIONAL = 0, 1, 2, 3
"""``counts[C_STATUS]`` after :func:`engine.compiled.topn.run_topn`: done; the record buffers
would overflow (the caller retries with larger ones); a short position / an order the Python
loop refuses with an error (the Python loop runs instead)."""
# slots of the run's scalar parameters (float64)
(
    P_N,
    P_EVERY,
    P_WEIGHT,
    P_TOL,
    P_FRACTIONAL,
    P_STOPS_FIRST,
    P_CLOSE_AT_END,
    P_ENTRY_RULES,
    P_LEVELS_SET,
    P_HAS_RULES,
    P_VOLUME_CAP,
    P_ALLOW_SHORT,
    P_COOLDOWN,
    P_STOP_WINS,
    P_ENTRY_BAR,
    P_SUBMISSION_CASH,
    P_FILL_CLOSE,
) = range(17)
N_P = 17
_NEVER = -(2**62)
"""``A_STOPPED_AT`` of a symbol never stopped out."""


class LimitText(Protocol):
    """What the driver needs of a portfolio limit after the run: its name and reason text."""

    @property
    def name(self) -> str:
        """The name rejections record in their ``rule`` column."""
        ...

    def reason_text(self, shrink: bool, value: float, limit: float) -> str:
        """The reason of a shrink (``shrink``) or a rejection at ``value`` past ``limit``."""
        ...


@dataclass(frozen=True)
class TopNPlan:
    """The inputs of one compiled TopN run (built by :func:`engine.compiled.plan.plan_topn`).

    Attributes
    ----------
    signal : ndarray
        float64, shape (n_rows,): the ranking column, one value per market-data row.
    inputs : ndarray
        float64, shape (k, n_rows): the per-row values the rules read (the ``INPUT`` /
        ``GATE`` rows of ``rules``): ATR columns (currency per share) and regime flags (1.0:
        above the threshold); shape (0, 0) when no rule reads any.
    params : ndarray
        float64, shape (N_P,): the ``P_*`` slots (n, rebalance every, weight, cash tolerance
        in currency, the volume participation cap as a fraction (0: none), the re-entry
        cooldown in bars, and 0/1 flags).
    rules : ndarray
        float64, shape (m, N_RULES_COLS): the position rules (:mod:`engine.core.layout`).
    partial : ndarray
        float64, shape (k, 2): ``PartialProfitTaking`` levels ``(return_pct, fraction)``.
    limits : ndarray
        float64, shape (j, N_LIM): the portfolio limits at hook B.
    rule_names : list of str
        Rule names by code (code 0: ``""``).
    limit_rules : list
        The limits of ``limits``' rows, for their reason texts and names.
    capacity : int
        First size of the record buffers.
    initial_cash : float
        Currency.
    costs : Costs
        The run's slippage and commission (:mod:`engine.core.costs`); its tiered-commission
        state is reset at the start of every attempt.
    """

    signal: FloatArray
    inputs: FloatArray
    params: FloatArray
    rules: FloatArray
    partial: FloatArray
    limits: FloatArray
    rule_names: list[str]
    limit_rules: list[LimitText]
    capacity: int
    initial_cash: float
    costs: Costs
    mechanics: CompiledMechanics | None = None
    """Corporate actions and financing (:func:`engine.mechanics.compiled_mechanics`)."""


class Bars(NamedTuple):
    """The market data of a run (:class:`engine.MarketData` arrays) and the ranking signal.

    ``timestamps`` (int64, µs since the epoch, one per bar), ``offsets`` (int64, bar ``i``'s
    rows are ``offsets[i]:offsets[i + 1]``), ``sym_id`` / ``ordinal`` / ``prev_row`` (int64,
    per row), ``open_`` / ``high`` / ``low`` / ``close`` (float64, currency per share, per
    row), ``signal`` (float64, per row), ``volume`` (float64, shares, per row; read only under
    a volume participation cap).
    """

    timestamps: IntArray
    offsets: IntArray
    sym_id: IntArray
    open_: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    ordinal: IntArray
    prev_row: IntArray
    signal: FloatArray
    volume: FloatArray


class Tables(NamedTuple):
    """The run's parameters and rule tables (:class:`TopNPlan`): ``params`` (``P_*``),
    ``rules``, ``partial``, ``limits`` (:mod:`engine.core.layout`), the rules' per-row
    ``inputs`` and the slippage and
    commission: ``cost_params``, ``tiers``, ``tier_state``, ``cost_rows``, the fields of
    :class:`engine.core.costs.Costs` (flat: numba reference-counts every array of a nested
    tuple at each use, some 100 ns per fill)."""

    params: FloatArray
    rules: FloatArray
    partial: FloatArray
    limits: FloatArray
    inputs: FloatArray
    cost_params: FloatArray
    tiers: FloatArray
    tier_state: FloatArray
    cost_rows: FloatArray


class RunState(NamedTuple):
    """The run state, updated in place: the per-symbol matrices ``fstate`` / ``istate`` /
    ``aux_i`` / ``aux_f`` (:mod:`engine.core.layout`), ``pending`` (float64, signed shares of
    the working market orders per symbol), ``book`` (int64, the working orders' ids, the first
    ``counts[C_BOOK]``), ``counts`` (int64, ``C_*``) and ``acc`` (float64, ``ACC_*``)."""

    fstate: FloatArray
    istate: IntArray
    aux_i: IntArray
    aux_f: FloatArray
    pending: FloatArray
    book: IntArray
    counts: IntArray
    acc: FloatArray


class RunRecords(NamedTuple):
    """The record buffers the run writes (:mod:`engine.core.records`): ``orders``,
    ``fills``, ``trades``, ``rejections`` (the first ``counts[C_*]`` rows) and ``states`` (one
    per timestamp)."""

    orders: RecordArray
    fills: RecordArray
    trades: RecordArray
    rejections: RecordArray
    states: RecordArray


def init_state(
    fstate: FloatArray,
    istate: IntArray,
    aux_i: IntArray,
    aux_f: FloatArray,
    pending: FloatArray,
    counts: IntArray,
    acc: FloatArray,
    initial_cash: float,
) -> None:
    """The run state before the first bar, written in place (:class:`RunState`'s arrays but
    the book; a single run's, or one variant's of :mod:`engine.compiled.variants`)."""
    fstate[:] = np.nan
    fstate[QTY] = 0.0
    fstate[AVG] = 0.0
    istate[:] = 0
    istate[LAST_ROW] = -1
    aux_i[:] = 0
    aux_i[A_PARTIAL_ENTRY] = -1
    aux_i[A_STOPPED_AT] = _NEVER
    aux_f[:] = 0.0
    pending[:] = 0.0
    counts[:] = 0
    counts[C_DAY] = -1
    acc[:] = initial_cash
    acc[ACC_REALIZED] = 0.0
