"""Cross-framework validation (issue 7): the reference experiment, its runs, fill comparison.

``reference`` and ``compare`` need only the core dependencies. ``backtrader_run`` and
``vectorbt_run`` import Backtrader / VectorBT (optional ``validation`` extra) and are imported
explicitly by callers, never from here, so this package imports without them.
"""

from ml4t_pipeline.lib.crossval.compare import (
    FILL_COLUMNS,
    FillComparison,
    FrameworkRun,
    RunComparison,
    compare_fills,
    compare_runs,
    run_ml4t,
)
from ml4t_pipeline.lib.crossval.reference import (
    REFERENCE_SYMBOL_COUNT,
    ReferenceInputs,
    ReferenceSpec,
    build_reference_inputs,
    inputs_from_wide,
    load_reference_inputs,
    select_clean_symbols,
)

__all__ = [
    "FILL_COLUMNS",
    "REFERENCE_SYMBOL_COUNT",
    "FillComparison",
    "FrameworkRun",
    "ReferenceInputs",
    "ReferenceSpec",
    "RunComparison",
    "build_reference_inputs",
    "compare_fills",
    "compare_runs",
    "inputs_from_wide",
    "load_reference_inputs",
    "run_ml4t",
    "select_clean_symbols",
]
