"""Stable Diffusion 1.x: how Kiln recognises, loads and names an SD 1.5 model's parts.

What belongs to the family and nowhere else: the shape of its files (a diffusers
``StableDiffusionPipeline`` folder, or an LDM single file whose cross-attention is 768 wide),
the config folder Kiln ships for single files (:data:`CONFIG_DIR`), the LDM key layout
(:mod:`kiln.engine.models.ldm_keys`), the layers Kohya's ``networks.lora`` adapts and their
key prefixes, and the tiny test model (:mod:`kiln.engine.models.tiny`).

Kohya puts an adapter on every Linear and 1x1 Conv2d inside the U-Net's
``Transformer2DModel`` blocks and the text encoder's attention and MLP blocks: 192 + 72
modules on SD 1.5. With a conv rank (LoCon) it adds the ResNet and up/down-sampler blocks:
their 3x3 convs at the conv rank, their Linear and 1x1 convs at the main rank.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.engine.errors import ModelError
from kiln.engine.models.conditioning import TextConditioning
from kiln.engine.models.loading import SD15_CONFIG_DIR, SDXL_MARKER, load_pipeline
from kiln.engine.models.lora_keys import TEXT_ENCODER_PREFIX, UNET_PREFIX, LoraTarget, select_targets
from kiln.engine.models.safetensors_file import safetensors_header

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionPipeline
    from torch import nn

NAME = "sd15"
CONFIG_DIR = SD15_CONFIG_DIR
UNET_BLOCKS = ("Transformer2DModel",)
UNET_CONV_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_ENCODER_BLOCKS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")
# Kohya's text-encoder prefix, and the one diffusers' converter writes; read both.
LORA_TEXT_ENCODER_PREFIXES = (TEXT_ENCODER_PREFIX + "_", "lora_te1_")


def detect(path: Path) -> bool:
    """Whether ``path`` (a diffusers folder or a single file) may hold an SD 1.x model: any
    diffusers folder or single file that is not recognisably another family's (an SDXL
    pipeline or checkpoint). Loading checks the rest (an SD 2.x width, missing keys...) and
    says what is wrong; a pickled file cannot be looked into before it is trusted."""
    path = Path(path)
    if path.is_dir():
        try:
            index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return True
        return not (isinstance(index, dict) and "XL" in str(index.get("_class_name", "")))
    if path.suffix.lower() != ".safetensors":
        return True
    try:
        return SDXL_MARKER not in safetensors_header(path).keys
    except ModelError:
        return True


def load(path: Path | str, allow_pickle: bool = False) -> StableDiffusionPipeline:
    """The full pipeline on the CPU in float32, offline."""
    return load_pipeline(path, allow_pickle)


def unet_targets(
    unet: nn.Module, rank: int, alpha: float, conv_rank: int = 0, conv_alpha: float = 1.0
) -> list[LoraTarget]:
    """The U-Net layers Kohya adapts, in model order."""
    blocks = UNET_BLOCKS + (UNET_CONV_BLOCKS if conv_rank > 0 else ())
    return select_targets(unet, UNET_PREFIX, blocks, rank, alpha, conv_rank, conv_alpha)


def text_encoder_targets(
    text_encoder: nn.Module, rank: int, alpha: float, prefix: str = TEXT_ENCODER_PREFIX
) -> list[LoraTarget]:
    """The text-encoder layers Kohya adapts (attention projections and MLP), in model order.

    The same for every CLIP text encoder (SDXL's two too); ``prefix`` names the encoder.
    """
    return select_targets(text_encoder, prefix, TEXT_ENCODER_BLOCKS, rank, alpha)


def encode_text(
    encoders: Sequence[nn.Module], plain: Sequence[nn.Module], ids: Sequence[torch.Tensor], clip_skip: int
) -> TextConditioning:
    """The text encoder's hidden states the U-Net attends to, ``clip_skip`` layers from the end
    (then the final layer norm, as Kohya and A1111 apply it)."""
    output = encoders[0](ids[0], output_hidden_states=clip_skip > 1)
    if clip_skip == 1:
        return TextConditioning(output.last_hidden_state)
    inner: nn.Module = getattr(plain[0], "text_model", plain[0])
    norm: nn.Module = inner.final_layer_norm  # type: ignore[assignment]
    return TextConditioning(norm(output.hidden_states[-clip_skip]))


def build_tiny(seed: int | None = None) -> StableDiffusionPipeline:
    """The tiny SD 1.5-shaped pipeline tests and benchmarks train (:mod:`kiln.engine.models.tiny`)."""
    from kiln.engine.models.tiny import TINY_SEED, build_tiny_pipeline

    return build_tiny_pipeline(TINY_SEED if seed is None else seed)


def write_tiny(out: Path, single_file: bool = False) -> Path:
    """Write the tiny SD 1.5 (``kiln tiny-model``)."""
    from kiln.engine.models.tiny import write_tiny_model

    return write_tiny_model(out, single_file=single_file)


def single_file_state(
    unet: nn.Module, vae: nn.Module, text_encoders: Sequence[nn.Module]
) -> dict[str, torch.Tensor]:
    """The pipeline's weights in the original LDM single-file layout A1111 and ComfyUI load."""
    from kiln.engine.models.ldm_keys import clip_to_ldm, unet_and_vae_to_ldm

    return {
        **unet_and_vae_to_ldm(unet, vae),
        **clip_to_ldm(text_encoders[0].state_dict()),
    }
