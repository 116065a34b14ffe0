"""Diffusers -> original (LDM/CompVis) state-dict keys for SD 1.5, to write single-file checkpoints.

The single-file layout is what AUTO1111 and ComfyUI save. Kiln writes it only for its tiny test
model, so the single-file loading path is exercised on a real file; the mapping is checked by a
round trip through diffusers' own loader in the tests.
"""

from __future__ import annotations

from collections.abc import Mapping

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
        state: The U-Net's state dict (SD 1.5 block types: three cross-attention down blocks, a
            plain one, and the mirror image going up).
        layers_per_block: The U-Net's ``layers_per_block``; it sets LDM's flat block numbering.
    """
    per_level = layers_per_block + 1
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "time_embedding":
            new = (
                {"linear_1": "time_embed.0", "linear_2": "time_embed.2"}[parts[1]] + "." + ".".join(parts[2:])
            )
        elif parts[0] == "conv_in":
            new = "input_blocks.0.0." + ".".join(parts[1:])
        elif parts[0] == "conv_norm_out":
            new = "out.0." + ".".join(parts[1:])
        elif parts[0] == "conv_out":
            new = "out.2." + ".".join(parts[1:])
        elif parts[0] == "down_blocks":
            level, kind = int(parts[1]), parts[2]
            if kind == "downsamplers":
                # down_blocks.i.downsamplers.0.conv.* -> input_blocks.N.0.op.*
                new = f"input_blocks.{(level + 1) * per_level}.0.op." + ".".join(parts[5:])
            else:
                index = int(parts[3])
                block = 1 + level * per_level + index
                slot = 0 if kind == "resnets" else 1
                new = f"input_blocks.{block}.{slot}." + _inner(kind, parts[4:])
        elif parts[0] == "mid_block":
            kind, index = parts[1], int(parts[2])
            block = {("resnets", 0): 0, ("attentions", 0): 1, ("resnets", 1): 2}[(kind, index)]
            new = f"middle_block.{block}." + _inner(kind, parts[3:])
        elif parts[0] == "up_blocks":
            level, kind = int(parts[1]), parts[2]
            if kind == "upsamplers":
                has_attention = any(k.startswith(f"up_blocks.{level}.attentions.") for k in state)
                slot = 2 if has_attention else 1
                new = f"output_blocks.{level * per_level + layers_per_block}.{slot}." + ".".join(parts[4:])
            else:
                index = int(parts[3])
                slot = 0 if kind == "resnets" else 1
                new = f"output_blocks.{level * per_level + index}.{slot}." + _inner(kind, parts[4:])
        else:
            raise ValueError(f"no LDM name for U-Net key {key}")
        out[UNET_PREFIX + new] = value
    return out


def _inner(kind: str, rest: list[str]) -> str:
    """Inside a block: resnet layers are renamed, transformer blocks keep diffusers' names."""
    if kind == "resnets":
        return _RESNET_UNET[rest[0]] + "." + ".".join(rest[1:])
    return ".".join(rest)


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
