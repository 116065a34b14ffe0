"""SDXL (1.0 and its descendants: Pony, Illustrious, NoobAI, merges): recognise, load, name, encode.

What belongs to the family and nowhere else: its files (a diffusers
``StableDiffusionXLPipeline`` folder, or an SGM single file with ``conditioner.embedders.1.*``
keys), the configs Kiln ships for single files (:data:`CONFIG_DIR`), its two text encoders
(CLIP-L and OpenCLIP bigG: penultimate hidden states side by side, the second's pooled
projection), the six size/crop numbers each image adds (``time_ids``), and Kohya's SDXL LoRA
names: U-Net keys in the original SGM numbering (``lora_unet_input_blocks_4_1_...``), the text
encoders as ``lora_te1_*`` and ``lora_te2_*``.

Kohya adapts the same block classes as on SD 1.5; only the names differ, so the layers are
found in diffusers' U-Net and named through :func:`kiln.engine.models.ldm_keys.ldm_unet_name`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.engine.errors import ModelError
from kiln.engine.models.conditioning import TextConditioning
from kiln.engine.models.loading import (
    SDXL_CONFIG_DIR,
    SDXL_MARKER,
    ModelSource,
    load_pipeline,
    sdxl_config_dir,
    tiny_configs,
)
from kiln.engine.models.lora_keys import UNET_PREFIX, LoraTarget, select_targets
from kiln.engine.models.safetensors_file import safetensors_header
from kiln.engine.models.sd15 import UNET_BLOCKS, UNET_CONV_BLOCKS

if TYPE_CHECKING:
    import torch
    from torch import nn

NAME = "sdxl"
PIPELINE = "StableDiffusionXLPipeline"
CONFIG_DIR = SDXL_CONFIG_DIR
# Kohya refuses SDXL bucket steps that are not multiples of 32 (sd-scripts verify_bucket_reso_steps).
BUCKET_STEP_MULTIPLE = 32


def detect(path: Path) -> bool:
    """Whether ``path`` holds an SDXL model: a diffusers folder whose pipeline class is an XL
    one, or a ``.safetensors`` file with the second text encoder's SGM keys (or a tiny SDXL's
    carried configs). Reads only ``model_index.json`` or the file's header."""
    path = Path(path)
    if path.is_dir():
        try:
            index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return False
        return isinstance(index, dict) and "XL" in str(index.get("_class_name", ""))
    if path.suffix.lower() != ".safetensors":
        return False
    try:
        header = safetensors_header(path)
    except ModelError:
        return False
    if SDXL_MARKER in header.keys:
        return True
    carried = header.metadata.get("kiln.configs") or ""
    return PIPELINE in carried


def load(path: Path | str, allow_pickle: bool = False) -> Any:
    """The full SDXL pipeline on the CPU in float32, offline."""
    return load_pipeline(path, allow_pickle, PIPELINE, config_dir_for=single_file_config_dir)


def single_file_config_dir(source: ModelSource, scratch: Path) -> Path:
    """The diffusers config folder describing an SDXL single file: a tiny model's own, or Kiln's
    SDXL one after checking the file is SDXL."""
    tiny = tiny_configs(source, scratch, PIPELINE)
    if tiny is not None:
        return tiny
    if not source.pickle and SDXL_MARKER not in safetensors_header(source.path).keys:
        raise ModelError(
            f"{source.path}: not an SDXL checkpoint (no conditioner.embedders.1.* keys); "
            'set model.family = "sd15" or "auto"'
        )
    return sdxl_config_dir(scratch)


