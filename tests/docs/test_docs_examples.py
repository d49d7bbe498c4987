"""Every ```python block in docs/ and in the README runs: the blocks of a page in order, in one
namespace.

Each page runs in a fresh temporary folder that holds a copy of ``configs/`` (so examples can
say ``configs/demo.yaml``). A block preceded by the line ``<!-- docs-test: skip -->`` is not
run; the test asserts that marker stays rare. Shell and YAML blocks are not executed.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SKIP_MARKER = "<!-- docs-test: skip -->"
_FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(line number, code, skipped) of every fenced ```python block of a Markdown page."""
    blocks = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        blocks.append((line, match.group(1), before == SKIP_MARKER))
    return blocks


README = ROOT / "README.md"
PAGES = [*sorted(DOCS.rglob("*.md")), README]
PAGES_WITH_CODE = [p for p in PAGES if python_blocks(p.read_text())]


def test_docs_extractor_finds_blocks_and_the_skip_marker() -> None:
    text = "intro\n```python\nx = 1\n```\n" + SKIP_MARKER + "\n```python\nraise SystemExit\n```\n"
    assert python_blocks(text) == [(2, "x = 1\n", False), (6, "raise SystemExit\n", True)]
    assert python_blocks("```bash\nls\n```\n") == []


def test_docs_have_examples_and_skip_marker_is_rare() -> None:
    assert len(PAGES_WITH_CODE) >= 8
    assert README in PAGES_WITH_CODE
    skipped = sum(b[2] for p in PAGES for b in python_blocks(p.read_text()))
    assert skipped <= 2, f"{skipped} python blocks are marked {SKIP_MARKER!r}"


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for line, code, skipped in python_blocks(page.read_text()):
        if skipped:
            continue
        compiled = compile(code, f"{page.relative_to(ROOT)}:{line}", "exec")
        exec(compiled, namespace)  # noqa: S102 - the documentation's own examples
