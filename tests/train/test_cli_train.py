"""``kiln train`` and ``kiln tiny-model`` as a user runs them: demo, print-config, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kiln.engine.train.config import TrainConfig, load_config

from kiln import engine

REPO = Path(engine.__file__).resolve().parent.parent


def kiln(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "kiln.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=600,
    )


@pytest.mark.slow
def test_demo_trains_the_tiny_model_on_sample_data(tmp_path: Path) -> None:
    result = kiln(
        "train",
        "--demo",
        "--output",
        str(tmp_path / "runs"),
        "--set",
        "train.max_steps=6",
        "--quiet",
        env={"XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path / "runs" and run_dir.name.endswith("-demo")
    assert (tmp_path / "cache" / "kiln" / "tiny-sd15" / "model_index.json").is_file()
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    kinds = [event["type"] for event in events]
    assert kinds.count("step") == 6 and kinds[-1] == "done"
    assert (run_dir / "lora" / "demo-e001.safetensors").is_file()
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["e000", "e001"]
    assert "Traceback" not in result.stderr and "torchvision" not in result.stderr


def test_print_config_is_a_loadable_default_config(tmp_path: Path) -> None:
    result = kiln("train", "--print-config")
    assert result.returncode == 0
    path = tmp_path / "run.toml"
    path.write_text(result.stdout)
    assert load_config(path) == TrainConfig()


def test_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[train]\nnetwork_dim = 32\n")
    result = kiln("train", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "train.network_dim (Kohya's network_dim is network.rank in Kiln)" in result.stderr


def test_pickled_base_model_exits_1_before_a_run_folder_exists(tmp_path: Path, train_dataset: Path) -> None:
    model = tmp_path / "model.ckpt"
    model.write_bytes(b"not really")
    path = tmp_path / "run.toml"
    runs = tmp_path / "runs"
    path.write_text(
        f'[model]\nbase = "{model}"\n[dataset]\npath = "{train_dataset}"\n[output]\ndir = "{runs}"\n'
    )
    result = kiln("train", str(path))
    assert result.returncode == 1 and "--allow-pickle" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_tiny_model_command_writes_both_layouts(tmp_path: Path) -> None:
    folder = kiln("tiny-model", str(tmp_path / "tiny"), "--json")
    assert folder.returncode == 0, folder.stderr
    assert json.loads(folder.stdout)["path"] == str(tmp_path / "tiny")
    assert (tmp_path / "tiny" / "unet" / "config.json").is_file()
    single = kiln("tiny-model", str(tmp_path / "tiny.safetensors"), "--single-file")
    assert single.returncode == 0 and (tmp_path / "tiny.safetensors").stat().st_size > 1_000_000


@pytest.mark.slow
def test_the_sdxl_demo_trains_the_tiny_sdxl_on_sample_data(tmp_path: Path) -> None:
    result = kiln(
        "train",
        "--demo",
        "--family",
        "sdxl",
        "--output",
        str(tmp_path / "runs"),
        "--set",
        "train.max_steps=4",
        "--quiet",
        env={"XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert (tmp_path / "cache" / "kiln" / "tiny-sdxl" / "model_index.json").is_file()
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    start = next(event for event in events if event["type"] == "start")
    assert start["family"] == "sdxl" and events[-1]["type"] == "done"
    from kiln.engine.train.lora_io import read_lora

    tensors, meta = read_lora(run_dir / "lora" / "demo-e001.safetensors")
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert any(key.startswith("lora_te2_") for key in tensors)


@pytest.mark.slow
def test_tiny_model_command_writes_the_sdxl_family(tmp_path: Path) -> None:
    from kiln.engine.models.family import SDXL, detect_family

    folder = kiln("tiny-model", str(tmp_path / "xl"), "--family", "sdxl", "--json")
    assert folder.returncode == 0, folder.stderr
    assert json.loads(folder.stdout)["family"] == "sdxl"
    assert (tmp_path / "xl" / "text_encoder_2" / "config.json").is_file()
    assert (tmp_path / "xl" / "tokenizer_2" / "tokenizer_config.json").is_file()
    single = kiln("tiny-model", str(tmp_path / "xl.safetensors"), "--family", "sdxl", "--single-file")
    assert single.returncode == 0, single.stderr
    assert detect_family(tmp_path / "xl") is SDXL and detect_family(tmp_path / "xl.safetensors") is SDXL
