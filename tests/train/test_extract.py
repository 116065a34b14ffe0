"""kiln extract: a LoRA from a fine-tune's difference to its base, by SVD (Kohya's extractor)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from kiln.cli import main
from kiln.engine.errors import ModelError
from kiln.engine.models.sd15 import load, unet_targets
from kiln.engine.train.extract import extract_lora, svd_factors
from kiln.engine.train.lora_io import read_lora


@pytest.fixture(scope="module")
def finetuned(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a seeded low-rank change in every U-Net layer a LoRA adapts (a
    stand-in for a fine-tune); its text encoder untouched."""
    out = tmp_path_factory.mktemp("ft") / "tuned"
    shutil.copytree(tiny_model, out)
    pipe = load(tiny_model)
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for target in unet_targets(pipe.unet, 2, 2.0):
            weight = pipe.unet.get_submodule(target.module).weight
            rows, cols = weight.shape[0], weight[0].numel()
            delta = torch.randn(rows, 2, generator=generator) @ torch.randn(2, cols, generator=generator)
            weight.add_(0.05 * delta.reshape(weight.shape))
    pipe.unet.save_pretrained(out / "unet", safe_serialization=True)
    return out


def unet_output(pipe) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    sample, hidden = torch.randn(1, 4, 8, 8, generator=generator), torch.randn(1, 77, 32, generator=generator)
    with torch.no_grad():
        return pipe.unet(sample, 500, hidden).sample


def test_svd_factors_recover_a_low_rank_difference() -> None:
    generator = torch.Generator().manual_seed(1)
    difference = torch.randn(16, 3, generator=generator) @ torch.randn(3, 24, generator=generator)
    up, down = svd_factors(difference, 3, clamp_quantile=1.0)
    assert up.shape == (16, 3) and down.shape == (3, 24)
    assert torch.allclose(up @ down, difference, atol=1e-4)
    conv = torch.randn(8, 4, 3, 3, generator=generator)
    up, down = svd_factors(conv, 2)
    assert up.shape == (8, 2, 1, 1) and down.shape == (2, 4, 3, 3)


def test_the_extracted_lora_brings_the_base_close_to_the_fine_tune(
    finetuned: Path, tiny_model: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "extracted.safetensors"
    assert (
        main(
            [
                "extract",
                str(finetuned),
                "--base",
                str(tiny_model),
                "--rank",
                "4",
                "--output",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["unet_layers"] == 192 and report["text_encoder_layers"] == 0
    assert report["text_encoders_skipped"] == ["CLIP-L"]
    tensors, meta = read_lora(out)
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "4.0"
    assert {float(value) for key, value in tensors.items() if key.endswith(".alpha")} == {4.0}
    assert not any(key.startswith("lora_te") for key in tensors)
    base, tuned = load(tiny_model), load(finetuned)
    target, before = unet_output(tuned), unet_output(base)
    base.load_lora_weights(str(out))
    after = unet_output(base)
    gap_before = (before - target).abs().mean()
    gap_after = (after - target).abs().mean()
    assert gap_after < 0.2 * gap_before


def test_checkpoints_of_different_families_are_refused(tiny_model: Path, tiny_sdxl: Path) -> None:
    with pytest.raises(ModelError, match=r"an SDXL model, the base .* is SD 1\.5"):
        extract_lora(tiny_sdxl, tiny_model, 4)
