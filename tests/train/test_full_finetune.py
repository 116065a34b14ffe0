"""A full fine-tune (network.type = "full"): the U-Net (and text encoder) trained whole, each
epoch saved as one checkpoint in the original layout that diffusers' single-file loader reads
back with the trained U-Net's output; Adafactor; resume; TEC of the fine-tune's text encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kiln.engine.models.sd15 import load
from kiln.engine.runs.control import controlled_trainer
from kiln.engine.runs.folders import resume_run
from kiln.engine.runs.layout import create_run_dir
from kiln.engine.train.loop import Trainer
from safetensors import safe_open

from tests.train.helpers import assert_resume_matches, small_config


def unet_output(unet) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    sample, hidden = torch.randn(1, 4, 8, 8, generator=generator), torch.randn(1, 77, 32, generator=generator)
    with torch.no_grad():
        return unet(sample, 500, hidden).sample


@pytest.fixture(scope="module")
def full_run(tiny_model: Path, train_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    config = small_config(
        tiny_model,
        train_dataset,
        tmp_path_factory.mktemp("runs"),
        network={"type": "full"},
        train={"unet_lr": 1e-4, "optimizer": "adafactor"},
        save={"precision": "fp32"},
        output={"name": "ft"},
    )
    run_dir = create_run_dir(config)
    trainer = controlled_trainer(config, run_dir)
    result = trainer.run()
    return config, trainer, result, run_dir


def test_every_weight_trains_and_each_epoch_is_a_checkpoint_file(full_run, tiny_model: Path) -> None:
    _, trainer, result, run_dir = full_run
    assert result.state == "done"
    files = sorted((run_dir / "lora").glob("*.safetensors"))
    assert [path.name for path in files] == ["ft-e001.safetensors", "ft-e002.safetensors"]
    with safe_open(str(files[-1]), framework="pt") as handle:
        keys, metadata = list(handle.keys()), handle.metadata()
    assert any(key.startswith("model.diffusion_model.input_blocks.") for key in keys)
    assert any(key.startswith("first_stage_model.") for key in keys)
    assert any(key.startswith("cond_stage_model.transformer.text_model.") for key in keys)
    assert not any("lora" in key for key in keys)
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1" and metadata["ss_epoch"] == "2"
    base = load(tiny_model).unet
    trained = trainer.accelerator.unwrap_model(trainer.models.unet_train)
    moved = [
        name for name, param in trained.named_parameters() if not torch.equal(param, base.get_parameter(name))
    ]
    assert len(moved) == len(list(base.parameters()))  # every weight moved, not a few adapters
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert ("full fine-tune of" in log and "Adafactor" in log) or "full fine-tune of" in log


def test_diffusers_single_file_loader_reproduces_the_trained_unet(full_run, tiny_model: Path) -> None:
    from diffusers import StableDiffusionPipeline

    _, trainer, result, _ = full_run
    pipe = StableDiffusionPipeline.from_single_file(
        str(result.lora), config=str(tiny_model), local_files_only=True, safety_checker=None
    )
    trained = trainer.accelerator.unwrap_model(trainer.models.unet_train).cpu().float()
    assert torch.allclose(unet_output(pipe.unet), unet_output(trained), atol=1e-5)
    assert not torch.allclose(unet_output(pipe.unet), unet_output(load(tiny_model).unet), atol=1e-5)


def test_a_cancelled_full_fine_tune_resumes_to_the_uninterrupted_losses(make_config) -> None:
    def config(name: str):
        return make_config(
            network={"type": "full"}, train={"max_steps": 4, "unet_lr": 1e-4}, output={"name": name}
        )

    assert_resume_matches(config, steps=4)


def test_tec_measures_how_far_the_fine_tune_moved_its_text_encoder(full_run, tiny_model: Path) -> None:
    from kiln.engine.tec.meter import ProbeOptions, checkpoint_tec_report

    _, _, result, _ = full_run
    report = checkpoint_tec_report(
        result.lora, tiny_model, ProbeOptions(words=tuple("abcdefgh"), words_source="letters")
    )
    assert report.score > 0


def test_the_full_network_refuses_nothing_the_lora_path_needs(make_config, tmp_path: Path) -> None:
    trainer = Trainer(make_config(network={"type": "full", "train_text_encoder": False}), tmp_path / "run")
    try:
        trainer.setup()
        assert trainer.models.full and not trainer.models.train_te
        assert trainer.models.unet_targets == [] and len(trainer.models.unet_params) > 100
    finally:
        trainer.close()


def test_kiln_tec_run_measures_each_epochs_checkpoint(full_run) -> None:
    from kiln.engine.runs.tec_series import run_tec_series, tec_run
    from kiln.engine.tec.meter import ProbeOptions

    _, _, _, run_dir = full_run
    assert tec_run(run_dir).problem == ""
    series = run_tec_series(run_dir, options=ProbeOptions(words=tuple("abcdefgh"), words_source="letters"))
    assert [entry.epoch for entry in series] == [1, 2]
    assert all(entry.text_encoder and entry.report.score > 0 for entry in series)


def test_an_sdxl_full_fine_tune_saves_an_sgm_checkpoint_kiln_loads_back(make_config, tiny_sdxl: Path) -> None:
    from kiln.engine.models.family import SDXL, detect_family

    config = make_config(
        model={"base": str(tiny_sdxl)},
        network={"type": "full", "train_text_encoder": False},
        train={"max_steps": 2, "unet_lr": 1e-4},
        save={"precision": "fp32"},
    )
    run_dir = create_run_dir(config)
    trainer = controlled_trainer(config, run_dir)
    result = trainer.run()
    assert result.state == "done" and detect_family(result.lora) is SDXL
    with safe_open(str(result.lora), framework="pt") as handle:
        assert handle.metadata()["modelspec.architecture"] == "stable-diffusion-xl-v1-base"
    loaded = SDXL.load(result.lora)
    trained = trainer.accelerator.unwrap_model(trainer.models.unet_train)
    generator = torch.Generator().manual_seed(0)
    sample, hidden = torch.randn(1, 4, 8, 8, generator=generator), torch.randn(1, 77, 96, generator=generator)
    added = {
        "text_embeds": torch.randn(1, 64, generator=generator),
        "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]]),
    }
    with torch.no_grad():
        ours = trained(sample, 500, hidden, added_cond_kwargs=added).sample
        theirs = loaded.unet(sample, 500, hidden, added_cond_kwargs=added).sample
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_with_ema_the_checkpoint_holds_the_average_and_resume_keeps_it(make_config, tiny_model: Path) -> None:
    from diffusers import StableDiffusionPipeline

    def config(name: str, steps: int = 4):
        return make_config(
            network={"type": "full", "train_text_encoder": False},
            train={"max_steps": steps, "unet_lr": 1e-3, "ema_decay": 0.5},
            save={"precision": "fp32"},
            output={"name": name},
        )

    reference = config("reference")
    trainer = controlled_trainer(reference, create_run_dir(reference))
    result = trainer.run()
    saved = StableDiffusionPipeline.from_single_file(
        str(result.lora), config=str(tiny_model), local_files_only=True, safety_checker=None
    ).unet
    live = trainer.accelerator.unwrap_model(trainer.models.unet_train)
    assert not torch.allclose(unet_output(saved), unet_output(live), atol=1e-6)
    with trainer.average.applied():
        assert torch.allclose(unet_output(saved), unet_output(live), atol=1e-5)
    # Cancelled after step 2 and resumed: the same average at the end.
    interrupted = config("interrupted")
    run_dir = create_run_dir(interrupted)
    stopping = controlled_trainer(interrupted, run_dir)
    stopping.add_listener(
        lambda event: event["type"] == "step" and event["step"] == 2 and stopping.request_stop()
    )
    assert stopping.run().state == "cancelled"
    resume_run(run_dir, detach=False)
    resumed = StableDiffusionPipeline.from_single_file(
        str(sorted((run_dir / "lora").glob("*.safetensors"))[-1]),
        config=str(tiny_model),
        local_files_only=True,
        safety_checker=None,
    ).unet
    assert torch.allclose(unet_output(resumed), unet_output(saved), atol=1e-5)


def test_ema_outside_a_full_fine_tune_is_refused_by_key(make_config) -> None:
    from kiln.engine.errors import ConfigError

    with pytest.raises(ConfigError, match=r'train\.ema_decay = 0\.999 .* set network\.type = "full"'):
        make_config(train={"ema_decay": 0.999})


def test_a_diffusers_folder_copy_loads_with_the_trained_unet(make_config, tiny_model: Path) -> None:
    from diffusers import StableDiffusionPipeline

    config = make_config(
        network={"type": "full"}, train={"max_steps": 2, "unet_lr": 1e-3}, save={"diffusers_folder": True}
    )
    run_dir = create_run_dir(config)
    trainer = controlled_trainer(config, run_dir)
    result = trainer.run()
    folder = result.lora.with_suffix("")
    assert (folder / "model_index.json").is_file() and not list(run_dir.glob("lora/.*.tmp"))
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None)
    trained = trainer.accelerator.unwrap_model(trainer.models.unet_train)
    assert torch.allclose(unet_output(pipe.unet), unet_output(trained), atol=1e-5)
    # The text encoder keeps its standard text_model names (transformers 4 and Kohya read them).
    with safe_open(str(folder / "text_encoder" / "model.safetensors"), framework="pt") as handle:
        assert all(key.startswith("text_model.") for key in handle.keys())  # noqa: SIM118
