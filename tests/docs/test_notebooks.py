"""The example notebooks: stored without outputs, equal to their generator, and they run.

Each notebook is executed with nbclient in a fresh kernel (the ``docs`` extra: nbclient,
nbformat, ipykernel); the test is skipped, with the reason, when those are not installed, and
the S&P notebooks are skipped when the data is missing (outside CI).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is in the docs extra")
nbclient = pytest.importorskip("nbclient", reason="nbclient is in the docs extra")
if importlib.util.find_spec("ipykernel") is None:
    pytest.skip("ipykernel (docs extra) is not installed", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DATA_ROOT = Path(os.environ.get("ML4T_DATA_ROOT", ROOT.parent / "shared" / "data")).resolve()
NEEDS_SP500 = {"02_sp500_top25_risk.ipynb", "03_vix_regime.ipynb"}
NOTEBOOKS = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", EXAMPLES / "make_notebooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebooks_are_the_generated_ones_without_outputs() -> None:
    generator = _generator()
    assert sorted(generator.NOTEBOOKS) == NOTEBOOKS and len(NOTEBOOKS) == 3
    for name, cells in generator.NOTEBOOKS.items():
        stored = (EXAMPLES / name).read_text()
        assert stored == generator.render(cells), f"{name}: rerun examples/make_notebooks.py"
        notebook = nbformat.reads(stored, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, name


def _runnable(name: str) -> bool:
    return name not in NEEDS_SP500 or (DATA_ROOT / "sp500_5yr_daily_ohlcv.parquet").is_file()


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every runnable notebook executed, all at once, each by nbclient in its own fresh kernel.

    Maps the notebook name to the executed notebook, or to the exception its execution raised
    (``CellExecutionError`` naming the cell), which that notebook's test re-raises. The kernels
    are separate processes that write only under their own temporary folders, so running them
    side by side changes nothing a test checks and uses both cores.
    """
    names = [name for name in NOTEBOOKS if _runnable(name)]
    clients = [
        nbclient.NotebookClient(
            nbformat.read(EXAMPLES / name, as_version=4),
            timeout=600,
            kernel_name="python3",
            resources={"metadata": {"path": str(tmp_path_factory.mktemp(Path(name).stem))}},
        )
        for name in names
    ]

    async def execute_all() -> list[Any]:
        runs = (client.async_execute() for client in clients)
        return await asyncio.gather(*runs, return_exceptions=True)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ML4T_DATA_ROOT", str(DATA_ROOT))  # the kernels inherit it
        outcomes = asyncio.run(execute_all())
    return dict(zip(names, outcomes, strict=True))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_without_error(name: str, request: pytest.FixtureRequest) -> None:
    sp500 = DATA_ROOT / "sp500_5yr_daily_ohlcv.parquet"
    if not _runnable(name):
        if os.environ.get("CI"):
            pytest.fail(f"CI=true but {sp500} is missing")
        pytest.skip(f"no S&P file under {DATA_ROOT}")
    notebook = request.getfixturevalue("executed")[name]
    if isinstance(notebook, BaseException):
        raise notebook  # CellExecutionError names the cell on any failure
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []
    # Every figure cell drew a PNG (figures display inline, with or without pyplot).
    images = [
        o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 1
