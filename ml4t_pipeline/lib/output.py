"""An ``ml4t run`` output folder as one atomic set: staging, completion marker, swap, lock.

Dagster-free helpers used by :mod:`ml4t_pipeline.runner` and the ``ml4t`` command.

Layout beside an output folder ``DIR`` (all in DIR's parent, so every rename stays on one
file system):

``DIR``
    The visible, complete output set. Its completion marker ``DIR/run.json`` (written last) lists
    every file of the set with its SHA-256 and size; a folder without a valid marker is not a
    complete set (an interrupted run, or not an ``ml4t run`` folder at all).
``DIR.tmp-<pid>-<hex>``
    A staging folder: a run writes its whole set here, then swaps it in. After a swap the same
    name briefly holds the previous set until it is removed.
``DIR.old-<pid>-<hex>``
    Only on systems without ``renameat2(RENAME_EXCHANGE)``: the previous set between the two
    renames of the fallback swap.
``DIR.lock``
    The lock file (``fcntl.flock``, exclusive, holding the owner's pid). The kernel releases the
    lock when its process dies, so a killed run never blocks the next one.

The swap exchanges the staging folder and ``DIR`` in one ``renameat2(..., RENAME_EXCHANGE)``
system call (Linux >= 3.15, glibc >= 2.28; see ``man 2 rename``): at every instant ``DIR`` is
either the previous complete set or the new complete set. Elsewhere it falls back to two renames
(``DIR`` → ``DIR.old-*``, staging → ``DIR``); a process killed between them leaves ``DIR``
missing, and the next locked operation on ``DIR`` puts the previous set back
(:func:`recover_output`).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from ml4t_pipeline.lib.lockfile import (
    UnsafeLockFileError,
    check_lock_content,
    open_lock_file,
    read_lock_pid,
)

MANIFEST = "run.json"
"""Name of the completion marker inside an output folder."""
MANIFEST_FORMAT = "ml4t-run/1"
"""Value of the marker's ``format`` field."""
MAX_MARKER_BYTES = 64 << 20
"""Largest ``run.json`` read when deciding whether a folder may be replaced (64 MiB)."""
PAUSE_ENV = "ML4T_TEST_PAUSE_AT"
"""Test-only: name of a phase at which :func:`pause_at` sleeps (so a test can kill the run)."""
PAUSE_SECONDS_ENV = "ML4T_TEST_PAUSE_SECONDS"
"""Test-only: how long :func:`pause_at` sleeps (default 300 s)."""

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


class OutputError(Exception):
    """The output folder cannot be used or written; the message names the path.

    Attributes
    ----------
    path : Path
        The offending path.
    """

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path


class OutputInUseError(OutputError):
    """Another process holds the output folder's lock.

    Attributes
    ----------
    pid : int or None
        The pid recorded in the lock file (None when it could not be read).
    """

    def __init__(self, path: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "another process"
        super().__init__(path, f"output folder {path} is in use by {who}")
        self.pid = pid


class IncompleteOutputError(OutputError):
    """A folder has no valid ``run.json``, or its files do not match it."""


# --- strict JSON -------------------------------------------------------------------------------


def to_json_safe(value: Any) -> Any:
    """Return ``value`` with every non-finite float replaced by None, recursively.

    Numpy scalars become Python numbers and numpy arrays lists (``.tolist()``); tuples and sets
    become lists, dates and datetimes ISO 8601 strings, Paths strings; mapping keys become
    strings. Anything else JSON cannot hold raises ``TypeError`` (at :func:`dumps_strict`).
    """
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [to_json_safe(v) for v in items]
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist) and not isinstance(value, str | bytes):
        converted = tolist()
        return to_json_safe(converted) if isinstance(converted, list) else _finite(converted)
    return _finite(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value


def dumps_strict(value: Any, *, indent: int | None = 2) -> str:
    """Serialize to strict JSON (RFC 8259): NaN and ±inf become ``null``, keys are sorted.

    Raises
    ------
    TypeError
        A value JSON cannot represent (after :func:`to_json_safe`).
    """
    return json.dumps(to_json_safe(value), indent=indent, sort_keys=True, allow_nan=False)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"not strict JSON: bare {name}")


def loads_strict(text: str) -> Any:
    """Parse strict JSON: a bare ``NaN``, ``Infinity`` or ``-Infinity`` raises ``ValueError``."""
    return json.loads(text, parse_constant=_refuse_constant)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to a temporary sibling, fsync it, then rename it onto ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# --- manifest ----------------------------------------------------------------------------------


