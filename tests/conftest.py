"""Shared fixtures: images with known shares, Kohya-layout datasets, no network ever."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# No test may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def share_image(white_percent: float, size: tuple[int, int] = (100, 100), mode: str = "L") -> Image.Image:
    """An image whose first ``white_percent`` of pixels (row-major) are white, the rest black."""
    width, height = size
    total = width * height
    white = round(total * white_percent / 100)
    flat = np.zeros(total, dtype=np.uint8)
    flat[:white] = 255
    image = Image.fromarray(flat.reshape(height, width), "L")
    return image.convert(mode) if mode != "L" else image


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Build a Kohya dataset: ``{"10_cat/a.png": 30.0, ...}`` (white %) plus optional captions."""

    def build(
        images: dict[str, float], captions: dict[str, str] | None = None, root: Path | None = None
    ) -> Path:
        base = root or tmp_path / "data"
        for rel_path, white in images.items():
            path = base / rel_path
            path.parent.mkdir(parents=True, exist_ok=True)
            share_image(white).convert("RGB").save(path)
        for rel_path, text in (captions or {}).items():
            path = base / rel_path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return base

    return build


@pytest.fixture
def guide_dataset(make_dataset: Callable[..., Path]) -> Path:
    """The guide's worked example: five images at 30/5/40/55/15 %W."""
    return make_dataset(
        {f"15_example/{index}.png": white for index, white in enumerate([30, 5, 40, 55, 15], start=1)}
    )
