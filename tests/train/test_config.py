"""The training config: defaults, round trip, and one-line errors naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kiln.engine.errors import ConfigError
from kiln.engine.train.config import (
    TrainConfig,
    all_keys,
    apply_overrides,
    config_from_mapping,
    load_config,
    parse_override,
    require_paths,
    resolved_toml,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_default_config_round_trips_through_its_toml(tmp_path: Path) -> None:
    text = resolved_toml(TrainConfig(), comments=True)
    assert load_config(write(tmp_path, text)) == TrainConfig()
    for key in all_keys():
        assert f"\n{key.split('.')[1]} = " in text


def test_guide_defaults_text_encoder_lr_is_a_fifth_of_unet_lr() -> None:
    config = config_from_mapping({"train": {"unet_lr": 3e-4}})
    assert config.text_encoder_lr == pytest.approx(6e-5)
    explicit = config_from_mapping({"train": {"unet_lr": 3e-4, "text_encoder_lr": 1e-5}})
    assert explicit.text_encoder_lr == 1e-5


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[model]\nbase = "models/sd15"\n[dataset]\npath = "data"\n'))
    assert config.model.base == str(tmp_path / "models" / "sd15")
    assert config.dataset.path == str(tmp_path / "data")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[train]\nlearning_rate = 1e-4\n",
            "unknown key train.learning_rate (Kohya's learning_rate is train.unet_lr",
        ),
        ("[train]\nunet_lrr = 1e-4\n", "unknown key train.unet_lrr; did you mean train.unet_lr?"),
        ("[trian]\nepochs = 3\n", "unknown key trian; did you mean train?"),
        ('[train]\nepochs = "ten"\n', 'train.epochs = "ten": must be a whole number'),
        ("[train]\nepochs = 0\n", "train.epochs = 0: must be at least 1"),
        ("[train]\nunet_lr = -1\n", "train.unet_lr = -1.0: must be above 0"),
        ('[train]\nprecision = "fp8"\n', 'train.precision = "fp8": must be one of fp32, fp16, bf16'),
        ("[train]\nbatch_size = 1.5\n", "train.batch_size = 1.5: must be a whole number"),
        ("[network]\ntrain_text_encoder = 1\n", "network.train_text_encoder = 1: must be true or false"),
        ("[dataset]\nresolution = 500\n", "dataset.resolution = 500: must be a multiple of 8"),
        (
            "[dataset]\ncaption_dropout_rate = 2\n",
            "dataset.caption_dropout_rate = 2.0: must be between 0 and 1",
        ),
        ("[sample]\nprompts = [1, 2]\n", "sample.prompts = [1, 2]: must be a list of strings"),
        ('[output]\nname = "a/b"\n', "output.name = 'a/b': must be a plain file name"),
        ("train = 3\n", "train must be a table"),
        ('[train]\noptimizer = "adamw8bit"\n', "needs bitsandbytes"),
        ("[dataset]\nresolution = 2048\n", "dataset.resolution = 2048 must lie between"),
        ("[train\n", "not valid TOML"),
    ],
)
def test_bad_configs_give_one_line_errors_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = str(caught.value)
    assert message in error and str(path) in error and "\n" not in error


def test_missing_file_says_how_to_write_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("kiln train --print-config")):
        load_config(tmp_path / "nope.toml")


def test_required_paths_are_checked_before_a_run() -> None:
    with pytest.raises(ConfigError, match=re.escape("model.base is required")):
        require_paths(TrainConfig())


def test_overrides_are_checked_like_the_file() -> None:
    key, value = parse_override("train.unet_lr=3e-4")
    assert (key, value) == ("train.unet_lr", 3e-4)
    assert parse_override("output.name=plain words") == ("output.name", "plain words")
    config = apply_overrides(TrainConfig(), {"train.unet_lr": 3e-4, "train.max_steps": 800})
    assert config.train.unet_lr == 3e-4 and config.train.max_steps == 800
    with pytest.raises(ConfigError, match=re.escape("unknown key train.nope")):
        apply_overrides(TrainConfig(), {"train.nope": 1})
    with pytest.raises(ConfigError, match=re.escape("write KEY=VALUE")):
        parse_override("train.unet_lr")
