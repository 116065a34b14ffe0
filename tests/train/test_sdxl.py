"""SDXL on the tiny SDXL model: detection, offline loading, a two-epoch run, Kohya's SDXL LoRA
format read back by diffusers, cached text-encoder outputs, v-prediction, refusals."""

from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.store import Store
from kiln.engine.errors import ConfigError, KilnError, ModelError
from kiln.engine.models.conditioning import TextConditioning
from kiln.engine.models.family import SD15, SDXL, detect_family, family_of_lora_keys, resolve_family
from kiln.engine.models.sdxl import crop_top_left, time_ids
from kiln.engine.plan.loads import dataset_load
from kiln.engine.plan.steps import plan_steps
from kiln.engine.runs.layout import create_run_dir
from kiln.engine.train.config import TrainConfig
from kiln.engine.train.data import bucket_spec
from kiln.engine.train.loop import Trainer
from kiln.engine.train.lora_io import read_lora
from kiln.engine.train.loss import per_sample_loss

from tests.train.helpers import assert_resume_matches, small_config, train

# Tiny SDXL: 3 levels, layers_per_block 2, transformer depth [1, 2, 2] (Kohya's module set on it).
UNET_MODULES = 242
TEXT_ENCODER_MODULES = 12  # each: 2 layers x (q, k, v, out, fc1, fc2)


def sdxl_config(base_path: Path, data_path: Path, runs: Path, **tables) -> TrainConfig:
    return small_config(base_path, data_path, runs, **{"output": {"name": "xl"}, **tables})


