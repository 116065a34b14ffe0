"""The diffusion loss: seeded noise and timesteps, the U-Net's forward pass, min-SNR weights.

Noise and timesteps of a batch are pure functions of ``(seed, epoch, batch)``, and the
validation noise of ``(seed, image path)``, so a resumed run draws exactly what an
uninterrupted one would, and the validation loss moves only with the weights.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn.functional as F
from kiln.engine.train.models import TrainModels
from kiln.engine.train.text_cache import TextCache


def batch_noise(
    seed: int, epoch: int, batch: int, shape: torch.Size, noise_offset: float, timesteps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(noise, timesteps)`` of one batch of latents of ``shape``, on the CPU."""
    generator = torch.Generator("cpu").manual_seed(_seed(f"kiln-noise:{seed}:{epoch}:{batch}"))
    noise = torch.randn(shape, generator=generator)
    if noise_offset:
        noise += noise_offset * torch.randn((*shape[:2], 1, 1), generator=generator)
    return noise, torch.randint(0, timesteps, (shape[0],), generator=generator)


def validation_noise(seed: int, rel_path: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The fixed noise of one held-out image (one row per validation timestep), on the CPU."""
    generator = torch.Generator("cpu").manual_seed(_seed(f"kiln-validation-noise:{seed}:{rel_path}"))
    return torch.randn(shape, generator=generator)


def per_sample_loss(
    models: TrainModels,
    accelerator: Any,
    weight_dtype: torch.dtype,
    clip_skip: int,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    captions: list[str],
    time_ids: torch.Tensor | None = None,
    text_cache: TextCache | None = None,
) -> torch.Tensor:
    """MSE between the U-Net's prediction and its target, one value per sample.

    The one forward pass both training and the validation loss use: noise the latents at
    ``timesteps``, encode the captions (through the family: one encoder, or SDXL's two with
    its pooled text and the images' size/crop ``time_ids``), predict, and compare with the
    noise (epsilon) or the velocity (v-prediction). With ``text_cache`` (frozen text
    encoders) each caption is encoded once and looked up after.
    """
    scheduler = models.noise_scheduler
    noisy = scheduler.add_noise(latents, noise, timesteps)
    with accelerator.autocast():
        if text_cache is not None:
            conditioning = text_cache.lookup(
                captions,
                lambda texts: models.encode_text(models.tokenize(texts, models.text_device), clip_skip),
                latents.device,
            )
        else:
            conditioning = models.encode_text(models.tokenize(captions, latents.device), clip_skip)
        kwargs = conditioning.unet_kwargs(None if time_ids is None else time_ids.to(latents.device))
        prediction = models.unet_train(noisy.to(weight_dtype), timesteps, **kwargs).sample
    target = (
        noise if models.prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, timesteps)
    )
    return F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))


def min_snr_weights(
    alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float, prediction_type: str
) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023) of each sample's timestep."""
    alpha = alphas_cumprod[timesteps]
    snr = alpha / (1 - alpha)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1 if prediction_type == "v_prediction" else snr)


def _seed(text: str) -> int:
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
