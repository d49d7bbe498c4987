"""The one execution core: codes and layouts, record buffers, matching, order status.

Both engine drivers call it: the Python per-timestamp loop (:class:`engine.broker.Broker`)
and the compiled whole-run driver of the built-in strategies (:mod:`engine.compiled.topn`).

- :mod:`engine.core.layout`: the codes (order types, statuses, reasons, status reasons,
  rejection events), the rows of the per-symbol state matrices and the order-status
  transition matrix, with the compiled status write that checks it;
- :mod:`engine.core.records`: one record dtype per record kind (orders, fills, trades,
  rejections, portfolio states) and the growable typed buffers both drivers fill;
- :mod:`engine.core.matching`: the raw fill price of each order type and the gap rule for
  stop-loss / take-profit levels;
- :mod:`engine.core.rules`: the decisions of the position rules ``BreakEvenRule`` and
  ``PartialProfitTaking``;
- :mod:`engine.core.actions`, :mod:`engine.core.delisting`, :mod:`engine.core.financing`:
  the market mechanics (splits, dividends and their pay dates, delistings, interest and
  borrow fees).
"""
