"""Run folders: ``<output dir>/<YYYYmmdd-HHMMSS>-<name>/`` and the files in them.

The trainer's own outputs (``lora/``, ``samples/``, ``state/``, ``train.log``, ``tensorboard/``)
are named in :mod:`kiln.engine.train.outputs` and re-exported here beside run control's files.
"""

from __future__ import annotations

import time
from pathlib import Path

from kiln.engine.errors import ConfigError, RunError
from kiln.engine.fsutil import atomic_write_text
from kiln.engine.train.config import TrainConfig, resolved_toml
from kiln.engine.train.outputs import (  # what the trainer reads and writes in a run folder
    CONFIG_FILE,
    LOG_FILE,
    LORA_FOLDER,
    SAMPLES_FOLDER,
    STATE_FOLDER,
    TENSORBOARD_FOLDER,
    lora_path,
    samples_dir,
)

# How a detached or multi-GPU run was launched (gpus, cpu, command), so resume relaunches alike.
LAUNCH_FILE = "launch.json"
# `kiln cancel` leaves this; run control checks it every heartbeat and stops the trainer after the step.
CANCEL_FILE = "cancel.request"


def runs_folder(config: TrainConfig) -> Path:
    """Where this config's runs go: ``output.dir``, else ``<dataset>/runs``."""
    if config.output.dir:
        return Path(config.output.dir)
    return Path(config.dataset.path) / "runs"


def check_runs_folder(parent: Path) -> None:
    """Refuse a runs folder that is a file (or under one): one line naming ``output.dir``.

    Raises:
        ConfigError: ``parent`` or one of its parents is not a folder.
    """
    for path in (Path(parent), *Path(parent).parents):
        if path.exists():
            if not path.is_dir():
                shown = "" if path == Path(parent) else f" ({path} is a file)"
                raise ConfigError(
                    f"output.dir = {parent}: not a folder{shown}; give a folder for the runs (--output DIR)"
                )
            return


def create_run_dir(config: TrainConfig, now: float | None = None) -> Path:
    """Make a new run folder and write the resolved ``config.toml`` into it.

    Two runs started in the same second get ``-2``, ``-3``... rather than sharing a folder.
    """
    parent = runs_folder(config)
    check_runs_folder(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or exc
        raise ConfigError(f"output.dir = {parent}: cannot make the runs folder ({why})") from exc
    run_dir = stamped_folder(parent, config.output.name, now)
    atomic_write_text(run_dir / CONFIG_FILE, resolved_toml(config))
    return run_dir


def stamped_folder(parent: Path, name: str, now: float | None = None, prefix: str = "") -> Path:
    """Make ``<parent>/<prefix><YYYYmmdd-HHMMSS>-<name>`` (``-2``, ``-3``... when taken) and return it.

    Run folders and sweep folders are named this way, so they sort by start time and two
    started in the same second never share a folder.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    base = f"{prefix}{stamp}-{name}"
    for attempt in range(1, 1000):
        folder = parent / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise RunError(f"{parent}: too many folders named {base} in one second")  # pragma: no cover


__all__ = [
    "CANCEL_FILE",
    "CONFIG_FILE",
    "LAUNCH_FILE",
    "LOG_FILE",
    "LORA_FOLDER",
    "SAMPLES_FOLDER",
    "STATE_FOLDER",
    "TENSORBOARD_FOLDER",
    "create_run_dir",
    "lora_path",
    "runs_folder",
    "samples_dir",
]
