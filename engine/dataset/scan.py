"""Scan a Kohya ``train_data_dir``: ``N_name`` concept folders, their images and captions.

Kohya reads only the immediate subfolders of the training folder whose names start with an
integer and an underscore (``15_cat`` means 15 repeats of concept ``cat``). Kiln shows what
Kohya would skip too, as a concept with 1 repeat and a warning, so nothing hides from the user.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from kiln.engine.errors import DatasetError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
EXCLUDED_FOLDER = "_excluded"
RUNS_FOLDER = "runs"
_CONCEPT_RE = re.compile(r"^(\d+)_(.+)$")


@dataclass(frozen=True)
class Concept:
    """One folder of images and how Kohya treats it.

    Attributes:
        folder: Folder relative to the dataset root, ``""`` for images in the root itself.
        name: The concept name (the folder name without the repeats prefix).
        repeats: How often each image is seen per epoch (1 for folders Kohya skips).
        kohya_ok: False when Kohya would skip these images (no ``N_`` prefix, or the root).
    """

    folder: str
    name: str
    repeats: int
    kohya_ok: bool


@dataclass(frozen=True)
class ImageRecord:
    """One image file found by a scan; ``rel_path`` (posix, relative to the root) is its key.

    ``trained`` is the one rule for "trained images" everywhere (DSB, plan, training): False
    for images Kohya skips (in the root, in a folder without the ``N_`` prefix, or with 0
    repeats). Those are still listed, marked skipped, so nothing hides from the user.
    """

    rel_path: str
    path: Path
    concept: str
    folder: str
    repeats: int
    size: int
    mtime_ns: int
    caption_path: Path
    trained: bool = True


@dataclass
class Dataset:
    """The result of a scan: images sorted by path, their concepts, and what Kohya would skip."""

    root: Path
    caption_extension: str
    images: list[ImageRecord] = field(default_factory=list)
    concepts: list[Concept] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def trained_images(self) -> list[ImageRecord]:
        """The images Kohya trains on (see :attr:`ImageRecord.trained`)."""
        return [record for record in self.images if record.trained]

    def by_path(self) -> dict[str, ImageRecord]:
        """Images keyed by their relative path."""
        return {record.rel_path: record for record in self.images}


def parse_concept_folder(name: str) -> tuple[int, str] | None:
    """Return ``(repeats, concept)`` for a Kohya folder name such as ``15_cat``, else None."""
    match = _CONCEPT_RE.match(name)
    if match is None:
        return None
    return int(match.group(1)), match.group(2)


def normalise_caption_extension(extension: str) -> str:
    """Accept ``txt``, ``.txt`` or ``.caption`` and return it with a leading dot."""
    extension = extension.strip()
    if not extension or extension in {".", ".."} or "/" in extension:
        raise DatasetError(f"caption extension {extension!r} is not valid; use .txt or .caption")
    return extension if extension.startswith(".") else f".{extension}"


def is_image_name(name: str) -> bool:
    """Whether a file name is an image Kohya would train on (hidden files are not)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def scan_dataset(root: Path | str, caption_extension: str = ".txt") -> Dataset:
    """Scan ``root`` as a Kohya training folder.

    Args:
        root: The dataset folder (Kohya's ``train_data_dir``).
        caption_extension: The caption sidecar extension, ``.txt`` by default.

    Returns:
        The dataset; it may hold no images (callers decide whether that is an error).

    Raises:
        DatasetError: ``root`` does not exist or is not a folder.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: no such folder; pass the dataset folder (Kohya's train_data_dir)")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; pass the folder that holds the N_name concept folders")
    caption_extension = normalise_caption_extension(caption_extension)
    dataset = Dataset(root=root.resolve(), caption_extension=caption_extension)

    try:
        entries = sorted(os.scandir(dataset.root), key=lambda entry: entry.name)
    except OSError as exc:
        raise DatasetError(f"{root}: cannot list the folder ({exc.strerror}); check its permissions") from exc

    root_files = [entry for entry in entries if _is_image_entry(entry)]
    if root_files:
        concept = Concept(folder="", name=dataset.root.name, repeats=1, kohya_ok=False)
        dataset.concepts.append(concept)
        dataset.warnings.append(
            f"{len(root_files)} image(s) directly in {dataset.root.name}/: Kohya skips them; "
            "move them into a folder such as 10_name/"
        )
        dataset.images.extend(_records(dataset, concept, root_files))

    for entry in entries:
        if not _is_dir(entry) or _ignored_folder(entry.name):
            continue
        try:
            files = sorted(
                (child for child in os.scandir(entry.path) if _is_image_entry(child)),
                key=lambda child: child.name,
            )
        except OSError as exc:
            dataset.warnings.append(f"{entry.name}/: cannot list the folder ({exc.strerror}); skipped")
            continue
        if not files:
            continue
        parsed = parse_concept_folder(entry.name)
        if parsed is None:
            concept = Concept(folder=entry.name, name=entry.name, repeats=1, kohya_ok=False)
            dataset.warnings.append(
                f"{entry.name}/: no repeats prefix, so Kohya skips its {len(files)} image(s); "
                f"rename it to e.g. 10_{entry.name}"
            )
        else:
            repeats, name = parsed
            concept = Concept(folder=entry.name, name=name, repeats=repeats, kohya_ok=repeats > 0)
            if repeats == 0:
                dataset.warnings.append(f"{entry.name}/: 0 repeats, so Kohya never shows its images")
        dataset.concepts.append(concept)
        dataset.images.extend(_records(dataset, concept, files))

    dataset.images.sort(key=lambda record: record.rel_path)
    return dataset


def _records(dataset: Dataset, concept: Concept, files: list[os.DirEntry]) -> list[ImageRecord]:
    records = []
    for entry in files:
        try:
            stat = entry.stat()
        except OSError:
            # A file that vanished or a dangling link: the next scan will tell.
            continue
        rel_path = f"{concept.folder}/{entry.name}" if concept.folder else entry.name
        path = Path(entry.path)
        records.append(
            ImageRecord(
                rel_path=rel_path,
                path=path,
                concept=concept.name,
                folder=concept.folder,
                repeats=concept.repeats,
                size=stat.st_size,
                mtime_ns=stat.st_mtime_ns,
                caption_path=path.with_suffix(dataset.caption_extension),
                trained=concept.kohya_ok,
            )
        )
    return records


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_image_entry(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file() and is_image_name(entry.name)
    except OSError:
        return False


def _ignored_folder(name: str) -> bool:
    return name.startswith(".") or name in {EXCLUDED_FOLDER, RUNS_FOLDER, "__pycache__"}
