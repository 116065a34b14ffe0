"""Resume state on disk: ``state/step-NNNNNN/`` folders written atomically, checked before use.

A save is written into ``state/tmp-NNNNNN-<pid>/`` (the trainer's tensors as ``trainer.pt``,
fsynced), then ``manifest.json`` (step, epoch, the config, each file's size and SHA-256) is
written last, and the folder is renamed to ``state/step-NNNNNN``. A kill at any moment
leaves either the previous saves untouched beside a ``tmp-*`` folder, or the new complete
save. Reading checks the manifest against the files and falls back to the previous save when
the newest is damaged. The last :data:`KEEP` saves are kept.

Only :func:`write_save` and :func:`load_save` import torch; the manifest functions stay light
so ``kiln resume`` can check a run before any model code loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from kiln.engine import __version__
from kiln.engine.errors import RunError
from kiln.engine.fsutil import fsync_dir
from kiln.engine.train.outputs import CONFIG_FILE, STATE_FOLDER

MANIFEST = "manifest.json"
PAYLOAD = "trainer.pt"
KEEP = 2
SAVE_LAYOUT = 1
_SAVE_NAME = re.compile(r"^step-(\d{6,})$")


def save_name(step: int) -> str:
    """``step-000123``: the folder of the save made after ``step`` optimizer steps."""
    return f"step-{step:06d}"


def write_save(
    state_dir: Path,
    step: int,
    payload: dict[str, Any],
    manifest: dict[str, Any],
    after_payload: Callable[[int], None] | None = None,
) -> Path:
    """Write one save atomically and prune older ones; returns the ``step-NNNNNN`` folder.

    Args:
        state_dir: The run's ``state/`` folder.
        step: Optimizer steps done (names the folder).
        payload: Tensors and plain values for :func:`torch.save` (the trainer's resume state).
        manifest: JSON-ready facts about the save (epoch, config...); ``files``, ``step``,
            ``layout`` and ``saved`` are added here.
        after_payload: Called with ``step`` once the payload is written, before the manifest
            (run control's test hook kills the process there).
    """
    import torch

    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    final = state_dir / save_name(step)
    if final.is_dir() and save_problem(final) is None:
        return final  # nothing changed since: a save at the same step holds the same state
    tmp = state_dir / f"tmp-{step:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with open(tmp / PAYLOAD, "wb") as handle:
        writer = _HashingWriter(handle)
        torch.save(payload, cast(IO[bytes], writer))  # torch.save only calls write() and flush()
        handle.flush()
        os.fsync(handle.fileno())
    if after_payload is not None:
        after_payload(step)
    record = {
        **manifest,
        "layout": SAVE_LAYOUT,
        "step": step,
        "saved": round(time.time(), 3),
        "files": {PAYLOAD: {"bytes": writer.size, "sha256": writer.digest.hexdigest()}},
    }
    _write_synced(tmp / MANIFEST, (json.dumps(record, indent=2, default=str) + "\n").encode())
    fsync_dir(tmp)
    if final.exists():  # an incomplete leftover of the same step: make room
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(state_dir)
    prune(state_dir)
    return final


def load_save(path: Path) -> dict[str, Any]:
    """The payload of a save (tensors on the CPU); no code runs while reading it."""
    import torch

    return torch.load(Path(path) / PAYLOAD, map_location="cpu", weights_only=True)


def read_manifest(path: Path) -> dict[str, Any] | None:
    """A save's manifest, or None when missing or unreadable."""
    try:
        data = json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def save_problem(path: Path) -> str | None:
    """Why a save cannot be used (one phrase), or None when it is complete and intact."""
    manifest = read_manifest(path)
    if manifest is None:
        return "no manifest (the save did not finish)"
    if manifest.get("layout") != SAVE_LAYOUT:
        return f"save layout {manifest.get('layout')!r} is not {SAVE_LAYOUT}"
    files = manifest.get("files")
    if not isinstance(files, dict) or PAYLOAD not in files:
        return "the manifest lists no payload"
    for name, expected in files.items():
        file = Path(path) / name
        try:
            size = file.stat().st_size
        except OSError:
            return f"{name} is missing"
        if size != expected.get("bytes"):
            return f"{name} has {size} bytes, the manifest says {expected.get('bytes')}"
        if _sha256(file) != expected.get("sha256"):
            return f"{name} does not match its checksum"
    return None


def saves(state_dir: Path) -> list[Path]:
    """The ``step-NNNNNN`` folders, newest (highest step) first, complete or not."""
    state_dir = Path(state_dir)
    if not state_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in state_dir.iterdir() if (m := _SAVE_NAME.match(p.name))]
    return [path for _, path in sorted(found, reverse=True)]


def latest_complete(state_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest intact save, and each newer damaged one with why it was passed over."""
    skipped: list[tuple[Path, str]] = []
    for path in saves(state_dir):
        problem = save_problem(path)
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped


def remove_save(path: Path) -> None:
    """Delete one save folder (a damaged one, or one pruned as too old)."""
    shutil.rmtree(path, ignore_errors=True)


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted keys whose value differs between two ``TrainConfig.to_dict()`` tables; the speed
    keys (:data:`~kiln.engine.train.config.SPEED_KEYS`) do not count: they change how fast the run
    goes, not what it trains (and saves made before they existed lack them)."""
    from kiln.engine.train.config import SPEED_KEYS

    current = json.loads(json.dumps(current))  # tuples as lists, as a manifest holds them
    keys = []
    for section in sorted(set(current) | set(saved)):
        now, then = current.get(section) or {}, saved.get(section) or {}
        keys += [
            f"{section}.{key}"
            for key in sorted(set(now) | set(then))
            if now.get(key) != then.get(key) and f"{section}.{key}" not in SPEED_KEYS
        ]
    return keys


def run_manifest(
    *,
    epoch: int,
    batch_in_epoch: int,
    total: int,
    processes: int,
    images: Iterable[Any],
    config: dict[str, Any],
    started_at: float,
) -> dict[str, Any]:
    """What a save's manifest records about the run, for :func:`resume_point` to check against."""
    return {
        "epoch": epoch,
        "batch_in_epoch": batch_in_epoch,
        "total": total,
        "processes": processes,
        "dataset": dataset_fingerprint(images),
        "config": config,
        "started_at": started_at,
        "kiln_version": __version__,
    }


def dataset_fingerprint(images: Iterable[Any]) -> str:
    """What the data order depends on: each image's path, repeats and bucket (captions may change)."""
    digest = hashlib.sha256()
    for image in images:
        digest.update(f"{image.rel_path}|{image.repeats}|{image.bucket}\n".encode())
    return digest.hexdigest()


def resume_problems(
    manifest: dict[str, Any], config: dict[str, Any], processes: int, dataset: str
) -> list[str]:
    """Why continuing from a save would not continue the same run (empty: nothing changed)."""
    problems = []
    changed = config_changes(manifest.get("config") or {}, config)
    if changed:
        problems.append(f"the config changed since ({', '.join(changed)})")
    if manifest.get("processes", 1) != processes:
        problems.append(
            f"it was made by {manifest.get('processes')} training process(es), this run has "
            f"{processes} (resume with --gpus {manifest.get('processes')})"
        )
    if manifest.get("dataset") != dataset:
        problems.append("the dataset's images, repeats or buckets changed since")
    return problems


@dataclass(frozen=True)
class ResumePoint:
    """The save a run continues from.

    Attributes:
        save: Its ``state/step-NNNNNN`` folder.
        payload: What the trainer saved (:func:`load_save`).
        manifest: Its manifest.
        skipped: Newer damaged saves passed over, with why (remove them once every process read).
    """

    save: Path
    payload: dict[str, Any]
    manifest: dict[str, Any]
    skipped: list[tuple[Path, str]]


def resume_point(
    run_dir: Path,
    config: dict[str, Any],
    processes: int,
    dataset: str,
    force: bool,
    warn: Callable[[str], None],
) -> ResumePoint:
    """The newest complete save of a run (passing over damaged ones), checked against the run.

    Args:
        run_dir: The run folder.
        config: The run's config now (``TrainConfig.to_dict()``).
        processes: Training processes now.
        dataset: :func:`dataset_fingerprint` of the images now.
        force: Resume even when the config, the processes or the dataset changed (warned).
        warn: Called with each warning (a damaged save passed over, a change forced past).

    Raises:
        RunError: No complete save, or a change without ``force``.
    """
    state_dir = Path(run_dir) / STATE_FOLDER
    save, skipped = latest_complete(state_dir)
    for path, reason in skipped:
        warn(f"{STATE_FOLDER}/{path.name} is unusable ({reason}); using an earlier save")
    if save is None:
        raise RunError(
            f"{state_dir}: no complete save to resume from; start the run again with "
            f"`kiln train {Path(run_dir) / CONFIG_FILE}`"
        )
    manifest = read_manifest(save) or {}
    problems = resume_problems(manifest, config, processes, dataset)
    if problems and not force:
        raise RunError(f"{save}: " + "; ".join(problems) + "; or resume with --force")
    for problem in problems:
        warn(f"resuming with --force although {problem}")
    return ResumePoint(save, load_save(save), manifest, skipped)


def prune(state_dir: Path, keep: int = KEEP) -> None:
    """Remove saves older than the newest ``keep`` and leftover ``tmp-*`` folders of dead writes."""
    for path in saves(state_dir)[keep:]:
        remove_save(path)
    for path in Path(state_dir).glob("tmp-*"):
        if not path.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(path, ignore_errors=True)


class _HashingWriter:
    """A binary file that hashes what passes through it (one pass: no re-read, no copy)."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def size_mib(folder: Path) -> float:
    """A save's size on disk in MiB (a full fine-tune's is the whole model's weights)."""
    return sum(file.stat().st_size for file in Path(folder).rglob("*") if file.is_file()) / 2**20
