"""Corporate actions on the ledger at a bar boundary: splits and cash dividends.

Compiled kernels over the core's per-symbol state (:mod:`engine.core.layout`), written once
as plain Python and compiled from that source, so every driver applies an ex-date the same
way (the Python driver's broker calls them from :class:`engine.mechanics.MarketMechanics`).

A split of ratio ``r`` (new shares per old share: 7.0 for a 7:1 split, 0.05 for a 1:20
reverse split) multiplies the held quantity by ``r`` and divides every per-share price of
the position by ``r``: the average entry price, the latest mark, the stop-loss and
take-profit levels and the best/worst prices since the entry (MFE/MAE). Quantity × price is
unchanged, so the position's value and its unrealized P&L do not move on the ex-date.
A cash dividend of ``d`` (currency per share, in the prices of the day before the ex-date)
moves ``quantity × d`` into the cash: credited to a long, debited from a short.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engine.core.jit import njit
from engine.core.layout import AVG, BEST, MARK, QTY, STOP, TP, WORST

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@njit
def apply_splits(
    sids: IntArray, ratios: FloatArray, fstate: FloatArray, pending: FloatArray
) -> None:
    """Apply the splits ``ratios[k]`` (new shares per old share, > 0) to symbols ``sids[k]``.

    ``fstate``, float64, shape (N_FLOAT_FIELDS, n_symbols): rows ``QTY`` (× r) and ``AVG``,
    ``MARK``, ``STOP``, ``TP``, ``BEST``, ``WORST`` (÷ r; NaN stays NaN) are updated in place.
    ``pending``, float64, shape (n_symbols,): signed shares of working market orders (× r).
    """
    for k in range(sids.size):
        s = sids[k]
        r = ratios[k]
        if r == 1.0:
            continue
        fstate[QTY, s] *= r
        fstate[AVG, s] /= r
        fstate[MARK, s] /= r
        fstate[STOP, s] /= r
        fstate[TP, s] /= r
        fstate[BEST, s] /= r
        fstate[WORST, s] /= r
        pending[s] *= r


@njit
def dividend_amounts(sids: IntArray, dividends: FloatArray, qty: FloatArray) -> FloatArray:
    """Cash of each dividend event: ``qty[sids[k]] × dividends[k]`` (currency; > 0 paid to a
    long, < 0 owed by a short, 0 when flat)."""
    out = np.zeros(sids.size)
    for k in range(sids.size):
        out[k] = qty[sids[k]] * dividends[k]
    return out