@pytest.fixture(scope="module")
def sdxl_run(tiny_sdxl: Path, train_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """Two epochs on the tiny SDXL folder, both text encoders trained, samples at epoch 2."""
    config = sdxl_config(
        tiny_sdxl,
        train_dataset,
        tmp_path_factory.mktemp("runs"),
        train={"min_snr_gamma": 5.0, "text_encoder_2_lr": 3e-4},
        sample={"prompts": ["pot, colour --s 2 --w 64 --h 64"], "every_n_epochs": 2},
    )
    result, events = train(config)
    return config, result, events


# ------------------------------------------------------------------ detection and loading


def test_each_family_is_detected_from_folders_and_single_files(
    tiny_model: Path, tiny_single_file: Path, tiny_sdxl: Path, tiny_sdxl_single_file: Path
) -> None:
    assert detect_family(tiny_model) is SD15 and detect_family(tiny_single_file) is SD15
    assert detect_family(tiny_sdxl) is SDXL and detect_family(tiny_sdxl_single_file) is SDXL
    # The single file is in SGM's layout: the marker key of SDXL's second text encoder.
    from kiln.engine.models.safetensors_file import safetensors_header

    keys = safetensors_header(tiny_sdxl_single_file).keys
    assert "conditioner.embedders.1.model.ln_final.weight" in keys
    assert any(key.startswith("conditioner.embedders.0.transformer.text_model.") for key in keys)
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in keys


def test_asking_for_the_wrong_family_is_refused_with_the_fix(tiny_model: Path, tiny_sdxl: Path) -> None:
    assert resolve_family(tiny_sdxl, "sdxl") is SDXL
    with pytest.raises(
        ModelError, match=r'an SDXL model, but model.family = .sd15.; set model.family = "sdxl"'
    ):
        resolve_family(tiny_sdxl, "sd15")
    with pytest.raises(ModelError, match=re.escape('set model.family = "sd15"')):
        resolve_family(tiny_model, "sdxl")


def test_the_sgm_single_file_loads_offline_to_the_same_weights(
    tiny_sdxl: Path, tiny_sdxl_single_file: Path
) -> None:
    folder = SDXL.load(tiny_sdxl)
    single = SDXL.load(tiny_sdxl_single_file)
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        mine, theirs = getattr(folder, part).state_dict(), getattr(single, part).state_dict()
        assert mine.keys() == theirs.keys(), part
        assert all(torch.equal(mine[key], theirs[key]) for key in mine), part
    assert type(single).__name__ == "StableDiffusionXLPipeline"
    assert single.tokenizer_2.pad_token == "!" and single.tokenizer.pad_token == "<|endoftext|>"


# ------------------------------------------------------------------ size conditioning


def test_crop_numbers_are_kohyas_letterbox_offsets() -> None:
    # sd-scripts' get_crop_ltrb: the image letterboxed inside the bucket, not the crop taken.
    assert crop_top_left((1024, 1024), (2000, 1000)) == (256, 0)
    assert crop_top_left((832, 1216), (1000, 1500)) == (0, 10)
    assert crop_top_left((1024, 1024), (512, 512)) == (0, 0)
    ids = time_ids([(2000, 1000)], [(1024, 1024)])
    assert ids.tolist() == [[1000.0, 2000.0, 256.0, 0.0, 1024.0, 1024.0]]


# ------------------------------------------------------------------ a run end to end


def test_two_epochs_train_with_the_steps_kiln_calc_plans(sdxl_run, train_dataset: Path) -> None:
    config, result, events = sdxl_run
    assert result.state == "done"
    dataset = scan_dataset(train_dataset)
    with Store(dataset.root) as store:
        load = dataset_load(dataset, store, bucket_spec(config.dataset))
    plan = plan_steps(load.bucket_items(), config.train.batch_size, config.train.epochs)
    steps = [event for event in events if event["type"] == "step"]
    assert len(steps) == plan.total_steps
    start = next(event for event in events if event["type"] == "start")
    assert start["family"] == "sdxl" and start["prediction"] == "epsilon"
    assert start["unet_modules"] == UNET_MODULES and start["text_encoder_modules"] == 2 * TEXT_ENCODER_MODULES
    # Three LRs: the U-Net's and one per text encoder.
    assert steps[0]["lr"] == 1e-3 and steps[0]["lr_te"] == pytest.approx(2e-4) and steps[0]["lr_te2"] == 3e-4
    samples = [event for event in events if event["type"] == "sample"]
    assert samples and all(Path(path).is_file() for path in samples[-1]["files"])
    assert "model family: SDXL" in (result.run_dir / "train.log").read_text(encoding="utf-8")


def test_the_lora_has_kohyas_sdxl_keys_alphas_and_metadata(sdxl_run) -> None:
    _, result, _ = sdxl_run
    tensors, meta = read_lora(result.lora)
    downs = [key for key in tensors if key.endswith(".lora_down.weight")]
    unet = [key for key in downs if key.startswith("lora_unet_")]
    assert len(unet) == UNET_MODULES
    # SGM numbering, as sd-scripts' SDXL network names its U-Net layers.
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in tensors
    assert "lora_unet_input_blocks_7_1_transformer_blocks_1_attn2_to_k.lora_down.weight" in tensors
    assert "lora_unet_middle_block_1_proj_in.lora_down.weight" in tensors
    assert "lora_unet_output_blocks_0_1_transformer_blocks_1_ff_net_2.lora_down.weight" in tensors
    assert not any("down_blocks" in key or "up_blocks" in key for key in unet)
    assert len([key for key in downs if key.startswith("lora_te1_text_model_encoder_layers_")]) == 12
    assert len([key for key in downs if key.startswith("lora_te2_text_model_encoder_layers_")]) == 12
    assert not any(key.startswith("lora_te_") for key in tensors)
    assert {float(value) for key, value in tensors.items() if key.endswith(".alpha")} == {2.0}
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert meta["modelspec.prediction_type"] == "epsilon"
    assert meta["ss_text_encoder_lr"] == str(1e-3 * 0.2) and meta["kiln_text_encoder_2_lr"] == "0.0003"
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_zero_terminal_snr"] == "False"
    assert family_of_lora_keys(tensors) is SDXL


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_diffusers_sdxl_pipeline_loads_every_key_and_the_unet_changes(sdxl_run, tiny_sdxl: Path) -> None:
    _, result, _ = sdxl_run
    pipe = SDXL.load(tiny_sdxl)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    hidden = torch.randn(1, 77, 96, generator=generator)
    added = {
        "text_embeds": torch.randn(1, 64, generator=generator),
        "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]]),
    }
    with torch.no_grad():
        before = pipe.unet(sample, 500, hidden, added_cond_kwargs=added).sample
    records = _Records()
    for name in ("diffusers", "peft", "transformers"):
        logging.getLogger(name).addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe.load_lora_weights(str(result.lora))
    finally:
        for name in ("diffusers", "peft", "transformers"):
            logging.getLogger(name).removeHandler(records)
    problems = [m for m in records.messages + [str(w.message) for w in caught] if "key" in m.lower()]
    assert not problems
    tensors, _ = read_lora(result.lora)
    in_file = {key.split(".")[0] for key in tensors}
    attached = {
        (part, name)
        for part in ("unet", "text_encoder", "text_encoder_2")
        for name, module in getattr(pipe, part).named_modules()
        if hasattr(module, "lora_A") and len(module.lora_A)
    }
    assert len(attached) == len(in_file)
    assert {part for part, _ in attached} == {"unet", "text_encoder", "text_encoder_2"}
    with torch.no_grad():
        after = pipe.unet(sample, 500, hidden, added_cond_kwargs=added).sample
    assert not torch.allclose(before, after)


# ------------------------------------------------------------------ frozen text encoders


def test_frozen_text_encoders_use_cached_outputs_with_the_same_first_loss(
    tiny_sdxl: Path, train_dataset: Path, tmp_path: Path
) -> None:
    losses = {}
    for cached in (True, False):
        config = sdxl_config(
            tiny_sdxl,
            train_dataset,
            tmp_path / f"runs-{cached}",
            network={"train_text_encoder": False},
            train={"max_steps": 2, "cache_text_encoder_outputs": cached},
        )
        result, events = train(config)
        assert result.state == "done"
        losses[cached] = [event["loss"] for event in events if event["type"] == "step"]
        tensors, meta = read_lora(result.lora)
        assert not any(key.startswith("lora_te") for key in tensors)
        assert meta["ss_network_train_unet_only"] == "True"
        log = (result.run_dir / "train.log").read_text(encoding="utf-8")
        assert ("text-encoder outputs:" in log) is cached
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


# ------------------------------------------------------------------ v-prediction


def test_v_prediction_trains_towards_the_velocity_with_zero_terminal_snr(
    tiny_sdxl: Path, train_dataset: Path, tmp_path: Path
) -> None:
    config = sdxl_config(
        tiny_sdxl,
        train_dataset,
        tmp_path / "runs",
        model={"prediction": "v"},
        train={"max_steps": 1, "zero_terminal_snr": True},
    )
    trainer = Trainer(config, create_run_dir(config))
    try:
        trainer.setup()
        models = trainer.models
        scheduler = models.noise_scheduler
        assert models.prediction_type == "v_prediction"
        assert float(scheduler.alphas_cumprod[-1]) == pytest.approx(0.0, abs=1e-6)
        # Min-SNR weights use the base schedule (finite at the last timestep), as Kohya's.
        assert float(trainer.alphas_cumprod[-1]) > 0
        # The loss of a U-Net that predicts zeros is the mean square of its target: the velocity.
        latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
        timesteps = torch.tensor([100, 900])
        models.unet_train = lambda sample, *args, **kwargs: SimpleNamespace(sample=torch.zeros_like(sample))
        ids = torch.zeros(2, 6)
        loss = per_sample_loss(
            models, trainer.accelerator, torch.float32, 1, latents, noise, timesteps, ["a", "b"], ids
        )
        velocity = scheduler.get_velocity(latents, noise, timesteps)
        assert torch.allclose(loss, velocity.pow(2).mean(dim=(1, 2, 3)))
        assert not torch.allclose(loss, noise.pow(2).mean(dim=(1, 2, 3)))
    finally:
        trainer.close()


def test_the_lora_of_a_v_prediction_run_says_v(tiny_sdxl: Path, train_dataset: Path, tmp_path: Path) -> None:
    config = sdxl_config(
        tiny_sdxl,
        train_dataset,
        tmp_path / "runs",
        model={"prediction": "v"},
        train={"max_steps": 1, "zero_terminal_snr": True},
        network={"train_text_encoder": False},
    )
    result, _ = train(config)
    _, meta = read_lora(result.lora)
    assert meta["modelspec.prediction_type"] == "v" and meta["ss_zero_terminal_snr"] == "True"


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"train": {"clip_skip": 2}}, "train.clip_skip = 2: SDXL already uses"),
        (
            {"dataset": {"bucket_reso_steps": 40}},
            "dataset.bucket_reso_steps = 40: SDXL needs a multiple of 32",
        ),
        ({"model": {"family": "sd15"}}, "an SDXL model, but model.family = 'sd15'"),
    ],
)
def test_settings_sdxl_cannot_train_with_are_refused_before_the_run(
    tiny_sdxl: Path, train_dataset: Path, tmp_path: Path, tables, message
) -> None:
    config = sdxl_config(tiny_sdxl, train_dataset, tmp_path / "runs", **tables)
    with pytest.raises((ConfigError, ModelError, KilnError), match=message):
        Trainer(config, tmp_path / "run").setup()


