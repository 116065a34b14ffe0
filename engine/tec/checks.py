"""What a path given to the TEC meter holds, judged from names and safetensors headers, torch-free.

The TUI checks a candidate, a reference or a run's LoRAs as the user picks them, before a
worker imports torch and loads anything; ``kiln.engine.tec.loading`` shares the messages. The
keys come from the file's header (:mod:`kiln.engine.models.safetensors_file`), so no weight is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kiln.engine.errors import ModelError
from kiln.engine.models.loading import model_source
from kiln.engine.models.safetensors_file import SafetensorsHeader as SafetensorsHeader  # re-export
from kiln.engine.models.safetensors_file import safetensors_header

# Kohya's SD 1.x text-encoder prefix, and the one diffusers' converter writes.
LORA_TEXT_ENCODER_PREFIXES = ("lora_te_", "lora_te1_", "lora_te2_")
LORA_PREFIXES = ("lora_te", "lora_unet")
# Both SD 1.x single-file layouts: ``...transformer.text_model.*`` and the older ``...transformer.*``.
CLIP_LDM_PREFIX = "cond_stage_model.transformer."

WeightsKind = Literal["checkpoint", "lora"]


@dataclass(frozen=True)
class Weights:
    """What a checkpoint or LoRA path holds, as far as the TEC meter cares.

    Attributes:
        path: The path as given, with ``~`` expanded.
        kind: ``checkpoint`` (a diffusers folder or an SD 1.x single file) or ``lora``.
        pickle: Reading it unpickles (``.ckpt``/``.pt``/``.bin``): allowed only when the user says so.
        text_encoder: Whether it holds text-encoder weights (a U-Net-only LoRA does not).
    """

    path: Path
    kind: WeightsKind
    pickle: bool = False
    text_encoder: bool = True


def is_lora(keys: Sequence[str]) -> bool:
    """Whether tensor names are a Kohya-format LoRA's (``lora_unet_*``, ``lora_te*``)."""
    return any(key.startswith(LORA_PREFIXES) for key in keys)


def trains_text_encoder(keys: Sequence[str]) -> bool:
    """Whether a LoRA's tensor names include text-encoder weights (SD 1.x: ``lora_te_``/``lora_te1_``)."""
    return any(key.startswith(LORA_TEXT_ENCODER_PREFIXES) for key in keys)


def no_clip_message(path: Path, keys: Sequence[str]) -> str:
    """Why a file with these tensor names has no SD 1.x text encoder to read: a LoRA, SDXL, SD 2..."""
    if is_lora(keys):
        return (
            f"{path}: a LoRA file, not a checkpoint; measure it with kiln tec --lora {path.name} --base MODEL"
        )
    if any(key.startswith("conditioner.embedders.") for key in keys):
        return f"{path}: an SDXL checkpoint; the TEC meter reads SD 1.x text encoders only"
    if any(key.startswith("cond_stage_model.model.") for key in keys):
        return f"{path}: an SD 2.x checkpoint (OpenCLIP text encoder); the TEC meter reads SD 1.x only"
    return (
        f"{path}: no text-encoder keys (expected cond_stage_model.transformer.text_model.* or "
        "cond_stage_model.transformer.*); not an SD 1.x checkpoint"
    )


def inspect_weights(path: Path | str) -> Weights:
    """Say what a path holds before anything loads it: a checkpoint or a LoRA, pickled or not.

    A pickled file is reported (``pickle=True``), never opened: whether to accept it is the
    caller's decision. A ``.safetensors`` file is judged by its tensor names.

    Raises:
        ModelError: The path is missing, is not a model (no ``model_index.json``, an unknown
            suffix), or is a single file with no SD 1.x text encoder (SDXL, SD 2.x, other).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(
            f"{path}: no such file or folder; pick a diffusers folder or a .safetensors checkpoint"
        )
    source = model_source(path, allow_pickle=True)
    if source.kind == "folder" or source.pickle:
        return Weights(path, "checkpoint", pickle=source.pickle)
    keys = safetensors_header(path).keys
    if is_lora(keys):
        return Weights(path, "lora", text_encoder=trains_text_encoder(keys))
    if not any(key.startswith(CLIP_LDM_PREFIX) for key in keys):
        raise ModelError(no_clip_message(path, keys))
    return Weights(path, "checkpoint")
