"""The memory a run will need at its peak, worked out before its first step.

Users size a run (batch, resolution, rank, precision, gradient checkpointing) by what their
card holds; finding out from an out-of-memory error an hour into a sweep is the expensive
way. Once the models are loaded the trainer knows every fixed part exactly and measures the
one part that depends on kernels and settings (:mod:`kiln.engine.train.memory_probe`):

    the rest of the process (measured: what is in use beyond the parts below; about 0 on a
        GPU, the interpreter and its libraries on a CPU)
    + weights on the device (frozen, at their dtypes; the VAE in float32)
    + trained parameters and their gradients (float32 masters)
    + optimizer state (AdamW: two float32 moments; 8-bit AdamW: two bytes; Adafactor: factored)
    + an EMA copy (full fine-tunes that keep one)
    + activations of one batch at the largest bucket (the probe's line)

or, when it was more, the peak the set-up already reached (loading, caching latents).

The result goes into the ``start`` event (and so ``status.json``) as ``memory_estimate``; a
warning names the settings to change when it is more than the device has.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from kiln.engine.plan.memory import OPTIMIZER_BYTES
from kiln.engine.train.memory import MIB, PeakMeter, peak_memory, proc_kib
from kiln.engine.train.memory_probe import ActivationFit, loss_step, probe_activations


def module_bytes(module: torch.nn.Module, device: torch.device, skip: set[int]) -> int:
    """Bytes of ``module``'s parameters and buffers that sit on ``device`` (``skip``: ids of
    parameters counted elsewhere)."""
    total = 0
    for tensor in (*module.parameters(), *module.buffers()):
        if id(tensor) not in skip and tensor.device.type == device.type:
            total += tensor.numel() * tensor.element_size()
    return total


def optimizer_bytes(params: list[torch.nn.Parameter], optimizer: str) -> int:
    """Optimizer state for ``params``: per parameter as the plan counts it
    (:data:`~kiln.engine.plan.memory.OPTIMIZER_BYTES`; bitsandbytes' block statistics are under
    1%), except Adafactor's factored second moment, counted exactly here: a float32 row and
    column per matrix, the whole of a vector."""
    if optimizer == "adafactor":
        return 4 * sum((p.shape[0] + math.prod(p.shape[1:])) if p.dim() >= 2 else p.numel() for p in params)
    return OPTIMIZER_BYTES.get(optimizer, OPTIMIZER_BYTES["adamw"]) * sum(p.numel() for p in params)


def largest_latent(buckets: list[tuple[int, int]], resolution: int) -> tuple[int, int]:
    """``(height, width)`` in latent pixels of the largest bucket (``resolution`` square when
    the run has no buckets)."""
    sizes = buckets or [(resolution, resolution)]
    width, height = max(sizes, key=lambda size: size[0] * size[1])
    return height // 8, width // 8


def capacity_bytes(device: torch.device) -> int | None:
    """The device's memory: the GPU's total, or the machine's RAM (Linux)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return proc_kib("/proc/meminfo", "MemTotal")


def run_estimate(trainer: Any) -> dict[str, Any]:
    """The ``memory_estimate`` of a set-up trainer, in MiB (see the module's docstring).

    ``activations_mb`` is None when the probe could not measure on this machine (no peak
    counter: a CPU that is not Linux) and then the total leaves them out and says so
    (``"method": "fixed parts only"``).
    """
    config, models, device = trainer.config, trainer.models, trainer.device
    train = config.train
    trainable = models.trainable
    skip = {id(p) for p in trainable}
    modules = [models.unet, models.vae, *(part.model for part in models.text_encoders)]
    weights = sum(module_bytes(module, device, skip) for module in modules)
    params = sum(p.numel() * p.element_size() for p in trainable)
    grads = 0 if train.fused_backward else params
    state = optimizer_bytes(trainable, train.optimizer) + (params if trainer.average is not None else 0)
    height, width = largest_latent(
        [tuple(b.resolution) for b in trainer.plan.buckets if b.resolution], config.dataset.resolution
    )
    # Not probed: with several processes (each would have to, in step: DDP reduces in
    # backward), under fused_backward (its backward pass applies the optimizer), or with a
    # compiled U-Net (each probe shape would be compiled too: minutes on a GPU).
    probed = trainer.processes == 1 and not train.fused_backward and not train.compile and not probe_off()
    # Loading and caching (the VAE encoding every image at full size) have already peaked, and
    # that is measured (before the probe's own steps): the run needs at least as much again.
    setup = peak_memory(device)["peak_mb"] * MIB
    fit = probe(trainer, height, width) if probed else None
    activations = None
    if fit is not None:
        # The probe's passes allocate the gradients too; they are counted above.
        activations = max(0.0, fit.intercept - grads) + train.batch_size * fit.per_latent_px * height * width
    meter = PeakMeter(device)
    rest = max(0, meter.in_use() - weights - params)
    steps = rest + weights + params + grads + state + (activations or 0)
    total = max(steps, setup)
    capacity = capacity_bytes(device)
    return {
        "total_mb": _mb(total),
        "rest_mb": _mb(rest),
        "weights_mb": _mb(weights),
        "trained_mb": _mb(params + grads),
        "optimizer_mb": _mb(state),
        "activations_mb": None if activations is None else _mb(activations),
        "setup_peak_mb": _mb(setup),
        "capacity_mb": None if capacity is None else _mb(capacity),
        "memory": "vram" if device.type == "cuda" else "ram",
        "method": "probe" if activations is not None else "fixed parts only",
        "latent": [height, width],
        "batch": train.batch_size,
    }


def probe_off() -> bool:
    """``KILN_NO_MEMORY_PROBE=1`` skips the probe (its few steps before the first), leaving the
    estimate's fixed parts: for a quick start, and for test suites that train hundreds of
    tiny runs (Kiln's own sets it; its probe tests turn it back on)."""
    return os.environ.get("KILN_NO_MEMORY_PROBE", "") not in ("", "0")


def probe(trainer: Any, height: int, width: int) -> ActivationFit | None:
    """The activation line of this run's own training step (its loss path: text encoding or
    cache, size conditioning, autocast, checkpointing)."""
    models = trainer.models
    caption = trainer.data.images[0].caption if trainer.data.images else ""

    def loss_of(latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        batch, size = latents.shape[0], (latents.shape[-1] * 8, latents.shape[-2] * 8)
        time_ids = models.family.time_ids([size] * batch, [size] * batch)
        return trainer._per_sample_loss(latents, noise, timesteps, [caption] * batch, time_ids)

    step = loss_step(loss_of, models.trainable, trainer.device)
    return probe_activations(step, height, width, trainer.config.train.batch_size, PeakMeter(trainer.device))


def estimate_warning(estimate: dict[str, Any]) -> str | None:
    """One line when the estimate is more than the device holds, naming what to change."""
    capacity = estimate.get("capacity_mb")
    if capacity is None or estimate["total_mb"] <= capacity:
        return None
    where = "GPU" if estimate["memory"] == "vram" else "machine's RAM"
    return (
        f"memory: this run is estimated to need {estimate['total_mb'] / 1024:.1f} GiB at its peak and "
        f"the {where} has {capacity / 1024:.1f} GiB: set train.gradient_checkpointing = true, lower "
        'train.batch_size or dataset.resolution, or use train.optimizer = "adamw8bit"'
    )


def _mb(value: float) -> float:
    return round(value / MIB, 1)
