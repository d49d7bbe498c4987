"""Built-in strategies and their registry."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np

from engine.core.ledger import zero_shares_order
from engine.data import BarBatch
from engine.strategy import Strategy


class TopNStrategy(Strategy):
    """Hold the ``n`` symbols with the highest value of a signal column (long only).

    On rebalance bars (bar 0, k, 2k, ... of the run, ``k = rebalance_every``) the symbols
    present in the batch with a finite signal are ranked by decreasing signal (ties broken by
    symbol name); the target set is the first ``n``. Then, in this order:

    1. ``close_position`` for every holding not in the target set (held symbols without a bar
       at this timestamp are not ranked, so they are sold too; their order waits for their
       next bar);
    2. a market buy for every target symbol not held and without a working order:
       ``quantity = floor(weight × equity / close)`` with ``weight`` default ``1 / n`` and
       equity and close as of this bar's close.

    Holdings still in the target set are not resized.

    Parameters
    ----------
    signal : str
        A signal (or indicator) column of the market data.
    n : int
        Number of symbols to hold, >= 1.
    rebalance_every : int, default 1
        Rebalance every k-th bar, >= 1.
    weight : float, optional
        Fraction of equity per position, in (0, 1]; default ``1 / n``.

    Raises
    ------
    ValueError
        Bad parameters; at run start, a ``signal`` that is not a column of the data.
    """

    def __init__(
        self, signal: str, n: int, rebalance_every: int = 1, weight: float | None = None
    ) -> None:
        if not isinstance(signal, str) or not signal:
            raise ValueError(f"signal must be a column name, got {signal!r}")
        for name, value in (("n", n), ("rebalance_every", rebalance_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if weight is not None and not (math.isfinite(weight) and 0 < weight <= 1):
            raise ValueError(f"weight must be a fraction in (0, 1], got {weight!r}")
        self.signal = signal
        self.n = n
        self.rebalance_every = rebalance_every
        self.weight = weight
        self._bar = 0

    def __repr__(self) -> str:
        return (
            f"TopNStrategy(signal={self.signal!r}, n={self.n}, "
            f"rebalance_every={self.rebalance_every}, weight={self.weight!r})"
        )

    def on_start(self) -> None:
        """Check the signal column and reset the bar count.

        Raises
        ------
        ValueError
            The signal is not a column of the market data (the columns are listed).
        """
        self._bar = 0
        data = self.broker.data
        if self.signal not in data.columns:
            raise ValueError(
                f"TopNStrategy signal {self.signal!r} is not a signal/indicator column of the "
                f"market data (have {sorted(data.columns)})"
            )

    def on_timestamp_batch(
        self, timestamp: datetime, batch: BarBatch, context: dict[str, float]
    ) -> None:
        """On a rebalance bar (every ``rebalance_every`` bars): rank the finite signals, close
        the positions outside the top ``n`` and buy each top-``n`` symbol not held or pending
        with ``weight × equity / close`` shares (``weight`` default ``1 / n``; a budget below
        one share leaves a ``rounds_to_zero_shares`` rejection row); other bars only count.
        """
        bar = self._bar
        self._bar += 1
        if bar % self.rebalance_every:
            return
        broker = self.broker
        sig = batch[self.signal]
        valid = np.flatnonzero(np.isfinite(sig))
        n = self.n
        if valid.size > 4 * n:
            # keep everything tied with the n-th largest value, then sort that short list
            kth = np.partition(sig[valid], valid.size - n)[valid.size - n]
            valid = valid[sig[valid] >= kth]
        # stable sort on -signal: ties keep symbol (= id) order
        ranked = valid[np.argsort(-sig[valid], kind="stable")][:n]
        target_ids = batch.ids[ranked]
        target = set(target_ids.tolist())
        symbols = broker.data.symbols
        for sid in broker.held().tolist():
            if sid not in target:
                broker.close_position(str(symbols[sid]))
        equity = broker.equity()
        weight = self.weight if self.weight is not None else 1.0 / self.n
        budget = weight * equity
        qty = broker.qty
        pending = broker.pending
        closes = batch.close[ranked]
        for sid, price in zip(target_ids.tolist(), closes.tolist(), strict=True):
            if qty[sid] != 0 or pending[sid] != 0 or price <= 0:
                continue
            shares = broker.round_quantity(budget / price)
            if shares > 0:
                broker.submit(str(symbols[sid]), shares)
            elif zero_shares_order(budget / price, broker.fractional):
                broker.record_unplaced(sid, budget / price)


STRATEGY_REGISTRY: dict[str, type[Strategy]] = {
    "TopN": TopNStrategy,
    "TopNStrategy": TopNStrategy,
}
"""Strategy classes by config name."""
