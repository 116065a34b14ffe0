"""Atomic file writes: a crash or a full disk never leaves a half-written caption or state file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

TEMP_MARK = ".kiln-"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder, fsync, then rename.

    The rename is atomic on POSIX, so readers see either the old file or the new one.
    The original file's permission bits are kept when it already exists; a new file gets the
    mode any program would give it (0666 less the umask), not the temp file's 0600. The temp
    file's name (``.<name>.kiln-XXXXXXXX.tmp``, see :data:`TEMP_PATTERN`) is Kiln's own, so
    one left by a killed process can be recognised and removed (:func:`remove_stale_temps`).
    """
    path = Path(path)
    mode = 0o666 & ~current_umask()
    with contextlib.suppress(FileNotFoundError):
        mode = path.stat().st_mode & 0o7777
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, hence the fallback)
    os.umask(mask)
    return mask


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove Kiln's own temp files (``.<name>.kiln-*.tmp``) left in ``folder`` by a killed writer.

    Call it only while no Kiln process can be writing there (under the folder's lock); other
    programs' files never match the pattern.
    """
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if entry.name.startswith(".") and TEMP_MARK in entry.name and entry.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def flock_exclusive(fd: int, wait_s: float, poll_s: float = 0.05) -> bool:
    """Take an exclusive ``flock(2)`` on ``fd``, retrying for ``wait_s``; False when it stayed busy.

    The kernel releases such a lock when its holder exits, however it exits, so a lock file
    is never stale; Kiln's caption lock and run lock are both built on this.
    """
    import fcntl
    import time

    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)


def write_lock_pid(fd: int, pid: int) -> None:
    """Write the holder's pid into a lock file (only to name it in another process's refusal)."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{pid}\n".encode(), 0)


def read_lock_pid(fd: int) -> int | None:
    """The pid written into a lock file, or None."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8") -> None:
    """Write text atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode(encoding))


def fsync_dir(folder: Path) -> None:
    """Persist creations and renames inside ``folder`` (after an ``os.replace`` of a folder)."""
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself; some file systems refuse to open folders, which is fine."""
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
