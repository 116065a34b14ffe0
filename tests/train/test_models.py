"""The tiny model, the single-file key layout, offline loading, and refusing pickles."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from kiln.engine.errors import ModelError
from kiln.engine.models.loading import SD15_CONFIG_DIR, load_pipeline, model_source
from kiln.engine.models.lora_keys import kohya_name
from kiln.engine.models.sd15 import text_encoder_targets, unet_targets
from kiln.engine.models.tiny import write_tiny_model


def test_single_file_round_trips_to_the_folder_weights(tiny_model: Path, tiny_single_file: Path) -> None:
    folder, single = load_pipeline(tiny_model), load_pipeline(tiny_single_file)
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(folder, name).state_dict(), getattr(single, name).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[key], b[key]) for key in a), name
    assert single.tokenizer("a cat").input_ids == folder.tokenizer("a cat").input_ids


def test_single_file_uses_the_original_ldm_key_layout(tiny_single_file: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(tiny_single_file), framework="pt") as handle:
        keys = set(handle.keys())
    assert "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight" in keys
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in keys
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in keys
    assert "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight" in keys
    assert tiny_single_file.stat().st_size < 8_000_000


def test_tiny_model_text_encoder_uses_the_standard_key_names(tiny_model: Path) -> None:
    # transformers 4.x (sd-scripts' pin) finds nothing in a file without ``text_model.`` and
    # silently starts from random weights; the names must be the standard ones.
    from kiln.engine.models.tiny import build_tiny_pipeline
    from safetensors import safe_open

    with safe_open(str(tiny_model / "text_encoder" / "model.safetensors"), framework="pt") as handle:
        keys = set(handle.keys())
    assert keys and all(key.startswith("text_model.") for key in keys)
    assert "text_model.encoder.layers.0.self_attn.q_proj.weight" in keys
    loaded = load_pipeline(tiny_model).text_encoder.state_dict()
    built = build_tiny_pipeline().text_encoder.state_dict()
    assert loaded.keys() == built.keys()
    assert all(torch.equal(loaded[key], built[key]) for key in built)


def test_tiny_model_is_seeded(tmp_path: Path, tiny_model: Path) -> None:
    again = write_tiny_model(tmp_path / "again")
    a = (tiny_model / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert a == (again / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()


def test_shipped_sd15_configs_give_kohyas_module_counts() -> None:
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SD15_CONFIG_DIR / "unet"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(SD15_CONFIG_DIR / "text_encoder"))
    assert len(unet_targets(unet, 16, 8)) == 192
    assert len(text_encoder_targets(text, 16, 8)) == 72


def test_shipped_tokenizer_is_clips_real_vocabulary() -> None:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(SD15_CONFIG_DIR / "tokenizer")
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer.model_max_length == 77


def test_kohya_names_keep_text_model_whatever_transformers_does() -> None:
    assert kohya_name("lora_te", "encoder.layers.0.mlp.fc1") == "lora_te_text_model_encoder_layers_0_mlp_fc1"
    assert (
        kohya_name("lora_te", "text_model.encoder.layers.0.mlp.fc1")
        == "lora_te_text_model_encoder_layers_0_mlp_fc1"
    )
    assert (
        kohya_name("lora_unet", "mid_block.attentions.0.proj_in")
        == "lora_unet_mid_block_attentions_0_proj_in"
    )


@pytest.mark.parametrize("suffix", [".ckpt", ".pt"])
def test_pickled_checkpoints_are_refused_with_the_reason(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(
        ModelError, match=r"refused: .* Python pickles, which can run arbitrary code.*--allow-pickle"
    ):
        model_source(path)
    with pytest.raises(ModelError, match=re.escape("refused")):
        load_pipeline(path)
    assert model_source(path, allow_pickle=True).pickle


def test_bad_model_paths_give_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=re.escape("no such file or folder")):
        model_source(tmp_path / "missing")
    with pytest.raises(ModelError, match=re.escape("no model_index.json")):
        model_source(tmp_path)
    (tmp_path / "weights.onnx").write_bytes(b"x")
    with pytest.raises(ModelError, match=re.escape("unknown model file type")):
        model_source(tmp_path / "weights.onnx")


def test_non_sd15_single_files_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    sd2 = tmp_path / "sd2.safetensors"
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    save_file({key: torch.zeros(320, 1024)}, str(sd2))
    with pytest.raises(ModelError, match=re.escape("cross-attention width 1024")):
        load_pipeline(sd2)
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(other))
    with pytest.raises(ModelError, match=re.escape("not an SD 1.5 checkpoint")):
        load_pipeline(other)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 16)
    with pytest.raises(ModelError, match=re.escape("not a readable .safetensors")):
        load_pipeline(broken)
