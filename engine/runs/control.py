"""A trainer under run control: its event writer, the cancel-request file and the test hooks.

The trainer (:class:`kiln.engine.train.loop.Trainer`) knows nothing of run folders' live
record or of ``kiln cancel``; every trainer run control starts (the foreground ``kiln train``,
a detached or multi-GPU worker) is made here, so each one writes ``events.jsonl`` and
``status.json``, stops after the step once a cancel request appears (checked on the event
writer's heartbeat, so even a run on another host or a long step notices it), and carries the
test hooks of :mod:`kiln.engine.runs.testhooks`. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.engine.runs import layout as rundir
from kiln.engine.runs import testhooks
from kiln.engine.runs.events import EventWriter
from kiln.engine.train.config import TrainConfig

if TYPE_CHECKING:
    from kiln.engine.train.loop import Trainer


def controlled_trainer(
    config: TrainConfig,
    run_dir: Path,
    *,
    listeners: list[Callable[[dict[str, Any]], None]] | None = None,
    cpu: bool = False,
    resume: bool = False,
    force: bool = False,
    events: EventWriter | None = None,
    main: bool = True,
) -> Trainer:
    """A trainer for ``run_dir`` wired to run control.

    Args:
        config: The run's config.
        run_dir: The run folder.
        listeners: Called with each event (the CLI's progress bar).
        cpu, resume, force: As :class:`~kiln.engine.train.loop.Trainer` takes them.
        events: The main process's event writer when it already exists (a worker starts it,
            and its heartbeat, before the heavy imports); default: one made here.
        main: Whether this is the main process (the only one that writes events).
    """
    from kiln.engine.train.loop import Trainer

    run_dir = Path(run_dir)
    if events is None and main:
        run_dir.mkdir(parents=True, exist_ok=True)
        events = EventWriter(run_dir, name=config.output.name, resume=resume)
    trainer = Trainer(
        config, run_dir, listeners=listeners, cpu=cpu, resume=resume, force=force, events=events
    )
    if events is not None:
        events.on_beat = lambda: check_cancel_request(run_dir, trainer)
    testhooks.install(trainer)
    return trainer


def check_cancel_request(run_dir: Path, trainer: Trainer) -> None:
    """Heartbeat hook: `kiln cancel` left a request file (it may run on another machine)."""
    if (Path(run_dir) / rundir.CANCEL_FILE).exists():
        trainer.request_stop()
