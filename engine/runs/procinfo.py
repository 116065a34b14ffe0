"""Is the process that wrote a run's status still that process? Pid, start time and host.

A pid alone is not an identity: after a reboot or a long uptime another program may get the
same number. Linux gives each process a start time (``/proc/<pid>/stat`` field 22, clock
ticks since boot) that stays fixed for its life, so ``(pid, start)`` names one process.
Elsewhere the start time is unknown and callers fall back on the heartbeat's age.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

HOST = socket.gethostname()


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), or None when unknown or gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')': split after the last.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _zombie(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return text[text.rfind(")") + 2 :].startswith("Z")


def process_alive(pid: int | None, start: int | None = None) -> bool:
    """Whether ``pid`` runs on this machine and, when ``start`` is given, is the same process.

    A zombie (exited, not yet reaped by its parent) counts as gone: it trains nothing.
    """
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive, but not ours to signal
    if _zombie(pid):
        return False
    if start is not None:
        current = process_start(pid)
        if current is not None and current != start:
            return False
    return True
