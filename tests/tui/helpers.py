"""Helpers for Pilot and snapshot tests: the app as tests drive it, waits, and dataset/run makers."""

from __future__ import annotations

import time
from pathlib import Path

from kiln.tui.app import KilnApp


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


async def wait_for(pilot, condition, timeout: float = 20.0) -> None:
    """Let the app run until ``condition()`` holds (workers and watchers are asynchronous).

    The timeout only bounds a failing test: a loaded 2-core CI machine can take seconds
    where a quiet one takes milliseconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


async def workers_idle(pilot) -> None:
    """Wait until no worker of the app is pending or running (what a snapshot must wait for)."""
    from textual.worker import WorkerState

    busy = (WorkerState.PENDING, WorkerState.RUNNING)
    await wait_for(pilot, lambda: not any(worker.state in busy for worker in pilot.app.workers))


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


def write_tec_run(root: Path, tiny_encoder, base: Path, name: str = "20261126-101500-pot") -> Path:
    """A run folder under ``root/runs`` with two saved epochs whose text-encoder adapters grow."""
    from tests.tinytec import write_epoch

    run = root / "runs" / name
    write_epoch(run / "lora" / "pot-e001.safetensors", tiny_encoder, 0.06, epoch=1)
    write_epoch(run / "lora" / "pot-e002.safetensors", tiny_encoder, 0.15, epoch=2)
    (run / "config.toml").write_text(f'[model]\nbase = "{base}"\n', encoding="utf-8")
    return run
