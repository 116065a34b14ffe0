"""LyCORIS networks (LoHa, LoKr, DoRA): two epochs each on the tiny SD 1.5, files the LyCORIS
library's own loader reads with every module matched, Kohya names on SDXL, resume, refusals."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from kiln.engine.errors import ConfigError
from kiln.engine.models.sd15 import load as load_sd15
from kiln.engine.train.lora_io import read_lora
from kiln.engine.train.lycoris_network import require_lycoris
from torch import nn

from tests.train.helpers import assert_resume_matches, small_config, train

KEYS = {
    "loha": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"},
    "lokr": {"lokr_w1", "alpha"},  # lokr_w2, or its factors lokr_w2_a/_b, by layer size
    "dora": {"lora_down.weight", "lora_up.weight", "dora_scale", "alpha"},
}


@pytest.fixture(scope="module", params=sorted(KEYS))
def lycoris_run(request, tiny_model: Path, train_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    kind = request.param
    network = {"type": kind, "conv_rank": 2, "conv_alpha": 1.0}
    runs = tmp_path_factory.mktemp("runs")
    result, _ = train(small_config(tiny_model, train_dataset, runs, network=network, output={"name": kind}))
    return kind, result, result.run_dir


def test_each_type_trains_two_epochs_with_lycoris_keys_and_metadata(lycoris_run) -> None:
    kind, result, run_dir = lycoris_run
    assert result.state == "done" and result.epoch == 2
    tensors, meta = read_lora(result.lora)
    names = {key.split(".", 1)[0] for key in tensors}
    parts = {key.split(".", 1)[1] for key in tensors}
    assert KEYS[kind] <= parts
    assert not any(part.startswith("lora_A") for part in parts)  # no peft names leak out
    assert any(name.startswith("lora_te_text_model_encoder_layers_0_") for name in names)
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in names
    assert "lora_unet_down_blocks_0_resnets_0_conv1" in names  # conv layers at the conv rank
    alphas = {name: float(tensors[f"{name}.alpha"]) for name in names}
    # The 3x3 convs (ResNet conv1/conv2, up/down-samplers) train at the conv rank and alpha.
    conv = {name for name in names if name.endswith(("_conv1", "_conv2", "samplers_0_conv"))}
    if kind == "lokr":
        # LoKr keeps the configured alpha on factored layers; a layer too small to factor at
        # this rank is a full matrix, where the library writes alpha = rank (scale 1).
        factored = {name for name in names if f"{name}.lokr_w2_a" in tensors}
        assert factored and {alphas[name] for name in factored - conv} == {2.0}
        assert {alphas[name] for name in names - factored - conv} <= {4.0}
    else:
        assert {alphas[name] for name in names - conv} == {2.0}
        assert {alphas[name] for name in conv} == {1.0}
    assert meta["ss_network_module"] == "lycoris.kohya"
    args = json.loads(meta["ss_network_args"])
    assert args["algo"] == ("locon" if kind == "dora" else kind) and args["conv_dim"] == "2"
    assert ("dora_wd" in args) == (kind == "dora") and ("factor" in args) == (kind == "lokr")
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert f"SD 1.5: {kind} rank 4" in log


class _TextModel(nn.Module):
    """CLIPTextModel under its ``text_model`` name, as A1111 and Kohya name its layers."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.text_model = encoder


def test_the_lycoris_librarys_loader_matches_every_module_and_changes_the_unet(
    lycoris_run, tiny_model: Path
) -> None:
    from lycoris.wrapper import LycorisNetwork, create_lycoris_from_weights

    _, result, _ = lycoris_run
    tensors, _ = read_lora(result.lora)
    pipe = load_sd15(tiny_model)
    generator = torch.Generator().manual_seed(0)
    sample, hidden = torch.randn(1, 4, 8, 8, generator=generator), torch.randn(1, 77, 32, generator=generator)
    with torch.no_grad():
        before = pipe.unet(sample, 500, hidden).sample
    prefix_before = LycorisNetwork.LORA_PREFIX
    try:
        for prefix, module in (("lora_unet", pipe.unet), ("lora_te", _TextModel(pipe.text_encoder))):
            part = {key: value for key, value in tensors.items() if key.startswith(prefix + "_")}
            LycorisNetwork.LORA_PREFIX = prefix
            network, _ = create_lycoris_from_weights(1.0, None, module, weights_sd=part)
            assert len(network.loras) == len({key.split(".")[0] for key in part}) > 0
            network.apply_to()
    finally:
        LycorisNetwork.LORA_PREFIX = prefix_before
    with torch.no_grad():
        after = pipe.unet(sample, 500, hidden).sample
    assert not torch.allclose(before, after)


def test_a_cancelled_loha_run_resumes_to_the_uninterrupted_losses(make_config) -> None:
    def config(name: str):
        return make_config(network={"type": "loha"}, train={"max_steps": 5}, output={"name": name})

    assert_resume_matches(config, steps=5)


def test_sdxl_lokr_keeps_kohyas_sgm_names(tiny_sdxl: Path, make_config) -> None:
    config = make_config(
        model={"base": str(tiny_sdxl)},
        network={"type": "lokr", "factor": 4},
        train={"max_steps": 2},
    )
    result, _ = train(config)
    tensors, meta = read_lora(result.lora)
    names = {key.split(".", 1)[0] for key in tensors}
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in names
    assert any(name.startswith("lora_te2_text_model_") for name in names)
    assert json.loads(meta["ss_network_args"])["factor"] == "4"
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"


def test_without_the_library_a_lycoris_type_is_refused_with_the_fix(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "lycoris", None)
    monkeypatch.setitem(sys.modules, "lycoris.modules", None)
    with pytest.raises(ConfigError, match=r'network.type = "loha" needs the LyCORIS library: pip install'):
        require_lycoris("loha")


def test_tec_measures_a_lycoris_files_drift_quietly(lycoris_run, tiny_model: Path, capsys) -> None:
    from kiln.engine.tec.meter import ProbeOptions, lora_tec_report

    _, result, _ = lycoris_run
    options = ProbeOptions(words=tuple("abcdefghij"), words_source="letters")
    scores = [lora_tec_report(result.lora, tiny_model, scale, options).score for scale in (0.0, 0.5, 1.0)]
    assert scores[0] == 0 < scores[1] < scores[2]
    assert capsys.readouterr().out == ""  # the library's log never reaches stdout


def test_diffusers_loads_the_dora_file_where_it_supports_the_type(lycoris_run, tiny_model: Path) -> None:
    """diffusers reads a DoRA file's LoRA factors (it drops the magnitude, ``dora_scale``, with
    its own notice); it has no loader for LoHa or LoKr files (A1111, ComfyUI and the LyCORIS
    library have, tested above)."""
    kind, result, _ = lycoris_run
    if kind != "dora":
        pytest.skip("diffusers loads no LoHa or LoKr file")
    tensors, _ = read_lora(result.lora)
    pipe = load_sd15(tiny_model)
    pipe.load_lora_weights(str(result.lora))
    attached = {
        name for name, module in pipe.unet.named_modules() if hasattr(module, "lora_A") and len(module.lora_A)
    }
    in_file = {key.split(".")[0] for key in tensors if key.startswith("lora_unet_")}
    assert len(attached) == len(in_file)
