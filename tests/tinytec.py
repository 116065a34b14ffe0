"""Builders of tiny text-encoder variants and LoRA epochs, shared by the TEC engine and TUI tests.

Everything starts from Kiln's tiny SD 1.5-shaped model (``kiln.engine.models.tiny``; the session
fixtures ``tiny_folder``/``tiny_file``/``tiny_encoder`` in ``tests/conftest.py``) and changes
its text encoder in a known way: Gaussian noise, two swapped token rows, or LoRA adapters of a
chosen strength written as Kohya saves them.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from kiln.engine.models.ldm_keys import CLIP_OLD_PREFIX, CLIP_PREFIX, clip_key_from_ldm
from safetensors import safe_open
from safetensors.torch import save_file

# Every one of these is a single token in the tiny byte-level tokenizer ("a</w>"...).
LETTERS = tuple("abcdefghijklmnopqrstuvwxyz0123456789")
# The adapters write_epoch saves: rank 4, alpha 2 (scale 1/2, as in peft).
RANK, ALPHA = 4, 2.0

Transform = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def folder_variant(source: Path, out: Path, transform: Transform, nested: bool = False) -> Path:
    """A copy of a diffusers folder whose text-encoder weights went through ``transform`` (bare names).

    ``nested`` writes the keys with the ``text_model.`` level, as transformers < 5.6 saved them.
    """
    shutil.copytree(source, out)
    weights = out / "text_encoder" / "model.safetensors"
    with safe_open(str(weights), framework="pt") as handle:
        bare = {key.removeprefix("text_model."): handle.get_tensor(key) for key in list(handle.keys())}
        metadata = handle.metadata()
    changed = transform(bare)
    prefix = "text_model." if nested else ""
    save_file({prefix + key: value.contiguous() for key, value in changed.items()}, str(weights), metadata)
    return out


def file_variant(source: Path, out: Path, transform: Transform, old_layout: bool = False) -> Path:
    """A copy of a single file whose CLIP tensors went through ``transform`` (bare names).

    ``old_layout`` writes them under ``cond_stage_model.transformer.*`` (no ``text_model``).
    """
    with safe_open(str(source), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in list(handle.keys())}
        metadata = handle.metadata()
    bare = {name: tensors.pop(key) for key in list(tensors) if (name := clip_key_from_ldm(key)) is not None}
    prefix = CLIP_OLD_PREFIX if old_layout else CLIP_PREFIX
    tensors.update({prefix + key: value for key, value in transform(bare).items()})
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(out), metadata)
    return out


def with_noise(scale: float, seed: int = 3) -> Transform:
    """Add ``scale`` x (each tensor's RMS) x Gaussian noise, the same draw for every scale."""

    def transform(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        out = {}
        for key in sorted(state):
            value = state[key]
            if not value.is_floating_point():
                out[key] = value
                continue
            noise = torch.randn(value.shape, generator=generator)
            out[key] = value + scale * value.float().pow(2).mean().sqrt() * noise
        return out

    return transform


def swapped_rows(first: int, second: int) -> Transform:
    """Swap two rows of the token embedding: each token now means the other."""

    def transform(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(state)
        table = state["embeddings.token_embedding.weight"].clone()
        table[[first, second]] = table[[second, first]]
        out["embeddings.token_embedding.weight"] = table
        return out

    return transform


def trained_adapter(tiny_encoder, strength: float, seed: int = 5):
    """The tiny text encoder with seeded peft adapters as the trainer adds them (up x ``strength``)."""
    from kiln.engine.models.sd15 import text_encoder_targets
    from kiln.engine.train.network import add_lora

    model = copy.deepcopy(tiny_encoder.model)
    targets = text_encoder_targets(model, RANK, ALPHA)
    add_lora(model, targets)
    # Both factors come from the seed: peft draws lora_A from the global RNG, which would make
    # the file depend on whatever ran before in the process (and screenshots flaky).
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_A." in name:
                param.copy_(torch.randn(param.shape, generator=generator) / param.shape[1] ** 0.5)
            elif ".lora_B." in name:
                param.copy_(strength * torch.randn(param.shape, generator=generator))
    return model.eval(), targets


def write_epoch(path: Path, tiny_encoder, strength: float, epoch: int | None = None) -> Path:
    """A Kohya LoRA file whose text-encoder adapters have ``strength`` (plus one U-Net key)."""
    from kiln.engine.train.lora_io import kohya_state_dict, write_lora

    model, targets = trained_adapter(tiny_encoder, strength)
    tensors = kohya_state_dict(model, targets, torch.float32)
    tensors["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"] = torch.zeros(RANK, 16)
    metadata = {} if epoch is None else {"ss_epoch": str(epoch)}
    return write_lora(path, tensors, metadata)


def write_unet_only_epoch(path: Path, epoch: int | None = None) -> Path:
    """A LoRA file with U-Net weights only (a run that did not train the text encoder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {} if epoch is None else {"ss_epoch": str(epoch)}
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(path), metadata)
    return path
