"""The ``[train]`` speed options: TF32, channels_last, torch.compile, read-back interval, pinned copies.

None of them changes what is trained. TF32 and channels_last change the rounding of fp32
matmuls and convolutions on a GPU, compile the order of some float operations; the read-back
interval and the prefetching input path (:mod:`kiln.engine.train.prefetch`) change nothing
in the numbers at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from kiln.engine.train.config import TrainParams

# Steps between read-backs on an asynchronous device when train.sync_every_n_steps is 0. A
# read-back waits for the GPU to drain its queue, so per step it stalls the CPU's kernel
# launches once a step; every 10 steps that stall is shared by 10 (well under 1% of a step
# whose kernels run ~0.1 s or more), while events still arrive every few seconds and a
# diverged run wastes at most 9 steps before it stops.
GPU_SYNC_EVERY = 10
# Graphs torch.compile keeps per function: every bucket and sample size of a run.
COMPILED_SHAPES = 64


@dataclass
class Speed:
    """The speed options a trainer runs with.

    Attributes:
        sync_every: Optimizer steps between read-backs of the losses and gradient norms.
        prefetch: Whether the next batch's host tensors are prepared in a background thread.
        pin: Whether host tensors are copied from pinned memory without blocking (CUDA).
        channels_last: Whether the U-Net (and its input) are in channels_last layout.
        restore: Puts back the global TF32 settings this changed (a no-op when none changed).
    """

    sync_every: int
    prefetch: bool
    pin: bool
    channels_last: bool
    restore: Callable[[], None]


def sync_every(params: TrainParams, device: torch.device) -> int:
    """Steps between read-backs: the configured number, or by device (1 on a CPU, where there
    is no asynchrony to keep and each step's event is what users and tests watch)."""
    if params.sync_every_n_steps:
        return params.sync_every_n_steps
    return 1 if device.type == "cpu" else GPU_SYNC_EVERY


def apply_speed_options(
    params: TrainParams, unet: torch.nn.Module, device: torch.device, log: logging.Logger
) -> Speed:
    """Put the speed options on ``unet`` and the process (call before accelerate prepares it)."""
    restore = use_tf32(device) if params.tf32 else _nothing
    if params.channels_last:
        unet.to(memory_format=torch.channels_last)
    if params.compile:
        compile_unet(unet)
    speed = Speed(
        sync_every=sync_every(params, device),
        prefetch=params.prefetch,
        pin=device.type == "cuda",
        channels_last=params.channels_last,
        restore=restore,
    )
    log.info(
        "speed: read-back every %d step(s), prefetch %s, tf32 %s, channels_last %s, compile %s",
        speed.sync_every,
        "on" if speed.prefetch else "off",
        "on" if params.tf32 and device.type == "cuda" else "off",
        "on" if params.channels_last else "off",
        "on" if params.compile else "off",
    )
    return speed


def compile_unet(unet: torch.nn.Module) -> None:
    """``torch.compile`` the U-Net in place, one static graph per input shape.

    In place (``nn.Module.compile``): the module stays itself, so its state-dict keys, the
    adapters' names and accelerate's unwrapping are what they are without compile. Static
    shapes: each bucket (and sample size) compiles once, and Inductor's dynamic-shape path
    fails on the U-Net (PyTorch 2.14: "cannot determine truth value of Relational"). A run
    sees up to 17 buckets at 512 px plus its sample sizes, past Dynamo's default of 8
    graphs per function, after which it would run the rest uncompiled.
    """
    import torch._dynamo.config as dynamo

    dynamo.recompile_limit = max(dynamo.recompile_limit, COMPILED_SHAPES)
    unet.compile(dynamic=False)


def use_tf32(device: torch.device) -> Callable[[], None]:
    """Let fp32 matmuls and cuDNN convolutions run in TF32 on ``device`` (CUDA only; Ampere and
    newer have TF32 units, older cards ignore it) and return what puts the settings back.

    Matmuls through ``torch.set_float32_matmul_precision("high")``, which keeps PyTorch's
    legacy and new (``fp32_precision``) settings in agreement: setting only the new one makes
    ``torch.get_float32_matmul_precision()`` raise ("mix of the legacy and new APIs"), and
    Inductor calls it when it picks among matmul kernels, so ``train.compile`` would fail.
    """
    if device.type != "cuda":
        return _nothing
    # cudnn.conv is missing from torch's type stubs.
    conv = cast(Any, torch.backends.cudnn).conv
    conv_before = conv.fp32_precision
    try:
        matmul_before: str | None = torch.get_float32_matmul_precision()
    except RuntimeError:  # this process already mixed the two APIs: leave its matmuls alone
        matmul_before = None
    if matmul_before is not None:
        torch.set_float32_matmul_precision("high")
    conv.fp32_precision = "tf32"

    def restore() -> None:
        if matmul_before is not None:
            torch.set_float32_matmul_precision(matmul_before)
        conv.fp32_precision = conv_before

    return restore


def to_device(
    tensor: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype | None = None,
    pin: bool = False,
    memory_format: torch.memory_format = torch.preserve_format,
) -> torch.Tensor:
    """``tensor`` on ``device``: with ``pin`` (CUDA) copied from pinned memory without blocking
    the host, so the copy overlaps the GPU's work (PyTorch keeps the pinned block alive until
    the copy is done)."""
    if pin and tensor.device.type == "cpu" and device.type == "cuda":
        if not tensor.is_pinned():
            tensor = tensor.pin_memory()
        return tensor.to(device, dtype, non_blocking=True, memory_format=memory_format)
    return tensor.to(device, dtype, memory_format=memory_format)


def _nothing() -> None:
    pass
