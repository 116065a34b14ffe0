"""Folding events into a run's history: the loss curve, resumes, samples, a replaced file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kiln.engine.runs.events import EVENTS_FILE
from kiln.engine.runs.feed import RunFeed, RunHistory, smoothed


def ev(kind: str, **fields) -> dict:
    return {"t": 1.0, "type": kind, **fields}


def test_smoothing_starts_at_the_first_value_and_lags_a_jump() -> None:
    curve = smoothed([1.0, 1.0, 1.0, 0.0, 0.0], weight=0.5)
    assert curve[0] == pytest.approx(1.0)
    assert curve[2] == pytest.approx(1.0)
    assert 0.0 < curve[3] < 1.0 and curve[4] < curve[3]
    assert smoothed([]) == []


def test_history_keeps_curve_epochs_samples_checkpoints_and_end() -> None:
    history = RunHistory()
    history.add(
        [
            ev("start", total=4),
            ev("sample", epoch=0, files=["s/e000/00.png"], prompts=[{"prompt": "pot", "seed": 1}]),
            ev("step", step=1, loss=0.5, lr=1e-4, lr_te=2e-5),
            ev("step", step=2, loss=0.3, lr=1e-4),
            ev("epoch", epoch=1, loss=0.4),
            ev("checkpoint", epoch=1, step=2, path="lora/a-e001.safetensors"),
            ev("warning", message="careful"),
            ev("sample", epoch=1, files=["s/e001/00.png"]),
            ev("done", step=2),
        ]
    )
    assert history.steps == [1, 2] and history.losses == [0.5, 0.3]
    assert history.lr == 1e-4 and history.lr_te == 2e-5
    assert history.epoch_losses == {1: 0.4}
    assert history.samples == {0: ["s/e000/00.png"], 1: ["s/e001/00.png"]}
    assert history.latest_sample_epoch() == 1
    assert history.prompts[0]["prompt"] == "pot"
    assert history.checkpoints[0].path.endswith("e001.safetensors")
    assert history.warnings == ["careful"]
    assert history.end["type"] == "done" and history.last["type"] == "done"


def test_resume_from_an_earlier_step_replaces_the_later_steps() -> None:
    history = RunHistory()
    history.add([ev("start"), *(ev("step", step=i, loss=1.0 / i, lr=1.0) for i in range(1, 6))])
    history.add([ev("cancelled", step=5)])
    assert history.end is not None
    history.add([ev("start"), ev("step", step=4, loss=0.9, lr=1.0)])
    assert history.end is None
    assert history.steps == [1, 2, 3, 4] and history.losses[-1] == 0.9


def test_feed_rebuilds_history_when_the_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / EVENTS_FILE
    path.write_text("".join(json.dumps(ev("step", step=i, loss=1.0)) + "\n" for i in range(1, 4)))
    feed = RunFeed(tmp_path)
    feed.poll()
    assert feed.history.steps == [1, 2, 3]
    path.write_text(json.dumps(ev("step", step=1, loss=0.2)) + "\n")
    read = feed.poll()
    assert read.restarted and feed.history.steps == [1] and feed.history.losses == [0.2]


def test_a_lora_rewritten_by_cancel_resume_cancel_done_is_listed_once() -> None:
    """Cancelling twice within epoch 1 and then finishing it writes ``a-e001`` three times."""
    path = "lora/a-e001.safetensors"
    history = RunHistory()
    history.add([ev("start", total=6), ev("step", step=1, loss=0.5, lr=1.0)])
    history.add([ev("checkpoint", epoch=1, step=1, path=path), ev("cancelled", step=1)])
    history.add([ev("resumed", step=1), ev("step", step=2, loss=0.4, lr=1.0)])
    history.add([ev("checkpoint", epoch=1, step=2, path=path), ev("cancelled", step=2)])
    history.add([ev("resumed", step=2), ev("step", step=3, loss=0.3, lr=1.0)])
    history.add([ev("checkpoint", epoch=1, step=3, path=path)])
    history.add([ev("checkpoint", epoch=2, step=6, path="lora/a-e002.safetensors"), ev("done", step=6)])
    assert [(c.path, c.step) for c in history.checkpoints] == [(path, 3), ("lora/a-e002.safetensors", 6)]
