"""The run folder's live record: ``events.jsonl`` (one JSON object per line) and ``status.json``.

The training process talks to the UI only through these files. Each event is written and
flushed as one line, so a reader following the file never waits on a buffer; ``status.json``
is a snapshot replaced atomically, throttled on step events (every state change is written
at once). A heartbeat thread rewrites ``status.json`` every few seconds even while a step
or a sample takes minutes, so a reader can tell a live run from one whose process is gone
(``updated`` stops moving; see :mod:`kiln.engine.runs.folders`). :class:`EventFollower` is the
reading side: it follows the file from a saved offset and survives partial lines,
truncation, replacement, bad lines and a vanished folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.engine.fsutil import atomic_write_text
from kiln.engine.runs.procinfo import HOST, process_start

EVENTS_FILE = "events.jsonl"
STATUS_FILE = "status.json"
EVENT_TYPES = (
    "start",
    "resumed",
    "step",
    "epoch",
    "validation",
    "sample",
    "checkpoint",
    "warning",
    "done",
    "failed",
    "cancelled",
)
FINAL_STATES = {"done": "done", "failed": "failed", "cancelled": "cancelled"}
# States of a run still going: anything else has ended (done, failed, cancelled, stale...).
LIVE_STATES = frozenset({"starting", "running"})
# status.json is rewritten at most this often on step events.
STATUS_INTERVAL_S = 1.0
# ...and at least this often while the process lives (the heartbeat).
HEARTBEAT_S = 2.0
# The run-folder layout this Kiln writes; readers treat other values as read-only runs.
RUN_LAYOUT = 1
# Kept from the previous status when a run resumes: where it stood and when it first started.
_RESUMED_KEYS = ("name", "step", "total", "epoch", "epochs", "loss", "started", "family", "network")


class EventWriter:
    """Appends events to ``events.jsonl`` and keeps ``status.json`` current.

    Only the main training process writes (the others send their events nowhere:
    :class:`kiln.engine.train.outputs.NoEvents`). It is the trainer's event sink
    (:class:`kiln.engine.train.outputs.EventSink`).
    Thread-safe: the heartbeat thread and a signal watcher may write beside the loop.

    Args:
        run_dir: The run folder.
        name: The run's name (``output.name``).
        resume: Continue an existing status (step, total, started...) instead of a fresh one.
        heartbeat_s: Rewrite ``status.json`` at least this often; 0 = no heartbeat thread.
        on_beat: Called on each heartbeat from the heartbeat thread (run control checks for
            a cancel request there); also settable later as the ``on_beat`` attribute.
    """

    def __init__(
        self,
        run_dir: Path,
        name: str = "",
        resume: bool = False,
        heartbeat_s: float = HEARTBEAT_S,
        on_beat: Callable[[], None] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._events = open(self.run_dir / EVENTS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        if _ends_mid_line(self.run_dir / EVENTS_FILE):
            # A writer killed mid-line left a partial last line: start on a fresh one, so only
            # that fragment is unreadable and never the next event.
            self._events.write("\n")
            self._events.flush()
        now = time.time()
        self.status: dict[str, Any] = {
            "state": "starting",
            "name": name,
            "run_dir": str(self.run_dir),
            "step": 0,
            "total": 0,
            "epoch": 0,
            "epochs": 0,
            "loss": None,
            "it_s": None,
            "eta_s": None,
            "pid": os.getpid(),
            "started": now,
            "updated": now,
            "error": None,
            "layout": RUN_LAYOUT,
            "host": HOST,
            "proc_start": process_start(os.getpid()),
        }
        if resume:
            previous = read_status(self.run_dir) or {}
            self.status.update({key: previous[key] for key in _RESUMED_KEYS if key in previous})
        self._status_written = 0.0
        self.write_status()
        self.on_beat = on_beat
        self._stopping = threading.Event()
        self._heartbeat: threading.Thread | None = None
        if heartbeat_s > 0:
            self._heartbeat = threading.Thread(
                target=self._beat, args=(heartbeat_s,), name="kiln-heartbeat", daemon=True
            )
            self._heartbeat.start()

    def _beat(self, interval: float) -> None:
        while not self._stopping.wait(interval):
            # A full disk or a vanished folder must not kill the heartbeat: the next beat retries.
            with contextlib.suppress(OSError):
                self.write_status(force=True)
            if self.on_beat is not None:
                with contextlib.suppress(Exception):
                    self.on_beat()

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        """Write one event (``t`` and ``type`` first) and update the status from it."""
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}")
        event = {"t": round(time.time(), 3), "type": type, **fields}
        line = json.dumps(event, ensure_ascii=False, allow_nan=False, default=str) + "\n"
        with self._lock:
            if self._events.closed:
                return event
            self._events.write(line)
            self._events.flush()
            self._apply(event)
        return event

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        for key in ("step", "total", "epoch", "epochs", "loss", "it_s", "eta_s", "peak_mb", "memory"):
            if key in event:
                self.status[key] = event[key]
        # "sampling k/n" lasts while a sample round renders: any event ends it.
        self.status.pop("sampling", None)
        if kind in ("start", "resumed"):
            self.status["state"] = "running"
            self.status["error"] = None
            for key in ("family", "network", "memory_estimate"):
                if key in event:
                    self.status[key] = event[key]
        elif kind in FINAL_STATES:
            self.status["state"] = FINAL_STATES[kind]
            self.status["eta_s"] = 0 if kind == "done" else None
            if kind == "failed":
                self.status["error"] = event.get("error")
        self.write_status(force=kind != "step")

    def set_sampling(self, index: int, total: int) -> None:
        """Say in ``status.json`` that the run renders sample ``index`` of ``total`` (the runs
        table and ``kiln watch`` show "sampling k/n"); the next event clears it."""
        with self._lock:
            self.status["sampling"] = f"{index}/{total}"
        self.write_status(force=True)

    def write_status(self, force: bool = True) -> None:
        """Replace ``status.json`` (atomic); on step events at most every STATUS_INTERVAL_S."""
        with self._lock:
            now = time.time()
            if not force and now - self._status_written < STATUS_INTERVAL_S:
                return
            self.status["updated"] = round(now, 3)
            text = json.dumps(self.status, indent=2, default=str) + "\n"
            atomic_write_text(self.run_dir / STATUS_FILE, text)
            self._status_written = now

    def close(self) -> None:
        """Stop the heartbeat, write the last status and close the events file."""
        self._stopping.set()
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            self._heartbeat.join(timeout=10)
        with self._lock:
            if not self._events.closed:
                self.write_status(force=True)
                self._events.close()


def _ends_mid_line(path: Path) -> bool:
    """Whether the file's last byte is not a newline (an empty or missing file is not)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return False
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"
    except OSError:
        return False


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``status.json``, or None when it is missing or not a JSON object."""
    try:
        data = json.loads((Path(run_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# One read takes at most this much of the file; a reader catching up on a long run gets the
# rest on its next call instead of stalling its UI on one huge read.
READ_LIMIT_BYTES = 4 * 1024 * 1024
# Bytes of the file's start remembered to notice a file replaced by one at least as long.
_HEAD_BYTES = 256


@dataclass(frozen=True)
class EventRead:
    """What one :meth:`EventFollower.read` found.

    Attributes:
        events: New complete events, in file order.
        restarted: The file was truncated or replaced since the last read, so reading began
            again at its start: ``events`` repeat the run from its first event, and whatever
            the caller built from earlier reads is out of date.
        missing: There is no events file (not written yet, or the run folder is gone).
        malformed: Lines skipped in this read because they are not an event object.
        more: The read stopped at :data:`READ_LIMIT_BYTES`; read again for the rest.
    """

    events: list[dict[str, Any]] = field(default_factory=list)
    restarted: bool = False
    missing: bool = False
    malformed: int = 0
    more: bool = False


class EventFollower:
    """Follows one run's ``events.jsonl`` as it grows, like ``tail -F`` for JSON lines.

    Each :meth:`read` returns the complete lines written since the last one. A partial last
    line (the writer is mid-write) stays unread until its newline arrives. When the file
    shrinks below the offset, or another file took its place (a new inode, or different
    first bytes), reading starts over at 0 and the result says so. A missing file or run
    folder is reported, never raised. Lines that are not JSON objects with ``t`` and
    ``type`` are skipped and counted in :attr:`malformed`.

    Args:
        run_dir: The run folder.
        offset: Where a previous follower stopped (its :attr:`offset`), to skip what was
            already read; 0 reads from the start.
        inode: The file's inode when ``offset`` was saved; a different one means the file was
            replaced, so reading starts over.
    """

    def __init__(self, run_dir: Path | str, offset: int = 0, inode: int | None = None) -> None:
        self.path = Path(run_dir) / EVENTS_FILE
        self.offset = max(0, int(offset))
        self.inode = inode
        self.malformed = 0
        self.restarts = 0
        self._head: bytes | None = None

    def read(self) -> EventRead:
        """The events written since the last call (see the class docstring for the edge cases)."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed below, several exits
        except OSError:  # not written yet, or the run folder is gone
            return EventRead(missing=True)
        with handle:
            try:
                stat = os.fstat(handle.fileno())
            except OSError:
                return EventRead(missing=True)
            restarted = self._replaced(handle, stat)
            if restarted:
                self.offset = 0
                self.restarts += 1
                self._head = None
            self.inode = stat.st_ino
            handle.seek(self.offset)
            data = handle.read(READ_LIMIT_BYTES)
        if self._head is None and self.offset == 0 and data:
            self._head = data[:_HEAD_BYTES]
        end = data.rfind(b"\n")
        if end < 0:
            return EventRead(restarted=restarted, more=False)
        complete = data[: end + 1]
        self.offset += len(complete)
        events, bad = parse_event_lines(complete)
        self.malformed += bad
        more = len(data) == READ_LIMIT_BYTES
        return EventRead(events=events, restarted=restarted, malformed=bad, more=more)

    def read_all(self) -> EventRead:
        """Every event up to the end of the file now (several reads if it is long)."""
        events: list[dict[str, Any]] = []
        restarted = missing = False
        malformed = 0
        while True:
            part = self.read()
            if part.restarted:
                events, restarted = [], True
            events.extend(part.events)
            malformed += part.malformed
            missing = part.missing
            if not part.more:
                return EventRead(events=events, restarted=restarted, missing=missing, malformed=malformed)

    def _replaced(self, handle: Any, stat: os.stat_result) -> bool:
        """Whether the file is not the one read so far (only matters once something was read)."""
        if self.offset == 0:
            return False
        if self.inode is not None and stat.st_ino != self.inode:
            return True
        if stat.st_size < self.offset:
            return True
        if self._head is not None:
            handle.seek(0)
            if handle.read(len(self._head)) != self._head:
                return True
        return False


def parse_event_lines(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """Complete ``events.jsonl`` lines -> (events, number of malformed lines skipped).

    An event is a JSON object with a string ``type`` and a numeric ``t``; blank lines are
    not counted as malformed (an editor may leave one at the end).
    """
    events: list[dict[str, Any]] = []
    bad = 0
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            bad += 1
            continue
        if not _is_event(event):
            bad += 1
            continue
        events.append(event)
    return events, bad


def _is_event(value: Any) -> bool:
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        return False
    stamp = value.get("t")
    return isinstance(stamp, (int, float)) and not isinstance(stamp, bool) and math.isfinite(stamp)


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete event of a run (a partial last line is left for later; bad lines skipped)."""
    return EventFollower(run_dir).read_all().events