_SYNC_THREADS = 8
"""Threads that hash and fsync the files of an output set at once (:func:`write_manifest`)."""


def sha256_file(path: Path, *, sync: bool = False) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks); ``sync`` also fsyncs the file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
        if sync:
            os.fsync(fh.fileno())
    return digest.hexdigest()


def list_files(folder: Path) -> list[str]:
    """Every regular file under ``folder`` (POSIX relative paths, sorted), except ``run.json``."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in files:
            rel = (Path(root) / name).relative_to(folder).as_posix()
            if rel != MANIFEST:
                out.append(rel)
    return sorted(out)


def write_manifest(folder: Path, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Write the completion marker ``folder/run.json`` (do this last, after every other file).

    Parameters
    ----------
    folder : Path
        The finished output set.
    fields : Mapping
        Run description (experiment, config hash, started/finished times, warnings, ...); stored
        beside ``format`` and ``files``.

    Every file and folder of the set is fsynced before the marker is written, so after a crash
    of the machine too a marker never describes files that did not reach the disk.

    Returns
    -------
    dict
        The marker as written: ``format``, the given fields and ``files``, a mapping
        ``relative path -> {"sha256": hex, "size": bytes}`` of every file in the set.
    """
    rels = list_files(folder)

    def entry(rel: str) -> dict[str, Any]:
        path = folder / rel
        return {"sha256": sha256_file(path, sync=True), "size": path.stat().st_size}

    # The fsyncs (one per file and folder: ~700 for the S&P run) wait on the disk, not the CPU,
    # and release the GIL, as does hashing: issued from a few threads at once they overlap
    # instead of queueing one by one (1.6 s -> ~0.3 s of the S&P run's wall time).
    with ThreadPoolExecutor(max_workers=_SYNC_THREADS) as pool:
        files = dict(zip(rels, pool.map(entry, rels), strict=True))
        # the set is on disk before its marker says it is complete
        list(pool.map(_fsync_dir, [Path(root) for root, _, _ in os.walk(folder)]))
    manifest = {**fields, "format": MANIFEST_FORMAT, "files": files}
    write_text_atomic(folder / MANIFEST, dumps_strict(manifest) + "\n")
    _fsync_dir(folder)
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    """Read and check ``folder/run.json``: it parses and every listed top-level file is there.

    Sizes of the listed files are compared (cheap); hashes are checked by :func:`verify_files`.

    Raises
    ------
    IncompleteOutputError
        No marker, a marker that is not strict JSON or not ``ml4t-run/1``, or a listed file
        missing or of another size. The message says the run may have been interrupted.
    """
    marker = folder / MANIFEST
    hint = (
        "it is not a complete `ml4t run` output folder (the run that wrote it may have been "
        "interrupted, or it predates run.json); rerun `ml4t run CONFIG --output "
        f"{folder}`"
    )
    if not folder.is_dir():
        raise IncompleteOutputError(folder, f"{folder}: no such folder")
    if not marker.is_file():
        raise IncompleteOutputError(folder, f"{folder} has no {MANIFEST}: {hint}")
    try:
        manifest = loads_strict(marker.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise IncompleteOutputError(folder, f"{marker} is not valid JSON ({exc}): {hint}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise IncompleteOutputError(folder, f"{marker} is not an {MANIFEST_FORMAT} marker: {hint}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise IncompleteOutputError(folder, f"{marker} has no file list: {hint}")
    bad = []
    for rel, entry in files.items():
        path = folder / rel
        if "/" in rel:
            continue  # assets/: sizes checked with the hashes, on demand
        if not path.is_file() or path.stat().st_size != entry.get("size"):
            bad.append(rel)
    if bad:
        raise IncompleteOutputError(
            folder, f"{folder}: files missing or changed since {MANIFEST}: {bad[:10]}: {hint}"
        )
    return dict(manifest)


def verify_files(
    folder: Path, manifest: Mapping[str, Any], names: Iterable[str] | None = None
) -> None:
    """Check the SHA-256 and size of ``names`` (default: every listed file) against the marker.

    Raises
    ------
    IncompleteOutputError
        A file is missing, not listed, or differs; the message names the files.
    """
    files = manifest["files"]
    wanted = list(files) if names is None else list(names)
    bad = []
    for rel in wanted:
        path = folder / rel
        entry = files.get(rel)
        if entry is None:
            if path.exists():
                bad.append(f"{rel} (not in {MANIFEST})")
            continue
        if not path.is_file():
            bad.append(f"{rel} (missing)")
        elif path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            bad.append(f"{rel} (changed)")
    if bad:
        raise IncompleteOutputError(
            folder, f"{folder}: files do not match {MANIFEST}: {', '.join(bad[:10])}"
        )


# --- lock --------------------------------------------------------------------------------------


def lock_path(final: Path) -> Path:
    """The lock file of output folder ``final``: ``final.lock`` beside it."""
    return final.with_name(final.name + ".lock")


def _read_pid(path: Path) -> int | None:
    for _ in range(20):  # the owner writes its pid right after taking the lock
        text = read_lock_pid(path)
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return None


@contextmanager
def output_lock(final: Path) -> Iterator[Path]:
    """Hold the exclusive lock of output folder ``final`` (non-blocking).

    Yields the lock file's path. The lock file holds the owner's pid and is removed on release;
    a process killed while holding it leaves the file, whose lock the kernel has released.
    The lock file is opened without following symbolic links and is rewritten only when it is
    a regular file holding a pid or nothing (:mod:`ml4t_pipeline.lib.lockfile`), so a link or
    a file planted at ``final.lock`` is never truncated.

    Raises
    ------
    OutputInUseError
        Another process holds the lock (its pid is in the message).
    OutputError
        The lock file cannot be created (e.g. the parent folder is not writable), or it is a
        symbolic link, not a regular file, or holds something other than a pid (the message
        names it; the file is left untouched).
    """
    path = lock_path(final)
    while True:
        try:
            fd = open_lock_file(path)
        except UnsafeLockFileError as exc:
            raise OutputError(path, str(exc)) from exc
        except OSError as exc:
            raise OutputError(
                path, f"cannot write beside output folder {final}: {path}: {exc.strerror}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputInUseError(final, _read_pid(path)) from None
        # The previous owner may have unlinked the file between our open and our flock.
        try:
            same = os.lstat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        check_lock_content(fd, path)  # a file of someone else's is left as it is
    except UnsafeLockFileError as exc:
        os.close(fd)
        raise OutputError(path, str(exc)) from exc
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        with suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


# --- staging and swap --------------------------------------------------------------------------

_SIBLING = re.compile(r"\.(tmp|old)-(\d+)-[0-9a-f]{8}$")


def siblings(final: Path) -> list[Path]:
    """Leftover staging (``.tmp-*``) and previous-set (``.old-*``) folders beside ``final``."""
    prefix = final.name
    out = []
    try:
        entries = list(final.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        rest = entry.name[len(prefix) :] if entry.name.startswith(prefix) else ""
        if _SIBLING.fullmatch(rest):
            out.append(entry)
    return sorted(out)


def recover_output(final: Path) -> None:
    """Tidy the leftovers of interrupted runs beside ``final``; call with the lock held.

    If ``final`` is missing while a previous set ``final.old-*`` exists (a fallback swap killed
    between its two renames), the previous set is put back. Every other staging or previous-set
    folder is removed: only the lock holder creates them, so they belong to dead processes.
    """
    leftovers = siblings(final)
    if not final.exists():
        olds = [p for p in leftovers if ".old-" in p.name[len(final.name) :]]
        for old in olds:
            if (old / MANIFEST).is_file():
                old.rename(final)
                leftovers.remove(old)
                break
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)


def resolve_output(output: Path) -> Path:
    """The absolute, symlink-free path of output folder ``output``; its parents are created.

    Two spellings of one folder (through a symlink, ``..``) give one path, hence one lock.

    Raises
    ------
    OutputError
        ``output`` is a root folder, or its parent cannot be created (e.g. a parent is a regular
        file or on a read-only file system); the message names the path and the reason.
    """
    final = Path(os.path.abspath(output))
    if final.is_symlink() or final.exists():
        final = final.resolve()
    if final.parent == final:
        raise OutputError(final, f"output folder {final} cannot be a root folder")
    for ancestor in [final, *final.parents]:
        if ancestor.exists():
            if ancestor != final and not ancestor.is_dir():
                raise OutputError(
                    ancestor,
                    f"cannot create output folder {final}: {ancestor} is a file, not a folder",
                )
            break
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            final.parent, f"cannot create output folder {final}: {final.parent}: {exc.strerror}"
        ) from exc
    return final.parent.resolve() / final.name


def has_marker(folder: Path) -> bool:
    """Whether ``folder/run.json`` is a completion marker of ours.

    The marker must be a regular file (not a link) of strict JSON holding an object whose
    ``format`` is ``ml4t-run/1`` and whose ``files`` is a mapping. The listed files are not
    checked here (:func:`read_manifest` and :func:`verify_files` do that).
    """
    marker = folder / MANIFEST
    if marker.is_symlink() or not marker.is_file():
        return False
    try:
        if marker.stat().st_size > MAX_MARKER_BYTES:
            return False
        manifest = loads_strict(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False
    return (
        isinstance(manifest, dict)
        and manifest.get("format") == MANIFEST_FORMAT
        and isinstance(manifest.get("files"), dict)
    )


def check_replaceable(final: Path) -> None:
    """Refuse an existing ``final`` that a swap would destroy without it being an output set.

    ``final`` may be missing, an empty folder, or a folder whose ``run.json`` is a marker of
    ours (:func:`has_marker`, an earlier ``ml4t run``; its files may have been edited since).
    Anything else is somebody's folder and is never replaced, even when every name in it looks
    like one an ``ml4t run`` writes (``report.html``, ``assets/``, ...).

    Raises
    ------
    OutputError
        ``final`` is a file, or a folder that is neither empty nor marked (the message names
        the folder and a few of its entries); nothing is deleted.
    """
    if not final.exists() and not final.is_symlink():
        return
    if not final.is_dir():
        raise OutputError(final, f"output folder {final} exists and is not a folder")
    if has_marker(final):
        return
    try:
        entries = sorted(p.name for p in final.iterdir())
    except OSError as exc:
        raise OutputError(final, f"cannot read output folder {final}: {exc.strerror}") from exc
    if entries:
        raise OutputError(
            final,
            f"output folder {final} exists and is not an `ml4t run` output folder (no valid "
            f"{MANIFEST}; it holds {entries[:5]}{' ...' if len(entries) > 5 else ''}); "
            "nothing was deleted: choose another --output, or empty or remove the folder",
        )


def make_staging(final: Path) -> Path:
    """Create the empty staging folder ``final.tmp-<pid>-<hex>`` beside ``final``.

    Raises
    ------
    OutputError
        The parent folder cannot be created or written (the message names it).
    """
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        tmp.mkdir()
    except OSError as exc:
        raise OutputError(
            final.parent, f"cannot write beside output folder {final}: {tmp}: {exc.strerror}"
        ) from exc
    return tmp


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two existing paths (``renameat2(RENAME_EXCHANGE)``).

    Returns False when the system call is unavailable or refused by the file system (the caller
    falls back); raises ``OSError`` for any other failure.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def swap_into_place(staging: Path, final: Path) -> Path | None:
    """Make the complete set in ``staging`` visible as ``final``.

    Returns the path that now holds the previous set (to be removed by the caller, after
    :func:`pause_at` ``"swapped"``), or None when there was none. ``final`` is at every instant
    the previous or the new set, except in the two-rename fallback (see the module docstring).

    Raises
    ------
    OutputError
        A rename failed; ``final`` is unchanged.
    """
    try:
        if not final.exists():
            staging.rename(final)
            _fsync_dir(final.parent)
            return None
        if exchange(staging, final):
            _fsync_dir(final.parent)
            return staging
        old = final.with_name(f"{final.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        final.rename(old)
        pause_at("swap-gap")
        try:
            staging.rename(final)
        except OSError:
            old.rename(final)
            raise
        _fsync_dir(final.parent)
        return old
    except OSError as exc:
        raise OutputError(final, f"cannot replace output folder {final}: {exc.strerror}") from exc


def remove_tree(path: Path | None) -> None:
    """Remove a staging or previous-set folder, ignoring errors (leftovers are tidied later)."""
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def pause_at(phase: str) -> None:
    """Test-only hook: sleep at ``phase`` when ``$ML4T_TEST_PAUSE_AT`` names it.

    Prints ``ml4t-test-paused <phase> <pid>`` to stderr first so a test can wait for the line and
    then kill the process at a known point; ``SIGUSR1`` ends the pause early (the run goes on),
    else it lasts ``$ML4T_TEST_PAUSE_SECONDS`` (default 300). Phases of a run, in order:
    ``staged``, ``materialized``, ``writing`` (some top-level files written), ``marked``
    (``run.json`` written in the staging folder), ``swap-gap`` (fallback swap only), ``swapped``
    (new set visible, previous set not yet removed). Never set the variable outside tests.
    """
    if os.environ.get(PAUSE_ENV) != phase:
        return
    seconds = float(os.environ.get(PAUSE_SECONDS_ENV, "300"))
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        print(f"ml4t-test-paused {phase} {os.getpid()}", file=sys.stderr, flush=True)
        signal.sigtimedwait({signal.SIGUSR1}, seconds)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def utc_now() -> str:
    """The current UTC time as ISO 8601 with microseconds (``...+00:00``)."""
    return datetime.now(UTC).isoformat()
