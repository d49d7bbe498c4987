"""Run the issue-7 Backtrader reference and pickle its ``FrameworkRun`` (a background job).

Backtrader is pure Python and this strategy's callbacks live in ``ml4t_pipeline``, so under the
suite's coverage tracer the real-data run takes ~2.5x its plain time. ``tests/background.py``
starts this module in a niced child when collection selects ``backtrader_run``; the fixture in
``lib/crossval/test_reference_run.py`` waits for it and unpickles the result. The same
``run_backtrader`` on the same inputs, only out of the traced process (its lines stay covered
by the in-process validation-asset tests).

Usage: ``python -m tests.pipeline.backtrader_reference DATA_ROOT OUT.pickle``
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path


def main(data_root: Path, out: Path) -> None:
    from ml4t_pipeline.lib.crossval.backtrader_run import run_backtrader
    from ml4t_pipeline.lib.crossval.reference import load_reference_inputs

    run = run_backtrader(load_reference_inputs(data_root))
    partial = out.with_suffix(".partial")
    partial.write_bytes(pickle.dumps(run))
    partial.replace(out)  # the reader sees a complete pickle or none


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