def unet_targets(
    unet: nn.Module, rank: int, alpha: float, conv_rank: int = 0, conv_alpha: float = 1.0
) -> list[LoraTarget]:
    """The U-Net layers Kohya adapts, in model order, with Kohya's SGM-numbered names."""
    from kiln.engine.models.ldm_keys import layers_per_block, ldm_unet_name

    layers = layers_per_block(unet)
    up_blocks: Any = unet.up_blocks  # diffusers' U-Net: its blocks are untyped here
    with_attention = frozenset(index for index, block in enumerate(up_blocks) if hasattr(block, "attentions"))
    blocks = UNET_BLOCKS + (UNET_CONV_BLOCKS if conv_rank > 0 else ())
    return select_targets(
        unet,
        UNET_PREFIX,
        blocks,
        rank,
        alpha,
        conv_rank,
        conv_alpha,
        rename=lambda name: ldm_unet_name(name, layers, with_attention),
    )


def encode_text(
    encoders: Sequence[nn.Module], plain: Sequence[nn.Module], ids: Sequence[torch.Tensor], clip_skip: int
) -> TextConditioning:
    """Both encoders' penultimate hidden states side by side, and the second's pooled projection.

    ``clip_skip`` must be 1: SDXL already reads the penultimate layer (Kohya warns on it too;
    the config refuses it). ``plain`` is unused: no final layer norm is applied on SDXL.
    """
    import torch

    del plain, clip_skip
    first = encoders[0](ids[0], output_hidden_states=True)
    second = encoders[1](ids[1], output_hidden_states=True)
    hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
    return TextConditioning(hidden, second.text_embeds)


def crop_top_left(bucket: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """Kohya's crop numbers for an image of ``size`` in ``bucket`` (both ``(width, height)``):
    the offset of the image letterboxed inside the bucket, as ``(top, left)``.

    This is what sd-scripts feeds SDXL (``BucketManager.get_crop_ltrb``), not the offset of
    the centre crop it really takes; LoRAs trained either way meet SDXL's own convention of
    small crop numbers for well-framed images, and Kohya's is the one its users' LoRAs learnt.
    """
    bucket_width, bucket_height = bucket
    width, height = size
    if bucket_width / bucket_height > width / height:
        resized_width, resized_height = bucket_height * width / height, float(bucket_height)
    else:
        resized_width, resized_height = float(bucket_width), bucket_width * height / width
    return int((bucket_height - resized_height) // 2), int((bucket_width - resized_width) // 2)


def time_ids(sizes: Sequence[tuple[int, int]], buckets: Sequence[tuple[int, int]]) -> torch.Tensor:
    """The six size/crop numbers per image, ``(batch, 6)``: original height and width, crop
    top and left, bucket height and width (sd-scripts' order and values)."""
    import torch

    rows = []
    for size, bucket in zip(sizes, buckets, strict=True):
        top, left = crop_top_left(bucket, size)
        rows.append([size[1], size[0], top, left, bucket[1], bucket[0]])
    return torch.tensor(rows, dtype=torch.float32)


def build_tiny(seed: int | None = None) -> Any:
    """The tiny SDXL-shaped pipeline tests and benchmarks train (:mod:`kiln.engine.models.tiny_sdxl`)."""
    from kiln.engine.models.tiny import TINY_SEED
    from kiln.engine.models.tiny_sdxl import build_tiny_sdxl_pipeline

    return build_tiny_sdxl_pipeline(TINY_SEED if seed is None else seed)


def write_tiny(out: Path, single_file: bool = False) -> Path:
    """Write the tiny SDXL (``kiln tiny-model --family sdxl``)."""
    from kiln.engine.models.tiny_sdxl import write_tiny_sdxl_model

    return write_tiny_sdxl_model(out, single_file=single_file)


def single_file_state(
    unet: nn.Module, vae: nn.Module, text_encoders: Sequence[nn.Module]
) -> dict[str, torch.Tensor]:
    """The pipeline's weights in SDXL's original SGM single-file layout."""
    from kiln.engine.models.ldm_keys import unet_and_vae_to_ldm
    from kiln.engine.models.sgm_keys import clip_l_to_sgm, open_clip_to_sgm

    return {
        **unet_and_vae_to_ldm(unet, vae),
        **clip_l_to_sgm(text_encoders[0].state_dict()),
        **open_clip_to_sgm(text_encoders[1].state_dict()),
    }
