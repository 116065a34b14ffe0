"""Shared fixtures: images with known shares, Kohya-layout datasets, no network ever."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.imagegen import share_image

# No test may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# The memory probe runs a few steps before each run; only its own tests need it.
os.environ.setdefault("KILN_NO_MEMORY_PROBE", "1")


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


# The tiny SD 1.5-shaped model, built once per session and shared by the TEC engine and TUI
# tests (builders of its variants: tests/tinytec.py). Heavy imports stay inside the fixtures.


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline as a diffusers folder."""
    from kiln.engine.models.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tec-models") / "tiny")


@pytest.fixture(scope="session")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same pipeline as one LDM-layout .safetensors file."""
    from kiln.engine.models.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tec-models") / "tiny.safetensors", single_file=True)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_folder: Path):
    """The tiny text encoder, loaded once (tests copy it before changing it)."""
    from kiln.engine.tec.loading import load_text_encoder

    return load_text_encoder(tiny_folder)


@pytest.fixture(scope="session")
def letters_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A --words file of single-token words for the tiny tokenizer, with a comment and a blank line."""
    from tests.tinytec import LETTERS

    path = tmp_path_factory.mktemp("tec-words") / "letters.txt"
    path.write_text("# letters and digits\n" + "\n".join(LETTERS) + "\n\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SDXL pipeline as a diffusers folder."""
    from kiln.engine.models.tiny_sdxl import write_tiny_sdxl_model

    return write_tiny_sdxl_model(tmp_path_factory.mktemp("models") / "tiny-sdxl")


@pytest.fixture(scope="session")
def tiny_sdxl_single_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same SDXL pipeline as one SGM-layout .safetensors file."""
    from kiln.engine.models.tiny_sdxl import write_tiny_sdxl_model

    return write_tiny_sdxl_model(
        tmp_path_factory.mktemp("models") / "tiny-sdxl.safetensors", single_file=True
    )
