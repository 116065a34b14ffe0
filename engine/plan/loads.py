"""What a dataset puts in each bucket: the included images Kohya trains, times their repeats.

Image sizes come from the analysis cache when it has them (``width``/``height``) and
otherwise from the file's header (Pillow reads it without decoding pixels). The size is the
stored one: Kohya ignores EXIF rotation, so Kiln does too.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kiln.engine.dataset.scan import Dataset, ImageRecord
from kiln.engine.dataset.selection import included_records
from kiln.engine.dataset.store import Store
from kiln.engine.errors import ImageError
from kiln.engine.plan.advisor import Advice
from kiln.engine.plan.buckets import BucketAssignment, BucketSpec, Size, assign_bucket


@dataclass(frozen=True)
class BucketLoad:
    """One bucket of a dataset.

    Attributes:
        resolution: The bucket's ``(width, height)``.
        images: Images assigned to it.
        items: Samples per epoch: the sum of those images' repeats.
    """

    resolution: Size
    images: int
    items: int


@dataclass(frozen=True)
class ConceptLoad:
    """One concept folder: its own repeats (from its name) and its counted images."""

    folder: str
    repeats: int
    images: int


@dataclass(frozen=True)
class DatasetLoad:
    """A dataset's samples per bucket, and what was left out and why.

    Attributes:
        buckets: Non-empty buckets, sorted by resolution.
        concepts: Folders with counted images, sorted by folder.
        skipped: Included images in places Kohya skips (the root, folders without an
            ``N_`` prefix, ``0_`` folders): not counted.
        unreadable: ``(rel_path, reason)`` of images whose size could not be read, or that
            Kohya could not bucket: not counted.
    """

    buckets: tuple[BucketLoad, ...]
    concepts: tuple[ConceptLoad, ...]
    skipped: tuple[str, ...]
    unreadable: tuple[tuple[str, str], ...]

    @property
    def images(self) -> int:
        """Images counted."""
        return sum(bucket.images for bucket in self.buckets)

    @property
    def items(self) -> int:
        """Samples per epoch, repeats included."""
        return sum(bucket.items for bucket in self.buckets)

    def bucket_items(self) -> dict[Size, int]:
        """Samples per bucket, as :func:`kiln.engine.plan.steps.plan_steps` takes them."""
        return {bucket.resolution: bucket.items for bucket in self.buckets}

    def bucket_images(self) -> dict[Size, int]:
        """Images per bucket, as :func:`kiln.engine.plan.steps.repeats_for_target` takes them."""
        return {bucket.resolution: bucket.images for bucket in self.buckets}


def dataset_load(
    dataset: Dataset, store: Store | None, spec: BucketSpec, repeats: int | None = None
) -> DatasetLoad:
    """Bucket the dataset's included images as Kohya would and count samples per bucket.

    Why: Kohya rounds batches up per bucket, so the step count depends on how images spread
    over buckets, not only on how many there are.

    Args:
        dataset: The scanned dataset.
        store: Its store (selection and cache), or None to count every image and read
            every size from the files.
        spec: Bucket settings.
        repeats: Count every image with this many repeats instead of its folder's (for
            "what if" plans).
    """
    records = included_records(dataset.images, store) if store is not None else list(dataset.images)
    counted = [record for record in records if record.trained]
    skipped = tuple(record.rel_path for record in records if not record.trained)
    placed, unreadable = bucketed(counted, store, spec)

    buckets: dict[Size, list[int]] = {}
    concepts: dict[str, list[int]] = {}
    for record, _, assignment in placed:
        bucket = assignment.bucket
        image_repeats = record.repeats if repeats is None else repeats
        images_items = buckets.setdefault(bucket, [0, 0])
        images_items[0] += 1
        images_items[1] += image_repeats
        concept = concepts.setdefault(record.folder, [record.repeats, 0])
        concept[1] += 1
    return DatasetLoad(
        buckets=tuple(BucketLoad(key, images, items) for key, (images, items) in sorted(buckets.items())),
        concepts=tuple(ConceptLoad(folder, *counts) for folder, counts in sorted(concepts.items())),
        skipped=skipped,
        unreadable=tuple(sorted(unreadable.items())),
    )


def bucketed(
    records: Iterable[ImageRecord], store: Store | None, spec: BucketSpec
) -> tuple[list[tuple[ImageRecord, Size, BucketAssignment]], dict[str, str]]:
    """Each record Kohya can bucket, with its stored size and bucket assignment, in the given
    order; and ``rel_path -> reason`` for the ones whose size cannot be read or bucketed.

    The one place the plan, the reg set and the trainer turn images into buckets.
    """
    records = list(records)
    sizes, problems = image_sizes(records, store)
    placed = []
    for record in records:
        size = sizes.get(record.rel_path)
        if size is None:
            continue
        try:
            assignment = assign_bucket(size, spec)
        except ImageError as exc:
            problems[record.rel_path] = str(exc)
            continue
        placed.append((record, size, assignment))
    return placed, problems


def load_notices(load: DatasetLoad) -> list[Advice]:
    """Notices about included images the count leaves out, each with a stable id.

    Why: an image Kohya skips (wrong folder) or cannot read silently changes the run; the
    user must see that the count excludes it and how to fix it.
    """
    notices: list[Advice] = []
    if load.skipped:
        notices.append(
            Advice(
                "kohya-skips",
                f"{len(load.skipped)} included image(s) sit where Kohya skips them (the root, a folder "
                "without an N_ prefix or a 0_ folder) and are not counted; move them into a folder "
                "such as 10_name/",
            )
        )
    if load.unreadable:
        named = "; ".join(f"{rel_path}: {reason}" for rel_path, reason in load.unreadable[:5])
        more = f"; and {len(load.unreadable) - 5} more" if len(load.unreadable) > 5 else ""
        notices.append(
            Advice(
                "unreadable-images",
                f"{len(load.unreadable)} image(s) cannot be read and are left out of the count "
                f"and the training set: {named}{more}",
            )
        )
    return notices


def image_sizes(
    records: Iterable[ImageRecord], store: Store | None = None
) -> tuple[dict[str, Size], dict[str, str]]:
    """Each image's ``(width, height)``, from the cache where valid, else from its header.

    Why: planning must be instant on a dataset that was analysed, and cheap on one that was
    not; a header read costs a fraction of a decode.

    Returns:
        ``(sizes, problems)``, both keyed by relative path; ``problems`` holds a one-line
        reason for each image whose size could not be read.
    """
    records = list(records)
    sizes, problems = _cached_sizes(records, store) if store is not None else ({}, {})
    for record in records:
        if record.rel_path in sizes or record.rel_path in problems:
            continue
        try:
            sizes[record.rel_path] = header_size(record.path)
            check_decodable(record)
        except ImageError as exc:
            sizes.pop(record.rel_path, None)
            problems[record.rel_path] = str(exc)
    return sizes, problems


# (path, size, mtime_ns) -> why the file cannot be decoded, or None: checked once per version.
_DECODABLE: dict[tuple[str, int, int], str | None] = {}


def check_decodable(record: ImageRecord) -> None:
    """Refuse an image whose header reads but whose data does not (a truncated JPEG or PNG).

    Why: a header alone gives the size of a file cut short; counting it would plan steps for
    an image the trainer cannot load, and training would fail at its first batch. A JPEG is
    decoded at 1/8 scale (the decoder reads every block, cheaply); other formats have their
    end checked (a PNG's ``IEND`` chunk). The answer is kept per file version.

    Raises:
        ImageError: The image's data is truncated or corrupt.
    """
    key = (str(record.path), record.size, record.mtime_ns)
    if key not in _DECODABLE:
        _DECODABLE[key] = _decode_problem(Path(record.path))
    problem = _DECODABLE[key]
    if problem is not None:
        raise ImageError(problem)


def _decode_problem(path: Path) -> str | None:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format == "JPEG":
                    width, height = image.size
                    image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
                    image.load()
                    return None
                if image.format == "PNG":
                    with open(path, "rb") as handle:
                        handle.seek(max(0, path.stat().st_size - 64))
                        if b"IEND" not in handle.read():
                            return "truncated PNG (no IEND chunk at its end); re-export it"
                return None
    except Image.DecompressionBombError:
        return None  # too large to decode safely here: the header said what it needs
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        message = str(exc) or exc.__class__.__name__
        return f"truncated or corrupt ({message}); re-export it"


def header_size(path: Path) -> Size:
    """An image's stored ``(width, height)`` from its header, without decoding pixels.

    Raises:
        ImageError: the file cannot be opened as an image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # A large image is fine to measure; only decoding it would cost memory.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.size
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read; re-save it as PNG or JPEG") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"too large to open safely ({exc}); downscale it") from None
    except OSError as exc:
        raise ImageError(f"cannot read it ({exc.strerror or exc}); check the file") from None


def _cached_sizes(records: list[ImageRecord], store: Store) -> tuple[dict[str, Size], dict[str, str]]:
    """Sizes the analysis cache holds for these file versions, and the errors it recorded
    (an image ``kiln dsb``/``quality`` could not decode is left out here too)."""
    wanted = {record.rel_path: record for record in records}
    found: dict[str, Size] = {}
    errors: dict[str, str] = {}
    rows = store.query(
        "SELECT rel_path, size, mtime_ns, metrics, error FROM analysis "
        "WHERE error IS NOT NULL OR metrics IS NOT NULL"
    )
    for rel_path, size, mtime_ns, metrics, error in rows:
        record = wanted.get(rel_path)
        if record is None or rel_path in found or record.size != size or record.mtime_ns != mtime_ns:
            continue
        if error:
            errors[rel_path] = str(error)
            continue
        try:
            figures = json.loads(metrics)
            width, height = int(figures["width"]), int(figures["height"])
        except (ValueError, KeyError, TypeError):
            continue
        if width > 0 and height > 0:
            found[rel_path] = (width, height)
    for rel_path in found:
        errors.pop(rel_path, None)
    return found, errors
