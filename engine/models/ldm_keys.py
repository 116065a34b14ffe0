"""Diffusers -> original (LDM/CompVis, SGM for SDXL) state-dict keys, to write single-file checkpoints.

The single-file layout is what AUTO1111 and ComfyUI save. Kiln writes it only for its tiny test
model, so the single-file loading path is exercised on a real file; the mapping is checked by a
round trip through diffusers' own loader in the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."

_RESNET_UNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_to_ldm(state: Mapping[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``UNet2DConditionModel`` state dict to LDM's ``model.diffusion_model.*``.

    Args:
        state: The U-Net's state dict (SD 1.5 or SDXL block types).
        layers_per_block: The U-Net's ``layers_per_block``; it sets LDM's flat block numbering.
    """
    with_attention = {
        int(key.split(".")[1]) for key in state if key.startswith("up_blocks.") and ".attentions." in key
    }
    return {
        UNET_PREFIX + ldm_unet_name(key, layers_per_block, with_attention): value
        for key, value in state.items()
    }


def ldm_unet_name(
    name: str, layers_per_block: int, up_levels_with_attention: set[int] | frozenset[int]
) -> str:
    """The LDM/SGM name of a diffusers U-Net parameter or module (``down_blocks.1.attentions.0.proj_in``
    -> ``input_blocks.4.1.proj_in``), without the ``model.diffusion_model.`` prefix.

    SD 1.5 single files and SDXL's original (SGM) layout number blocks the same way; Kohya's
    SDXL LoRA keys use these names too. ``up_levels_with_attention`` names the up blocks that
    have cross-attention: their upsampler sits in slot 2 instead of 1.

    Raises:
        ValueError: A name outside the U-Net's known parts.
    """
    per_level = layers_per_block + 1
    parts = name.split(".")
    head = parts[0]
    if head in _TOP_LEVEL and len(parts) > 1 and parts[1] in _TOP_LEVEL[head]:
        return _join(_TOP_LEVEL[head][parts[1]], parts[2:])
    if head in _TOP_LEVEL_PLAIN:
        return _join(_TOP_LEVEL_PLAIN[head], parts[1:])
    if head == "down_blocks":
        level, kind = int(parts[1]), parts[2]
        if kind == "downsamplers":
            # down_blocks.i.downsamplers.0.conv -> input_blocks.N.0.op
            return _join(f"input_blocks.{(level + 1) * per_level}.0.op", parts[5:])
        block = 1 + level * per_level + int(parts[3])
        return _join(f"input_blocks.{block}.{_slot(kind)}", _inner(kind, parts[4:]))
    if head == "mid_block":
        kind, index = parts[1], int(parts[2])
        block = {("resnets", 0): 0, ("attentions", 0): 1, ("resnets", 1): 2}[(kind, index)]
        return _join(f"middle_block.{block}", _inner(kind, parts[3:]))
    if head == "up_blocks":
        level, kind = int(parts[1]), parts[2]
        if kind == "upsamplers":
            slot = 2 if level in up_levels_with_attention else 1
            return _join(f"output_blocks.{level * per_level + layers_per_block}.{slot}", parts[4:])
        return _join(
            f"output_blocks.{level * per_level + int(parts[3])}.{_slot(kind)}", _inner(kind, parts[4:])
        )
    raise ValueError(f"no LDM name for U-Net key {name}")


