"""The run folder's live record: ``events.jsonl`` (one JSON object per line) and ``status.json``.

The training process talks to the UI only through these files. Each event is written and
flushed as one line, so a reader following the file never waits on a buffer; ``status.json``
is a snapshot replaced atomically, throttled on step events (every state change is written
at once).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from engine.fsutil import atomic_write_text

EVENTS_FILE = "events.jsonl"
STATUS_FILE = "status.json"
EVENT_TYPES = ("start", "step", "epoch", "sample", "checkpoint", "warning", "done", "failed", "cancelled")
FINAL_STATES = {"done": "done", "failed": "failed", "cancelled": "cancelled"}
# status.json is rewritten at most this often on step events.
STATUS_INTERVAL_S = 1.0


class EventWriter:
    """Appends events to ``events.jsonl`` and keeps ``status.json`` current.

    Only the main training process writes (see :class:`NullEventWriter` for the others).
    """

    def __init__(self, run_dir: Path, name: str = "") -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
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
        }
        self._status_written = 0.0
        self.write_status()

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        """Write one event (``t`` and ``type`` first) and update the status from it."""
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}")
        event = {"t": round(time.time(), 3), "type": type, **fields}
        self._events.write(json.dumps(event, ensure_ascii=False, allow_nan=False, default=str) + "\n")
        self._events.flush()
        self._apply(event)
        return event

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        for key in ("step", "total", "epoch", "epochs", "loss", "it_s", "eta_s"):
            if key in event:
                self.status[key] = event[key]
        if kind == "start":
            self.status["state"] = "running"
        elif kind in FINAL_STATES:
            self.status["state"] = FINAL_STATES[kind]
            self.status["eta_s"] = 0 if kind == "done" else None
            if kind == "failed":
                self.status["error"] = event.get("error")
        self.write_status(force=kind != "step")

    def write_status(self, force: bool = True) -> None:
        """Replace ``status.json`` (atomic); on step events at most every STATUS_INTERVAL_S."""
        now = time.time()
        if not force and now - self._status_written < STATUS_INTERVAL_S:
            return
        self.status["updated"] = round(now, 3)
        atomic_write_text(self.run_dir / STATUS_FILE, json.dumps(self.status, indent=2, default=str) + "\n")
        self._status_written = now

    def close(self) -> None:
        """Write the last status and close the events file."""
        if not self._events.closed:
            self.write_status(force=True)
            self._events.close()


class NullEventWriter:
    """The event writer of non-main processes in a multi-GPU run: writes nothing."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        """Build the event without writing it."""
        return {"t": time.time(), "type": type, **fields}

    def write_status(self, force: bool = True) -> None:
        """Nothing to write."""

    def close(self) -> None:
        """Nothing to close."""


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete event of a run (a partial last line is left for later)."""
    path = Path(run_dir) / EVENTS_FILE
    events = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.endswith("\n") and line.strip():
            events.append(json.loads(line))
    return events
