"""The validation loss: the plain diffusion loss on held-out images at fixed timesteps and noise.

Noise is fixed per image and timestep (seeded from the run's seed and the image's path),
captions are used as written, and min-SNR weighting is left out, so the figure moves only
with the weights: comparable across epochs, resumes and the runs of a sweep.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from kiln.engine.train.data import TrainImage
from kiln.engine.train.loss import validation_noise

# The validation loss is measured at these timesteps (of 1000).
VALIDATION_TIMESTEPS = (200, 400, 600, 800)


@torch.no_grad()
def held_out_losses(
    images: Sequence[TrainImage],
    latent_of: Callable[[TrainImage], torch.Tensor],
    loss_of: Callable[..., torch.Tensor],
    seed: int,
    train_timesteps: int,
    family: Any,
    device: torch.device,
) -> dict[int, float]:
    """The mean loss over ``images`` at each of :data:`VALIDATION_TIMESTEPS`.

    Args:
        images: The held-out images.
        latent_of: An image's latent (cached or encoded).
        loss_of: ``loss_of(latents, noise, timesteps, captions, time_ids)``: per-sample losses.
        seed: The run's seed (the noise derives from it and each image's path).
        train_timesteps: The scheduler's timestep count (timesteps past its end are clamped).
        family: The model family (its size/crop time ids).
        device: Where to compute.
    """
    timesteps = [min(t, train_timesteps - 1) for t in VALIDATION_TIMESTEPS]
    count = len(timesteps)
    totals = dict.fromkeys(VALIDATION_TIMESTEPS, 0.0)
    for image in images:
        latent = latent_of(image).to(device, torch.float32)
        noise = validation_noise(seed, image.rel_path, (count, *latent.shape)).to(device)
        latents = latent.unsqueeze(0).expand(count, *latent.shape)
        steps = torch.tensor(timesteps, device=device, dtype=torch.long)
        time_ids = family.time_ids([image.size] * count, [image.bucket] * count)
        losses = loss_of(latents, noise, steps, [image.caption] * count, time_ids)
        for t, loss in zip(VALIDATION_TIMESTEPS, losses.tolist(), strict=True):
            totals[t] += loss
    held = max(1, len(images))
    return {t: total / held for t, total in totals.items()}