_TOP_LEVEL = {
    "time_embedding": {"linear_1": "time_embed.0", "linear_2": "time_embed.2"},
    # SDXL's size/crop and pooled-text embedding (addition_embed_type = "text_time").
    "add_embedding": {"linear_1": "label_emb.0.0", "linear_2": "label_emb.0.2"},
}
_TOP_LEVEL_PLAIN = {"conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _slot(kind: str) -> int:
    return 0 if kind == "resnets" else 1


def _join(head: str, rest: list[str]) -> str:
    return ".".join([head, *rest])


def _inner(kind: str, rest: list[str]) -> list[str]:
    """Inside a block: resnet layers are renamed, transformer blocks keep diffusers' names."""
    if kind == "resnets" and rest:
        return [_RESNET_UNET[rest[0]], *rest[1:]]
    return rest


def vae_to_ldm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``AutoencoderKL`` state dict to LDM's ``first_stage_model.*``.

    LDM's VAE attention uses 1x1 convolutions where diffusers uses linear layers, so those
    weights gain two trailing unit dimensions.
    """
    levels = 1 + max(int(key.split(".")[2]) for key in state if key.startswith("decoder.up_blocks."))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        head = parts[0]
        if head in ("quant_conv", "post_quant_conv"):
            out[VAE_PREFIX + key] = value
            continue
        rest = parts[1:]
        if rest[0] in ("conv_in", "conv_out"):
            new = ".".join(rest)
        elif rest[0] == "conv_norm_out":
            new = "norm_out." + ".".join(rest[1:])
        elif rest[0] in ("down_blocks", "up_blocks"):
            level = int(rest[1])
            ldm_level = level if rest[0] == "down_blocks" else levels - 1 - level
            stage = "down" if rest[0] == "down_blocks" else "up"
            if rest[2] == "resnets":
                new = f"{stage}.{ldm_level}.block.{rest[3]}." + _vae_resnet(rest[4:])
            else:  # downsamplers.0.conv / upsamplers.0.conv
                sampler = "downsample" if stage == "down" else "upsample"
                new = f"{stage}.{ldm_level}.{sampler}." + ".".join(rest[4:])
        elif rest[0] == "mid_block":
            if rest[1] == "resnets":
                new = f"mid.block_{int(rest[2]) + 1}." + _vae_resnet(rest[3:])
            else:
                inner = ".".join(rest[3:])
                for diffusers_name, ldm_name in _VAE_ATTENTION.items():
                    if inner.startswith(diffusers_name + "."):
                        inner = ldm_name + inner[len(diffusers_name) :]
                        break
                new = "mid.attn_1." + inner
                if value.ndim == 2:
                    value = value[:, :, None, None]
        else:
            raise ValueError(f"no LDM name for VAE key {key}")
        out[f"{VAE_PREFIX}{head}.{new}"] = value
    return out


def _vae_resnet(rest: list[str]) -> str:
    name = "nin_shortcut" if rest[0] == "conv_shortcut" else rest[0]
    return name + "." + ".".join(rest[1:])


def clip_to_ldm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Prefix a ``CLIPTextModel`` state dict as SD 1.5 single files hold it.

    transformers >= 5.6 dropped the ``text_model.`` level from ``CLIPTextModel``; older
    versions keep it. Either way the file gets ``cond_stage_model.transformer.text_model.*``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        bare = key.removeprefix("text_model.")
        if bare.endswith("position_ids"):
            continue
        out[CLIP_PREFIX + bare] = value
    return out


# Before the ``text_model`` level existed in transformers, SD 1.x files held CLIP directly here.
CLIP_OLD_PREFIX = "cond_stage_model.transformer."


def clip_key_from_ldm(key: str) -> str | None:
    """The bare ``CLIPTextModel`` name (no ``text_model.`` level) of a single-file key, if it is CLIP's.

    The inverse of ``clip_to_ldm`` for one name, so a reader can pick the text encoder's keys
    out of a checkpoint without loading the rest. Both SD 1.x layouts are read:
    ``cond_stage_model.transformer.text_model.*`` and the older ``cond_stage_model.transformer.*``.
    Returns None for keys outside the text encoder.
    """
    if key.startswith(CLIP_PREFIX):
        return key[len(CLIP_PREFIX) :]
    if key.startswith(CLIP_OLD_PREFIX):
        return key[len(CLIP_OLD_PREFIX) :]
    return None


def layers_per_block(unet: object) -> int:
    """A diffusers U-Net's ``layers_per_block`` (its config is untyped): LDM's block numbering."""
    model: Any = unet
    return int(model.config.layers_per_block)


def unet_and_vae_to_ldm(unet: Any, vae: Any) -> dict[str, torch.Tensor]:
    """A diffusers U-Net's and VAE's weights in the original single-file layout (the part SD 1.5
    and SDXL checkpoints share; each family adds its text encoders' layout)."""
    return {**unet_to_ldm(unet.state_dict(), layers_per_block(unet)), **vae_to_ldm(vae.state_dict())}
