"""Merge a Kohya LoRA's text-encoder weights into a copy of a base text encoder, at a scale.

Kohya names each adapted layer ``lora_te_<module path with underscores>`` (SD 1.5; diffusers'
converter writes ``lora_te1_``, read too; SDXL: ``lora_te1_`` and ``lora_te2_``, one per
encoder) and stores ``.lora_down.weight`` (rank x in),
``.lora_up.weight`` (out x rank) and ``.alpha``; the layer's weight becomes
``W + scale * alpha / rank * up @ down``, which is what AUTO1111 and ComfyUI apply.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from kiln.engine.errors import ModelError
from kiln.engine.models.family import SD15, ModelFamily
from kiln.engine.models.lora_keys import TEXT_ENCODER_PREFIX
from kiln.engine.models.lycoris_log import quiet_lycoris_log
from kiln.engine.tec.checks import safetensors_header, trains_text_encoder
from torch import nn

DOWN, UP, ALPHA = ".lora_down.weight", ".lora_up.weight", ".alpha"
_DIFFUSERS_PREFIX = "lora_te1_"


@dataclass(frozen=True)
class LoraLayer:
    """One adapted text-encoder layer of a LoRA file.

    Attributes:
        module: The layer's name inside the text encoder (``encoder.layers.0.self_attn.q_proj``).
        down: ``lora_down`` (rank x in), float32.
        up: ``lora_up`` (out x rank), float32.
        alpha: The stored alpha (rank when the file has none: scale 1, as Kohya reads it).
    """

    module: str
    down: torch.Tensor
    up: torch.Tensor
    alpha: float

    @property
    def rank(self) -> int:
        """The adapter's rank."""
        return int(self.down.shape[0])

    def delta(self, scale: float) -> torch.Tensor:
        """``scale * alpha / rank * up @ down``: what merging adds to the layer's weight."""
        return (scale * self.alpha / self.rank) * (self.up @ self.down)


def text_encoder_lora_layers(
    tensors: Mapping[str, torch.Tensor],
    model: nn.Module,
    path: Path,
    family: ModelFamily = SD15,
    slot: int = 0,
) -> list[LoraLayer]:
    """The LoRA's layers for the family's ``slot``-th text encoder (``model``), matched to its
    modules by Kohya name (SD 1.5: ``lora_te_``, or diffusers' ``lora_te1_``; SDXL:
    ``lora_te1_`` and ``lora_te2_``).

    An empty list means the LoRA does not train this encoder (a U-Net-only LoRA).

    Raises:
        ModelError: A text-encoder key of a kind Kiln cannot merge (LyCORIS, DoRA...), a name
            that matches no layer of the model, or shapes that do not fit it.
    """
    prefix = family.text_encoders[slot].prefix
    modules = {target.kohya: target.module for target in family.text_encoder_targets(model, 1, 1.0, prefix)}
    # diffusers' converter names SD 1.5's only encoder lora_te1_: read as Kohya's lora_te_.
    alias = _DIFFUSERS_PREFIX if prefix == TEXT_ENCODER_PREFIX else None
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if not key.startswith(prefix + "_") and not (alias and key.startswith(alias)):
            continue
        stem, part = _split(key)
        if part is None:
            raise ModelError(
                f"{path}: {key}: only plain LoRA text-encoder weights (lora_down/lora_up/alpha) can be "
                "merged; LyCORIS and DoRA files are not supported by the TEC meter"
            )
        if alias and stem.startswith(alias):
            stem = prefix + "_" + stem.removeprefix(alias)
        grouped.setdefault(stem, {})[part] = value
    layers = []
    for stem, parts in sorted(grouped.items()):
        module = modules.get(stem)
        if module is None:
            raise ModelError(
                f"{path}: {stem} names no text-encoder layer of the {family.title} base's CLIP model"
            )
        if DOWN not in parts or UP not in parts:
            raise ModelError(
                f"{path}: {stem} lacks {DOWN if DOWN not in parts else UP}; the LoRA file is incomplete"
            )
        down = parts[DOWN].float().reshape(parts[DOWN].shape[0], -1)
        up = parts[UP].float().reshape(parts[UP].shape[0], -1)
        weight = layer_weight(model, module)
        if up.shape[1] != down.shape[0] or (up.shape[0], down.shape[1]) != tuple(weight.shape):
            raise ModelError(
                f"{path}: {stem}: up {tuple(up.shape)} @ down {tuple(down.shape)} does not fit the layer's "
                f"weight {tuple(weight.shape)}; the LoRA was trained for another model size"
            )
        alpha = float(parts[ALPHA]) if ALPHA in parts else float(down.shape[0])
        layers.append(LoraLayer(module, down, up, alpha))
    return layers


