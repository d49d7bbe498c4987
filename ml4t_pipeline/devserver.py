"""``python -m ml4t_pipeline.devserver [options]``: ``dagster dev`` that SIGTERM always stops.

``dagster dev`` gives SIGTERM whatever disposition SIGINT has when it starts
(``dagster._utils.interrupts.setup_interrupt_handlers``: "map SIGTERM to SIGINT"). A
non-interactive shell starts a background job (``dagster dev &`` in a script, a CI step, a
``nohup`` wrapper) with SIGINT *ignored*, and a Python parent whose own SIGINT is ignored passes
that on too; Python then keeps SIGINT ignored, so ``dagster dev``, its webserver, daemon and code
servers all ignore SIGTERM, and ``kill -TERM -- -PGID`` leaves them running (measured: still up
40 s after the signal, every process of the group alive).

This launcher puts SIGINT and SIGTERM back to their default dispositions and replaces itself
with ``python -m dagster dev`` (same interpreter, same arguments, same process id), so SIGTERM
or Ctrl-C stops every Dagster process of the group within seconds: ``dagster dev`` sends the
webserver and the daemon its shutdown message, a run in progress is marked failed
("interrupted").
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence


def dagster_dev_argv(args: Sequence[str]) -> list[str]:
    """The command this launcher executes: ``<this python> -m dagster dev <args>``."""
    return [sys.executable, "-m", "dagster", "dev", *args]


def restore_stop_signals() -> None:
    """Default dispositions for SIGINT and SIGTERM (undoing an inherited "ignore")."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - replaces the process
    """Restore the stop signals and exec ``dagster dev`` with ``argv`` (default: our own)."""
    restore_stop_signals()
    command = dagster_dev_argv(sys.argv[1:] if argv is None else argv)
    os.execv(command[0], command)


if __name__ == "__main__":  # pragma: no cover
    main()
