"""Fixtures for training tests: the tiny model (folder and single file) and a small dataset, built once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from kiln.engine.train.config import TrainConfig
from PIL import Image

from tests.train.helpers import small_config

# The tiny model's ops are microseconds long; extra threads only add contention on 2 cores.
torch.set_num_threads(1)

# (folder, name, size): four buckets at 64 px with 32 px steps, one image without a caption.
DATASET_IMAGES = [
    ("3_pot", "wide.png", (96, 32)),
    ("3_pot", "tall.png", (32, 96)),
    ("3_pot", "square.png", (64, 64)),
    ("3_pot", "photo.jpg", (80, 64)),
    ("2_hill", "a.png", (64, 64)),
    ("2_hill", "b.png", (128, 40)),
    ("loose", "skipped.png", (64, 64)),
]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline as a diffusers folder."""
    from kiln.engine.models.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_single_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same pipeline as one LDM-layout .safetensors file."""
    from kiln.engine.models.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny.safetensors", single_file=True)


@pytest.fixture(scope="session")
def train_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Kohya dataset with several buckets, captions, and a folder Kohya skips."""
    root = tmp_path_factory.mktemp("train") / "data"
    rng = np.random.default_rng(7)
    for index, (folder, name, (width, height)) in enumerate(DATASET_IMAGES):
        path = root / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        pixels = np.clip(gradient + rng.normal(0, 30, (height, width, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path)
        if name != "a.png":
            path.with_suffix(".txt").write_text(
                f"{folder.split('_')[-1]}, tag{index}, colour", encoding="utf-8"
            )
    return root


@pytest.fixture
def make_config(tiny_model: Path, train_dataset: Path, tmp_path: Path) -> Callable[..., TrainConfig]:
    """A small config on the tiny model and dataset; keyword tables override it."""

    def build(**tables: dict[str, Any]) -> TrainConfig:
        return small_config(tiny_model, train_dataset, tmp_path / "runs", **tables)

    return build
