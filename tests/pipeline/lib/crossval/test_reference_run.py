"""The issue-7 reference run on the real S&P file, through VectorBT, Backtrader and our engine.

Figures (issue 7): 12,918 fills, 6,447 closed trades, final equity 761,782.62 for Backtrader
1.9.78.123 (``checksubmit=False``, sells before buys) and VectorBT 1.2.0 (``from_order_func``
callbacks). Backtrader takes ~45-90 s here, so its test is marked slow; timings are in
``benchmarks/test_crossval.py``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import polars as pl
import pytest

from ml4t_pipeline.lib.crossval.compare import FrameworkRun, compare_fills, compare_runs, run_ml4t
from ml4t_pipeline.lib.crossval.reference import ReferenceInputs, load_reference_inputs

REFERENCE_FILLS = 12_918
REFERENCE_TRADES = 6_447
REFERENCE_EQUITY = 761_782.62


@pytest.fixture(scope="module")
def reference(data_root: Path) -> ReferenceInputs:
    return load_reference_inputs(data_root)


@pytest.fixture(scope="module")
def vectorbt_run(reference: ReferenceInputs) -> FrameworkRun:
    pytest.importorskip("vectorbt")
    from ml4t_pipeline.lib.crossval.vectorbt_run import run_vectorbt

    return run_vectorbt(reference)


def test_vectorbt_reference_run_matches_issue_figures(vectorbt_run: FrameworkRun) -> None:
    assert vectorbt_run.n_fills == REFERENCE_FILLS
    assert vectorbt_run.n_closed_trades == REFERENCE_TRADES
    assert round(vectorbt_run.final_equity, 2) == REFERENCE_EQUITY
    assert vectorbt_run.fills["quantity"].sum() > 0  # long only: positions left open at the end


def test_engine_default_reference_run_first_divergence_is_event_order(
    reference: ReferenceInputs, vectorbt_run: FrameworkRun
) -> None:
    # Default engine = strictly chronological bar events: an opening buy cannot spend the cash
    # of a stop that triggers later in the same bar. The first difference from the frameworks is
    # exactly that: VRSK's buy on 2013-03-18, funded there by INCY's intrabar stop exit.
    ours = run_ml4t(reference)
    cmp = compare_fills(ours.fills, vectorbt_run.fills)
    first = cmp.first_difference().row(0, named=True)
    assert (first["symbol"], first["side"], first["kind"]) == ("VRSK", "buy", "missing")
    assert str(first["timestamp"].date()) == "2013-03-18"
    same_bar = ours.fills.filter(pl.col("timestamp") == first["timestamp"])
    assert same_bar.filter(symbol="INCY")["reason"].to_list() == ["stop"]


def _preset_run(reference: ReferenceInputs, preset: str, **overrides: object) -> FrameworkRun:
    from engine import EXECUTION_PRESETS, ExecutionConfig

    # the preset's fill-semantics fields go through run_ml4t to ExecutionConfig(**fields)
    fields = {**EXECUTION_PRESETS[preset], **overrides}
    ExecutionConfig.preset(preset, **overrides)  # validates the combination
    return run_ml4t(reference, **fields)


@pytest.mark.parametrize("preset", ["backtrader", "vectorbt"])
def test_engine_presets_reference_run_equals_frameworks(
    reference: ReferenceInputs, vectorbt_run: FrameworkRun, preset: str
) -> None:
    # VectorBT's callback run equals Backtrader fill for fill (slow test below), so both presets
    # are compared with it here; the Backtrader comparison itself is in the slow test
    ours = _preset_run(reference, preset)
    assert (ours.n_fills, ours.n_closed_trades) == (REFERENCE_FILLS, REFERENCE_TRADES)
    assert round(ours.final_equity, 2) == REFERENCE_EQUITY
    cmp = compare_runs(ours, vectorbt_run, price_tol=1e-9)
    assert cmp.fills.identical, (preset, cmp.summary_markdown())
    assert cmp.agrees(equity_tol=0.01), (preset, cmp.summary_markdown())
    assert ours.n_rejected == vectorbt_run.n_rejected == 1_023


def test_engine_vectorbt_preset_stop_wins_equals_vectorbt_stop_priority(
    reference: ReferenceInputs,
) -> None:
    pytest.importorskip("vectorbt")
    from ml4t_pipeline.lib.crossval.vectorbt_run import run_vectorbt

    theirs = run_vectorbt(reference, stop_wins=True)
    ours = _preset_run(reference, "vectorbt", exit_conflict="stop_wins")
    assert (ours.n_fills, ours.n_closed_trades) == (12_908, 6_442)
    assert round(ours.final_equity, 2) == 627_171.86
    cmp = compare_runs(ours, theirs, price_tol=1e-9)
    assert cmp.fills.identical, cmp.summary_markdown()
    assert abs(cmp.equity_gap) < 0.01


@pytest.fixture(scope="module")
def backtrader_run(backtrader_reference_folder: Path) -> FrameworkRun:
    # run_backtrader(load_reference_inputs(data_root)) in a niced, untraced child started at
    # collection (tests/background.py, tests/pipeline/backtrader_reference.py)
    run: FrameworkRun = pickle.loads((backtrader_reference_folder / "run.pickle").read_bytes())
    return run


@pytest.mark.slow
def test_backtrader_reference_run_equals_vectorbt_fill_for_fill(
    backtrader_run: FrameworkRun, vectorbt_run: FrameworkRun
) -> None:
    bt_run = backtrader_run
    assert (bt_run.n_fills, bt_run.n_closed_trades) == (REFERENCE_FILLS, REFERENCE_TRADES)
    assert round(bt_run.final_equity, 2) == REFERENCE_EQUITY
    cmp = compare_runs(bt_run, vectorbt_run, price_tol=1e-9)
    assert cmp.fills.identical, cmp.summary_markdown()
    assert abs(cmp.equity_gap) < 0.01


@pytest.mark.slow
def test_engine_backtrader_preset_reference_run_equals_backtrader_fill_for_fill(
    reference: ReferenceInputs, backtrader_run: FrameworkRun
) -> None:
    ours = _preset_run(reference, "backtrader")
    cmp = compare_runs(ours, backtrader_run, price_tol=1e-9)
    assert cmp.fills.identical, cmp.summary_markdown()
    assert abs(cmp.equity_gap) < 0.01
    assert ours.n_rejected == backtrader_run.n_rejected
