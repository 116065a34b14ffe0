"""The models a run trains, in one object: the base pipeline's parts with LoRA adapters added.

:func:`load_models` loads the base through its model family (:mod:`kiln.engine.models.family`),
moves the parts to the device, adds Kohya's LoRA adapters with peft (U-Net, and each text
encoder when they train) and sets up the noise scheduler. The trainer then hands the trained
models to accelerate, which may wrap them (``unet_train``, each part's ``train_model``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from kiln.engine.models.conditioning import TextConditioning
from kiln.engine.models.family import ModelFamily, TextEncoderSlot
from kiln.engine.models.lora_keys import LoraTarget
from kiln.engine.train.config import TrainConfig
from kiln.engine.train.lycoris_network import (
    LYCORIS_TYPES,
    add_lycoris,
    load_lycoris_copy,
    lycoris_copy,
    lycoris_modules,
    lycoris_state_dict,
)
from kiln.engine.train.network import add_lora, lora_weights


@dataclass
class TextEncoderPart:
    """One text encoder as training uses it.

    Attributes:
        slot: Which of the family's encoders (its pipeline attribute, Kohya prefix, resume key).
        model: The encoder, on the device.
        tokenizer: Its tokenizer.
        targets: Its adapted layers (empty: frozen).
        params: Its adapters' parameters.
        lr: Its learning rate.
        full: Trained whole (a full fine-tune), not through adapters.
        train_model: The encoder as accelerate prepared it (the plain one until then).
    """

    slot: TextEncoderSlot
    model: torch.nn.Module
    tokenizer: Any
    targets: list[LoraTarget]
    params: list[torch.nn.Parameter]
    lr: float
    full: bool = False
    train_model: torch.nn.Module = field(init=False)

    def __post_init__(self) -> None:
        self.train_model = self.model

    @property
    def trains(self) -> bool:
        return bool(self.targets) or self.full


@dataclass
class TrainModels:
    """The pipeline's parts as training uses them.

    Attributes:
        family: The model family (how captions become conditioning, size conditioning...).
        pipe: The base pipeline (samples render with it; its parts are the ones below).
        unet, vae: Its U-Net and VAE, on the device.
        text_encoders: Its text encoders (one for SD 1.5, two for SDXL), in the family's order.
        noise_scheduler: The DDPM scheduler of training (from the pipeline's scheduler config,
            with the prediction type and zero-terminal-SNR rescale the config asks for).
        unet_targets: The U-Net's adapted layers.
        unet_params: Its adapters' parameters (float32), what the optimizer trains; every
            U-Net weight in a full fine-tune.
        full: A full fine-tune (``network.type = "full"``): the U-Net (and the text encoders
            when they train) train whole, in float32.
        unet_train: The U-Net as accelerate prepared it (wrapped for DDP with several
            processes); the plain one until the trainer prepares it.
    """

    family: ModelFamily
    pipe: Any
    unet: torch.nn.Module
    vae: Any  # diffusers' AutoencoderKL (its encode() output is typed as a union)
    text_encoders: list[TextEncoderPart]
    noise_scheduler: Any
    unet_targets: list[LoraTarget]
    unet_params: list[torch.nn.Parameter]
    full: bool = False
    unet_train: torch.nn.Module = field(init=False)

    def __post_init__(self) -> None:
        self.unet_train = self.unet

    @property
    def prediction_type(self) -> str:
        """``epsilon`` or ``v_prediction``: what the U-Net predicts."""
        return self.noise_scheduler.config.prediction_type

    @property
    def train_te(self) -> bool:
        """Whether any text encoder trains."""
        return any(part.trains for part in self.text_encoders)

    @property
    def te_targets(self) -> list[LoraTarget]:
        """Every text encoder's adapted layers, in slot order."""
        return [target for part in self.text_encoders for target in part.targets]

    @property
    def trainable(self) -> list[torch.nn.Parameter]:
        """Every adapter parameter (gradient clipping takes them all)."""
        return self.unet_params + [param for part in self.text_encoders for param in part.params]

    @property
    def text_device(self) -> torch.device:
        """Where the text encoders are (off the training device once their outputs are cached)."""
        return next(self.text_encoders[0].model.parameters()).device

    def move_text_encoders(self, device: torch.device | str) -> None:
        """Move every text encoder to ``device`` (frozen ones leave the GPU between sample rounds)."""
        for part in self.text_encoders:
            part.model.to(device)

    def tokenize(self, captions: list[str], device: torch.device) -> list[torch.Tensor]:
        """Each encoder's token ids of ``captions``, padded to its window (77); copied to a GPU
        from pinned memory, without blocking."""
        from kiln.engine.train.speed import to_device

        return [
            to_device(
                part.tokenizer(
                    captions,
                    padding="max_length",
                    max_length=part.tokenizer.model_max_length,
                    truncation=True,
                    return_tensors="pt",
                ).input_ids,
                torch.device(device),
                pin=True,
            )
            for part in self.text_encoders
        ]

    def encode_text(self, ids: list[torch.Tensor], clip_skip: int) -> TextConditioning:
        """The captions' conditioning; gradients flow only into encoders that train."""
        grad = torch.is_grad_enabled()
        with torch.set_grad_enabled(grad and self.train_te):
            return self.family.encode_text(
                [part.train_model for part in self.text_encoders],
                [part.model for part in self.text_encoders],
                ids,
                clip_skip,
            )

    def adapters(self) -> dict[str, Any]:
        """A copy of every adapter by Kohya name: ``{"unet_lora": ..., "te_lora": ...}`` (a LoRA's
        ``(down, up)``, or a LyCORIS module's tensors)."""
        if self.full:
            copies = {"unet_lora": _weights_copy(self.unet)}
            copies.update({part.slot.resume_key: _weights_copy(part.model) for part in self.text_encoders})
            return copies
        copies = {"unet_lora": _adapter_copy(self.unet, self.unet_targets)}
        for part in self.text_encoders:
            copies[part.slot.resume_key] = _adapter_copy(part.model, part.targets)
        return copies

    def load_adapters(self, data: dict[str, Any]) -> None:
        """Restore what :meth:`adapters` returned."""
        pairs = [(self.unet, self.unet_targets, "unet_lora")]
        pairs += [(part.model, part.targets, part.slot.resume_key) for part in self.text_encoders]
        for model, targets, key in pairs:
            if self.full:
                weights = dict(model.named_parameters())
                for name, value in data[key].items():
                    weights[name].data.copy_(value)
                continue
            if lycoris_modules(model):
                load_lycoris_copy(model, data[key])
                continue
            for target in targets:
                down, up = lora_weights(model, target)
                saved_down, saved_up = data[key][target.kohya]
                down.data.copy_(saved_down)
                up.data.copy_(saved_up)

    def network_state_dict(self, unwrap: Any, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The trained network under Kohya names, for the LoRA file (``unwrap``: accelerate's
        ``unwrap_model``)."""
        from kiln.engine.train.lora_io import kohya_state_dict

        pairs = [(unwrap(self.unet_train), self.unet_targets)]
        pairs += [(unwrap(part.train_model), part.targets) for part in self.text_encoders if part.trains]
        tensors: dict[str, torch.Tensor] = {}
        for model, targets in pairs:
            if lycoris_modules(model):
                tensors.update(lycoris_state_dict(model, dtype))
            else:
                tensors.update(kohya_state_dict(model, targets, dtype))
        return tensors


def load_models(
    config: TrainConfig,
    family: ModelFamily,
    device: torch.device,
    weight_dtype: torch.dtype,
    log: logging.Logger,
) -> TrainModels:
    """Load the base model and add the LoRA adapters ``config.network`` asks for."""
    network = config.network
    _quiet_transformers()
    pipe = family.load(config.model.base, config.model.allow_pickle)
    # The VAE encodes in float32 whatever the training precision: SDXL's overflows in fp16.
    vae = pipe.vae.to(device, dtype=torch.float32).eval()
    vae.requires_grad_(False)
    # A full fine-tune trains every weight: float32 master weights (fp16 mixed precision's
    # gradient scaler needs them; bf16 and fp16 stay the compute precision under autocast).
    full = network.type == "full"
    unet = pipe.unet.to(device, dtype=torch.float32 if full else weight_dtype)
    unet_targets: list[LoraTarget] = []
    if full:
        unet.requires_grad_(True)
        unet_params = list(unet.parameters())
    else:
        unet_targets = family.unet_targets(
            unet, network.rank, network.alpha, network.effective_conv_rank, network.conv_alpha
        )
        unet_params = add_network(unet, unet_targets, network.type, network.factor, log)
    parts = []
    for slot, lr in zip(family.text_encoders, config.text_encoder_lrs(), strict=False):
        whole = full and network.train_text_encoder
        model = getattr(pipe, slot.attr).to(device, dtype=torch.float32 if whole else weight_dtype)
        targets: list[LoraTarget] = []
        params: list[torch.nn.Parameter] = []
        if whole:
            model.requires_grad_(True)
            params = list(model.parameters())
        elif network.train_text_encoder:
            targets = family.text_encoder_targets(model, network.rank, network.alpha, slot.prefix)
            params = add_network(model, targets, network.type, network.factor, log)
        else:
            model.requires_grad_(False)
        part = TextEncoderPart(slot, model, getattr(pipe, slot.tokenizer), targets, params, lr, whole)
        if config.train.gradient_checkpointing and part.trains:
            _checkpoint_text_encoder(model)
        model.train(part.trains)
        parts.append(part)
    if config.train.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    if full:
        trained = sum(p.numel() for p in unet_params) + sum(p.numel() for part in parts for p in part.params)
        log.info("%s: full fine-tune of %.1fM parameters (float32 weights)", family.title, trained / 1e6)
    else:
        log.info(
            "%s: %s rank %d alpha %g on %d U-Net and %s text-encoder modules",
            family.title,
            network.type,
            network.rank,
            network.alpha,
            len(unet_targets),
            " + ".join(str(len(part.targets)) for part in parts),
        )
    return TrainModels(
        family=family,
        pipe=pipe,
        unet=unet,
        vae=vae,
        text_encoders=parts,
        noise_scheduler=training_scheduler(pipe.scheduler.config, config),
        unet_targets=unet_targets,
        unet_params=unet_params,
        full=full,
    )


def training_scheduler(base_config: Any, config: TrainConfig) -> Any:
    """The DDPM scheduler of training: the base's betas, the prediction type the config asks
    for (``auto``: the base's), and zero terminal SNR when asked (Kohya's
    ``--zero_terminal_snr``, the same rescale of the betas)."""
    from diffusers import DDPMScheduler

    overrides: dict[str, Any] = {}
    if config.model.prediction != "auto":
        overrides["prediction_type"] = "v_prediction" if config.model.prediction == "v" else "epsilon"
    if config.train.zero_terminal_snr:
        overrides["rescale_betas_zero_snr"] = True
    return DDPMScheduler.from_config(base_config, **overrides)


def base_alphas_cumprod(models: TrainModels) -> torch.Tensor:
    """The base schedule's cumulative alphas, before any zero-terminal-SNR rescale (what
    Kohya's min-SNR weights use)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(models.pipe.scheduler.config).alphas_cumprod


def _checkpoint_text_encoder(model: torch.nn.Module) -> None:
    # transformers >= 5 renamed it; non-reentrant so LoRA grads flow past frozen inputs.
    encoder: Any = model  # a transformers CLIP model (its checkpointing methods are untyped here)
    if hasattr(encoder, "activation_checkpointing_enable"):
        encoder.activation_checkpointing_enable({"use_reentrant": False})
    else:
        encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def add_network(
    model: torch.nn.Module,
    targets: list[LoraTarget],
    kind: str,
    factor: int,
    log: logging.Logger | None = None,
) -> list:
    """Adapters of ``kind`` on ``targets``: peft LoRA for ``lora``/``locon``, else LyCORIS."""
    if kind in LYCORIS_TYPES:
        return add_lycoris(model, targets, kind, factor, log)
    return add_lora(model, targets)


def _weights_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A full fine-tune's trained weights (the resume state: as large as the model)."""
    return {name: param.detach().clone() for name, param in model.named_parameters() if param.requires_grad}


def _adapter_copy(model: torch.nn.Module, targets: list[LoraTarget]) -> Any:
    if lycoris_modules(model):
        return lycoris_copy(model)
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
