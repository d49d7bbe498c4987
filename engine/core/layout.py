"""Codes and layouts of the execution core, stated once for both engine drivers.

Order codes
    Order types ``T_*`` (names :data:`TYPE_NAMES`, the values of :class:`engine.OrderType`),
    statuses ``S_*`` (:data:`STATUS_NAMES`, the values of :class:`engine.orders.OrderStatus`),
    fixed reasons ``R_*`` (:data:`FIXED_REASONS`; a rule of code ``k >= 1`` has reason code
    ``R_RULE0 + k``), status reasons ``SR_*`` (:data:`STATUS_REASONS`) and rejection events
    ``EV_*`` (:data:`EVENT_NAMES`).

Order-status transitions
    :data:`TRANSITIONS`, bool, shape (N_STATUSES, N_STATUSES): ``TRANSITIONS[a, b]`` is true
    when an order of status ``a`` may move to status ``b``. :data:`engine.orders.TRANSITIONS`
    (the Python driver's table) is built from it, and the compiled driver changes a status
    only through :func:`set_status`, which checks it.

Per-symbol state
    Two matrices, one row per field (the Python broker's ``qty``, ``stop``, ``last_row``, ...
    attributes are views of those rows), so a compiled step takes them as two arguments:

    - ``fstate``, float64, shape (N_FLOAT_FIELDS, n_symbols): rows ``QTY`` (shares, signed),
      ``AVG`` (average entry price), ``MARK`` (latest close), ``STOP`` / ``TP`` (stop-loss and
      take-profit levels, NaN = none), ``BEST`` / ``WORST`` (highest high and lowest low since
      the entry), ``OUT_LEVEL`` (output buffer). Prices in currency per share.
    - ``istate``, int64, shape (N_INT_FIELDS, n_symbols): rows ``LAST_ROW`` (the symbol's
      latest data row; below ``lo``, the current bar's first row, means no bar now),
      ``LEVEL_FROM`` (first bar index at which the levels are live), ``STOP_RULE`` /
      ``TP_RULE`` (codes of the rules that set the levels, 0 = none), ``ENTRY_ORDINAL`` (the
      symbol's bar ordinal at the entry), ``ENTRY_PENDING`` (1: a fill opened or increased the
      position and its entry levels are still to be set by the next compiled step),
      ``DEFERRED`` (1: the position's levels are not checked now; ``stops_first`` sets it for
      positions with a queued market exit), ``OUT_SID`` / ``OUT_CODE`` (output buffers).

    The compiled driver keeps its open trades in two more matrices of the same shape:
    ``aux_i``, int64, shape (N_A, n_symbols), rows ``A_EXIT_PENDING`` (1: a risk exit is
    queued), ``A_ENTRY_INDEX`` (the entry bar), ``A_DROW`` / ``A_DIDX`` (the entry's decision
    row and bar), ``A_OPEN`` (1: a trade is open), ``A_TARGET`` (the TopN driver's target
    stamp), ``A_PARTIAL_ENTRY`` / ``A_PARTIAL_DONE`` (``PartialProfitTaking`` state),
    ``A_STOPPED_AT`` (the bar of the latest stop-loss exit that closed the position, for
    ``reentry_cooldown_bars``; a large negative number: none), ``A_CLOSED_AT`` (1 + the bar at
    which a level exit closed the position, for ``exit_conflict="stop_wins"``; 0: none); and
    ``aux_f``, float64, shape (N_B, n_symbols), rows ``B_DIR`` (+1 long, -1 short), ``B_QTY``
    (open shares), ``B_COMM`` / ``B_SLIP`` (the open part's entry commission and slippage,
    currency), ``B_PARTIAL_ORIGINAL`` (shares when ``PartialProfitTaking`` first saw the
    trade), ``B_STOPPED_DIR`` / ``B_CLOSED_DIR`` (the direction, +1 or -1, of the position
    that ``A_STOPPED_AT`` / ``A_CLOSED_AT`` record).

Run counters
    ``counts``, int64, shape (N_C,): ``C_*``; ``acc``, float64, shape (N_ACC,): ``ACC_*``.

Rule table
    float64, shape (m, N_RULE_FIELDS) for the Python driver's fixed-percent rules, (m,
    N_RULES_COLS) for the compiled driver, one row per position rule in priority order:
    ``KIND`` (``STOP_LOSS``, ``TAKE_PROFIT``, ``TRAILING``, ``TIME_EXIT``, ``BREAKEVEN``,
    ``PARTIAL``, ``ATR_STOP`` or ``ATR_TAKE_PROFIT``), ``CODE`` (the rule's name code),
    ``MAX_BARS`` (integers stored exactly as floats), ``FACTOR`` (long entry level / entry
    price; the ATR multiplier of ``ATR_STOP`` / ``ATR_TAKE_PROFIT``), ``TRAIL_INITIAL``,
    ``TRAIL_TIGHTEN``, ``TRAIL_MIN`` (fractions). The compiled driver's table adds
    ``PRIORITY`` (the rule's priority), ``INPUT`` (the row of the run's per-row input matrix
    holding the rule's ATR column; -1: none), ``GATE`` / ``GATE_ON`` (a member of a
    ``RegimeDependentRule``: the input row holding the regime flag per data row, 1.0 where the
    context value is above the threshold, and the flag under which the member applies; ``GATE``
    -1: always applies) and ``SCALAR`` (1.0: the rule answers per position in the Python
    driver, ``RiskRule.vectorized`` false, so its levels and exits merge after the vectorised
    rules'; such rows follow all the others).

Portfolio-limit table (hook B)
    float64, shape (k, N_LIM): ``LIM_KIND`` (an ``L_*`` code) and ``LIM_PARAM`` (the limit's
    parameter: a fraction, or a count for ``L_POSITIONS``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engine.core.jit import njit

EPS = 1e-9
"""Share quantities closer than this to zero count as zero."""

# ---------------------------------------------------------------------- per-symbol state
# rows of fstate (float64)
QTY, AVG, MARK, STOP, TP, BEST, WORST, OUT_LEVEL = range(8)
N_FLOAT_FIELDS = 8
# rows of istate (int64)
(
    LAST_ROW,
    LEVEL_FROM,
    STOP_RULE,
    TP_RULE,
    ENTRY_ORDINAL,
    ENTRY_PENDING,
    DEFERRED,
    OUT_SID,
    OUT_CODE,
) = range(9)
N_INT_FIELDS = 9
# rows of aux_i (int64): the compiled driver's open trades and rule state
(
    A_EXIT_PENDING,
    A_ENTRY_INDEX,
    A_DROW,
    A_DIDX,
    A_OPEN,
    A_TARGET,
    A_PARTIAL_ENTRY,
    A_PARTIAL_DONE,
    A_STOPPED_AT,
    A_CLOSED_AT,
) = range(10)
N_A = 10
# rows of aux_f (float64)
B_DIR, B_QTY, B_COMM, B_SLIP, B_PARTIAL_ORIGINAL, B_STOPPED_DIR, B_CLOSED_DIR = range(7)
N_B = 7

# ---------------------------------------------------------------------- run counters
# counts (int64): records written, the book's length, the driver's status, the current day
C_ORDERS, C_FILLS, C_TRADES, C_REJ, C_BOOK, C_STATUS, C_DAY = range(7)
N_C = 7
# accumulators (float64, currency): cash, realized P&L, peak equity, the last bar's equity,
# the equity at the day's start
ACC_CASH, ACC_REALIZED, ACC_PEAK, ACC_LAST_EQUITY, ACC_DAY_START = range(5)
N_ACC = 5

# ---------------------------------------------------------------------- rule table
KIND, CODE, MAX_BARS, FACTOR, TRAIL_INITIAL, TRAIL_TIGHTEN, TRAIL_MIN = range(7)
N_RULE_FIELDS = 7
PRIORITY, INPUT, GATE, GATE_ON, SCALAR = range(N_RULE_FIELDS, N_RULE_FIELDS + 5)
N_RULES_COLS = N_RULE_FIELDS + 5
# rule kinds
STOP_LOSS, TAKE_PROFIT, TRAILING, TIME_EXIT = 1, 2, 3, 4
BREAKEVEN, PARTIAL, ATR_STOP, ATR_TAKE_PROFIT = 5, 6, 7, 8
"""``BreakEvenRule`` (its trigger and offset in the columns ``BE_TRIGGER`` / ``BE_OFFSET``),
``PartialProfitTaking`` (its levels in a separate table of rows ``return_pct, fraction``),
``VolatilityScaledStopLoss`` and ``VolatilityScaledTakeProfit`` (``FACTOR``: the ATR
multiplier; ``INPUT``: the input row of their ATR column, read at the entry fill on the
symbol's bar before it)."""
BE_TRIGGER, BE_OFFSET = TRAIL_INITIAL, TRAIL_TIGHTEN
"""The columns of a ``BREAKEVEN`` row holding ``BreakEvenRule``'s ``trigger_pct`` and
``offset_pct`` (fractions)."""

# ---------------------------------------------------------------------- portfolio limits
L_DRAWDOWN, L_DAILY_LOSS, L_POSITION_SIZE, L_POSITIONS, L_LEVERAGE = 1, 2, 3, 4, 5
LIM_KIND, LIM_PARAM = 0, 1
N_LIM = 2

# ---------------------------------------------------------------------- order codes
T_MARKET, T_LIMIT, T_STOP, T_STOP_LIMIT, T_TRAILING_STOP = range(5)
TYPE_NAMES = ("market", "limit", "stop", "stop_limit", "trailing_stop")
TIF_NAMES = ("GTC", "DAY")
S_SUBMITTED, S_ACCEPTED, S_PARTIAL, S_FILLED, S_REJECTED, S_CANCELLED, S_EXPIRED = range(7)
STATUS_NAMES = (
    "submitted",
    "accepted",
    "partially_filled",
    "filled",
    "rejected",
    "cancelled",
    "expired",
)
N_STATUSES = 7
R_STRATEGY, R_END, R_STOP_LOSS, R_TAKE_PROFIT = 0, 1, 2, 3
FIXED_REASONS = ("strategy", "end_of_data", "stop_loss", "take_profit")
R_RULE0 = 3
"""A rule of code ``k >= 1`` has reason code ``R_RULE0 + k``."""
SR_NONE, SR_CASH, SR_SHORT, SR_CLOSED_BY_STOP, SR_ZERO_SHARES = range(5)
STATUS_REASONS = (
    "",
    "insufficient_cash",
    "short_not_allowed",
    "position_closed_by_stop",
    "rounds_to_zero_shares",
    "delisted",
    "netted_by_close_position",
    "reentry_cooldown",
    "insufficient_cash_at_submission",
)
"""Texts of the ``SR_*`` codes. ``rounds_to_zero_shares``: an order the strategy wanted that
rounded to zero whole shares, so it was never placed (its rejection row has ``order_id`` -1);
``delisted``: an order of a delisted symbol (:mod:`engine.core.delisting`);
``netted_by_close_position``: a working market order of an earlier bar cancelled by a close of
its position under a volume participation cap; ``reentry_cooldown``: a re-entry decided too
soon after a stop-loss exit (``ExecutionConfig.reentry_cooldown_bars``);
``insufficient_cash_at_submission``: ``ExecutionConfig.cash_check="submission"``."""
SR_DELISTED = STATUS_REASONS.index("delisted")
SR_NETTED_CLOSE = STATUS_REASONS.index("netted_by_close_position")
SR_COOLDOWN = STATUS_REASONS.index("reentry_cooldown")
SR_SUBMISSION_CASH = STATUS_REASONS.index("insufficient_cash_at_submission")
UNPLACED = -1
"""The ``order_id`` of a rejection row of an order that was never placed."""
SR_LIMIT = 100
"""Status-reason codes ``SR_LIMIT + k``: the reason text of rejection row ``k`` (a limit)."""
EV_REJECTED, EV_CANCELLED, EV_SHRUNK, EV_EXPIRED = range(4)
EVENT_NAMES = ("rejected", "cancelled", "shrunk", "expired")


def _transitions() -> npt.NDArray[np.bool_]:
    table = np.zeros((N_STATUSES, N_STATUSES), dtype=np.bool_)
    working = (S_PARTIAL, S_FILLED, S_CANCELLED, S_REJECTED, S_EXPIRED)
    table[S_SUBMITTED, [S_ACCEPTED, S_REJECTED, S_CANCELLED]] = True
    table[S_ACCEPTED, list(working)] = True
    table[S_PARTIAL, list(working)] = True
    return table


TRANSITIONS = _transitions()
"""The one table of legal status changes: ``TRANSITIONS[from, to]`` (``S_*`` codes); the
terminal statuses (filled, rejected, cancelled, expired) have no way out."""
TRANSITIONS.setflags(write=False)


@njit
def set_status(orders: npt.NDArray[np.void], o: int, status: int) -> None:
    """Move order ``o`` (a record of ``orders``, dtype :data:`engine.core.records.ORDER_DTYPE`)
    to ``status`` (an ``S_*`` code).

    Raises
    ------
    RuntimeError
        If :data:`TRANSITIONS` forbids the change (an engine bug, never user input).
    """
    if not TRANSITIONS[orders[o]["status"], status]:
        raise RuntimeError("illegal order status change")
    orders[o]["status"] = status
