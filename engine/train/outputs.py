"""What a trainer writes into its run folder, and where it sends its events.

The file and folder names are the trainer's own; run control (:mod:`kiln.engine.runs.layout`)
re-uses them and adds its files (``config.toml``, ``events.jsonl``, ``launch.json``...). The
events go to an :class:`EventSink`: run control passes its event writer
(:class:`kiln.engine.runs.events.EventWriter`); without one the trainer only builds the events
and hands them to its listeners.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

# The run's resolved config (run control writes it; a run is started again from it).
CONFIG_FILE = "config.toml"
LOG_FILE = "train.log"
SAMPLES_FOLDER = "samples"
LORA_FOLDER = "lora"
STATE_FOLDER = "state"
TENSORBOARD_FOLDER = "tensorboard"
# The events a run ends with; nothing follows one of them.
FINAL_EVENTS = frozenset({"done", "failed", "cancelled"})


def lora_path(run_dir: Path, name: str, epoch: int) -> Path:
    """``lora/<name>-eNNN.safetensors``."""
    return Path(run_dir) / LORA_FOLDER / f"{name}-e{epoch:03d}.safetensors"


def samples_dir(run_dir: Path, epoch: int) -> Path:
    """``samples/eNNN/``."""
    return Path(run_dir) / SAMPLES_FOLDER / f"e{epoch:03d}"


class EventSink(Protocol):
    """Where a trainer's events go (``start``, ``step``, ``epoch``... ``done``)."""

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        """Record one event and return it as recorded."""
        ...

    def close(self) -> None:
        """Flush and release; no event follows."""
        ...


class NoEvents:
    """The sink of a trainer given none (and of every process but the main one): builds each
    event without writing it."""

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        """The event, unwritten."""
        return {"t": time.time(), "type": type, **fields}

    def close(self) -> None:
        """Nothing to close."""
