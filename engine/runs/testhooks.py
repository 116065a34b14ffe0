"""Test hooks: environment variables that hold a training process at a chosen point, so a test
can signal or kill it exactly there. Unset in normal use, where each check is one lookup.

``KILN_TEST_HOLD_AT_STEP="STEP:FLAG"``: after optimizer step STEP, create FLAG and wait while
it exists and no stop was asked (the test deletes it, cancels, or kills the process).
``KILN_TEST_SAVE_PAUSE="STEP:FLAG"``: inside the resume-state save of STEP, after its payload
is written and before its manifest, create FLAG and sleep (the test kills the process there).
Run control installs both on every trainer it starts (:func:`install`).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

HOLD_ENV = "KILN_TEST_HOLD_AT_STEP"
SAVE_PAUSE_ENV = "KILN_TEST_SAVE_PAUSE"
LIMIT_S = 300.0


def _hook(name: str, step: int) -> Path | None:
    value = os.environ.get(name)
    if not value:
        return None
    target, _, flag = value.partition(":")
    return Path(flag) if flag and target.strip() == str(step) else None


def hold_after_step(step: int, stop: threading.Event) -> None:
    """Wait at ``step`` while the hold's flag file exists and no stop was requested."""
    flag = _hook(HOLD_ENV, step)
    if flag is None:
        return
    flag.write_text(str(os.getpid()), encoding="utf-8")
    deadline = time.monotonic() + LIMIT_S
    while flag.exists() and not stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)


def pause_in_save(step: int) -> None:
    """Sleep inside the save of ``step`` (the test kills the process meanwhile)."""
    flag = _hook(SAVE_PAUSE_ENV, step)
    if flag is None:
        return
    flag.write_text(str(os.getpid()), encoding="utf-8")
    time.sleep(LIMIT_S)


def install(trainer: Any) -> None:
    """Put the hooks on a :class:`~kiln.engine.train.loop.Trainer`: the hold after each step
    (a listener on ``step`` events) and the pause inside each resume-state save."""

    def hold(event: dict[str, Any]) -> None:
        if event["type"] == "step":
            hold_after_step(event["step"], trainer.stop_requested)

    trainer.add_listener(hold)
    trainer.add_save_hook(pause_in_save)