def test_lora_keys_tell_the_family_they_were_trained_for() -> None:
    assert family_of_lora_keys(["lora_te_text_model_encoder_layers_0_mlp_fc1.alpha"]) is SD15
    assert family_of_lora_keys(["lora_unet_down_blocks_0_attentions_0_proj_in.alpha"]) is SD15
    assert family_of_lora_keys(["lora_te2_text_model_encoder_layers_0_mlp_fc1.alpha"]) is SDXL
    assert family_of_lora_keys(["lora_unet_input_blocks_4_1_proj_in.alpha"]) is SDXL
    assert family_of_lora_keys(["lora_unet_input_blocks_1_1_proj_in.alpha"]) is SD15
    assert family_of_lora_keys(["something_else"]) is None


def test_text_conditioning_carries_pooled_text_and_time_ids_only_for_sdxl() -> None:
    hidden = torch.zeros(1, 77, 96)
    assert TextConditioning(hidden).unet_kwargs(None) == {"encoder_hidden_states": hidden}
    pooled = TextConditioning(hidden, torch.zeros(1, 64))
    with pytest.raises(ValueError, match="time ids"):
        pooled.unet_kwargs(None)
    kwargs = pooled.unet_kwargs(torch.zeros(1, 6))
    assert set(kwargs["added_cond_kwargs"]) == {"text_embeds", "time_ids"}
    assert json.dumps(sorted(kwargs)) == '["added_cond_kwargs", "encoder_hidden_states"]'


