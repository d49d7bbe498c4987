"""Wall time of the issue-7 reference run (461 symbols x 1,259 days) in each framework.

Run: ``python -m pytest benchmarks/test_crossval.py --no-cov --benchmark-only``.
Each benchmark also checks the reference figures (12,918 fills, 6,447 closed trades, final
equity 761,782.62; our engine: its own figures until the cross-framework settings exist) and
records them in ``extra_info``. Backtrader runs once (one round): it takes ~40-90 s.

Recorded on the 2-core dev box (2026-11-22, other jobs running): Backtrader 1.9.78.123
~40-89 s (load-dependent); VectorBT 1.2.0 ``from_order_func`` 0.18 s in a warm process
(6.7-8.4 s for the first call of a fresh process, ~35 s with a cold numba cache); our engine
0.33-0.41 s before the compiled path (includes building ``MarketData`` and its output
frames); the same-process comparison with VectorBT is ``benchmarks/test_vs_vectorbt.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from ml4t_pipeline.lib.crossval.compare import FrameworkRun, run_ml4t
from ml4t_pipeline.lib.crossval.reference import ReferenceInputs


def _record(benchmark: Any, run: FrameworkRun) -> None:
    benchmark.extra_info.update(
        fills=run.n_fills,
        closed_trades=run.n_closed_trades,
        final_equity=round(run.final_equity, 2),
        rejected=run.n_rejected,
    )


def test_crossval_vectorbt_reference_run(benchmark: Any, reference: ReferenceInputs) -> None:
    pytest.importorskip("vectorbt")
    from ml4t_pipeline.lib.crossval.vectorbt_run import run_vectorbt

    run_vectorbt(reference)  # numba compile / cache load outside the timing
    run = benchmark.pedantic(run_vectorbt, args=(reference,), rounds=2, iterations=1)
    _record(benchmark, run)
    assert (run.n_fills, run.n_closed_trades) == (12_918, 6_447)
    assert round(run.final_equity, 2) == 761_782.62


def test_crossval_backtrader_reference_run(benchmark: Any, reference: ReferenceInputs) -> None:
    pytest.importorskip("backtrader")
    from ml4t_pipeline.lib.crossval.backtrader_run import run_backtrader

    run = benchmark.pedantic(run_backtrader, args=(reference,), rounds=1, iterations=1)
    _record(benchmark, run)
    assert (run.n_fills, run.n_closed_trades) == (12_918, 6_447)
    assert round(run.final_equity, 2) == 761_782.62


def test_crossval_engine_reference_run(benchmark: Any, reference: ReferenceInputs) -> None:
    run = benchmark.pedantic(run_ml4t, args=(reference,), rounds=3, iterations=1)
    _record(benchmark, run)
    assert run.n_fills > 0
