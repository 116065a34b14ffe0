"""Apply a fix-up plan without ever losing an original.

Two ways, the user's choice:

* **A new dataset** (the default): the whole dataset is written to a new folder beside it,
  same ``N_name/`` layout, the fixed images new and every other image and caption copied
  byte for byte, the selection carried over, and ``fixup.json`` recording each image's
  operations. It is written under a temporary name and renamed into place once complete, so
  a crash or a cancel leaves nothing half-made. The source is only read.
* **In place**: each original is first copied to ``<dataset>/.kiln/originals/`` (same
  relative path, byte for byte; the first original is kept if an image is fixed twice), then
  the fixed file replaces it atomically. ``.kiln/fixup.json`` lists what was done, and
  :func:`undo_in_place` puts every original back exactly.

A fixed image is written as PNG (lossless; no EXIF, so nothing rotates it again) under the
same stem, so its caption still pairs with it. A JPEG ``a.jpg`` becomes ``a.png``; if an
``a.png`` is already there the image is skipped with a message rather than overwrite it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from kiln.engine.analysis.decode import decode_image
from kiln.engine.dataset.scan import Dataset
from kiln.engine.dataset.selection import excluded_paths, move_file_state, set_included
from kiln.engine.dataset.store import STATE_FOLDER, Store
from kiln.engine.errors import ImageError, UsageError
from kiln.engine.fixup import ops
from kiln.engine.fixup.plan import ImageFix
from kiln.engine.fixup.upscaler import Upscaler, resize_to
from kiln.engine.fsutil import atomic_write_bytes, atomic_write_text
from PIL import Image

RECORD_NAME = "fixup.json"
ORIGINALS = "originals"
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class FixedImage:
    """One image written: where from, where to, and the operations as applied (levels'
    points filled in)."""

    source: str
    output: str
    operations: tuple[ops.Operation, ...]
    size: tuple[int, int]
    result_size: tuple[int, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "output": self.output,
            "operations": [op.to_json() for op in self.operations],
            "size": list(self.size),
            "result_size": list(self.result_size),
        }


@dataclass
class FixupOutcome:
    """What a fix-up did: the dataset it wrote (new folder or the source), each fixed image,
    the images it skipped with why, and how many others it copied unchanged."""

    root: Path
    in_place: bool
    fixed: list[FixedImage] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    copied: int = 0


def default_out(root: Path) -> Path:
    """``<dataset>-fixed`` beside the dataset (``-fixed-2`` and on when taken)."""
    candidate = root.with_name(f"{root.name}-fixed")
    number = 2
    while candidate.exists():
        candidate = root.with_name(f"{root.name}-fixed-{number}")
        number += 1
    return candidate


def check_out(out: Path, root: Path) -> Path:
    """``out`` as an absolute path, if a new dataset may be written there.

    Raises:
        UsageError: ``out`` is inside the dataset, or is something other than an empty folder.
    """
    out, root = out.absolute(), root.absolute()
    if out == root or root in out.parents:
        raise UsageError(f"--out {out}: inside the dataset; choose a folder beside it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out}: already exists and is not empty; choose another folder or remove it")
    return out


def fixed_image(
    path: Path, fix: ImageFix, upscaler: Upscaler | None = None, cancelled: Callable[[], bool] = lambda: False
) -> tuple[Image.Image, tuple[ops.Operation, ...]]:
    """Decode ``path`` and apply ``fix``: the new image and the operations as applied.

    Raises:
        ImageError: the file cannot be decoded (named), or an operation's values are wrong.
    """
    try:
        decoded = decode_image(path, exact=True)
    except ImageError as exc:
        raise ImageError(f"{path}: cannot decode: {exc}") from None
    exif = decoded.exif_orientation
    image = ops.working_from(decoded.pixels, decoded.alpha)
    applied: list[ops.Operation] = []
    for op in fix.operations:
        params = dict(op.params)
        if op.name == ops.ORIENTATION:
            image = ops.bake_orientation(image, exif)
            params["exif"] = exif
        elif op.name == ops.CROP:
            left, top, right, bottom = (int(v) for v in params["box"])
            image = ops.crop(image, (left, top, right, bottom))
        elif op.name == ops.FLATTEN:
            image = ops.flatten(image, ops.parse_colour(str(params["background"])))
        elif op.name == ops.LEVELS:
            if "black" not in params:
                params["black"], params["white"] = ops.level_points(image, float(params.get("clip", 0.5)))
            image = ops.levels(image, int(params["black"]), int(params["white"]), float(params["gamma"]))
        elif op.name == ops.UPSCALE:
            target = (int(params["width"]), int(params["height"]))
            model = upscaler if params.get("method") != "lanczos" else None
            image = resize_to(image, target, model)
            params["method"] = model.name if model is not None else "lanczos"
            if model is not None:
                params["model"] = model.path.name
            if cancelled():
                raise InterruptedError("fix-up cancelled")
        applied.append(ops.Operation(op.name, params))
    return image, tuple(applied)


def output_name(rel_path: str) -> str:
    """Where a fixed image goes: the same stem as PNG."""
    return str(PurePosixPath(rel_path).with_suffix(".png"))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def write_new_dataset(
    dataset: Dataset,
    store: Store | None,
    fixes: Sequence[ImageFix],
    out: Path,
    upscaler: Upscaler | None = None,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> FixupOutcome:
    """Write the fixed dataset to ``out`` (which must not exist or be empty), all or nothing.

    Raises:
        UsageError: ``out`` is inside the dataset, or is a non-empty folder.
        InterruptedError: ``cancelled()`` turned true; nothing is left behind.
    """
    out = check_out(Path(out), dataset.root)
    root = dataset.root.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.kiln-{uuid.uuid4().hex[:8]}")
    outcome = FixupOutcome(out, in_place=False)
    by_path = {fix.rel_path: fix for fix in fixes}
    taken = {record.rel_path for record in dataset.images}
    renamed: dict[str, str] = {}
    try:
        for index, record in enumerate(dataset.images):
            if cancelled():
                raise InterruptedError("fix-up cancelled")
            fix = by_path.get(record.rel_path)
            written = None
            if fix is not None:
                written = _write_fixed(record.path, fix, staging, taken, upscaler, cancelled, outcome)
            if written is None:
                _copy(record.path, staging / record.rel_path)
                outcome.copied += fix is None
            else:
                renamed[record.rel_path] = written
            if record.caption_path.is_file():
                _copy(record.caption_path, staging / record.caption_path.relative_to(root))
            if progress is not None:
                progress(index + 1, len(dataset.images), record.rel_path)
        _write_record(staging / RECORD_NAME, root, outcome.fixed)
        excluded = excluded_paths(store) if store is not None else set()
        if excluded:
            with Store(staging) as new_store:
                set_included(new_store, [renamed.get(path, path) for path in excluded], False)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return outcome


def write_in_place(
    dataset: Dataset,
    store: Store,
    fixes: Sequence[ImageFix],
    upscaler: Upscaler | None = None,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> FixupOutcome:
    """Fix the images in their folders, each original kept first under ``.kiln/originals/``.

    Each image is done whole before the next (original saved, fixed file written
    atomically, record updated), so a cancel or a crash between images leaves a consistent
    dataset that :func:`undo_in_place` restores.
    """
    root = dataset.root
    outcome = FixupOutcome(root, in_place=True)
    records = dataset.by_path()
    taken = set(records)
    record_path = root / STATE_FOLDER / RECORD_NAME
    entries = read_record(record_path)
    for index, fix in enumerate(fixes):
        if cancelled():
            break
        record = records.get(fix.rel_path)
        if record is None:
            outcome.skipped.append(f"{fix.rel_path}: no longer in the dataset; skipped")
            continue
        result = _fix_or_skip(record.path, fix, taken, upscaler, cancelled)
        if isinstance(result, str):
            outcome.skipped.append(f"{result}; left as it is")
            continue
        image, applied, output = result
        original = root / STATE_FOLDER / ORIGINALS / fix.rel_path
        if not original.exists():
            original.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(original, record.path.read_bytes())
        atomic_write_bytes(root / output, png_bytes(image))
        if output != fix.rel_path:
            record.path.unlink()
            move_file_state(store, fix.rel_path, output)
            taken.add(output)
        done = FixedImage(fix.rel_path, output, applied, fix.size, image.size)
        outcome.fixed.append(done)
        entries.append({**done.to_json(), "original": f"{STATE_FOLDER}/{ORIGINALS}/{fix.rel_path}"})
        atomic_write_text(record_path, json.dumps({"fixes": entries}, indent=1))
        if progress is not None:
            progress(index + 1, len(fixes), fix.rel_path)
    return outcome


def undo_in_place(root: Path, store: Store | None = None) -> list[str]:
    """Put back every original an in-place fix-up kept, byte for byte, and remove the fixed
    files that took another name; returns the restored paths.

    Raises:
        UsageError: there is nothing to undo.
    """
    record_path = root / STATE_FOLDER / RECORD_NAME
    entries = read_record(record_path)
    if not entries:
        raise UsageError(f"{root}: no in-place fix-up to undo (no {STATE_FOLDER}/{RECORD_NAME})")
    restored: list[str] = []
    for entry in reversed(entries):
        source, output = str(entry["source"]), str(entry["output"])
        original = root / STATE_FOLDER / ORIGINALS / source
        if output != source:
            with contextlib.suppress(FileNotFoundError):
                (root / output).unlink()
            if store is not None:
                move_file_state(store, output, source)
        if original.exists():
            atomic_write_bytes(root / source, original.read_bytes())
            original.unlink()
            restored.append(source)
    record_path.unlink()
    shutil.rmtree(root / STATE_FOLDER / ORIGINALS, ignore_errors=True)
    return sorted(restored)


def applied_operations(root: Path) -> dict[str, frozenset[str]]:
    """What fix-ups already did to each image now in the dataset, by its current path: the
    in-place ones, and the one that wrote this dataset (``kiln fixup``'s new folder). A plan
    does not propose them again: levels cannot unblow pixels, a second pass would only
    stretch the image further.

    Raises:
        UsageError: the record is not what Kiln writes.
    """
    done: dict[str, set[str]] = {}
    # A dataset written by a fix-up carries its record at the top; in-place ones under .kiln.
    for entry in read_record(root / RECORD_NAME) + read_record(root / STATE_FOLDER / RECORD_NAME):
        names = {str(op.get("op")) for op in entry.get("operations", []) if isinstance(op, dict)}
        earlier = done.pop(str(entry.get("source")), set())
        done[str(entry.get("output"))] = earlier | names
    return {path: frozenset(names) for path, names in done.items()}


def read_record(path: Path) -> list[dict[str, Any]]:
    """The fixes a ``fixup.json`` lists ([] when there is none).

    Raises:
        UsageError: the file is not what Kiln writes; the message names it.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable ({exc}); restore it from .kiln/originals by hand") from None
    fixes = data.get("fixes") if isinstance(data, dict) else None
    if not isinstance(fixes, list):
        raise UsageError(f"{path}: not a Kiln fix-up record (no 'fixes' list)")
    return fixes


def _write_fixed(
    source: Path,
    fix: ImageFix,
    staging: Path,
    taken: set[str],
    upscaler: Upscaler | None,
    cancelled: Callable[[], bool],
    outcome: FixupOutcome,
) -> str | None:
    """Write one fixed image into the staging folder; its new relative path, or None when it
    was skipped (and is then copied as it is)."""
    result = _fix_or_skip(source, fix, taken, upscaler, cancelled)
    if isinstance(result, str):
        outcome.skipped.append(f"{result}; copied unchanged")
        return None
    image, applied, output = result
    target = staging / output
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(png_bytes(image))
    outcome.fixed.append(FixedImage(fix.rel_path, output, applied, fix.size, image.size))
    return output


def _fix_or_skip(
    source: Path,
    fix: ImageFix,
    taken: set[str],
    upscaler: Upscaler | None,
    cancelled: Callable[[], bool],
) -> tuple[Image.Image, tuple[ops.Operation, ...], str] | str:
    """The fixed image, its operations as applied and its output path; or why it is skipped
    (undecodable, or its PNG name is another image's)."""
    try:
        image, applied = fixed_image(source, fix, upscaler, cancelled)
    except ImageError as exc:
        return str(exc)
    output = output_name(fix.rel_path)
    if output != fix.rel_path and output in taken:
        return f"{fix.rel_path}: {output} already exists beside it, rename one"
    return image, applied, output


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def _write_record(path: Path, source_root: Path, fixed: Sequence[FixedImage]) -> None:
    data = {
        "source": str(source_root),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fixes": [image.to_json() for image in fixed],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
