"""End to end on the tiny model: events, step counts, LoRA files diffusers loads, failures."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest
import torch
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.store import Store
from kiln.engine.plan.loads import dataset_load
from kiln.engine.plan.steps import plan_steps
from kiln.engine.runs.control import controlled_trainer
from kiln.engine.runs.events import read_events
from kiln.engine.runs.folders import read_run
from kiln.engine.runs.layout import create_run_dir
from kiln.engine.train.config import load_config
from kiln.engine.train.data import bucket_spec
from kiln.engine.train.loop import Trainer
from kiln.engine.train.lora_io import read_lora

from tests.train.helpers import small_config, train

PROMPTS = ["pot, colour --s 2 --d 3", "hill --n blurry --s 2 --w 64 --h 96"]


@pytest.fixture(scope="module")
def folder_run(tiny_model: Path, train_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """Two epochs on the folder model, LoCon, text encoder trained, samples every epoch."""
    config = small_config(
        tiny_model,
        train_dataset,
        tmp_path_factory.mktemp("runs"),
        dataset={"shuffle_caption": True, "keep_tokens": 1},
        network={"conv_rank": 2, "conv_alpha": 1.0},
        train={"min_snr_gamma": 5.0},
        sample={"prompts": PROMPTS, "baseline": "on"},
        output={"name": "pot", "comment": "a test"},
    )
    result, events = train(config)
    return config, result, events


def test_run_ends_done_with_the_documented_event_sequence(folder_run) -> None:
    _, result, events = folder_run
    assert result.state == "done", result.error
    kinds = [event["type"] for event in events]
    steps_per_epoch = kinds.count("step") // 2
    assert kinds[0] == "warning"  # one image has no caption
    start = kinds.index("start")
    expected = (
        ["start", "sample"]
        + ["step"] * steps_per_epoch
        + ["epoch", "checkpoint", "sample"]
        + ["step"] * steps_per_epoch
        + ["epoch", "checkpoint", "sample", "done"]
    )
    assert kinds[start:] == expected
    assert all(isinstance(event["t"], float) for event in events)
    assert [event["epoch"] for event in events if event["type"] == "sample"] == [0, 1, 2]


def test_step_count_equals_kiln_calc_for_the_same_dataset(folder_run, train_dataset: Path) -> None:
    config, _, events = folder_run
    dataset = scan_dataset(train_dataset)
    with Store(dataset.root) as store:
        load = dataset_load(dataset, store, bucket_spec(config.dataset))
    plan = plan_steps(load.bucket_items(), config.train.batch_size, config.train.epochs)
    steps = [event for event in events if event["type"] == "step"]
    assert len(steps) == plan.total_steps
    peaks = [event["peak_mb"] for event in steps]
    assert peaks == sorted(peaks) and all(event["memory"] == "ram" for event in steps)  # a running peak
    assert [event["step"] for event in steps] == list(range(1, plan.total_steps + 1))
    start = next(event for event in events if event["type"] == "start")
    assert start["total"] == plan.total_steps and len(start["buckets"]) >= 3
    # The unprefixed folder is not trained, as Kohya skips it.
    assert start["images"] == 6


def test_run_folder_holds_the_documented_files(folder_run) -> None:
    config, result, _ = folder_run
    run_dir = result.run_dir
    assert run_dir.name.endswith("-pot")
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "done" and status["step"] == status["total"] == result.step
    # The CPU run's peak resident memory: a torch process holds well over 100 MB, under 24 GB.
    assert status["memory"] == "ram" and 100 < status["peak_mb"] < 24 * 1024
    assert read_run(run_dir).peak_mb == status["peak_mb"]
    assert load_config(run_dir / "config.toml") == config
    assert "latents:" in (run_dir / "train.log").read_text()
    assert sorted(p.name for p in (run_dir / "lora").iterdir()) == [
        "pot-e001.safetensors",
        "pot-e002.safetensors",
    ]
    for epoch in ("e000", "e001", "e002"):
        assert sorted(p.name for p in (run_dir / "samples" / epoch).iterdir()) == ["00.png", "01.png"]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_samples_use_fixed_seeds_so_the_baseline_differs_only_by_training(folder_run) -> None:
    import numpy as np
    from PIL import Image

    _, result, _ = folder_run
    samples = result.run_dir / "samples"
    assert Image.open(samples / "e000" / "01.png").size == (64, 96)
    baseline = np.asarray(Image.open(samples / "e000" / "00.png"), dtype=np.float32)
    trained = np.asarray(Image.open(samples / "e002" / "00.png"), dtype=np.float32)
    assert 0 < np.abs(baseline - trained).mean() < 128


def test_lora_file_has_kohya_keys_configured_alpha_and_metadata(folder_run) -> None:
    config, result, _ = folder_run
    tensors, meta = read_lora(result.lora)
    downs = [key for key in tensors if key.endswith(".lora_down.weight")]
    # Kohya's transformer-block set (192, as on SD 1.5), plus the LoCon ResNet/sampler layers.
    assert len([k for k in downs if k.startswith("lora_unet_") and "_attentions_" in k]) == 192
    assert any("_resnets_" in k for k in downs) and any("_downsamplers_" in k for k in downs)
    assert len([k for k in downs if k.startswith("lora_te_text_model_encoder_layers_")]) == 12
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight" in tensors
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha" in tensors
    alphas = {
        float(value) for key, value in tensors.items() if key.endswith(".alpha") and "_attentions_" in key
    }
    assert alphas == {2.0}  # the configured alpha, not the rank (4)
    conv = tensors["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"]
    assert (
        conv.shape[:2] == (2, 16) and float(tensors["lora_unet_down_blocks_0_resnets_0_conv1.alpha"]) == 1.0
    )
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "1.0"}
    assert all(tensor.dtype == torch.float16 for tensor in tensors.values())
    assert tensors["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"].shape[0] == 4
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_epoch"] == "2" and meta["ss_steps"] == str(result.step)
    assert meta["ss_output_name"] == "pot" and meta["ss_training_comment"] == "a test"
    assert meta["ss_resolution"] == "(64, 64)" and meta["ss_text_encoder_lr"] == str(1e-3 * 0.2)
    assert json.loads(meta["ss_dataset_dirs"]) == {
        "2_hill": {"n_repeats": 2, "img_count": 2},
        "3_pot": {"n_repeats": 3, "img_count": 4},
    }
    assert json.loads(meta["ss_tag_frequency"])["3_pot"]["colour"] == 4
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert len(meta["sshs_model_hash"]) == 64
    assert config.train.min_snr_gamma == float(meta["ss_min_snr_gamma"])


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def assert_diffusers_loads_every_key(model_path: Path, lora: Path, single_file: bool = False) -> None:
    """load_lora_weights attaches every module of the file, without a warning, and changes the U-Net."""
    from diffusers import StableDiffusionPipeline
    from kiln.engine.models.loading import load_pipeline

    pipe = load_pipeline(model_path)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    hidden = torch.randn(1, 77, 32, generator=generator)
    with torch.no_grad():
        before = pipe.unet(sample, 500, hidden).sample
    state, _ = StableDiffusionPipeline.lora_state_dict(str(lora))
    assert state and all(key.startswith(("unet.", "text_encoder.")) for key in state)
    records = _Records()
    for name in ("diffusers", "peft", "transformers"):
        logging.getLogger(name).addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe.load_lora_weights(str(lora))
    finally:
        for name in ("diffusers", "peft", "transformers"):
            logging.getLogger(name).removeHandler(records)
    problems = [
        m
        for m in records.messages + [str(w.message) for w in caught]
        if "key" in m.lower() or "lora" in m.lower()
    ]
    assert not problems
    tensors, _ = read_lora(lora)
    in_file = {key.split(".")[0] for key in tensors}
    attached = {
        name
        for model in (pipe.unet, pipe.text_encoder)
        for name, module in model.named_modules()
        if hasattr(module, "lora_A") and len(module.lora_A)
    }
    assert len(attached) == len(in_file)
    with torch.no_grad():
        after = pipe.unet(sample, 500, hidden).sample
    assert not torch.allclose(before, after)


def test_diffusers_loads_the_lora_with_no_unmatched_keys(folder_run, tiny_model: Path) -> None:
    _, result, _ = folder_run
    assert_diffusers_loads_every_key(tiny_model, result.lora)


def test_single_file_model_trains_in_bf16(make_config, tiny_single_file: Path, tiny_model: Path) -> None:
    # No LoCon here: PyTorch's CPU bf16 conv backward returns NaN weight grads for some tiny
    # inputs (3x1, stride 2) even from a zero grad_output; fp32 covers LoCon above.
    config = make_config(
        model={"base": str(tiny_single_file)},
        network={"rank": 4, "alpha": 4.0, "train_text_encoder": False},
        train={"precision": "bf16", "epochs": 1, "max_steps": 4, "gradient_checkpointing": True},
        save={"precision": "bf16"},
    )
    result, events = train(config)
    assert result.state == "done", result.error
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3, 4]
    assert all(e["loss"] > 0 for e in events if e["type"] == "step")
    tensors, meta = read_lora(result.lora)
    assert not any(key.startswith("lora_te_") for key in tensors)
    assert all(tensor.dtype == torch.bfloat16 for tensor in tensors.values())
    assert "ss_network_args" not in meta
    assert meta["ss_mixed_precision"] == "bf16" and meta["ss_sd_model_name"] == "tiny.safetensors"
    assert_diffusers_loads_every_key(tiny_model, result.lora)


def test_fp16_on_a_cpu_fails_with_a_clear_event(make_config) -> None:
    result, events = train(make_config(train={"precision": "fp16"}))
    assert result.state == "failed"
    assert events[-1]["type"] == "failed" and "needs a GPU" in events[-1]["error"]
    assert json.loads((result.run_dir / "status.json").read_text())["state"] == "failed"


def test_nan_loss_aborts_with_a_failed_event(make_config) -> None:
    config = make_config()
    trainer = controlled_trainer(config, create_run_dir(config))
    trainer.setup()
    with torch.no_grad():
        trainer.models.unet_params[1].fill_(float("nan"))  # a lora_B weight: every output becomes NaN
    result = trainer.run()
    events = read_events(result.run_dir)
    assert result.state == "failed" and "loss became nan at step 1" in result.error
    assert [e["type"] for e in events][-1] == "failed"
    assert not (result.run_dir / "lora").exists()
    status = json.loads((result.run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "lower train.unet_lr" in status["error"]


def test_stop_request_ends_after_the_step_with_a_saved_lora(make_config) -> None:
    config = make_config(train={"cache_latents": False})  # the VAE encodes every step
    run_dir = create_run_dir(config)
    trainer = controlled_trainer(config, run_dir)
    trainer.add_listener(
        lambda event: event["type"] == "step" and event["step"] == 3 and trainer.request_stop()
    )
    result = trainer.run()
    events = read_events(run_dir)
    assert result.state == "cancelled" and result.step == 3
    assert [e["type"] for e in events][-2:] == ["checkpoint", "cancelled"]
    assert read_lora(result.lora)[1]["ss_steps"] == "3"
    assert trainer.resume_state_dict()["state"]["step"] == 3


def test_max_steps_and_grad_accumulation_cap_the_run(make_config, train_dataset: Path) -> None:
    config = make_config(
        train={"max_steps": 3, "grad_accumulation": 2, "scheduler": "linear", "cache_latents_to_disk": True}
    )
    result, events = train(config)
    steps = [e for e in events if e["type"] == "step"]
    assert result.state == "done" and [e["step"] for e in steps] == [1, 2, 3]
    assert len(list((train_dataset / ".kiln" / "latents").rglob("*.safetensors"))) == 6
    assert steps[0]["total"] == 3
    assert steps[0]["lr"] > steps[1]["lr"] > steps[2]["lr"]
    assert [e["type"] for e in events][-1] == "done"


def test_batches_and_losses_are_reproducible_from_the_seed(make_config) -> None:
    config = make_config(train={"gradient_checkpointing": False})
    first = Trainer(config, create_run_dir(config))
    first.setup()
    checkpointed = make_config(train={"gradient_checkpointing": True})
    second = Trainer(checkpointed, create_run_dir(checkpointed))
    second.setup()
    batch = first.process_batches(1)[0]
    assert batch == second.process_batches(1)[0]
    one, two = first.batch_loss(1, 0, batch), second.batch_loss(1, 0, batch)
    assert torch.allclose(one, two)
    one.backward()
    two.backward()
    grads = [p.grad for p in second.models.unet_params if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    first.close()  # set up but never run: stop their status heartbeats
    second.close()
