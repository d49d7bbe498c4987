"""The Python driver's broker: order intake, the fill passes, fill bookkeeping, risk hooks.

The per-timestamp loop (:mod:`engine.engine`) calls :class:`Broker`'s step methods in the
design's order; strategies reach it through the :class:`engine.Strategy` helpers. Every fill
decision and portfolio limit is the execution core's (:mod:`engine.core`), called in its
Python form. One concept per module:

- :mod:`engine.broker.state`: the run state (cash, positions, marks, levels, orders, clock)
  and the primitives shared by the others;
- :mod:`engine.broker.intake`: the strategy's orders, checked and queued;
- :mod:`engine.broker.passes`: the fill passes of a bar (the open, resting orders, stop-loss /
  take-profit levels, the close) and the fill rules;
- :mod:`engine.broker.accounting`: one fill executed and booked (cash check, position, trades,
  records, bracket children);
- :mod:`engine.broker.hooks`: hook B (new orders) and hook C (open positions) of the risk layer;
- :mod:`engine.broker.broker`: :class:`Broker`, the public face.
"""

from engine.broker.broker import Broker

__all__ = ["Broker"]
