"""Fixtures for Pilot and snapshot tests: a private copy of sample_data and a ready app."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tui.app import KilnApp

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
    from engine.analysis.run import analyse_dataset
    from engine.analysis.tones import DEFAULT_METHOD
    from engine.dataset.scan import scan_dataset
    from engine.dataset.store import Store

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
    """Wait until every image of the app's dataset is measured."""
    await wait_for(pilot, lambda: not pilot.app.curation.pending())
    await pilot.pause()


async def ready(pilot) -> None:
    """Wait until every image is measured and the caption editor counts CLIP tokens."""
    from tui.widgets.caption_editor import CaptionEditor

    await analysed(pilot)
    editors = pilot.app.screen.query(CaptionEditor)
    await wait_for(pilot, lambda: all(editor.tokens_ready for editor in editors))
    await pilot.pause()
