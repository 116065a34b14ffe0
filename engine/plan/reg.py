"""Regularisation (class) images, counted as Kohya counts them.

Kohya's ``reg_data_dir`` holds ``N_class/`` folders of class images (captions optional). They
are not trained for their own sake: each step mixes them with the training images, weighted by
``prior_loss_weight``, so the subject does not take over the class. Kohya balances them to the
training set: walking the reg images in order, it registers each with its folder's repeats
until the reg samples reach the training samples (images past that point are not used); if one
pass falls short, it adds one repeat per image, in order, until they do. The reg samples then
sit in the aspect buckets beside the training samples, so an epoch has about twice the steps.

Kiln walks the reg folders in name order and their images in path order (Kohya sorts the
images of a folder, and takes the folders in the file system's order, which is name order on
most systems for a freshly written folder; with one reg folder, the usual case, they agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiln.engine.analysis.dsb import DsbSummary
from kiln.engine.dataset.scan import Dataset
from kiln.engine.plan.buckets import BucketSpec, Size
from kiln.engine.plan.loads import ConceptLoad, bucketed
from kiln.engine.plan.steps import BucketKey


@dataclass(frozen=True)
class RegImage:
    """One class image: where it is, its folder's repeats, its stored size and its bucket."""

    rel_path: str
    folder: str
    repeats: int
    size: Size
    bucket: Size


@dataclass(frozen=True)
class RegSet:
    """A reg folder's images in Kohya's order.

    Attributes:
        images: The countable images, in the order Kohya registers them.
        concepts: The ``N_class`` folders with their repeats and image counts.
        skipped: Images where Kohya skips them (the root, folders without ``N_``).
        unreadable: ``(rel_path, reason)`` of images whose size cannot be read.
    """

    images: tuple[RegImage, ...]
    concepts: tuple[ConceptLoad, ...]
    skipped: tuple[str, ...] = ()
    unreadable: tuple[tuple[str, str], ...] = ()

    @property
    def items(self) -> int:
        """Reg samples with the folders' own repeats (what Kohya logs as "reg images with repeats")."""
        return sum(image.repeats for image in self.images)

    def repeats_for(self, train_items: int) -> dict[str, int]:
        """Kohya's repeats of each used reg image, for ``train_items`` training samples per epoch.

        Images left out (the training samples were reached before them) are not in the result.
        """
        used: dict[str, int] = {}
        if not self.images or train_items <= 0:
            return used
        reached, first = 0, True
        while reached < train_items:
            for image in self.images:
                if first:
                    used[image.rel_path] = image.repeats
                    reached += image.repeats
                else:
                    used[image.rel_path] += 1
                    reached += 1
                if reached >= train_items:
                    break
            first = False
        return used

    def bucket_items(self, train_items: int) -> dict[BucketKey, int]:
        """Reg samples per bucket for ``train_items`` training samples per epoch."""
        repeats = self.repeats_for(train_items)
        items: dict[BucketKey, int] = {}
        for image in self.images:
            if image.rel_path in repeats:
                items[image.bucket] = items.get(image.bucket, 0) + repeats[image.rel_path]
        return dict(sorted(items.items(), key=lambda pair: pair[0] or (0, 0)))


def reg_set(dataset: Dataset, spec: BucketSpec) -> RegSet:
    """The reg folder's countable images in Kohya's order, bucketed with ``spec``.

    Every image of an ``N_class`` folder counts (a reg folder has no selection); images in the
    root or in folders without a repeat prefix are skipped as Kohya skips them.
    """
    counted = [record for record in dataset.images if record.trained]
    skipped = tuple(record.rel_path for record in dataset.images if not record.trained)
    placed, unreadable = bucketed(
        sorted(counted, key=lambda record: (record.folder, record.rel_path)), None, spec
    )
    images = [
        RegImage(record.rel_path, record.folder, record.repeats, size, assignment.bucket)
        for record, size, assignment in placed
    ]
    folders: dict[str, list[int]] = {}
    for image in images:
        folders.setdefault(image.folder, [image.repeats, 0])[1] += 1
    return RegSet(
        images=tuple(images),
        concepts=tuple(ConceptLoad(folder, *counts) for folder, counts in sorted(folders.items())),
        skipped=skipped,
        unreadable=tuple(sorted(unreadable.items())),
    )


def reg_tones(root: Path) -> tuple[int, DsbSummary]:
    """The reg folder's own white/black balance: ``(class images Kohya would use, their DSB)``.

    Measured apart from the training set (its DSB is not the training DSB) and without a
    cache, so nothing is written into the reg folder. Runs the analysis in this thread: call it
    from a worker.
    """
    from kiln.engine.analysis.dsb import summarise
    from kiln.engine.analysis.run import iter_analyses
    from kiln.engine.analysis.tones import DEFAULT_METHOD
    from kiln.engine.dataset.scan import scan_dataset

    records = [record for record in scan_dataset(root).images if record.trained]
    shares = [
        (result.white, record.repeats)
        for record, result, _ in iter_analyses(records, None, DEFAULT_METHOD, workers=1)
        if result.ok and result.white is not None
    ]
    return len(records), summarise(shares)
