"""Progress display for long commands: a rich progress bar or spinner on stderr, or nothing.

One context manager, :func:`progress`, used by the Python API (``Experiment.run``) and meant
for the console script's long commands (``ml4t run``, ``ml4t sweep``). It draws on **stderr
only**, so a command's stdout (metrics, tables, JSON) is never mixed with it, and it is
**silent unless a person is watching**:

- shown when stderr is a terminal (or, inside Jupyter, in the notebook);
- hidden when ``CI`` or ``PYTEST_CURRENT_TEST`` is set (CI runs, the test suite) or
  ``ML4T_PROGRESS=0``;
- ``ML4T_PROGRESS=1`` or ``force=True`` shows it anyway (e.g. on a redirected stderr).

The display is transient: it disappears when the block ends, leaving the terminal as the
command's own output left it.

Example
-------
>>> from ml4t_pipeline.lib.progress import progress
>>> with progress("trials", total=3, force=False) as bar:
...     for _ in range(3):
...         bar.advance()
>>> bar.completed
3
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["PROGRESS_ENV", "ProgressHandle", "progress", "progress_enabled"]

PROGRESS_ENV = "ML4T_PROGRESS"
"""Environment variable: ``1`` forces the display on, ``0`` turns it off."""

_QUIET_ENVS = ("CI", "PYTEST_CURRENT_TEST")


def _in_jupyter() -> bool:
    if "IPython" not in sys.modules:  # a Jupyter kernel has imported it; no import here
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress_enabled(force: bool | None = None, stream: IO[str] | None = None) -> bool:
    """Whether :func:`progress` would draw anything.

    Parameters
    ----------
    force : bool, optional
        ``True``/``False`` decide outright. ``None`` (default): ``ML4T_PROGRESS`` if set to
        ``0``/``1``, else off under ``CI`` or ``PYTEST_CURRENT_TEST``, else on when ``stream``
        is a terminal or the code runs in a Jupyter kernel.
    stream : text stream, optional
        Where the display would go; default ``sys.stderr``.

    Returns
    -------
    bool
    """
    if force is not None:
        return bool(force)
    setting = os.environ.get(PROGRESS_ENV, "").strip()
    if setting in ("0", "1"):
        return setting == "1"
    if any(os.environ.get(name) for name in _QUIET_ENVS):
        return False
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) or _in_jupyter()


class ProgressHandle:
    """What the ``with progress(...)`` block receives: advance the bar or change its text.

    Works the same whether or not anything is drawn, so callers never branch on it.

    Attributes
    ----------
    completed : int
        Steps advanced so far.
    total : int | None
        Steps expected (None: a spinner with the elapsed time, no bar).
    description : str
        The current text.
    shown : bool
        Whether a display is drawn.
    """

    def __init__(
        self, bar: Progress | None, task: TaskID | None, description: str, total: int | None
    ):
        self._bar, self._task = bar, task
        self.completed = 0
        self.total = total
        self.description = description
        self.shown = bar is not None

    def advance(self, steps: int = 1) -> None:
        """Count ``steps`` more steps as done."""
        self.completed += steps
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, steps)

    def update(self, description: str | None = None, *, total: int | None = None) -> None:
        """Change the text (e.g. the stage now running) or the expected number of steps."""
        if description is not None:
            self.description = description
        if total is not None:
            self.total = total
        if self._bar is not None and self._task is not None:
            fields: dict[str, Any] = {"description": self.description}
            if total is not None:
                fields["total"] = total
            self._bar.update(self._task, **fields)


@contextmanager
def progress(
    description: str,
    *,
    total: int | None = None,
    force: bool | None = None,
    stream: IO[str] | None = None,
) -> Iterator[ProgressHandle]:
    """Show a progress bar (``total`` given) or a spinner with the elapsed time, on stderr.

    Parameters
    ----------
    description : str
        What is running, e.g. ``"experiment demo"`` or ``"sweep: trials"``.
    total : int, optional
        Number of steps; adds a bar, ``done/total`` and the estimated time remaining.
    force : bool, optional
        Override the automatic choice (see :func:`progress_enabled`).
    stream : text stream, optional
        Where to draw; default ``sys.stderr``. Never stdout unless passed explicitly.

    Yields
    ------
    ProgressHandle
        Call ``advance()`` per step and ``update(description)`` per stage.
    """
    if not progress_enabled(force, stream):
        yield ProgressHandle(None, None, description, total)
        return
    # Enabled means someone watches: draw as on a terminal even when stderr is redirected
    # (ML4T_PROGRESS=1), except in Jupyter, where rich renders into the notebook itself.
    console = Console(
        file=stream if stream is not None else sys.stderr,
        force_terminal=None if _in_jupyter() else True,
    )
    columns: list[ProgressColumn | str] = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
    ]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    columns.append(TimeElapsedColumn())
    bar = Progress(*columns, console=console, transient=True)
    with bar:
        task = bar.add_task(description, total=total)
        yield ProgressHandle(bar, task, description, total)
