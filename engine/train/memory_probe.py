"""How much memory a training step takes beyond the weights, measured before the run starts.

Activations are the part of a run's memory no formula gets right for every model, precision,
attention kernel and checkpointing setting; so the trainer measures them. It runs the real
forward and backward pass (the run's U-Net, adapters, autocast, checkpointing, text path) on
random latents twice: one sample at half the largest bucket's sides, and the run's batch at
the largest bucket itself; reads each pass's peak above what was in use before it
(:class:`~kiln.engine.train.memory.PeakMeter`); and fits ``intercept + bytes per latent
pixel x area x batch`` (activations grow with both: the tiny U-Net's peak at 64x64 latents,
batch 4, equals its peak at 32x32, batch 4 x 4, within 1%). The second point is the run's
own step, so the line is exact there; the first gives the part that does not grow. Gradients
are dropped after each pass and no random state the run uses is touched, so a probed run
trains exactly as an unprobed one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from kiln.engine.train.memory import PeakMeter

# Latent sides stay multiples of this (SD 1.5's U-Net halves a latent three times).
LATENT_MULTIPLE = 8
SMALLEST_SIDE = 8
PASSES = 2


@dataclass(frozen=True)
class ActivationFit:
    """Bytes one training step holds beyond the weights, as a line in the latent area.

    Attributes:
        intercept: Bytes that do not grow with the image (the gradients of the trained
            weights, the text path's activations, kernels' workspaces).
        per_latent_px: Bytes per latent pixel of one sample.
        points: The measured ``(latent area x batch, bytes)`` pairs the line was fitted to.
    """

    intercept: float
    per_latent_px: float
    points: tuple[tuple[int, int], ...] = ()

    def at(self, batch: int, latent_area: int) -> float:
        """Bytes of a step of ``batch`` samples of ``latent_area`` latent pixels each."""
        return max(0.0, self.intercept) + batch * self.per_latent_px * latent_area


Shape = tuple[int, int, int]  # (latent height, latent width, batch)


def probe_shapes(latent_height: int, latent_width: int, batch: int) -> list[Shape]:
    """The two passes: one sample at half the largest bucket's sides (each a multiple of
    :data:`LATENT_MULTIPLE`), then the run's batch at the bucket itself; the second is made
    larger when rounding left the two the same size."""

    def side(value: float) -> int:
        return max(SMALLEST_SIDE, round(value / LATENT_MULTIPLE) * LATENT_MULTIPLE)

    small = (side(latent_height / 2), side(latent_width / 2), 1)
    large = (latent_height, latent_width, batch)
    if large[0] * large[1] * large[2] <= small[0] * small[1]:
        large = (small[0] * 2, small[1] * 2, batch)
    return [small, large]


def measure_steps(
    step: Callable[[int, int, int], None], shapes: Sequence[Shape], meter: PeakMeter
) -> list[tuple[int, int]]:
    """``(latent area x batch, peak bytes above the start)`` of ``step(height, width, batch)``.

    One unmeasured pass at the first shape comes first: kernels, workspaces and lazily built
    caches are allocated once per process and are not the step's own. Each shape then runs
    twice after the meter starts, so a CPU's heap reaches the slack it keeps between steps
    (training's own steady state) before the peak is read.
    """
    step(*shapes[0])
    points = []
    for height, width, batch in shapes:
        meter.start()
        for _ in range(PASSES):
            step(height, width, batch)
        points.append((height * width * batch, meter.peak_above_start()))
    return points


def fit_line(points: Sequence[tuple[int, int]]) -> ActivationFit:
    """The line through the first and last measured points (their sizes must differ)."""
    (area_a, bytes_a), (area_b, bytes_b) = points[0], points[-1]
    slope = max(0.0, (bytes_b - bytes_a) / (area_b - area_a))
    return ActivationFit(intercept=bytes_a - slope * area_a, per_latent_px=slope, points=tuple(points))


def probe_activations(
    step: Callable[[int, int, int], None],
    latent_height: int,
    latent_width: int,
    batch: int,
    meter: PeakMeter,
) -> ActivationFit | None:
    """Measure and fit; None when this machine cannot measure (no peak counter) or a probe
    pass ran out of memory (the run itself then says so at its first step)."""
    if not meter.available:
        return None
    try:
        points = measure_steps(step, probe_shapes(latent_height, latent_width, batch), meter)
    except torch.OutOfMemoryError:
        return None
    return fit_line(points)


def loss_step(
    loss_of: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    trainable: Sequence[torch.nn.Parameter],
    device: torch.device,
    channels: int = 4,
) -> Callable[[int, int, int], None]:
    """A probe step: ``loss_of(latents, noise, timesteps)`` on random latents of the given
    shape, backward, and the gradients dropped. The noise comes from a generator of its own so
    the run's random streams are untouched."""

    def step(height: int, width: int, batch: int) -> None:
        generator = torch.Generator("cpu").manual_seed(0)
        latents = torch.randn((batch, channels, height, width), generator=generator).to(device)
        noise = torch.randn((batch, channels, height, width), generator=generator).to(device)
        timesteps = torch.full((batch,), 500, device=device)
        loss_of(latents, noise, timesteps).mean().backward()
        for param in trainable:
            param.grad = None

    return step
