"""The run folder's live record: ``events.jsonl`` (one JSON object per line) and ``status.json``.

The training process talks to the UI only through these files. Each event is written and
flushed as one line, so a reader following the file never waits on a buffer; ``status.json``
is a snapshot replaced atomically, throttled on step events (every state change is written
at once). A heartbeat thread rewrites ``status.json`` every few seconds even while a step
or a sample takes minutes, so a reader can tell a live run from one whose process is gone
(``updated`` stops moving; see :mod:`engine.train.runs`).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.fsutil import atomic_write_text
from engine.train.procinfo import HOST, process_start

EVENTS_FILE = "events.jsonl"
STATUS_FILE = "status.json"
EVENT_TYPES = (
    "start",
    "resumed",
    "step",
    "epoch",
    "sample",
    "checkpoint",
    "warning",
    "done",
    "failed",
    "cancelled",
)
FINAL_STATES = {"done": "done", "failed": "failed", "cancelled": "cancelled"}
# status.json is rewritten at most this often on step events.
STATUS_INTERVAL_S = 1.0
# ...and at least this often while the process lives (the heartbeat).
HEARTBEAT_S = 2.0
# The run-folder layout this Kiln writes; readers treat other values as read-only runs.
RUN_LAYOUT = 1
# Kept from the previous status when a run resumes: where it stood and when it first started.
_RESUMED_KEYS = ("name", "step", "total", "epoch", "epochs", "loss", "started")


class EventWriter:
    """Appends events to ``events.jsonl`` and keeps ``status.json`` current.

    Only the main training process writes (see :class:`NullEventWriter` for the others).
    Thread-safe: the heartbeat thread and a signal watcher may write beside the loop.

    Args:
        run_dir: The run folder.
        name: The run's name (``output.name``).
        resume: Continue an existing status (step, total, started...) instead of a fresh one.
        heartbeat_s: Rewrite ``status.json`` at least this often; 0 = no heartbeat thread.
        on_beat: Called on each heartbeat from the heartbeat thread (the trainer checks for
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
        for key in ("step", "total", "epoch", "epochs", "loss", "it_s", "eta_s"):
            if key in event:
                self.status[key] = event[key]
        if kind in ("start", "resumed"):
            self.status["state"] = "running"
            self.status["error"] = None
        elif kind in FINAL_STATES:
            self.status["state"] = FINAL_STATES[kind]
            self.status["eta_s"] = 0 if kind == "done" else None
            if kind == "failed":
                self.status["error"] = event.get("error")
        self.write_status(force=kind != "step")

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


class NullEventWriter:
    """The event writer of non-main processes in a multi-GPU run: writes nothing."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}
        self.on_beat: Callable[[], None] | None = None

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        """Build the event without writing it."""
        return {"t": time.time(), "type": type, **fields}

    def write_status(self, force: bool = True) -> None:
        """Nothing to write."""

    def close(self) -> None:
        """Nothing to close."""


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``status.json``, or None when it is missing or not a JSON object."""
    try:
        data = json.loads((Path(run_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete event of a run (a partial last line is left for later)."""
    path = Path(run_dir) / EVENTS_FILE
    events = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.endswith("\n") and line.strip():
            events.append(json.loads(line))
    return events
