"""What steps the adapters: accelerate's Accelerator, the optimizer and the LR schedule."""

from __future__ import annotations

from typing import Any

import torch
from kiln.engine.train.config import MIXED_PRECISION, TrainConfig
from kiln.engine.train.models import TrainModels
from kiln.engine.train.schedule import lr_factor


def make_accelerator(config: TrainConfig, cpu: bool) -> Any:
    """accelerate's Accelerator for this run (one per process; its state is reset between runs)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and AcceleratorState().num_processes == 1:
        # accelerate keeps one state per process; a second run in the same process (tests,
        # a sweep) may ask for another precision.
        AcceleratorState._reset_state()
    # With clip_skip the text encoder's last layers get no gradient (SDXL's encoders read the
    # penultimate layer always, and only the second's pooled output uses its last); DDP must be told.
    # ("auto" may be SDXL: finding unused parameters only costs time).
    unused = config.network.train_text_encoder and (
        config.train.clip_skip > 1 or config.model.family != "sd15"
    )
    return Accelerator(
        mixed_precision=MIXED_PRECISION[config.train.precision],
        cpu=cpu,
        log_with=None,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=unused)],
    )


def make_optimizer(
    config: TrainConfig, models: TrainModels, total_steps: int, device: torch.device
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimizer over the adapters (U-Net and each text encoder at their own learning rates)
    and its LR schedule over ``total_steps`` optimizer steps."""
    train = config.train
    groups = [{"params": models.unet_params, "lr": train.unet_lr}]
    groups += [{"params": part.params, "lr": part.lr} for part in models.text_encoders if part.params]
    if train.optimizer == "adamw8bit":
        import bitsandbytes

        optimizer = bitsandbytes.optim.AdamW8bit(groups, weight_decay=train.weight_decay)
    elif train.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        # Kohya's settings for a fixed LR: no relative step, no parameter scaling.
        optimizer = Adafactor(
            groups,
            lr=train.unet_lr,
            relative_step=False,
            scale_parameter=False,
            warmup_init=False,
            weight_decay=train.weight_decay,
        )
    else:
        optimizer = _adamw(groups, train.weight_decay, device)
    warmup, kind = train.lr_warmup_steps, train.scheduler
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, kind)
    )
    return optimizer, scheduler


def _adamw(groups: list[dict[str, Any]], weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    """torch's AdamW, fused into one kernel per step where the device has it.

    A LoRA has hundreds of small tensors; the default per-tensor loop spends more time in
    Python and kernel launches than in arithmetic. The maths is the same AdamW.
    """
    try:
        return torch.optim.AdamW(groups, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, weight_decay=weight_decay, foreach=device.type != "cpu" or None)
