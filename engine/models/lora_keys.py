"""Kohya's LoRA key names and how its target layers are picked, for any model family.

A Kohya LoRA names each adapted layer ``<prefix>_<module path with dots as underscores>``
(``lora_unet_down_blocks_0_attentions_0_proj_in``) and adapts every Linear and 1x1 Conv2d
inside chosen block classes; with a conv rank (LoCon) the other convs of the conv blocks too.
Which block classes, and which prefixes, belong to the family (see
:mod:`kiln.engine.models.sd15`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

UNET_PREFIX = "lora_unet"
TEXT_ENCODER_PREFIX = "lora_te"
# SDXL's two text encoders (CLIP-L and OpenCLIP bigG).
TEXT_ENCODER_1_PREFIX = "lora_te1"
TEXT_ENCODER_2_PREFIX = "lora_te2"
TEXT_ENCODER_PREFIXES = (TEXT_ENCODER_PREFIX, TEXT_ENCODER_1_PREFIX, TEXT_ENCODER_2_PREFIX)


@dataclass(frozen=True)
class LoraTarget:
    """One adapted layer.

    Attributes:
        module: The layer's name inside its model (``down_blocks.0.attentions.0.proj_in``).
        kohya: Its Kohya name (``lora_unet_down_blocks_0_attentions_0_proj_in``).
        rank: Adapter rank.
        alpha: Adapter alpha (scale = alpha / rank).
    """

    module: str
    kohya: str
    rank: int
    alpha: float


def kohya_name(prefix: str, module: str) -> str:
    """Kohya's key stem for a layer: the prefix and the dotted path with dots as underscores.

    Text-encoder names always carry ``text_model``: transformers >= 5.6 dropped that level
    from ``CLIPTextModel``, but A1111, ComfyUI and Kohya expect it.
    """
    if prefix in TEXT_ENCODER_PREFIXES and not module.startswith("text_model."):
        module = "text_model." + module
    return f"{prefix}_{module.replace('.', '_')}"


def select_targets(
    model: nn.Module,
    prefix: str,
    blocks: tuple[str, ...],
    rank: int,
    alpha: float,
    conv_rank: int = 0,
    conv_alpha: float = 1.0,
    rename: Callable[[str], str] | None = None,
) -> list[LoraTarget]:
    """The layers Kohya adapts inside ``model``'s blocks of the classes named in ``blocks``, in
    model order: Linear and 1x1 Conv2d at ``rank``, other Conv2d at ``conv_rank`` (when > 0).

    ``rename`` maps a module's path in ``model`` to the path Kohya's key is built from, where
    Kohya's model names its layers differently (SDXL's U-Net: the original SGM numbering).
    """
    from torch import nn

    found: dict[str, LoraTarget] = {}
    for block_name, block in model.named_modules():
        if type(block).__name__ not in blocks:
            continue
        for child_name, child in block.named_modules():
            name = f"{block_name}.{child_name}" if child_name else block_name
            if isinstance(child, nn.Linear) or (isinstance(child, nn.Conv2d) and child.kernel_size == (1, 1)):
                target = LoraTarget(name, kohya_name(prefix, rename(name) if rename else name), rank, alpha)
            elif isinstance(child, nn.Conv2d) and conv_rank > 0:
                target = LoraTarget(
                    name, kohya_name(prefix, rename(name) if rename else name), conv_rank, conv_alpha
                )
            else:
                continue
            found.setdefault(name, target)
    return list(found.values())