def lora_trains_text_encoder(path: Path | str) -> bool:
    """Whether a LoRA file holds text-encoder weights, from its key names alone (no tensor read).

    The runs and sweep views use it to decide whether a run has a TEC series worth computing.

    Raises:
        ModelError: The file is missing or not a safetensors file.
    """
    return trains_text_encoder(safetensors_header(path).keys)


def _split(key: str) -> tuple[str, str | None]:
    for part in (DOWN, UP, ALPHA):
        if key.endswith(part):
            return key[: -len(part)], part
    return key.split(".", 1)[0], None


def layer_weight(model: nn.Module, name: str) -> torch.Tensor:
    """The ``weight`` of the submodule ``name`` (a Linear layer of the text encoder)."""
    weight = model.get_submodule(name).weight
    if not isinstance(weight, torch.Tensor):
        raise ModelError(f"{name} has no weight tensor; it is not a linear layer")
    return weight


def merged_text_encoder(model: nn.Module, layers: list[LoraLayer], scale: float) -> nn.Module:
    """A copy of ``model`` with each LoRA layer merged at ``scale``; ``model`` is left as it was."""
    merged = copy.deepcopy(model)
    if scale == 0:
        return merged
    with torch.no_grad():
        for layer in layers:
            weight = layer_weight(merged, layer.module)
            weight.add_(layer.delta(scale).to(weight.device, weight.dtype))
    return merged


# Tensor names only LyCORIS networks write (LoHa, LoKr, DoRA's weight decomposition).
LYCORIS_PARTS = ("hada_", "lokr_", "dora_scale")


def is_lycoris(tensors: Mapping[str, torch.Tensor], prefix: str) -> bool:
    """Whether the file's layers under ``prefix`` are LyCORIS modules (not plain LoRA)."""
    return any(key.startswith(prefix + "_") and any(part in key for part in LYCORIS_PARTS) for key in tensors)


class _Named(nn.Module):
    """A text encoder under its ``text_model`` name, as Kohya names its layers."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.text_model = encoder


def merged_lycoris_text_encoder(
    model: nn.Module, tensors: Mapping[str, torch.Tensor], prefix: str, scale: float, path: Path
) -> nn.Module:
    """A copy of ``model`` with a LyCORIS file's layers for ``prefix`` merged at ``scale``, by the
    LyCORIS library's own loader and merge (what ComfyUI and A1111 apply).

    Raises:
        ModelError: The library is missing, or a layer of the file matches no layer of the model.
    """
    try:
        from lycoris.wrapper import LycorisNetwork, create_lycoris_from_weights
    except ImportError:
        raise ModelError(
            f"{path}: a LyCORIS file; measuring it needs the LyCORIS library: "
            'pip install "lora-kiln[lycoris]"'
        ) from None
    quiet_lycoris_log()
    merged = copy.deepcopy(model)
    if scale == 0:  # not applied at all (DoRA's rescale would move the weights even at 0)
        return merged
    part = {key: value.float() for key, value in tensors.items() if key.startswith(prefix + "_")}
    names = {key.split(".", 1)[0] for key in part}
    saved = LycorisNetwork.LORA_PREFIX
    LycorisNetwork.LORA_PREFIX = prefix
    try:
        network, _ = create_lycoris_from_weights(scale, None, _Named(merged), weights_sd=part)
    finally:
        LycorisNetwork.LORA_PREFIX = saved
    matched = {module.lora_name for module in network.loras}
    if names - matched:
        raise ModelError(
            f"{path}: {sorted(names - matched)[0]} names no text-encoder layer of the base's CLIP model"
        )
    with torch.no_grad():
        for module in network.loras:
            module.merge_to(scale)
    return merged
