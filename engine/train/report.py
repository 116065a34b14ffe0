"""What a run tells as it goes: its events, its log (``train.log``) and TensorBoard scalars.

Each event goes to the event sink (run control's event writer on the main process), then to
the listeners; state changes also get a log line. Only the main process writes files.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiln.engine.train.outputs import FINAL_EVENTS, LOG_FILE, TENSORBOARD_FOLDER, EventSink, NoEvents

Listener = Callable[[dict[str, Any]], None]


class RunReport:
    """A trainer's events, log and TensorBoard scalars.

    Attributes:
        events: The event sink.
        listeners: Called with each event after it is sent (on every process).
        log: The run's logger (written to ``train.log`` once :meth:`open` is called).
        tensorboard: The TensorBoard writer, None when off.
        ended: Whether a final event (``done``, ``failed``, ``cancelled``) was sent.
    """

    def __init__(self, events: EventSink | None, listeners: list[Listener] | None, name: str) -> None:
        self.events: EventSink = events or NoEvents()
        self.listeners = list(listeners or [])
        self.log = logging.getLogger(name)
        self.tensorboard: Any = None
        self.ended = False
        self._log_handler: logging.Handler | None = None
        self._step_times: deque[float] = deque(maxlen=20)

    def open_log(self, run_dir: Path) -> None:
        """Log to ``train.log`` in the run folder (main process)."""
        handler = logging.FileHandler(Path(run_dir) / LOG_FILE, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.log.addHandler(handler)
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        self._log_handler = handler

    def open_tensorboard(self, run_dir: Path) -> None:
        """Write TensorBoard scalars to ``tensorboard/`` when tensorboard is installed (main process)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.log.info("tensorboard is not installed: no TensorBoard scalars")
            return
        self.tensorboard = SummaryWriter(str(Path(run_dir) / TENSORBOARD_FOLDER))

    def emit(self, type: str, **fields: Any) -> None:
        """Send one event (and log it, steps aside)."""
        if type in FINAL_EVENTS:
            self.ended = True
        event = self.events.emit(type, **fields)
        if type in ("warning", "failed"):
            self.log.warning("%s: %s", type, fields.get("message") or fields.get("error"))
        elif type != "step":
            self.log.info("%s %s", type, json.dumps(fields, default=str)[:500])
        for listener in self.listeners:
            listener(event)

    def sampling(self, index: int, total: int) -> None:
        """Report that sample ``index`` of ``total`` is rendering (a status, not an event)."""
        note = getattr(self.events, "set_sampling", None)
        if note is not None:
            note(index, total)

    def warn(self, message: str) -> None:
        """Send a ``warning`` event."""
        self.emit("warning", message=message)

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One TensorBoard scalar (nothing when TensorBoard is off)."""
        if self.tensorboard is not None:
            self.tensorboard.add_scalar(tag, value, step)

    def step(
        self,
        *,
        step: int,
        total: int,
        epoch: int,
        loss: float,
        lrs: list[float],
        seconds: float,
        memory: dict[str, Any] | None = None,
    ) -> None:
        """The ``step`` event of an optimizer step (speed and ETA over the last 20 steps, the peak
        memory so far when given) and its scalars."""
        self._step_times.append(seconds)
        it_s = len(self._step_times) / sum(self._step_times) if sum(self._step_times) > 0 else None
        event = {
            "step": step,
            "total": total,
            "epoch": epoch,
            "loss": round(loss, 6),
            "lr": lrs[0],
            "it_s": round(it_s, 4) if it_s else None,
            "eta_s": round((total - step) / it_s, 1) if it_s else None,
        }
        if len(lrs) > 1:
            event["lr_te"] = lrs[1]
        if len(lrs) > 2:
            event["lr_te2"] = lrs[2]
        event.update(memory or {})
        self.emit("step", **event)
        self.scalar("loss", loss, step)
        self.scalar("lr/unet", lrs[0], step)
        if len(lrs) > 1:
            self.scalar("lr/text_encoder", lrs[1], step)
        if len(lrs) > 2:
            self.scalar("lr/text_encoder_2", lrs[2], step)

    def close(self) -> None:
        """Close TensorBoard, the event sink and the log file."""
        if self.tensorboard is not None:
            self.tensorboard.close()
        self.events.close()
        if self._log_handler is not None:
            self.log.removeHandler(self._log_handler)
            self._log_handler.close()
