"""One caption writer at a time per dataset: an exclusive lock in ``<dataset>/.kiln/``.

Every caption edit (``kiln tags``, auto-captioning, undo, the TUI's editor and batch edits)
reads, decides and writes under :func:`caption_lock`, and records its undo step under the
same lock, so two edits started together both land, one after the other, instead of the
second overwriting the first.

The lock is ``flock(2)`` on ``.kiln/captions.lock``: the kernel releases it when its holder
exits, however it exits (``kill -9`` included), so a lock is never stale; the holder's pid
is written into the file only to name it in the message of a caller that gave up waiting.
Within one process the lock is re-entrant (the CLI holds it across preview and apply, and
``apply_plan`` takes it again), and threads of the process take turns on it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from kiln.engine.dataset.store import STATE_FOLDER
from kiln.engine.errors import KilnError
from kiln.engine.fsutil import flock_exclusive, read_lock_pid, remove_stale_temps, write_lock_pid

LOCK_NAME = "captions.lock"
WAIT_S = 60.0


class CaptionsBusy(KilnError):
    """Another process kept the dataset's caption lock for longer than the caller would wait."""


class _Held:
    """This process's hold on one dataset's lock: the open file, the thread lock, the depth."""

    def __init__(self) -> None:
        self.thread_lock = threading.RLock()
        self.fd: int | None = None
        self.depth = 0


_held: dict[Path, _Held] = {}
_cleaned: set[Path] = set()
_held_guard = threading.Lock()


def lock_path(root: Path) -> Path:
    """The lock file of a dataset."""
    return Path(root) / STATE_FOLDER / LOCK_NAME


@contextlib.contextmanager
def caption_lock(root: Path, wait_s: float = WAIT_S) -> Iterator[None]:
    """Hold the dataset's caption lock for the ``with`` block.

    Raises:
        CaptionsBusy: Another process held it for ``wait_s`` seconds; the message names its
            pid and what to do.
        KilnError: The lock file cannot be made (``.kiln`` is a file, the folder is
            read-only): no caption can be written safely, so none is.
    """
    path = lock_path(root).absolute()
    with _held_guard:
        held = _held.setdefault(path, _Held())
    with held.thread_lock:
        if held.depth == 0:
            held.fd = _acquire(path, wait_s)
            if path not in _cleaned:
                _clean_temps(Path(root))
                _cleaned.add(path)
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
            if held.depth == 0 and held.fd is not None:
                os.close(held.fd)  # closing the descriptor releases the flock
                held.fd = None


def _clean_temps(root: Path) -> None:
    """Remove caption temp files a killed writer left (the lock is ours: nobody is writing)."""
    remove_stale_temps(root)
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                remove_stale_temps(Path(entry.path))


def _acquire(path: Path, wait_s: float) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise KilnError(
            f"{path}: cannot make the caption lock ({exc.strerror or exc}); captions are not "
            f"written without it: make {path.parent} a writable folder"
        ) from exc
    if not flock_exclusive(fd, wait_s):
        pid = read_lock_pid(fd)
        os.close(fd)
        holder = f" (pid {pid})" if pid else ""
        raise CaptionsBusy(
            f"{path.parent.parent}: another Kiln process{holder} is editing captions; "
            "wait for it to finish, then run this again"
        )
    write_lock_pid(fd, os.getpid())
    return fd
