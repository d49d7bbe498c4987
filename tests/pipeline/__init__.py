"""Tests of ``ml4t_pipeline``, laid out like the package.

- ``lib/`` (``lib/crossval/``, ``lib/sweep/``): the Dagster-free library, one file per module or
  concept (``lib/test_timing.py`` specifies ``ml4t_pipeline/lib/timing.py``);
- ``config/``: experiment configs (``ml4t_pipeline/config``) and what they reach in the engine;
- ``defs/``: the Dagster code location (assets, checks, IO manager, sensors, automation, the
  definitions);
- ``cli/``: the user's faces: ``ml4t`` commands, the runner's output folder, the Python API.

Shared helpers live in ``helpers.py`` (and ``data_cases.py``, ``backtrader_reference.py``),
session fixtures in ``conftest.py``; a test module never imports another test module.
"""
