"""A LoRA extracted from the difference of two checkpoints (a fine-tune and its base), by SVD.

What Kohya's ``networks/extract_lora_from_models.py`` does, on Kiln's own layer choice: for each
layer a Kohya LoRA adapts (the family's targets, 3x3 convs with a conv rank), the weight
difference is factored by a truncated SVD into ``lora_up @ lora_down`` at the asked rank, the
singular values folded into ``up``, both clamped at the 99th percentile of their magnitudes (a
few outliers would otherwise dominate fp16), and ``alpha = rank`` so the file applies the
difference at weight 1. A text encoder whose weights moved less than ``min_diff`` anywhere is
left out, as Kohya does. The file is an ordinary Kohya LoRA: A1111, ComfyUI and diffusers load it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from kiln.engine.errors import ModelError
from kiln.engine.models.family import ModelFamily, resolve_family
from kiln.engine.models.lora_keys import LoraTarget

CLAMP_QUANTILE = 0.99
MIN_DIFF = 0.01


@dataclass(frozen=True)
class Extracted:
    """An extracted LoRA.

    Attributes:
        tensors: Kohya-named tensors (``lora_down``/``lora_up``/``alpha`` per layer), float32.
        family: The checkpoints' family.
        unet_layers, text_encoder_layers: Layers extracted.
        text_encoders_skipped: Labels of text encoders left out (they did not move).
    """

    tensors: dict[str, torch.Tensor]
    family: ModelFamily
    unet_layers: int
    text_encoder_layers: int
    text_encoders_skipped: tuple[str, ...]


def svd_factors(
    difference: torch.Tensor, rank: int, clamp_quantile: float = CLAMP_QUANTILE
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(up, down)`` with ``up @ down`` the best rank-``rank`` approximation of a weight
    difference (a Linear's, or a conv's flattened to ``out x in*k*k``), singular values in
    ``up``, both clamped to the ``clamp_quantile`` of their joint magnitudes."""
    matrix = difference.float().reshape(difference.shape[0], -1)
    rank = min(rank, *matrix.shape)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    up = u[:, :rank] @ torch.diag(s[:rank])
    down = vh[:rank, :]
    values = torch.cat([up.flatten(), down.flatten()]).abs()
    if values.numel() and clamp_quantile < 1:
        high = torch.quantile(values, clamp_quantile) if values.numel() < 16_000_000 else values.max()
        up, down = up.clamp(-high, high), down.clamp(-high, high)
    if difference.dim() == 4:
        down = down.reshape(rank, *difference.shape[1:])
        up = up.reshape(difference.shape[0], rank, 1, 1)
    return up.contiguous(), down.contiguous()


def extract_lora(
    finetuned: Path | str,
    base: Path | str,
    rank: int,
    conv_rank: int = 0,
    allow_pickle: bool = False,
    min_diff: float = MIN_DIFF,
) -> Extracted:
    """Extract a Kohya LoRA of ``rank`` (``conv_rank`` for 3x3 convs, 0: none) from ``finetuned``
    against ``base``.

    Raises:
        ModelError: A checkpoint is missing or unreadable, the two are of different families,
            or their layers differ in shape (not a fine-tune of that base).
    """
    if rank < 1:
        raise ModelError(f"--rank {rank}: the rank is at least 1")
    family = resolve_family(base)
    tuned_family = resolve_family(finetuned)
    if tuned_family is not family:
        raise ModelError(
            f"{finetuned}: an {tuned_family.title} model, the base {base} is {family.title}; "
            "extract from a fine-tune of that base"
        )
    tuned, original = family.load(finetuned, allow_pickle), family.load(base, allow_pickle)
    tensors: dict[str, torch.Tensor] = {}
    unet_targets = family.unet_targets(original.unet, rank, float(rank), conv_rank, float(conv_rank or 1))
    unet_layers = _extract(tensors, original.unet, tuned.unet, unet_targets, finetuned)
    te_layers, skipped = 0, []
    for slot in family.text_encoders:
        before, after = getattr(original, slot.attr), getattr(tuned, slot.attr)
        targets = family.text_encoder_targets(before, rank, float(rank), slot.prefix)
        if _largest_change(before, after, targets) < min_diff:
            skipped.append(slot.label)
            continue
        te_layers += _extract(tensors, before, after, targets, finetuned)
    return Extracted(tensors, family, unet_layers, te_layers, tuple(skipped))


def extraction_metadata(
    extracted: Extracted, finetuned: Path, base: Path, rank: int, conv_rank: int
) -> dict[str, str]:
    """The metadata Kohya's extractor writes (network module, dim, alpha, base model version),
    plus where it came from, and Stability's modelspec keys."""
    from kiln.engine.train.lora_io import MODELSPEC_VERSION, json_metadata

    family = extracted.family
    meta: dict[str, Any] = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": rank,
        "ss_network_alpha": float(rank),
        "ss_base_model_version": family.base_model_version,
        "ss_v2": False,
        "ss_sd_model_name": Path(base).name,
        "ss_training_comment": f"extracted by kiln extract from {Path(finetuned).name} - {Path(base).name}",
        "ss_network_args": json_metadata({"conv_dim": str(conv_rank), "conv_alpha": str(conv_rank)})
        if conv_rank
        else None,
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": family.modelspec_architecture,
        "modelspec.implementation": family.modelspec_implementation,
        "modelspec.title": Path(finetuned).stem,
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return {key: str(value) for key, value in meta.items() if value is not None}


def _extract(
    tensors: dict[str, torch.Tensor], before: Any, after: Any, targets: list[LoraTarget], source: Path | str
) -> int:
    modules = dict(after.named_modules())
    for target in targets:
        old = before.get_submodule(target.module).weight
        new = modules[target.module].weight
        if old.shape != new.shape:
            raise ModelError(
                f"{source}: {target.module} is {tuple(new.shape)}, the base's {tuple(old.shape)}; "
                "not a fine-tune of that base"
            )
        up, down = svd_factors(new.detach() - old.detach(), target.rank)
        tensors[f"{target.kohya}.lora_up.weight"] = up
        tensors[f"{target.kohya}.lora_down.weight"] = down
        tensors[f"{target.kohya}.alpha"] = torch.tensor(float(down.shape[0]))
    return len(targets)


def _largest_change(before: Any, after: Any, targets: list[LoraTarget]) -> float:
    modules = dict(after.named_modules())
    largest = 0.0
    for target in targets:
        old = before.get_submodule(target.module).weight.detach()
        largest = max(largest, float((modules[target.module].weight.detach() - old).abs().max()))
    return largest
