"""Print the N-th fenced ``bash`` block of the README's Quickstart section (1-based)."""

from __future__ import annotations

import re
import sys
from pathlib import Path


def quickstart_blocks(text: str) -> list[str]:
    """The fenced bash blocks of the ``Quickstart`` section, in order."""
    match = re.search(r"^#+\s*Quick\s*start.*?$(.*?)(?=^#{1,2}\s|\Z)", text, re.S | re.M | re.I)
    if not match:
        raise SystemExit("README has no Quickstart section")
    return re.findall(r"```(?:bash|sh|shell)\n(.*?)```", match.group(1), re.S)


if __name__ == "__main__":
    blocks = quickstart_blocks(Path(sys.argv[1]).read_text())
    print(blocks[int(sys.argv[2]) - 1])
