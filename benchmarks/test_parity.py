"""The full parity matrix (issue 31): every catalogue scenario against Backtrader and VectorBT.

Run: ``python -m pytest benchmarks/test_parity.py --no-cov --benchmark-only`` (one round: it
runs every scenario once through three frameworks on 12 symbols x 1,259 days). It regenerates
the same table as ``ml4t parity`` (written to ``$PARITY_MATRIX`` when that is set), asserts that
no gap is left without a named setting, and records the run time and the counts in
``extra_info``.

Set ``PARITY_SYMBOLS=all`` for the large-scale run (461 symbols x 1,259 days) of the scenarios in
``PARITY_SCENARIOS`` (comma-separated; default ``long_only,stop_loss_take_profit,
commission_per_share``).

Recorded on the shared 2-core box: see ``docs/reference/parity.md`` (runtime and figures).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import data_root


def test_parity_full_matrix(benchmark: Any) -> None:
    pytest.importorskip("backtrader")
    pytest.importorskip("vectorbt")
    from ml4t_pipeline.lib.crossval.matrix import run_matrix, unexplained_gaps, write_matrix

    symbols = os.environ.get("PARITY_SYMBOLS", "12")
    n_symbols = None if symbols == "all" else int(symbols)
    names = None
    if n_symbols is None:
        names = os.environ.get(
            "PARITY_SCENARIOS", "long_only,stop_loss_take_profit,commission_per_share"
        ).split(",")
    table = benchmark.pedantic(
        run_matrix,
        args=(data_root(),),
        kwargs={"scenarios": names, "n_symbols": n_symbols},
        rounds=1,
        iterations=1,
    )
    if os.environ.get("PARITY_MATRIX"):
        write_matrix(table, Path(os.environ["PARITY_MATRIX"]))
    counts = table.group_by("status").len().rows()
    benchmark.extra_info.update(rows=table.height, status_counts=dict(counts))
    assert unexplained_gaps(table).height == 0
