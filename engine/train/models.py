"""The models a run trains, in one object: the base pipeline's parts with LoRA adapters added.

:func:`load_models` loads the base through its model family (:mod:`kiln.engine.models.family`),
moves the parts to the device, adds Kohya's LoRA adapters with peft (U-Net, and the text
encoder when it trains) and sets up the noise scheduler. The trainer then hands the trained
models to accelerate, which may wrap them (``unet_train``, ``te_train``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from kiln.engine.models.family import ModelFamily
from kiln.engine.models.lora_keys import LoraTarget
from kiln.engine.train.config import TrainConfig
from kiln.engine.train.network import add_lora, lora_weights


@dataclass
class TrainModels:
    """The pipeline's parts as training uses them.

    Attributes:
        pipe: The base pipeline (samples render with it; its parts are the ones below).
        unet, text_encoder, vae, tokenizer: Its parts, on the device.
        noise_scheduler: The DDPM scheduler of training (from the pipeline's scheduler config).
        unet_targets, te_targets: The adapted layers (``te_targets`` empty: text encoder frozen).
        unet_params, te_params: The adapters' parameters (float32), what the optimizer trains.
        train_te: Whether the text encoder trains.
        unet_train, te_train: The models as accelerate prepared them (wrapped for DDP with
            several processes); the plain models until :meth:`prepared` is called.
    """

    pipe: Any
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    vae: Any  # diffusers' AutoencoderKL (its encode() output is typed as a union)
    tokenizer: Any
    noise_scheduler: Any
    unet_targets: list[LoraTarget]
    te_targets: list[LoraTarget]
    unet_params: list[torch.nn.Parameter]
    te_params: list[torch.nn.Parameter]
    train_te: bool
    unet_train: torch.nn.Module = field(init=False)
    te_train: torch.nn.Module = field(init=False)

    def __post_init__(self) -> None:
        self.unet_train, self.te_train = self.unet, self.text_encoder

    @property
    def prediction_type(self) -> str:
        """``epsilon`` or ``v_prediction``: what the U-Net predicts."""
        return self.noise_scheduler.config.prediction_type

    @property
    def trainable(self) -> list[torch.nn.Parameter]:
        """Every adapter parameter (gradient clipping takes them all)."""
        return self.unet_params + self.te_params

    def adapters(self) -> dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """A copy of every adapter's ``(down, up)`` by Kohya name: ``{"unet_lora": ..., "te_lora": ...}``."""
        return {
            "unet_lora": _adapter_copy(self.unet, self.unet_targets),
            "te_lora": _adapter_copy(self.text_encoder, self.te_targets),
        }

    def load_adapters(self, data: dict[str, Any]) -> None:
        """Restore what :meth:`adapters` returned."""
        for model, targets, key in (
            (self.unet, self.unet_targets, "unet_lora"),
            (self.text_encoder, self.te_targets, "te_lora"),
        ):
            for target in targets:
                down, up = lora_weights(model, target)
                saved_down, saved_up = data[key][target.kohya]
                down.data.copy_(saved_down)
                up.data.copy_(saved_up)


def load_models(
    config: TrainConfig,
    family: ModelFamily,
    device: torch.device,
    weight_dtype: torch.dtype,
    log: logging.Logger,
) -> TrainModels:
    """Load the base model and add the LoRA adapters ``config.network`` asks for."""
    from diffusers import DDPMScheduler

    network = config.network
    _quiet_transformers()
    pipe = family.load(config.model.base, config.model.allow_pickle)
    vae = pipe.vae.to(device, dtype=torch.float32).eval()
    vae.requires_grad_(False)
    unet = pipe.unet.to(device, dtype=weight_dtype)
    text_encoder = pipe.text_encoder.to(device, dtype=weight_dtype)
    unet_targets = family.unet_targets(
        unet, network.rank, network.alpha, network.conv_rank, network.conv_alpha
    )
    unet_params = add_lora(unet, unet_targets)
    train_te = network.train_text_encoder
    if train_te:
        te_targets = family.text_encoder_targets(text_encoder, network.rank, network.alpha)
        te_params = add_lora(text_encoder, te_targets)
    else:
        te_targets, te_params = [], []
        text_encoder.requires_grad_(False)
    if config.train.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if train_te:
            # transformers >= 5 renamed it; non-reentrant so LoRA grads flow past frozen inputs.
            if hasattr(text_encoder, "activation_checkpointing_enable"):
                text_encoder.activation_checkpointing_enable({"use_reentrant": False})
            else:
                text_encoder.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False}
                )
    unet.train()
    text_encoder.train(train_te)
    log.info(
        "LoRA rank %d alpha %g on %d U-Net and %d text-encoder modules",
        network.rank,
        network.alpha,
        len(unet_targets),
        len(te_targets),
    )
    return TrainModels(
        pipe=pipe,
        unet=unet,
        text_encoder=text_encoder,
        vae=vae,
        tokenizer=pipe.tokenizer,
        noise_scheduler=DDPMScheduler.from_config(pipe.scheduler.config),
        unet_targets=unet_targets,
        te_targets=te_targets,
        unet_params=unet_params,
        te_params=te_params,
        train_te=train_te,
    )


def _adapter_copy(
    model: torch.nn.Module, targets: list[LoraTarget]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    copies = {}
    for target in targets:
        down, up = lora_weights(model, target)
        copies[target.kohya] = (down.detach().clone(), up.detach().clone())
    return copies


def _quiet_transformers() -> None:
    """transformers and diffusers log progress bars and torchvision notices a run log does not need."""
    try:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
        diffusers_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
