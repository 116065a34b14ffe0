"""The GPU path's kernels, checked where a CPU can check them: attention in the U-Net being
trained runs through PyTorch's scaled-dot-product attention (the flash and memory-efficient
kernels on a GPU), for both families, after the LoRA adapters are in place."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from kiln.engine.models.family import resolve_family
from kiln.engine.train.models import load_models

from tests.train.helpers import small_config


@pytest.mark.parametrize("model", ["tiny_model", "tiny_sdxl"])
def test_the_trained_unets_attention_runs_through_sdpa(
    model: str, request, train_dataset: Path, tmp_path: Path
) -> None:
    base = request.getfixturevalue(model)
    config = small_config(base, train_dataset, tmp_path / "runs")
    family = resolve_family(base)
    models = load_models(config, family, torch.device("cpu"), torch.float32, logging.getLogger("test"))
    processors = models.unet.attn_processors
    assert processors and {type(p) for p in processors.values()} == {AttnProcessor2_0}
    assert models.unet_targets  # the adapters are in place
