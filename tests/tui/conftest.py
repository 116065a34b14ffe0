"""Fixtures for Pilot and snapshot tests: a private copy of sample_data and a ready app."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from kiln.tui.app import KilnApp

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.fixture
def sample_copy(tmp_path: Path) -> Path:
    """A copy of sample_data/ without Kiln state, so tests never touch the repo's files."""
    target = tmp_path / "data"
    shutil.copytree(SAMPLE, target, ignore=shutil.ignore_patterns(".kiln"))
    return target


@pytest.fixture(scope="session")
def analysed_sample(tmp_path_factory) -> Path:
    """sample_data analysed once per session (the template for ``analysed_copy``)."""
    from kiln.engine.analysis.run import analyse_dataset
    from kiln.engine.analysis.tones import DEFAULT_METHOD
    from kiln.engine.dataset.scan import scan_dataset
    from kiln.engine.dataset.store import Store

    target = tmp_path_factory.mktemp("analysed") / "data"
    shutil.copytree(SAMPLE, target, ignore=shutil.ignore_patterns(".kiln"))
    with Store(target) as store:
        analyse_dataset(scan_dataset(target), store, DEFAULT_METHOD, workers=1)
    return target


@pytest.fixture
def analysed_copy(analysed_sample: Path, tmp_path: Path) -> Path:
    """A private copy of sample_data whose analysis cache is filled: the app starts measured,
    with no analysis pool to wait for. copytree keeps mtimes, so the cache stays valid."""
    target = tmp_path / "data"
    shutil.copytree(analysed_sample, target)
    return target


def add_small_duplicate(root: Path) -> str:
    """Add a shrunken copy of pot_05: a near-duplicate that is also too small to train at 512.

    The sample images themselves are big enough and distinct, so tests that need these flags
    make them. Returns the new image's relative path.
    """
    from PIL import Image

    source = root / "10_kilnpot" / "pot_05.jpg"
    with Image.open(source) as image:
        image.resize((400, 500), Image.Resampling.LANCZOS).save(
            root / "10_kilnpot" / "pot_05_small.jpg", quality=92
        )
    return "10_kilnpot/pot_05_small.jpg"


def make_app(path: Path, **kwargs) -> KilnApp:
    """The app as tests drive it: no terminal images, no watcher unless asked."""
    kwargs.setdefault("images", "none")
    kwargs.setdefault("watch", False)
    return KilnApp(path, **kwargs)


async def wait_for(pilot, condition, timeout: float = 5.0) -> None:
    """Let the app run until ``condition()`` holds (workers and watchers are asynchronous)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


async def analysed(pilot) -> None:
    """Wait until every image of the app's dataset is measured and its quality judged.

    The judgement (flags, duplicates) runs in a worker after the analyses arrive; waiting for
    it keeps snapshots of the status column deterministic.
    """
    curation = pilot.app.curation
    await wait_for(pilot, lambda: not curation.pending())
    await wait_for(pilot, lambda: len(curation.quality.images) == len(curation.quality_metrics()))
    await pilot.pause()


async def ready(pilot) -> None:
    """Wait until every image is measured and the caption editor counts CLIP tokens."""
    from kiln.tui.widgets.caption_editor import CaptionEditor

    await analysed(pilot)
    editors = pilot.app.screen.query(CaptionEditor)
    await wait_for(pilot, lambda: all(editor.tokens_ready for editor in editors))
    await pilot.pause()


@pytest.fixture
def tec_dir(tmp_path: Path, tiny_folder: Path, letters_file: Path, monkeypatch) -> Path:
    """The working folder of a TEC session: an empty dataset ``data/``, the tiny model ``tiny/``, a
    noisy copy of it ``noisy/`` and ``letters.txt`` (single-token words for the tiny tokenizer).

    It is the current folder, so the form takes these short relative paths, as a user typing
    them would, and screenshots do not show the temporary folder's name.
    """
    from tests.tinytec import folder_variant, with_noise

    (tmp_path / "data").mkdir()
    shutil.copytree(tiny_folder, tmp_path / "tiny")
    folder_variant(tiny_folder, tmp_path / "noisy", with_noise(0.05))
    shutil.copy(letters_file, tmp_path / "letters.txt")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_tec_run(root: Path, tiny_encoder, base: Path, name: str = "20261126-101500-pot") -> Path:
    """A run folder under ``root/runs`` with two saved epochs whose text-encoder adapters grow."""
    from tests.tinytec import write_epoch

    run = root / "runs" / name
    write_epoch(run / "lora" / "pot-e001.safetensors", tiny_encoder, 0.06, epoch=1)
    write_epoch(run / "lora" / "pot-e002.safetensors", tiny_encoder, 0.15, epoch=2)
    (run / "config.toml").write_text(f'[model]\nbase = "{base}"\n', encoding="utf-8")
    return run
