"""TEC on SDXL: both text encoders measured, reported separately and combined; SDXL single files
read lazily from their SGM keys; SDXL LoRAs' drift; another family's model or LoRA refused."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
from kiln.engine.errors import ModelError
from kiln.engine.models.family import SDXL
from kiln.engine.tec.loading import load_text_encoders
from kiln.engine.tec.meter import ProbeOptions, checkpoint_tec_report, lora_tec_report
from kiln.engine.train.lora_io import kohya_state_dict, write_lora
from kiln.engine.train.network import add_lora
from safetensors import safe_open
from safetensors.torch import save_file

from tests.tinytec import with_noise, write_epoch

OPTIONS = ProbeOptions(words=tuple("abcdefghijklmnopqrstuvwxyz"), words_source="letters")
LABELS = ["CLIP-L", "OpenCLIP bigG"]


def noisy_encoder(source: Path, out: Path, encoder: str, scale: float) -> Path:
    """A copy of a diffusers SDXL folder with noise in one text encoder's weights."""
    shutil.copytree(source, out)
    weights = out / encoder / "model.safetensors"
    with safe_open(str(weights), framework="pt") as handle:
        state = {key: handle.get_tensor(key) for key in list(handle.keys())}
        metadata = handle.metadata()
    save_file({k: v.contiguous() for k, v in with_noise(scale)(state).items()}, str(weights), metadata)
    return out


def sdxl_lora(path: Path, base: Path, strength: float, slots: tuple[int, ...] = (0, 1)) -> Path:
    """A Kohya SDXL LoRA with seeded adapters on the given text encoders (and one U-Net key)."""
    encoders = load_text_encoders(base)
    generator = torch.Generator().manual_seed(5)
    tensors: dict[str, torch.Tensor] = {
        "lora_unet_input_blocks_4_1_proj_in.lora_down.weight": torch.zeros(4, 16),
    }
    for slot in slots:
        model = copy.deepcopy(encoders[slot].model)
        targets = SDXL.text_encoder_targets(model, 4, 2.0, SDXL.text_encoders[slot].prefix)
        add_lora(model, targets)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * strength)
        tensors.update(kohya_state_dict(model, targets, torch.float32))
    return write_lora(path, tensors, {})


def test_an_sdxl_checkpoint_against_itself_scores_zero_in_both_encoders(
    tiny_sdxl: Path, tiny_sdxl_single_file: Path
) -> None:
    for candidate in (tiny_sdxl, tiny_sdxl_single_file):
        report = checkpoint_tec_report(candidate, tiny_sdxl, OPTIONS)
        assert [label for label, _ in report.parts] == LABELS
        assert report.score == 0 and all(part.score == 0 for _, part in report.parts)
        assert report.confusion_rate == 0
        encoders = report.to_json()["encoders"]
        assert [entry["label"] for entry in encoders] == LABELS


def test_the_single_file_holds_the_same_two_encoders_as_the_folder(
    tiny_sdxl: Path, tiny_sdxl_single_file: Path
) -> None:
    folder, single = load_text_encoders(tiny_sdxl), load_text_encoders(tiny_sdxl_single_file)
    assert len(folder) == len(single) == 2
    for mine, theirs in zip(folder, single, strict=True):
        a, b = mine.model.state_dict(), theirs.model.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert single[1].model.config.hidden_size == 64 and single[0].model.config.hidden_size == 32


@pytest.mark.parametrize(("encoder", "moved"), [("text_encoder", 0), ("text_encoder_2", 1)])
def test_noise_in_either_encoder_shows_in_that_encoder_and_the_combined_score(
    tiny_sdxl: Path, tmp_path: Path, encoder: str, moved: int
) -> None:
    scores = []
    for scale in (0.02, 0.2):
        noisy = noisy_encoder(tiny_sdxl, tmp_path / f"noisy-{scale}", encoder, scale)
        report = checkpoint_tec_report(noisy, tiny_sdxl, OPTIONS)
        parts = [part.score for _, part in report.parts]
        assert parts[moved] > 0 and parts[1 - moved] == 0
        assert report.score == pytest.approx(sum(parts) / 2)
        scores.append(report.score)
    assert 0 < scores[0] < scores[1]


