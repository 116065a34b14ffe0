"""LoRA drift: merging Kohya text-encoder weights at a scale, and the per-epoch series of a run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kiln.engine.errors import ModelError, RunError
from kiln.engine.runs.tec_series import run_tec_series
from kiln.engine.tec.embed import word_embeddings
from kiln.engine.tec.lora import lora_trains_text_encoder, merged_text_encoder, text_encoder_lora_layers
from kiln.engine.tec.meter import ProbeOptions, lora_tec_report
from kiln.engine.train.lora_io import kohya_state_dict, read_lora, write_lora
from safetensors.torch import save_file

from tests.tinytec import ALPHA, LETTERS, trained_adapter, write_epoch, write_unet_only_epoch

OPTIONS = ProbeOptions(words=LETTERS, words_source="letters")


def test_merged_lora_equals_the_trainers_adapters_at_alpha_over_rank(tiny_encoder, tmp_path: Path) -> None:
    adapted, targets = trained_adapter(tiny_encoder, 0.3)
    assert len(targets) == 2 * 6  # two layers of q/k/v/out + fc1/fc2
    path = write_lora(tmp_path / "x.safetensors", kohya_state_dict(adapted, targets, torch.float32), {})
    layers = text_encoder_lora_layers(read_lora(path)[0], tiny_encoder.model, path)
    assert len(layers) == len(targets) and {layer.alpha for layer in layers} == {ALPHA}
    ids = list(range(0, 512, 3))
    tokenizer = tiny_encoder.tokenizer
    ends = (tokenizer.bos_token_id, tokenizer.eos_token_id)
    expected = word_embeddings(adapted, ids, *ends)
    merged = word_embeddings(merged_text_encoder(tiny_encoder.model, layers, 1.0), ids, *ends)
    assert torch.allclose(merged, expected, atol=1e-5)
    assert not torch.allclose(merged, word_embeddings(tiny_encoder.model, ids, *ends), atol=1e-3)


def test_lora_at_scale_zero_adds_nothing_and_more_scale_adds_more_drift(
    tiny_encoder, tiny_folder: Path, tmp_path: Path
) -> None:
    path = write_epoch(tmp_path / "pot.safetensors", tiny_encoder, 0.5)
    zero = lora_tec_report(path, tiny_folder, 0.0, OPTIONS)
    assert zero.score == 0.0 and zero.confusion_rate == 0.0
    assert all(layer.relative_l2 == 0.0 for layer in zero.layers)
    scores = [lora_tec_report(path, tiny_folder, scale, OPTIONS).score for scale in (0.25, 1.0, 2.0)]
    assert 0 < scores[0] < scores[1] < scores[2]
    one = lora_tec_report(path, tiny_folder, 1.0, OPTIONS)
    assert [layer.name for layer in one.layers if layer.relative_l2 > 0] == ["layer 0", "layer 1"]


def test_diffusers_te1_prefix_reads_like_kohyas(tiny_encoder, tiny_folder: Path, tmp_path: Path) -> None:
    path = write_epoch(tmp_path / "kohya.safetensors", tiny_encoder, 0.5)
    tensors, _ = read_lora(path)
    renamed = {key.replace("lora_te_", "lora_te1_"): value for key, value in tensors.items()}
    save_file(renamed, str(tmp_path / "te1.safetensors"))
    kohya = lora_tec_report(path, tiny_folder, 1.0, OPTIONS)
    te1 = lora_tec_report(tmp_path / "te1.safetensors", tiny_folder, 1.0, OPTIONS)
    assert te1.score == kohya.score > 0


def test_lora_kinds_kiln_cannot_merge_are_refused_by_name(tiny_encoder, tmp_path: Path) -> None:
    cases = {
        "lora_te_text_model_encoder_layers_0_mlp_fc1.hada_w1_a": "LyCORIS",
        "lora_te_text_model_encoder_layers_9_mlp_fc1.lora_down.weight": "names no text-encoder layer",
    }
    for key, message in cases.items():
        with pytest.raises(ModelError, match=message):
            text_encoder_lora_layers(
                {key: torch.zeros(4, 32)}, tiny_encoder.model, tmp_path / "x.safetensors"
            )
    wrong = {
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 768),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(64, 4),
    }
    with pytest.raises(ModelError, match="another model size"):
        text_encoder_lora_layers(wrong, tiny_encoder.model, tmp_path / "x.safetensors")


def test_run_series_orders_epochs_grows_and_marks_unet_only_files(
    tiny_encoder, tiny_folder: Path, tmp_path: Path
) -> None:
    run = tmp_path / "runs" / "20261126-101500-pot"
    (run / "lora").mkdir(parents=True)
    (run / "config.toml").write_text(f'[model]\nbase = "{tiny_folder}"\n', encoding="utf-8")
    write_epoch(run / "lora" / "pot-e002.safetensors", tiny_encoder, 0.6, epoch=2)
    write_epoch(run / "lora" / "pot-e001.safetensors", tiny_encoder, 0.2, epoch=1)
    write_unet_only_epoch(run / "lora" / "pot-e003.safetensors")
    calls: list[tuple[str, int, int]] = []
    series = run_tec_series(run, options=OPTIONS, progress=lambda *call: calls.append(call))
    assert [entry.epoch for entry in series] == [1, 2, 3]
    assert [entry.text_encoder for entry in series] == [True, True, False]
    assert 0 < series[0].report.score < series[1].report.score
    assert series[2].report.score == 0.0 and "U-Net only" in series[2].report.notes[-1]
    stages = [stage for stage, done, total in calls if done == total]
    assert stages == ["reference", "pot-e001.safetensors", "pot-e002.safetensors", "pot-e003.safetensors"]
    assert [lora_trains_text_encoder(entry.path) for entry in series] == [True, True, False]
    assert set(series[0].to_json()) >= {"epoch", "file", "text_encoder", "score", "confusion_rate", "words"}


def test_run_series_needs_saved_loras_and_a_base(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no saved LoRA"):
        run_tec_series(tmp_path, options=OPTIONS)
    (tmp_path / "lora").mkdir()
    save_file({"lora_unet_x.alpha": torch.zeros(())}, str(tmp_path / "lora" / "a-e001.safetensors"))
    with pytest.raises(RunError, match="--base"):
        run_tec_series(tmp_path, options=OPTIONS)
