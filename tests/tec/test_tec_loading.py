"""Loading only the text encoder: folder and single file agree, layouts, position_ids, bad inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from kiln.engine.errors import ModelError, UsageError
from kiln.engine.models.loading import SD15_CONFIG_DIR
from kiln.engine.tec.loading import load_text_encoder, position_ids_check, require_same_tokenizer
from kiln.engine.tec.meter import ProbeOptions, checkpoint_tec_report
from kiln.engine.tec.vocab import builtin_words, probe_set, read_words
from safetensors import safe_open
from safetensors.torch import save_file

from tests.tinytec import LETTERS, file_variant, folder_variant, with_noise


def test_single_file_loads_no_unet_tensor(tiny_file: Path, monkeypatch) -> None:
    import safetensors

    read: list[str] = []
    real_open = safetensors.safe_open

    class Spy:
        def __init__(self, *args, **kwargs) -> None:
            self.handle = real_open(*args, **kwargs)

        def __enter__(self):
            inner = self.handle.__enter__()
            spy = self

            class Handle:
                def keys(self):
                    return inner.keys()

                def metadata(self):
                    return inner.metadata()

                def get_tensor(self, key):
                    read.append(key)
                    return inner.get_tensor(key)

            spy.inner = Handle()
            return spy.inner

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    encoder = load_text_encoder(tiny_file)
    assert read and all(key.startswith("cond_stage_model.transformer.text_model.") for key in read)
    assert type(encoder.model).__name__ == "CLIPTextModel"
    assert encoder.position_ids is None


def test_folder_single_file_and_both_key_layouts_give_the_same_figures(
    tiny_folder: Path, tiny_file: Path, tmp_path: Path
) -> None:
    noise = with_noise(0.05)
    candidates = [
        (folder_variant(tiny_folder, tmp_path / "folder", noise), tiny_folder),
        (folder_variant(tiny_folder, tmp_path / "nested", noise, nested=True), tiny_folder),
        (file_variant(tiny_file, tmp_path / "new.safetensors", noise), tiny_file),
        (file_variant(tiny_file, tmp_path / "old.safetensors", noise, old_layout=True), tiny_file),
        (file_variant(tiny_file, tmp_path / "old2.safetensors", noise, old_layout=True), tiny_folder),
    ]
    options = ProbeOptions(full_vocab=True)
    reports = [checkpoint_tec_report(candidate, reference, options) for candidate, reference in candidates]
    first = reports[0]
    assert first.score > 0
    for report in reports[1:]:
        assert report.distances == pytest.approx(first.distances, abs=1e-7)
        assert report.nearest == first.nearest
        assert [layer.relative_l2 for layer in report.layers] == pytest.approx(
            [layer.relative_l2 for layer in first.layers], rel=1e-5
        )


def test_stored_position_ids_are_checked_against_arange() -> None:
    intact = position_ids_check(torch.arange(77).unsqueeze(0))
    assert not intact.broken and intact.max_deviation == 0 and intact.dtype == "int64"
    off = torch.arange(77, dtype=torch.float32)
    off[40] = 40.00001
    close = position_ids_check(off)
    assert not close.broken and close.max_deviation > 0
    off[75] = 74.99998
    broken = position_ids_check(off.unsqueeze(0))
    assert broken.broken and broken.wrong == (75,) and broken.length == 77
    assert "BROKEN" in broken.describe() and "75" in broken.describe()


def test_a_broken_position_ids_tensor_in_a_checkpoint_is_reported(
    tiny_file: Path, tmp_path: Path, letters_file: Path
) -> None:
    def corrupt(state):
        ids = torch.arange(77, dtype=torch.float32).unsqueeze(0)
        ids[0, 3] = 2.9999
        return {**state, "embeddings.position_ids": ids}

    path = file_variant(tiny_file, tmp_path / "merged.safetensors", corrupt)
    encoder = load_text_encoder(path)
    assert encoder.position_ids is not None and encoder.position_ids.wrong == (3,)
    # The measures use the correct positions: the weights are unchanged, so no drift.
    report = checkpoint_tec_report(path, tiny_file, ProbeOptions(words=LETTERS))
    assert report.score == 0.0 and report.position_ids == encoder.position_ids
    assert report.to_json()["position_ids"]["broken"] is True


def test_a_missing_text_encoder_weight_is_named(tiny_file: Path, tmp_path: Path) -> None:
    def drop(state):
        return {key: value for key, value in state.items() if key != "final_layer_norm.weight"}

    path = file_variant(tiny_file, tmp_path / "cut.safetensors", drop)
    with pytest.raises(ModelError, match=r"final_layer_norm\.weight missing"):
        load_text_encoder(path)


def test_files_without_sd1_text_encoder_keys_get_a_one_line_reason(tmp_path: Path) -> None:
    cases = {
        "lora.safetensors": ("lora_te_text_model_encoder_layers_0_mlp_fc1.alpha", "kiln tec --lora"),
        "xl.safetensors": ("conditioner.embedders.0.transformer.text_model.final_layer_norm.weight", "SDXL"),
        "v2.safetensors": ("cond_stage_model.model.ln_final.weight", "SD 2.x"),
        "other.safetensors": ("model.diffusion_model.out.0.weight", "no text-encoder keys"),
    }
    for name, (key, message) in cases.items():
        save_file({key: torch.zeros(2)}, str(tmp_path / name))
        with pytest.raises(ModelError, match=message):
            load_text_encoder(tmp_path / name)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="not a readable"):
        load_text_encoder(tmp_path / "junk.safetensors")


def test_pickles_are_refused_unless_allowed(tmp_path: Path, tiny_file: Path) -> None:
    with safe_open(str(tiny_file), framework="pt") as handle:
        state = {
            key: handle.get_tensor(key) for key in list(handle.keys()) if key.startswith("cond_stage_model.")
        }
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ModelError, match="--allow-pickle"):
        load_text_encoder(path)
    # Allowed, it is read; a pickle carries no configs, and the tiny model lacks SD 1.5's 12 layers.
    with pytest.raises(ModelError, match=r"layers\.2\..* missing"):
        load_text_encoder(path, allow_pickle=True)


def test_differing_tokenizers_are_refused_naming_both(tiny_folder: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_folder, other)
    shutil.rmtree(other / "tokenizer")
    shutil.copytree(SD15_CONFIG_DIR / "tokenizer", other / "tokenizer")
    with pytest.raises(ModelError, match="tokenizers differ") as caught:
        require_same_tokenizer(load_text_encoder(tiny_folder), load_text_encoder(other))
    assert str(tiny_folder / "tokenizer") in str(caught.value) and str(other / "tokenizer") in str(
        caught.value
    )


def test_builtin_words_are_about_2000_single_tokens_of_sd15s_tokenizer() -> None:
    from transformers import CLIPTokenizer

    words = builtin_words()
    assert 1900 <= len(words) <= 2200 and len(set(words)) == len(words)
    probe = probe_set(CLIPTokenizer.from_pretrained(str(SD15_CONFIG_DIR / "tokenizer")))
    assert probe.words == tuple(words) and probe.skipped == 0
    assert len(set(probe.token_ids)) == len(words)


def test_probe_keeps_single_token_words_once_and_refuses_an_empty_set(tiny_encoder, letters_file) -> None:
    tokenizer = tiny_encoder.tokenizer
    assert read_words(letters_file) == list(LETTERS)
    probe = probe_set(tokenizer, ["a", "cat", "b", "A", "dog"], "test")
    # "cat" and "dog" are three tokens each; "A" lower-cases to "a", already probed.
    assert probe.words == ("a", "b") and probe.skipped == 3
    with pytest.raises(UsageError, match="--full-vocab"):
        probe_set(tokenizer)
    with pytest.raises(UsageError, match="no such words file"):
        read_words(letters_file.with_name("missing.txt"))