def test_an_sdxl_lora_drifts_both_encoders_and_scales(tiny_sdxl: Path, tmp_path: Path) -> None:
    path = sdxl_lora(tmp_path / "xl.safetensors", tiny_sdxl, 0.3)
    report = lora_tec_report(path, tiny_sdxl, 1.0, OPTIONS)
    assert all(part.score > 0 for _, part in report.parts)
    assert lora_tec_report(path, tiny_sdxl, 0.0, OPTIONS).score == 0
    half = lora_tec_report(path, tiny_sdxl, 0.5, OPTIONS).score
    assert 0 < half < report.score
    only_first = sdxl_lora(tmp_path / "te1.safetensors", tiny_sdxl, 0.3, slots=(0,))
    parts = [part.score for _, part in lora_tec_report(only_first, tiny_sdxl, 1.0, OPTIONS).parts]
    assert parts[0] > 0 and parts[1] == 0


def test_another_familys_model_or_lora_is_refused(
    tiny_sdxl: Path, tiny_folder: Path, tiny_encoder, tmp_path: Path
) -> None:
    with pytest.raises(
        ModelError, match=r"SDXL .* but the reference .* is SD 1\.5; compare checkpoints of one"
    ):
        checkpoint_tec_report(tiny_sdxl, tiny_folder, OPTIONS)
    sd15_lora = write_epoch(tmp_path / "sd15.safetensors", tiny_encoder, 0.5)
    with pytest.raises(ModelError, match=r"an SD 1\.5 LoRA, and the base is SDXL; pass the base model"):
        lora_tec_report(sd15_lora, tiny_sdxl, 1.0, OPTIONS)
    xl_lora = sdxl_lora(tmp_path / "xl.safetensors", tiny_sdxl, 0.3)
    with pytest.raises(ModelError, match=r"an SDXL LoRA, and the base is SD 1\.5"):
        lora_tec_report(xl_lora, tiny_folder, 1.0, OPTIONS)


def test_kiln_tec_prints_each_encoder_and_the_combination(
    tiny_sdxl: Path, letters_file: Path, tmp_path: Path, capsys
) -> None:
    import json

    from kiln.cli import main

    noisy = noisy_encoder(tiny_sdxl, tmp_path / "noisy", "text_encoder_2", 0.2)
    assert main(["tec", str(noisy), "--reference", str(tiny_sdxl), "--words", str(letters_file)]) == 0
    out = capsys.readouterr().out
    assert "CLIP-L: TEC score 0.000" in out and "OpenCLIP bigG: TEC score" in out
    assert "Combined: TEC score" in out and "Weight distance, OpenCLIP bigG" in out
    main(["tec", str(noisy), "--reference", str(tiny_sdxl), "--words", str(letters_file), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert [entry["label"] for entry in data["encoders"]] == LABELS
    assert data["encoders"][0]["score"] == 0 and data["encoders"][1]["score"] > 0
    assert data["score"] == pytest.approx(data["encoders"][1]["score"] / 2)


def test_the_tec_view_shows_each_encoder_under_the_combined_headline(tiny_sdxl: Path, tmp_path: Path) -> None:
    from kiln.tui.widgets.tec_report_view import TecReportView, layer_label

    noisy = noisy_encoder(tiny_sdxl, tmp_path / "noisy", "text_encoder_2", 0.2)
    report = checkpoint_tec_report(noisy, tiny_sdxl, OPTIONS)
    text = TecReportView().content_for(report).plain
    assert "Combined TEC score" in text
    assert "  CLIP-L: 0.000 · 0.00% · close to zero" in text and "  OpenCLIP bigG: " in text
    assert "OpenCLIP bigG:L1" in text and layer_label("layer 3") == "L3"
