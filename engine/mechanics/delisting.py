"""The delisting setting (:class:`Delisting`) and the rows at which a run's symbols are
delisted; the decisions are :mod:`engine.core.delisting`'s, stated once for both drivers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from engine.core import delisting as core_delisting

if TYPE_CHECKING:
    from engine.data import MarketData


@dataclass(frozen=True)
class Delisting:
    """When a symbol counts as delisted, and at what price its position is closed.

    A symbol is delisted at a bar when its data ends there before the panel's last
    session, or when its next bar comes more than ``gap_sessions`` sessions of the panel
    later (a ticker reused by another security after a gap, as WM in Lean's data: Washington
    Mutual to 2008-09-26, Waste Management from 2009-08-05). At that bar's close, after the
    close's fills, an open position is closed at ``close × (1 + delisting_return)``
    (``exit_reason = "delisted"``), working orders for the symbol are cancelled and orders
    submitted for it on that bar, or later while it has no new bar, are rejected (reason
    ``delisted``). The rule reads the symbol's future bars: the simulation assumes the
    delisting was announced, as Zipline's ``auto_close_date`` does.

    Parameters
    ----------
    gap_sessions : int, default 20
        Missing sessions (of the panel's timestamps) after which the data is taken to belong
        to another security; >= 1.
    delisting_return : float, default 0.0
        Return from the last close to the delisting proceeds (CRSP's delisting return), in
        [-1, 10]; -1: the position is worth nothing.
    """

    gap_sessions: int = 20
    delisting_return: float = 0.0

    def __post_init__(self) -> None:
        g = self.gap_sessions
        if isinstance(g, bool) or not isinstance(g, int) or g < 1:
            raise ValueError(f"gap_sessions must be an int >= 1, got {g!r}")
        r = self.delisting_return
        if (
            isinstance(r, bool)
            or not isinstance(r, int | float)
            or not math.isfinite(r)
            or not -1.0 <= r <= 10.0
        ):
            raise ValueError(f"delisting_return must be a number in [-1, 10], got {r!r}")
        object.__setattr__(self, "delisting_return", float(r))


def delisting_rows(data: MarketData, gap_sessions: int) -> npt.NDArray[np.bool_]:
    """Rows of ``data`` at which their symbol is delisted (:class:`Delisting`;
    :func:`engine.core.delisting.delisting_rows`).

    Returns
    -------
    bool array, shape (n_rows,)
        True at a symbol's last row before the panel's last session, and at a row whose
        symbol's next row is more than ``gap_sessions`` sessions later.
    """
    return core_delisting.delisting_rows(data.offsets, data.sym_id, gap_sessions)
