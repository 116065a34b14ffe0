"""Which layers get LoRA adapters (Kohya's set, with Kohya's names) and how peft adds them.

Kohya's ``networks.lora`` puts an adapter on every Linear and 1x1 Conv2d inside the U-Net's
``Transformer2DModel`` blocks and the text encoder's attention and MLP blocks: 192 + 72
modules on SD 1.5. With a conv rank (LoCon) it adds the ResNet and up/down-sampler blocks:
their 3x3 convs at the conv rank, their Linear and 1x1 convs at the main rank.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

UNET_PREFIX = "lora_unet"
TEXT_ENCODER_PREFIX = "lora_te"
UNET_BLOCKS = ("Transformer2DModel",)
UNET_CONV_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_ENCODER_BLOCKS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")
ADAPTER = "kiln"


@dataclass(frozen=True)
class LoraTarget:
    """One adapted layer.

    Attributes:
        module: The layer's name inside its model (``down_blocks.0.attentions.0.proj_in``).
        kohya: Its Kohya name (``lora_unet_down_blocks_0_attentions_0_proj_in``).
        rank: Adapter rank.
        alpha: Adapter alpha (scale = alpha / rank).
    """

    module: str
    kohya: str
    rank: int
    alpha: float


def kohya_name(prefix: str, module: str) -> str:
    """Kohya's key stem for a layer: the prefix and the dotted path with dots as underscores.

    Text-encoder names always carry ``text_model``: transformers >= 5.6 dropped that level
    from ``CLIPTextModel``, but A1111, ComfyUI and Kohya expect it.
    """
    if prefix == TEXT_ENCODER_PREFIX and not module.startswith("text_model."):
        module = "text_model." + module
    return f"{prefix}_{module.replace('.', '_')}"


def unet_targets(
    unet: nn.Module, rank: int, alpha: float, conv_rank: int = 0, conv_alpha: float = 1.0
) -> list[LoraTarget]:
    """The U-Net layers Kohya adapts, in model order."""
    blocks = UNET_BLOCKS + (UNET_CONV_BLOCKS if conv_rank > 0 else ())
    return _targets(unet, UNET_PREFIX, blocks, rank, alpha, conv_rank, conv_alpha)


def text_encoder_targets(text_encoder: nn.Module, rank: int, alpha: float) -> list[LoraTarget]:
    """The text-encoder layers Kohya adapts (attention projections and MLP), in model order."""
    return _targets(text_encoder, TEXT_ENCODER_PREFIX, TEXT_ENCODER_BLOCKS, rank, alpha, 0, 1.0)


def _targets(
    model: nn.Module,
    prefix: str,
    blocks: tuple[str, ...],
    rank: int,
    alpha: float,
    conv_rank: int,
    conv_alpha: float,
) -> list[LoraTarget]:
    found: dict[str, LoraTarget] = {}
    for block_name, block in model.named_modules():
        if type(block).__name__ not in blocks:
            continue
        for child_name, child in block.named_modules():
            name = f"{block_name}.{child_name}" if child_name else block_name
            if isinstance(child, nn.Linear) or (isinstance(child, nn.Conv2d) and child.kernel_size == (1, 1)):
                target = LoraTarget(name, kohya_name(prefix, name), rank, alpha)
            elif isinstance(child, nn.Conv2d) and conv_rank > 0:
                target = LoraTarget(name, kohya_name(prefix, name), conv_rank, conv_alpha)
            else:
                continue
            found.setdefault(name, target)
    return list(found.values())


def add_lora(model: nn.Module, targets: list[LoraTarget]) -> list[nn.Parameter]:
    """Add peft LoRA adapters to ``targets`` and return the adapters' parameters (float32).

    Everything else in ``model`` is frozen. Initialisation is Kohya's and peft's: down
    (``lora_A``) Kaiming-uniform, up (``lora_B``) zero, so the untrained LoRA changes nothing.
    """
    from peft import LoraConfig, inject_adapter_in_model

    model.requires_grad_(False)
    if not targets:
        return []
    main = targets[0]
    config = LoraConfig(
        r=main.rank,
        lora_alpha=main.alpha,
        target_modules=[target.module for target in targets],
        rank_pattern={_exact(t.module): t.rank for t in targets if t.rank != main.rank},
        alpha_pattern={_exact(t.module): t.alpha for t in targets if t.alpha != main.alpha},
        init_lora_weights=True,
        lora_dropout=0.0,
    )
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    params = []
    for name, param in model.named_parameters():
        if f".lora_A.{ADAPTER}." in name or f".lora_B.{ADAPTER}." in name:
            param.data = param.data.float()
            param.requires_grad_(True)
            params.append(param)
        else:
            param.requires_grad_(False)
    return params


def _exact(module: str) -> str:
    # peft matches rank/alpha patterns as regexes against the end of the module's name.
    return "^" + re.escape(module) + "$"


def lora_weights(model: nn.Module, target: LoraTarget) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(down, up)`` weights of one adapted layer (peft's ``lora_A``/``lora_B``)."""
    layer = model.get_submodule(target.module)
    return layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
