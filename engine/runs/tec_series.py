"""The TEC series of training runs: which runs can be measured, and measuring one epoch by epoch.

A run folder (``runs/<YYYYmmdd-HHMMSS>-<name>/``) holds ``config.toml`` and, once an epoch is
saved, ``lora/*.safetensors``. Whether the run trained the text encoder is read from the key
names of its newest LoRA file, so listing runs loads no model and imports no torch;
:func:`run_tec_series` imports the meter (and torch) only when called.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.engine.errors import ConfigError, ModelError, RunError
from kiln.engine.runs.folders import is_run_folder
from kiln.engine.runs.layout import CONFIG_FILE, LORA_FOLDER
from kiln.engine.tec.checks import is_lora, safetensors_header, trains_text_encoder
from kiln.engine.train.config import load_config

if TYPE_CHECKING:
    from kiln.engine.tec.meter import EpochTec, ProbeOptions, ProgressFn

_EPOCH_IN_NAME = re.compile(r"-e(\d+)$")


@dataclass(frozen=True)
class TecRun:
    """One run as the TEC section lists it.

    Attributes:
        path: The run folder.
        loras: Its saved LoRA files, in name order (``<name>-eNNN.safetensors``).
        text_encoder: Whether its LoRAs hold text-encoder weights; None when no LoRA is saved
            yet or the newest one cannot be read.
        base: ``model.base`` from its ``config.toml`` ('' when the config is missing or unreadable).
        allow_pickle: ``model.allow_pickle`` from its config.
        problem: Why its LoRAs cannot be measured ('' when they can): none saved yet, U-Net only,
            unreadable.
        base_problem: Why its base is unknown ('' when the config names one); typing the base
            model fixes it.
    """

    path: Path
    loras: tuple[Path, ...]
    text_encoder: bool | None
    base: str = ""
    allow_pickle: bool = False
    problem: str = ""
    base_problem: str = ""

    @property
    def name(self) -> str:
        """The folder name (its start time and the run's name)."""
        return self.path.name


def tec_run(run_dir: Path | str) -> TecRun:
    """What a run folder offers the TEC meter: its LoRAs, whether they train the text encoder, its base."""
    run_dir = Path(run_dir).expanduser()
    loras = tuple(sorted((run_dir / LORA_FOLDER).glob("*.safetensors")))
    base, allow_pickle, problem, base_problem = "", False, "", ""
    try:
        config = load_config(run_dir / CONFIG_FILE)
        base, allow_pickle = config.model.base, config.model.allow_pickle
    except ConfigError as exc:
        base_problem = f"cannot read the run's base model ({exc})"
    else:
        if not base:
            base_problem = "the run's config names no model.base"
    text_encoder: bool | None = None
    if not loras:
        problem = "no saved LoRA yet: the run has not finished an epoch"
    else:
        try:
            keys = safetensors_header(loras[-1]).keys
            # A full fine-tune saves whole checkpoints: their text encoder is measured as it is.
            text_encoder = trains_text_encoder(keys) or not is_lora(keys)
        except ModelError as exc:
            problem = str(exc)
        else:
            if not text_encoder:
                problem = "this run did not train the text encoder (U-Net only): its LoRAs add no TEC"
    return TecRun(run_dir, loras, text_encoder, base, allow_pickle, problem, base_problem)


def tec_runs(folders: Iterable[Path | str]) -> list[TecRun]:
    """The runs in these runs folders, newest first (run folders start with their start time).

    A subfolder counts as a run when run control says so (:func:`kiln.engine.runs.folders.is_run_folder`)
    or it holds ``lora/``; missing folders are skipped (a dataset that has never trained has no
    ``runs/``).
    """
    seen: set[Path] = set()
    runs = []
    for folder in folders:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            continue
        for child in folder.iterdir():
            if child in seen or not child.is_dir():
                continue
            if is_run_folder(child) or (child / LORA_FOLDER).is_dir():
                seen.add(child)
                runs.append(tec_run(child))
    runs.sort(key=lambda run: (run.name, str(run.path)), reverse=True)
    return runs


def run_tec_series(
    run_dir: Path | str,
    base: Path | str | None = None,
    scale: float = 1.0,
    options: ProbeOptions | None = None,
    allow_pickle: bool | None = None,
    progress: ProgressFn | None = None,
) -> list[EpochTec]:
    """The TEC each saved LoRA (``lora/*.safetensors``) of a run adds to its base, in epoch order.

    The base's embeddings are computed once and shared by every epoch. A LoRA without
    text-encoder weights (a U-Net-only run) gets a zero report with ``text_encoder=False``.

    Args:
        run_dir: The run folder (``runs/<time>-<name>/``).
        base: The base model; None reads ``model.base`` from the run's ``config.toml``.
        scale: The LoRA weight to merge at.
        options: Probe words, position, batch size, device (None: the defaults).
        allow_pickle: Accept a pickled base; None takes the run config's ``model.allow_pickle``.
        progress: ``progress(stage, done, total)``: stage ``reference``, then each file's name
            (a U-Net-only file reports itself done at once).

    Raises:
        RunError: The folder has no saved LoRA, or no base is given and its config names none.
    """
    run_dir = Path(run_dir).expanduser()
    files = sorted((run_dir / LORA_FOLDER).glob("*.safetensors"))
    if not files:
        raise RunError(f"{run_dir}: no saved LoRA in lora/; the run has not finished an epoch yet")
    if base is None or allow_pickle is None:
        config_base, config_pickle = _run_base(run_dir)
        base = config_base if base is None else base
        allow_pickle = config_pickle if allow_pickle is None else allow_pickle
    from kiln.engine.tec.meter import EpochTec, ProbeOptions, checkpoint_tec_report, loras_tec_reports

    options = options if options is not None else ProbeOptions()
    if not is_lora(safetensors_header(files[-1]).keys):
        # A full fine-tune's epochs are whole checkpoints: each against the base as it is.
        reports = [
            (True, checkpoint_tec_report(path, base, options, allow_pickle, progress)) for path in files
        ]
    else:
        reports = loras_tec_reports(files, base, scale, options, allow_pickle, progress)
    series = [
        EpochTec(_epoch(path), path, trained, report)
        for path, (trained, report) in zip(files, reports, strict=True)
    ]
    series.sort(key=lambda entry: (entry.epoch is None, entry.epoch or 0, entry.path.name))
    return series


def _run_base(run_dir: Path) -> tuple[str, bool]:
    try:
        config = load_config(run_dir / CONFIG_FILE)
    except ConfigError as exc:
        raise RunError(
            f"{run_dir}: cannot read the run's base model from its config ({exc}); pass --base MODEL"
        ) from None
    if not config.model.base:
        raise RunError(f"{run_dir}: the run's config names no model.base; pass --base MODEL")
    return config.model.base, config.model.allow_pickle


def _epoch(path: Path) -> int | None:
    try:
        value = safetensors_header(path).metadata.get("ss_epoch")
        if value is not None:
            return int(value)
    except Exception:  # a name is as good a source as metadata
        pass
    match = _EPOCH_IN_NAME.search(path.stem)
    return int(match.group(1)) if match else None
