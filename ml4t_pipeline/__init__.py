"""ml4t pipeline: the Dagster code location around the ``engine`` backtester."""

from typing import Any

__all__ = ["DataPreparer", "Experiment", "ExperimentResult", "Sweep", "SweepResult"]

_LAZY = {
    "Experiment": "ml4t_pipeline.api",
    "ExperimentResult": "ml4t_pipeline.api",
    "DataPreparer": "ml4t_pipeline.lib.preparer",
    "Sweep": "ml4t_pipeline.sweeps",
    "SweepResult": "ml4t_pipeline.sweeps",
}


def __getattr__(name: str) -> Any:
    # Imported on first use, so `import ml4t_pipeline.<module>` (Dagster, the CLI) stays light.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ml4t_pipeline' has no attribute {name!r}")
