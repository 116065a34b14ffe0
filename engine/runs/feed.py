"""What a run's events add up to: the loss curve, LR, epochs, samples, checkpoints and warnings.

The runs screen, ``kiln watch`` and the sweep report all read a run the same way: a
:class:`RunFeed` follows ``events.jsonl`` and folds each new event into a :class:`RunHistory`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.engine.runs.events import EventFollower, EventRead

END_TYPES = ("done", "failed", "cancelled")
# TensorBoard's default smoothing feels right for runs of a few hundred to a few thousand steps.
SMOOTHING = 0.9


def smoothed(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """An exponential moving average with TensorBoard's start-up correction.

    Without the correction the first values would lean towards 0; with it the curve starts
    at the first value and the early points are averages of what came so far.
    """
    out: list[float] = []
    average = 0.0
    for count, value in enumerate(values, start=1):
        average = average * weight + (1 - weight) * value
        out.append(average / (1 - weight**count) if weight < 1 else value)
    return out


@dataclass(frozen=True)
class Checkpoint:
    """A LoRA file the run saved."""

    epoch: int
    step: int
    path: str


@dataclass
class RunHistory:
    """Everything the events of one run tell, folded in order.

    Attributes:
        steps: Step numbers of the step events (a resumed run that went back drops the
            steps after where it resumed).
        losses: The loss of each step.
        lrs: The U-Net LR of each step.
        lr_te: The text encoder's latest LR (None when it is not trained).
        epoch_losses: Mean loss per finished epoch.
        validation: ``(epoch, step, loss)`` of each validation event.
        samples: Sample image paths per epoch (epoch 0 is the baseline before training).
        prompts: The sample prompts (prompt, seed, size), from the latest sample event.
        checkpoints: Saved LoRA files in order, each once (its latest save).
        warnings: Warning messages in order.
        start: The latest ``start`` event.
        end: The ``done``, ``failed`` or ``cancelled`` event, if the run ended (cleared by a
            later ``start`` or ``resumed``: a resumed run).
        last: The latest event of any type.
        last_step: The latest step event.
        count: Events folded in.
    """

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    lr_te: float | None = None
    epoch_losses: dict[int, float | None] = field(default_factory=dict)
    validation: list[tuple[int, int, float]] = field(default_factory=list)
    samples: dict[int, list[str]] = field(default_factory=dict)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    start: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    last_step: dict[str, Any] | None = None
    count: int = 0

    def add(self, events: list[dict[str, Any]]) -> None:
        """Fold events in (in file order)."""
        for event in events:
            self._add(event)

    def _add(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        self.count += 1
        self.last = event
        if kind == "start":
            self.start = event
            self.end = None
        elif kind == "resumed":
            self.end = None
        elif kind == "step":
            self._add_step(event)
        elif kind == "epoch":
            self.epoch_losses[_int(event.get("epoch"))] = _float(event.get("loss"))
        elif kind == "validation":
            loss = _float(event.get("loss"))
            if loss is not None:
                self.validation.append((_int(event.get("epoch")), _int(event.get("step")), loss))
        elif kind == "sample":
            files = event.get("files")
            if isinstance(files, list):
                self.samples[_int(event.get("epoch"))] = [str(path) for path in files]
            prompts = event.get("prompts")
            if isinstance(prompts, list):
                self.prompts = [entry for entry in prompts if isinstance(entry, dict)]
        elif kind == "checkpoint":
            path = event.get("path")
            if path:
                # A run cancelled and resumed within one epoch rewrites that epoch's file: the
                # newest write replaces the entry, so each file is listed once.
                self.checkpoints = [c for c in self.checkpoints if c.path != str(path)]
                self.checkpoints.append(
                    Checkpoint(_int(event.get("epoch")), _int(event.get("step")), str(path))
                )
        elif kind == "warning":
            self.warnings.append(str(event.get("message", "")))
        elif kind in END_TYPES:
            self.end = event

    def _add_step(self, event: dict[str, Any]) -> None:
        step = _int(event.get("step"))
        loss = _float(event.get("loss"))
        if loss is None:
            return
        if self.steps and step <= self.steps[-1]:
            # A resumed run went back to a saved state: its steps replace the ones after it.
            keep = next((i for i, value in enumerate(self.steps) if value >= step), len(self.steps))
            del self.steps[keep:], self.losses[keep:], self.lrs[keep:]
        self.last_step = event
        self.steps.append(step)
        self.losses.append(loss)
        self.lrs.append(_float(event.get("lr")) or 0.0)
        if "lr_te" in event:
            self.lr_te = _float(event.get("lr_te"))

    @property
    def lr(self) -> float | None:
        """The U-Net LR of the latest step."""
        return self.lrs[-1] if self.lrs else None

    def smoothed_losses(self, weight: float = SMOOTHING) -> list[float]:
        """The loss curve smoothed (see :func:`smoothed`)."""
        return smoothed(self.losses, weight)

    def latest_sample_epoch(self) -> int | None:
        """The newest epoch with samples after the baseline, or None."""
        trained = [epoch for epoch in self.samples if epoch > 0]
        return max(trained) if trained else None


class RunFeed:
    """A run's events followed from its folder and folded into a :class:`RunHistory`.

    Call :meth:`poll` whenever the folder may have changed (a watcher's event, a timer); a
    file truncated or replaced since the last poll rebuilds the history from its start.
    """

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        self.follower = EventFollower(self.run_dir)
        self.history = RunHistory()
        self.missing = False

    def poll(self) -> EventRead:
        """Read what was written since the last poll and fold it in."""
        read = self.follower.read_all()
        if read.restarted:
            self.history = RunHistory()
        self.history.add(read.events)
        self.missing = read.missing
        return read

    @property
    def malformed(self) -> int:
        """Malformed lines skipped so far."""
        return self.follower.malformed


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, (int, float)):
        return int(value)
    return 0


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


@dataclass(frozen=True)
class Progress:
    """Where a run stands: step, total, epoch, rate and time left."""

    step: int
    total: int
    epoch: int
    it_s: float | None
    eta_s: float | None


def current_progress(info: Any, history: RunHistory, live: bool) -> Progress:
    """The run's progress from its latest step event when that is newer than ``status.json``.

    ``status.json`` is rewritten at most once a second on steps; the events file has every
    step as it happens, so a monitor following the events is ahead of the status.

    Args:
        info: The run's status (a ``RunInfo``: step, total, epoch, it_s, eta_s).
        history: Its events so far.
        live: Whether the run is still going (a finished run's status is final).
    """
    last = history.last_step
    if live and last is not None and _int(last.get("step")) >= info.step:
        return Progress(
            step=_int(last.get("step")),
            total=_int(last.get("total")) or info.total,
            epoch=_int(last.get("epoch")) or info.epoch,
            it_s=_float(last.get("it_s")) if "it_s" in last else info.it_s,
            eta_s=_float(last.get("eta_s")) if "eta_s" in last else info.eta_s,
        )
    return Progress(info.step, info.total, info.epoch, info.it_s, info.eta_s)
