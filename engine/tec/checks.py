"""What a path given to the TEC meter holds, judged from names and safetensors headers, torch-free.

The TUI checks a candidate, a reference or a run's LoRAs as the user picks them, before a
worker imports torch and loads anything; ``kiln.engine.tec.loading`` shares the messages. A
safetensors file starts with an 8-byte little-endian header length and a JSON header naming
every tensor, so its keys (and metadata) are known without reading a single weight.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kiln.engine.errors import ModelError
from kiln.engine.models.loading import model_source

# Kohya's SD 1.x text-encoder prefix, and the one diffusers' converter writes.
LORA_TEXT_ENCODER_PREFIXES = ("lora_te_", "lora_te1_")
LORA_PREFIXES = ("lora_te", "lora_unet")
# Both SD 1.x single-file layouts: ``...transformer.text_model.*`` and the older ``...transformer.*``.
CLIP_LDM_PREFIX = "cond_stage_model.transformer."
_METADATA = "__metadata__"
# Real headers are a few hundred KB even for SDXL; anything far larger is not a safetensors file.
_MAX_HEADER = 100 * 1024 * 1024

WeightsKind = Literal["checkpoint", "lora"]


@dataclass(frozen=True)
class SafetensorsHeader:
    """The tensor names and metadata of a ``.safetensors`` file.

    Attributes:
        keys: The tensor names, in file order.
        metadata: The ``__metadata__`` strings (``ss_epoch``...), empty when there are none.
    """

    keys: tuple[str, ...]
    metadata: dict[str, str] = field(default_factory=dict)


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


def safetensors_header(path: Path | str) -> SafetensorsHeader:
    """Read a ``.safetensors`` file's header (names and metadata only, no tensor data).

    Raises:
        ModelError: The file is missing, unreadable or not a safetensors file.
    """
    path = Path(path).expanduser()
    try:
        with path.open("rb") as handle:
            start = handle.read(8)
            if len(start) < 8:
                raise ModelError(f"{path}: too short to be a .safetensors file")
            (length,) = struct.unpack("<Q", start)
            if length > _MAX_HEADER:
                raise ModelError(f"{path}: not a .safetensors file (its header length makes no sense)")
            raw = handle.read(length)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelError(f"{path}: a folder, not a .safetensors file") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the file ({exc})") from None
    if len(raw) < length:
        raise ModelError(f"{path}: the file ends inside its header; it is truncated (copy it again)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ModelError(f"{path}: not a .safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ModelError(f"{path}: not a .safetensors file (its header is not a JSON object)")
    metadata = header.get(_METADATA) or {}
    keys = tuple(key for key in header if key != _METADATA)
    return SafetensorsHeader(keys, {str(k): str(v) for k, v in metadata.items()})


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
