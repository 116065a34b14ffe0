"""SDXL's original (SGM, Stability's ``generative-models``) single-file layout for its text encoders.

An SDXL single file holds the U-Net under ``model.diffusion_model.*`` (LDM block numbering,
:func:`kiln.engine.models.ldm_keys.ldm_unet_name`), the VAE under ``first_stage_model.*``,
CLIP-L in transformers' layout under ``conditioner.embedders.0.transformer.text_model.*``, and
OpenCLIP ViT-bigG in OpenCLIP's own layout under ``conditioner.embedders.1.model.*``: fused
q/k/v projections (``attn.in_proj_weight``), ``ln_1``/``c_fc`` names, and a bare
``text_projection`` matrix used as ``x @ P`` (transformers' ``text_projection.weight`` is P
transposed). Kiln writes this layout for its tiny SDXL only; diffusers' single-file loader reads
it back in the tests, and TEC reads the encoders' keys lazily from real files.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

CLIP_L_PREFIX = "conditioner.embedders.0.transformer.text_model."
OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."
# transformers' CLIP layer names -> OpenCLIP's, inside one encoder layer.
_LAYER_NAMES = {
    "self_attn.out_proj.": "attn.out_proj.",
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
}
_PROJECTIONS = ("q_proj", "k_proj", "v_proj")


def clip_l_to_sgm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SDXL's first text encoder (a ``CLIPTextModel`` state dict) as the single file holds it."""
    return {
        CLIP_L_PREFIX + key.removeprefix("text_model."): value
        for key, value in state.items()
        if not key.endswith("position_ids")
    }


def open_clip_to_sgm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SDXL's second text encoder (a ``CLIPTextModelWithProjection`` state dict) in OpenCLIP's layout."""
    bare = {key.removeprefix("text_model."): value for key, value in state.items()}
    out: dict[str, torch.Tensor] = {}
    fused: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in bare.items():
        if key.endswith("position_ids"):
            continue
        if key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
        elif key == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif key.startswith("final_layer_norm."):
            out["ln_final." + key.removeprefix("final_layer_norm.")] = value
        elif key.startswith("encoder.layers."):
            _, _, index, rest = key.split(".", 3)
            head = f"transformer.resblocks.{index}."
            projection = rest.split(".")[1] if rest.startswith("self_attn.") else ""
            if projection in _PROJECTIONS:
                fused.setdefault((head, rest.rsplit(".", 1)[1]), {})[projection] = value
                continue
            for hf_name, open_clip_name in _LAYER_NAMES.items():
                if rest.startswith(hf_name):
                    out[head + open_clip_name + rest.removeprefix(hf_name)] = value
                    break
            else:
                raise ValueError(f"no OpenCLIP name for text-encoder key {key}")
        else:
            raise ValueError(f"no OpenCLIP name for text-encoder key {key}")
    for (head, kind), parts in fused.items():
        out[f"{head}attn.in_proj_{kind}"] = torch.cat([parts[name] for name in _PROJECTIONS], dim=0)
    out["logit_scale"] = torch.tensor(4.6052)  # OpenCLIP's; diffusers ignores it
    return {OPEN_CLIP_PREFIX + key: value for key, value in out.items()}


def clip_l_from_sgm(key: str) -> str | None:
    """A bare ``CLIPTextModel`` name (no ``text_model.``) for an SDXL single file's first-encoder
    key, or None for any other key (what TEC reads lazily from a multi-GB file)."""
    if not key.startswith(CLIP_L_PREFIX):
        return None
    return key.removeprefix(CLIP_L_PREFIX)


def open_clip_from_sgm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SDXL's second text encoder from OpenCLIP's layout (keys under :data:`OPEN_CLIP_PREFIX`)
    to bare ``CLIPTextModelWithProjection`` names: the inverse of :func:`open_clip_to_sgm`, with
    the fused q/k/v projections split and ``text_projection`` transposed back."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(OPEN_CLIP_PREFIX):
            continue
        name = key.removeprefix(OPEN_CLIP_PREFIX)
        if name == "text_projection":
            out["text_projection.weight"] = value.t().contiguous()
        elif name == "token_embedding.weight":
            out["embeddings.token_embedding.weight"] = value
        elif name == "positional_embedding":
            out["embeddings.position_embedding.weight"] = value
        elif name.startswith("ln_final."):
            out["final_layer_norm." + name.removeprefix("ln_final.")] = value
        elif name.startswith("transformer.resblocks."):
            _, _, index, rest = name.split(".", 3)
            head = f"encoder.layers.{index}."
            if rest.startswith("attn.in_proj_"):
                kind = rest.removeprefix("attn.in_proj_")
                for projection, part in zip(_PROJECTIONS, value.chunk(3, dim=0), strict=True):
                    out[f"{head}self_attn.{projection}.{kind}"] = part.contiguous()
                continue
            for hf_name, open_clip_name in _LAYER_NAMES.items():
                if rest.startswith(open_clip_name):
                    out[head + hf_name + rest.removeprefix(open_clip_name)] = value
                    break
        # logit_scale and anything else OpenCLIP keeps are not part of the text model
    return out
