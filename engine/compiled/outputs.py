"""The Python-side conversion of a compiled TopN run's buffers
(:class:`engine.compiled.topn.CompiledRun`).

The rejection rows' rule names and reason texts as codes of the run's
:class:`engine.core.records.Records` (:func:`_limit_texts` for the portfolio limits,
:func:`_unplaced_rules` for orders never placed) and the symbol names of the open positions
(:func:`_symbol_series`, :func:`_gather`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.compiled.state import LimitText
from engine.core.layout import UNPLACED
from engine.core.records import RecordArray, Records
from engine.data import MarketData


def _symbol_series(data: MarketData) -> pl.Series:
    return pl.Series(data.symbols.tolist(), dtype=pl.String)


def _gather(names: pl.Series, codes: npt.NDArray[Any]) -> pl.Series:
    """``names[codes]`` as a String series (no per-row Python)."""
    return names.gather(pl.Series(codes, dtype=pl.Int64)) if codes.size else names.clear()


def _unplaced_rules(rejections: RecordArray, records: Records) -> None:
    """The ``rule`` of the rows of orders never placed (``reject_unplaced``: a reason code
    there) as the text code of that reason's name; the strategy's (code 0) stays the empty
    text."""
    rows = np.flatnonzero((rejections["order_id"] == UNPLACED) & (rejections["rule"] > 0))
    for k in rows.tolist():
        name = records.reasons[int(rejections["rule"][k])]
        rejections["rule"][k] = records.text_code(name)


def _limit_texts(rejections: RecordArray, limits: list[LimitText], records: Records) -> None:
    """The reason texts and rule names of the rejection / shrink rows a compiled portfolio
    limit wrote (``limit >= 0``), from the limits' own ``reason_text``, as codes of
    ``records.texts``: one Python call per distinct ``(limit, shrink, value, bound)``, so a
    halted run's thousands of identical rejections cost one text."""
    rows = np.flatnonzero(rejections["limit"] >= 0)
    if rows.size == 0:
        return
    keys = [rejections[field][rows] for field in ("limit", "shrink_text", "value", "bound")]
    order = np.lexsort(keys[::-1])
    first = np.zeros(rows.size, dtype=np.bool_)  # the first row of each distinct key, sorted
    first[0] = True
    for key in keys:
        ordered = key[order]
        first[1:] |= ordered[1:] != ordered[:-1]
    group = np.empty(rows.size, dtype=np.int64)
    group[order] = np.cumsum(first) - 1
    codes = np.array(
        [
            records.text_code(limits[int(r)].reason_text(bool(shrink), float(value), float(bound)))
            for r, shrink, value, bound in zip(*(key[order[first]] for key in keys), strict=True)
        ],
        dtype=rejections.dtype["reason"],
    )
    names = np.array(
        [records.text_code(limit.name) for limit in limits], dtype=rejections.dtype["rule"]
    )
    rejections["reason"][rows] = codes[group]
    rejections["rule"][rows] = names[keys[0]]
