"""Helpers for training tests: the small config every tiny run starts from, one run start to
end, and the resume check (cancel mid-run, resume, compare with an uninterrupted run)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kiln.engine.runs.control import controlled_trainer
from kiln.engine.runs.events import read_events
from kiln.engine.runs.layout import create_run_dir
from kiln.engine.train.config import TrainConfig, config_from_mapping


def small_config(base: Path, data: Path, runs: Path, /, **tables: dict[str, Any]) -> TrainConfig:
    """The tiny-model config: 64 px buckets in 32 px steps, rank 4, two epochs of batch 2 in
    fp32; keyword tables override it (``train={"max_steps": 5}``)."""
    mapping: dict[str, dict[str, Any]] = {
        "model": {"base": str(base)},
        "dataset": {
            "path": str(data),
            "resolution": 64,
            "min_bucket_reso": 32,
            "max_bucket_reso": 128,
            "bucket_reso_steps": 32,
        },
        "network": {"rank": 4, "alpha": 2.0},
        "train": {"epochs": 2, "batch_size": 2, "precision": "fp32", "unet_lr": 1e-3},
        "output": {"dir": str(runs), "name": "test"},
    }
    for table, values in tables.items():
        mapping.setdefault(table, {}).update(values)
    return config_from_mapping(mapping, source="test")


def train(config: TrainConfig) -> tuple[Any, list[dict]]:
    """One run in this process, start to end: ``(result, events)``."""
    run_dir = create_run_dir(config)
    result = controlled_trainer(config, run_dir).run()
    return result, read_events(run_dir)


def step_losses(run_dir: Path) -> dict[int, float]:
    """Each step's loss, the last one written per step (a resumed run rewrites none)."""
    return {event["step"]: event["loss"] for event in read_events(run_dir) if event["type"] == "step"}


def assert_resume_matches(config_named: Callable[[str], TrainConfig], steps: int, stop_at: int = 2) -> Any:
    """A run cancelled after step ``stop_at`` and resumed ends with the losses of an
    uninterrupted run of the same config (``config_named(output name)``); returns the trainer
    that was cancelled (its resume state is what the resume read)."""
    from kiln.engine.runs.folders import resume_run

    reference, _ = train(config_named("reference"))
    assert reference.state == "done"
    interrupted = config_named("interrupted")
    run_dir = create_run_dir(interrupted)
    trainer = controlled_trainer(interrupted, run_dir)
    trainer.add_listener(
        lambda event: event["type"] == "step" and event["step"] == stop_at and trainer.request_stop()
    )
    assert trainer.run().state == "cancelled"
    resume_run(run_dir, detach=False)
    expected = step_losses(reference.run_dir)
    losses = step_losses(run_dir)
    assert [losses[step] for step in range(1, steps + 1)] == pytest.approx(
        [expected[step] for step in range(1, steps + 1)], rel=1e-5
    )
    return trainer