def test_the_full_size_sdxl_unet_gets_sd_scripts_module_set() -> None:
    """On SDXL's real U-Net (built on the meta device from the shipped config) Kiln adapts the
    722 modules sd-scripts' LoRANetwork does (788 with a conv rank), as compared name for name
    by scripts/check_kohya_sdxl_keys.py against sd-scripts' own code."""
    from diffusers import UNet2DConditionModel
    from kiln.engine.models.loading import SDXL_CONFIG_DIR
    from kiln.engine.models.sdxl import unet_targets

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SDXL_CONFIG_DIR / "unet"))
    names = {target.kohya for target in unet_targets(unet, 4, 2.0)}
    assert len(names) == 722
    assert len(unet_targets(unet, 4, 2.0, conv_rank=2)) == 788
    assert "lora_unet_input_blocks_8_1_transformer_blocks_9_attn2_to_out_0" in names
    assert "lora_unet_middle_block_1_transformer_blocks_9_ff_net_0_proj" in names
    assert "lora_unet_output_blocks_2_1_transformer_blocks_9_attn1_to_v" in names
    assert "lora_unet_output_blocks_5_1_proj_out" in names
    assert not any(
        name.startswith(("lora_unet_input_blocks_1_", "lora_unet_output_blocks_6_")) for name in names
    )


def test_a_cancelled_sdxl_run_resumes_to_the_uninterrupted_losses(
    tiny_sdxl: Path, train_dataset: Path, tmp_path: Path
) -> None:
    """Both encoders' adapters (te_lora, te2_lora) travel through the resume state."""

    def config(runs: str):
        return sdxl_config(tiny_sdxl, train_dataset, tmp_path / runs, train={"max_steps": 5})

    cancelled = assert_resume_matches(config, steps=5)
    assert {"unet_lora", "te_lora", "te2_lora"} <= set(cancelled.resume_state_dict())
