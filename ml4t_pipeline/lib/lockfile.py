"""Opening lock files safely: never through a symbolic link, never over a file that is not ours.

Both kinds of lock file of the pipeline, ``DIR.lock`` beside an ``ml4t run`` output folder
(:func:`ml4t_pipeline.lib.output.output_lock`) and the storage locks
``<asset>/.ml4t/locks/<key>.lock`` (:func:`ml4t_pipeline.lib.storage.exclusive_lock`), are
created if missing and rewritten with the holder's pid. Opened naively, a symbolic link planted
at that path would make the run truncate whatever file the link points to. Here a lock file is
opened with ``O_NOFOLLOW`` (a link at the path itself is refused by the kernel, ``ELOOP``), must
be a regular file with one hard link, and may hold only a pid (or nothing) before it is
rewritten: anything else is refused with :class:`UnsafeLockFileError` naming the path, and the
file is left as it was.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

_PID_TEXT = re.compile(rb"\d*\n?")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # POSIX; Windows has no symbolic-link flag here
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_MAX_PID_BYTES = 32


class UnsafeLockFileError(RuntimeError):
    """A lock file is a symbolic link, not a regular file, or holds something other than a pid.

    Attributes
    ----------
    path : Path
        The refused lock file.
    """

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path


def _refuse(path: Path, why: str) -> UnsafeLockFileError:
    return UnsafeLockFileError(
        path,
        f"lock file {path} {why}; refusing to use it (nothing was written to it). Remove it if "
        "it is yours; the run recreates its lock file",
    )


def open_lock_file(path: Path) -> int:
    """Open (creating if needed) the lock file ``path`` read-write without following links.

    Parameters
    ----------
    path : Path
        The lock file. Its folder must exist.

    Returns
    -------
    int
        An open file descriptor (close-on-exec) of a regular file with a single hard link.

    Raises
    ------
    UnsafeLockFileError
        ``path`` is a symbolic link, or not a regular file, or a file with several hard links.
    OSError
        Any other failure to open or create it (e.g. the folder is not writable).
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK) or os.path.islink(path):
            raise _refuse(path, "is a symbolic link") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _refuse(path, "is not a regular file")
    if info.st_nlink != 1:
        os.close(fd)
        raise _refuse(path, f"has {info.st_nlink} hard links (a lock file has one)")
    return fd


def check_lock_content(fd: int, path: Path) -> None:
    """Refuse a lock file that holds anything but a pid (call with the lock held, before writing).

    Raises
    ------
    UnsafeLockFileError
        The file holds more than a line of digits: it is not one of our lock files.
    """
    head = os.pread(fd, _MAX_PID_BYTES + 1, 0)
    if len(head) > _MAX_PID_BYTES or not _PID_TEXT.fullmatch(head):
        raise _refuse(path, "holds something other than a process id (not a lock file of ours)")


def read_lock_pid(path: Path) -> str:
    """The pid text recorded in lock file ``path`` ("" if unreadable), without following links."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        return os.read(fd, _MAX_PID_BYTES).decode("ascii", "replace").strip()
    except OSError:
        return ""
    finally:
        os.close(fd)
