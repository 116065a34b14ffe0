"""How peft adds LoRA adapters to the layers a model family targets, and reads them back.

Which layers, and their Kohya names, belong to the model family
(:mod:`kiln.engine.models.lora_keys`, :mod:`kiln.engine.models.sd15`); this module only puts
peft adapters on them.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from kiln.engine.models.lora_keys import LoraTarget
from torch import nn

ADAPTER = "kiln"


def add_lora(model: nn.Module, targets: list[LoraTarget]) -> list[nn.Parameter]:
    """Add peft LoRA adapters to ``targets`` and return the adapters' parameters (float32).

    Everything else in ``model`` is frozen. Initialisation is Kohya's and peft's: down
    (``lora_A``) Kaiming-uniform, up (``lora_B``) zero, so the untrained LoRA changes nothing.
    """
    from peft import LoraConfig, inject_adapter_in_model

    model.requires_grad_(False)
    if not targets:
        return []
    main = targets[0]
    config = LoraConfig(
        r=main.rank,
        # peft annotates alpha as int but scales by alpha / r in float: fractional alphas work.
        lora_alpha=main.alpha,  # type: ignore[arg-type]
        target_modules=[target.module for target in targets],
        rank_pattern={_exact(t.module): t.rank for t in targets if t.rank != main.rank},
        alpha_pattern={_exact(t.module): t.alpha for t in targets if t.alpha != main.alpha},
        init_lora_weights=True,
        lora_dropout=0.0,
    )
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    params = []
    for name, param in model.named_parameters():
        if f".lora_A.{ADAPTER}." in name or f".lora_B.{ADAPTER}." in name:
            param.data = param.data.float()
            param.requires_grad_(True)
            params.append(param)
        else:
            param.requires_grad_(False)
    return params


def _exact(module: str) -> str:
    # peft matches rank/alpha patterns as regexes against the end of the module's name.
    return "^" + re.escape(module) + "$"


def lora_weights(model: nn.Module, target: LoraTarget) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(down, up)`` weights of one adapted layer (peft's ``lora_A``/``lora_B``)."""
    layer: Any = model.get_submodule(target.module)  # peft's LoraLayer, reached by attribute name
    return layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
