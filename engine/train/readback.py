"""Step results kept on the training device and read back to the host N steps at a time.

Reading a loss (``loss.item()``) or testing a gradient norm (``if not torch.isfinite(norm)``)
makes the CPU wait until the GPU has finished every kernel queued so far, so the next step's
kernels start late. The trainer instead keeps each step's losses and clipped gradient norm on
the device and reads a window of steps back in one transfer (``train.sync_every_n_steps``).
The read-back then does what each step used to: it checks the values are finite (the run
fails naming the first bad step), fills the epoch's losses and sends the ``step`` events with
their own step numbers, each with the window's time shared evenly (the host's time per step
means nothing when it does not wait for the GPU). The trainer reads back before anything is
saved, validated, sampled or ended, so nothing computed after a bad step is ever written.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from kiln.engine.errors import RunError

if TYPE_CHECKING:
    from kiln.engine.train.loop import TrainState
    from kiln.engine.train.report import RunReport


class TrainingDiverged(RunError):
    """The loss (or the gradient norm) stopped being a finite number."""


@dataclass
class PendingStep:
    """One optimizer step whose numbers are still on the device.

    Attributes:
        step: Its number (optimizer steps done once it is).
        epoch: The epoch it belongs to.
        losses: Each of its batches' mean loss (0-dim tensors; several with grad accumulation).
        norm: The clipped gradient norm, when it must be finite (clipping on, no fp16 scaler:
            the scaler skips overflowing steps by itself); else None.
        lrs: Its learning rates (host values already).
        memory: The peak memory after it (a host-side counter, :mod:`kiln.engine.train.memory`).
    """

    step: int
    epoch: int
    losses: list[torch.Tensor]
    norm: torch.Tensor | None
    lrs: list[float]
    memory: dict[str, Any] = field(default_factory=dict)


class StepReadback:
    """The steps not yet read back, and the one transfer that reads them.

    Args:
        every: Steps per read-back (:func:`kiln.engine.train.speed.sync_every`).
        report: Where the ``step`` events go.
        total: The run's total steps (for the events' ETA).
    """

    def __init__(self, every: int, report: RunReport, total: int) -> None:
        self.every = max(1, every)
        self.report = report
        self.total = total
        self.pending: list[PendingStep] = []
        self._window_started: float | None = None

    def begin(self) -> None:
        """Note that a step starts (the first of a window starts the window's clock)."""
        if self._window_started is None:
            self._window_started = time.perf_counter()

    def add(self, step: PendingStep) -> None:
        """Keep a finished step until the next read-back."""
        self.pending.append(step)

    @property
    def due(self) -> bool:
        """Whether a whole window is waiting."""
        return len(self.pending) >= self.every

    def flush(self, state: TrainState) -> None:
        """Read every pending step back in one transfer, append each step's loss to the epoch's
        (``state.losses``) and send its ``step`` event.

        Raises:
            TrainingDiverged: At the first step whose loss or gradient norm is not finite; the
                steps before it are reported, it and the ones after are not, and ``state``
                is left at the last good step (what the ``failed`` event names).
        """
        pending, self.pending = self.pending, []
        if not pending:
            self._window_started = None
            return
        tensors = [loss.reshape(()) for step in pending for loss in step.losses]
        tensors += [step.norm.reshape(()) for step in pending if step.norm is not None]
        values = iter(torch.stack(tensors).tolist())  # the one device-to-host transfer
        started = self._window_started if self._window_started is not None else time.perf_counter()
        seconds = (time.perf_counter() - started) / len(pending)
        self._window_started = None
        means = [_mean([next(values) for _ in step.losses]) for step in pending]
        norms = [next(values) if step.norm is not None else None for step in pending]
        for step, loss, norm in zip(pending, means, norms, strict=True):
            problem = divergence(step, loss, norm)
            if problem:
                state.step, state.epoch = step.step - 1, step.epoch
                raise TrainingDiverged(problem)
            state.losses.append(loss)
            self.report.step(
                step=step.step,
                total=self.total,
                epoch=step.epoch,
                loss=loss,
                lrs=step.lrs,
                seconds=seconds,
                memory=step.memory,
            )


def divergence(step: PendingStep, loss: float, norm: float | None) -> str | None:
    """Why ``step`` ends the run (its loss, else its gradient norm, is not finite), or None."""
    if not math.isfinite(loss):
        return (
            f"loss became {loss} at step {step.step} (epoch {step.epoch}); lower train.unet_lr, "
            'or use train.precision = "bf16" or "fp32"'
        )
    if norm is not None and not math.isfinite(norm):
        return (
            f"gradients became {norm} at step {step.step} (epoch {step.epoch}); "
            'lower train.unet_lr, or use train.precision = "fp32"'
        )
    return None


def _mean(values: list[float]) -> float:
    # Summed one by one in double, as the loop always added its batches' losses.
    total = 0.0
    for value in values:
        total += value
    return total / len(values)
