"""Configs for runs started from the workbench: the plan's fields, caption prompts, the base model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from kiln.engine.errors import ConfigError
from kiln.engine.runs.newrun import (
    TEST_RUN_MAX_STEPS,
    caption_prompts,
    dataset_run_config,
    latest_base_model,
    plan_overrides,
    run_name,
    write_run_config,
)

from tests.runfolders import write_run

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.fixture
def sample_copy(tmp_path: Path) -> Path:
    """A private copy of sample_data/ (its captions are the prompts' source)."""
    target = tmp_path / "data"
    shutil.copytree(SAMPLE, target, ignore=shutil.ignore_patterns(".kiln"))
    return target


def test_plan_fields_become_config_keys_and_bad_ones_are_named() -> None:
    overrides, notes = plan_overrides(
        {
            "batch": "2",
            "epochs": "12",
            "grad_accumulation": "1",
            "resolution": "768",
            "unet_lr": "3e-4",
            "te_lr": "1/6",
        },
        precision="bf16",
        no_upscale=True,
        run="test",
    )
    assert overrides == {
        "train.batch_size": 2,
        "train.epochs": 12,
        "train.grad_accumulation": 1,
        "dataset.resolution": 768,
        "train.unet_lr": 3e-4,
        "train.text_encoder_lr_ratio": pytest.approx(1 / 6, abs=1e-6),
        "train.precision": "bf16",
        "dataset.bucket_no_upscale": True,
        "train.max_steps": TEST_RUN_MAX_STEPS,
    }
    assert notes == []
    overrides, notes = plan_overrides(
        {"batch": "two", "te_lr": "5e-5", "resolution": "512x768"}, precision="fp8"
    )
    assert overrides == {"train.text_encoder_lr": 5e-5}
    assert any("batch 'two'" in note for note in notes) and any("resolution" in note for note in notes)


def test_prompts_are_each_concepts_first_caption_with_fixed_seeds(sample_copy: Path) -> None:
    prompts = caption_prompts(sample_copy)
    assert len(prompts) == 2
    assert prompts[0].endswith("--d 1000") and prompts[1].endswith("--d 1001")
    first_pot = sorted((sample_copy / "10_kilnpot").glob("*.txt"))[0].read_text().strip()
    assert prompts[0].startswith(first_pot)


def test_dataset_config_has_defaults_the_plan_and_a_disk_cache(sample_copy: Path, tmp_path: Path) -> None:
    config = dataset_run_config(sample_copy, "~/models/sd15", "my run!", {"train.epochs": 12})
    assert config.dataset.path == str(sample_copy.resolve()) and config.train.epochs == 12
    assert config.output.name == "my-run" and config.train.cache_latents_to_disk
    assert config.model.base == str(Path("~/models/sd15").expanduser())
    path = write_run_config(sample_copy, config, now=0)
    assert path.parent == sample_copy / ".kiln" / "configs" and path.name.endswith("-my-run.toml")
    with pytest.raises(ConfigError, match=r"model\.base is required"):
        dataset_run_config(sample_copy, " ", "x")
    with pytest.raises(ConfigError, match=r"train\.unet_lr"):
        dataset_run_config(sample_copy, "/m", "x", {"train.unet_lr": -1.0})
    with pytest.raises(ConfigError, match="run name"):
        run_name("///")


def test_latest_base_model_is_the_first_run_naming_one(tmp_path: Path) -> None:
    newer = write_run(tmp_path, "b", stamp="20260302-000000")
    older = write_run(tmp_path, "a")
    (newer / "config.toml").write_text("not toml [")
    assert latest_base_model([newer, older]) == "/models/sd15"
    assert latest_base_model([]) is None
