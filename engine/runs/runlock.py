"""One trainer per run folder: an exclusive ``flock(2)`` on ``<run>/.lock`` for the trainer's life.

Two trainers in one folder would log every step twice and overwrite each other's LoRA files
and saves, so whatever starts a trainer takes the run's lock first: a detached or multi-GPU
launch takes it in the launching process and hands the open descriptor to the training
process (:data:`LOCK_FD_ENV`), which keeps it until it exits; the foreground ``kiln train`` /
``kiln resume`` holds it while it trains; a worker started by hand takes it itself. The kernel
releases the lock when its holder exits, however it exits (``kill -9`` included), so it is
never stale. The holder's pid is written into the file only to name it in a refusal.

Readers (``kiln runs``, ``kiln watch``) only probe it (:func:`holder`): a held lock is a live
trainer, whatever a momentarily unreadable ``status.json`` says.
"""

from __future__ import annotations

import os
from pathlib import Path

from kiln.engine.errors import RunError
from kiln.engine.fsutil import flock_exclusive, read_lock_pid, write_lock_pid

LOCK_FILE = ".lock"
# The training process's environment names the descriptor of the lock its launcher took.
LOCK_FD_ENV = "KILN_RUN_LOCK_FD"
# A reader's probe holds a shared lock for microseconds; a trainer retries this long.
ACQUIRE_WAIT_S = 2.0


class RunBusy(RunError):
    """Another process trains this run folder now."""


def lock_path(run_dir: Path) -> Path:
    """The lock file of a run folder."""
    return Path(run_dir) / LOCK_FILE


def acquire(run_dir: Path, wait_s: float = ACQUIRE_WAIT_S) -> int:
    """Take the run's lock; returns the open descriptor that holds it (close it to release).

    Raises:
        RunBusy: Another process holds it (the message names its pid).
        RunError: The lock file cannot be made (a read-only run folder).
    """
    run_dir = Path(run_dir)
    path = lock_path(run_dir)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise RunError(
            f"{run_dir}: cannot write in the run folder ({exc.strerror or exc}); "
            "make it writable to train or resume it"
        ) from exc
    if not flock_exclusive(fd, wait_s):
        pid = read_lock_pid(fd)
        os.close(fd)
        who = f"process {pid}" if pid else "another process"
        raise RunBusy(
            f"{run_dir.name} is being trained by {who}; one trainer per run folder "
            f"(`kiln cancel {run_dir.name}` stops it)"
        )
    mark(fd, os.getpid())
    return fd


def mark(fd: int, pid: int) -> None:
    """Write the holder's pid into the lock file (a launcher names the process it handed it to)."""
    write_lock_pid(fd, pid)


def inherited(run_dir: Path) -> int | None:
    """The lock descriptor a launcher handed this process, if it is this run's lock and open here."""
    value = os.environ.get(LOCK_FD_ENV, "")
    if not value.isdigit():
        return None
    fd = int(value)
    try:
        mine, theirs = os.fstat(fd), os.stat(lock_path(run_dir))
    except OSError:
        return None
    return fd if (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino) else None


def launched_with_lock() -> bool:
    """Whether a launcher took the lock for this process tree (a multi-GPU worker's may be its parent)."""
    return bool(os.environ.get(LOCK_FD_ENV))


def holder(run_dir: Path) -> int | None:
    """The pid holding the run's lock (0 when held but unnamed), or None when nobody holds it.

    A probe: a shared lock taken and dropped at once, never waited on.
    """
    import fcntl

    try:
        fd = os.open(lock_path(run_dir), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_lock_pid(fd) or 0
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
