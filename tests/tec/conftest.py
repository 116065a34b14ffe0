"""Fixtures for the TEC meter: the tiny model (folder and single file) and variants of its text encoder."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from engine.models.ldm_keys import CLIP_OLD_PREFIX, CLIP_PREFIX, clip_key_from_ldm

# The tiny model's ops are microseconds long; extra threads only add contention on 2 cores.
torch.set_num_threads(1)

# Every one of these is a single token in the tiny byte-level tokenizer ("a</w>"...).
LETTERS = tuple("abcdefghijklmnopqrstuvwxyz0123456789")

Transform = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline as a diffusers folder."""
    from engine.models.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tec-models") / "tiny")


@pytest.fixture(scope="session")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same pipeline as one LDM-layout .safetensors file."""
    from engine.models.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tec-models") / "tiny.safetensors", single_file=True)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_folder: Path):
    """The tiny text encoder, loaded once (tests copy it before changing it)."""
    from engine.tec.loading import load_text_encoder

    return load_text_encoder(tiny_folder)


@pytest.fixture(scope="session")
def letters_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A --words file of single-token words for the tiny tokenizer, with a comment and a blank line."""
    path = tmp_path_factory.mktemp("tec-words") / "letters.txt"
    path.write_text("# letters and digits\n" + "\n".join(LETTERS) + "\n\n", encoding="utf-8")
    return path


def folder_variant(source: Path, out: Path, transform: Transform, nested: bool = False) -> Path:
    """A copy of a diffusers folder whose text-encoder weights went through ``transform`` (bare names).

    ``nested`` writes the keys with the ``text_model.`` level, as transformers < 5.6 saved them.
    """
    shutil.copytree(source, out)
    weights = out / "text_encoder" / "model.safetensors"
    with safe_open(str(weights), framework="pt") as handle:
        bare = {key.removeprefix("text_model."): handle.get_tensor(key) for key in list(handle.keys())}
        metadata = handle.metadata()
    changed = transform(bare)
    prefix = "text_model." if nested else ""
    save_file({prefix + key: value.contiguous() for key, value in changed.items()}, str(weights), metadata)
    return out


def file_variant(source: Path, out: Path, transform: Transform, old_layout: bool = False) -> Path:
    """A copy of a single file whose CLIP tensors went through ``transform`` (bare names).

    ``old_layout`` writes them under ``cond_stage_model.transformer.*`` (no ``text_model``).
    """
    with safe_open(str(source), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in list(handle.keys())}
        metadata = handle.metadata()
    bare = {name: tensors.pop(key) for key in list(tensors) if (name := clip_key_from_ldm(key)) is not None}
    prefix = CLIP_OLD_PREFIX if old_layout else CLIP_PREFIX
    tensors.update({prefix + key: value for key, value in transform(bare).items()})
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(out), metadata)
    return out


def with_noise(scale: float, seed: int = 3) -> Transform:
    """Add ``scale`` x (each tensor's RMS) x Gaussian noise, the same draw for every scale."""

    def transform(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        out = {}
        for key in sorted(state):
            value = state[key]
            if not value.is_floating_point():
                out[key] = value
                continue
            noise = torch.randn(value.shape, generator=generator)
            out[key] = value + scale * value.float().pow(2).mean().sqrt() * noise
        return out

    return transform


def swapped_rows(first: int, second: int) -> Transform:
    """Swap two rows of the token embedding: each token now means the other."""

    def transform(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(state)
        table = state["embeddings.token_embedding.weight"].clone()
        table[[first, second]] = table[[second, first]]
        out["embeddings.token_embedding.weight"] = table
        return out

    return transform


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    """Run ``kiln tec ... --json`` in-process and parse its output."""
    from engine.cli import main

    assert main(["tec", *args, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)
