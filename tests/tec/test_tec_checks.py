"""Torch-free checks of what the TEC meter is pointed at: headers, kinds, and the runs it can measure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kiln.engine.errors import ModelError
from kiln.engine.runs.tec_series import tec_run, tec_runs
from kiln.engine.tec.checks import inspect_weights, safetensors_header
from safetensors.torch import save_file

from tests.tinytec import write_epoch, write_unet_only_epoch


def test_header_gives_keys_and_metadata_without_tensors(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    save_file({"b": torch.zeros(2), "a": torch.ones(3)}, str(path), {"ss_epoch": "4"})
    header = safetensors_header(path)
    assert sorted(header.keys) == ["a", "b"] and header.metadata == {"ss_epoch": "4"}
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:20])
    with pytest.raises(ModelError, match="truncated"):
        safetensors_header(tmp_path / "cut.safetensors")
    (tmp_path / "text.safetensors").write_text("hello world, not weights", encoding="utf-8")
    with pytest.raises(ModelError, match=r"not a \.safetensors file"):
        safetensors_header(tmp_path / "text.safetensors")


def test_inspect_tells_checkpoints_loras_and_other_models_apart(
    tiny_folder: Path, tiny_file: Path, tiny_encoder, tmp_path: Path
) -> None:
    assert inspect_weights(tiny_folder).kind == "checkpoint"
    assert inspect_weights(tiny_file) == inspect_weights(tiny_file)  # frozen, comparable
    assert inspect_weights(tiny_file).kind == "checkpoint" and not inspect_weights(tiny_file).pickle
    lora = inspect_weights(write_epoch(tmp_path / "te.safetensors", tiny_encoder, 0.1))
    assert (lora.kind, lora.text_encoder) == ("lora", True)
    unet = inspect_weights(write_unet_only_epoch(tmp_path / "unet.safetensors"))
    assert (unet.kind, unet.text_encoder) == ("lora", False)
    pickled = tmp_path / "model.ckpt"
    pickled.write_bytes(b"not opened: a pickle is only reported")
    assert inspect_weights(pickled).pickle
    sdxl = tmp_path / "xl.safetensors"
    save_file({"conditioner.embedders.0.transformer.text_model.x": torch.zeros(1)}, str(sdxl))
    with pytest.raises(ModelError, match="SDXL"):
        inspect_weights(sdxl)
    with pytest.raises(ModelError, match="no such file or folder"):
        inspect_weights(tmp_path / "missing.safetensors")
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(ModelError, match="unknown model file type"):
        inspect_weights(tmp_path / "notes.txt")


def test_runs_list_newest_first_with_what_blocks_a_series(
    tiny_folder: Path, tiny_encoder, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    te = runs / "20261126-101500-pot"
    write_epoch(te / "lora" / "pot-e001.safetensors", tiny_encoder, 0.1, epoch=1)
    (te / "config.toml").write_text(f'[model]\nbase = "{tiny_folder}"\n', encoding="utf-8")
    unet = runs / "20261127-090000-style"
    write_unet_only_epoch(unet / "lora" / "style-e001.safetensors")
    (unet / "config.toml").write_text("[model]\n", encoding="utf-8")
    fresh = runs / "20261128-080000-new"
    fresh.mkdir(parents=True)
    (fresh / "config.toml").write_text(f'[model]\nbase = "{tiny_folder}"\n', encoding="utf-8")
    (runs / "notes").mkdir()  # not a run
    listed = tec_runs([runs, tmp_path / "no-such-runs"])
    assert [run.name for run in listed] == [fresh.name, unet.name, te.name]
    assert tec_run(te).text_encoder is True and tec_run(te).problem == ""
    assert tec_run(te).base == str(tiny_folder) and tec_run(te).base_problem == ""
    assert "did not train the text encoder" in tec_run(unet).problem
    assert "names no model.base" in tec_run(unet).base_problem
    assert tec_run(fresh).text_encoder is None and "no saved LoRA" in tec_run(fresh).problem
