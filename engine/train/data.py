"""The training data as Kohya sees it: included images, repeats, captions, buckets, latents.

Images are the dataset's included images in Kohya-trained folders (``N_name/``), each
assigned to a bucket by :mod:`kiln.engine.plan.buckets`, so an epoch has exactly the batches
``kiln calc`` counts. The order of an epoch is a pure function of the seed and the epoch
number, which is what lets a resumed run continue the same order.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.engine.dataset.captions import read_caption
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.selection import included_records
from kiln.engine.dataset.store import STATE_FOLDER, Store
from kiln.engine.errors import DatasetError, ImageError
from kiln.engine.plan.buckets import BucketAssignment, BucketSpec, Size, assign_bucket
from kiln.engine.plan.loads import bucketed

if TYPE_CHECKING:
    import torch
    from kiln.engine.train.config import DatasetConfig

Batch = tuple[int, ...]


@dataclass(frozen=True)
class TrainImage:
    """One image as training uses it.

    Attributes:
        rel_path: Path relative to the dataset root (the image's key everywhere in Kiln).
        path: The file.
        folder: Its concept folder (``10_name``).
        repeats: Times it is seen per epoch.
        caption: Its caption as written (shuffling and dropout happen per step).
        size: The stored ``(width, height)``.
        file_key: Size and modification time, so cached latents notice an edited file.
        assignment: Bucket, resize and crop.
        is_reg: A regularisation (class) image: its loss is weighted by
            ``train.prior_loss_weight``; its ``rel_path`` starts with ``reg/``.
    """

    rel_path: str
    path: Path
    folder: str
    repeats: int
    caption: str
    size: Size
    file_key: str
    assignment: BucketAssignment
    is_reg: bool = False

    @property
    def bucket(self) -> Size:
        """The bucket's ``(width, height)``."""
        return self.assignment.bucket


@dataclass(frozen=True)
class TrainingSet:
    """The images of a run and what was left out.

    Attributes:
        root: The dataset folder.
        images: Trained images, sorted by path.
        skipped: Included images in places Kohya skips (root, unprefixed or ``0_`` folders).
        unreadable: ``(rel_path, reason)`` for images that cannot be sized or bucketed.
        warnings: One line per problem worth telling the user (missing captions...).
        reg_items: Kohya's ``num_reg_images``: the reg folders' images times their folders'
            repeats, before balancing (0 without reg images).
        reg_dirs: Kohya's ``ss_reg_dataset_dirs``: per reg folder, its own repeats and images.
    """

    root: Path
    images: tuple[TrainImage, ...]
    skipped: tuple[str, ...] = ()
    unreadable: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()
    reg_items: int = 0
    reg_dirs: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def trained(self) -> tuple[TrainImage, ...]:
        """The training images, without the reg images."""
        return tuple(image for image in self.images if not image.is_reg)

    def bucket_items(self) -> dict[Size, int]:
        """Samples per bucket per epoch (repeats included): what ``plan_steps`` takes."""
        items: dict[Size, int] = {}
        for image in self.images:
            items[image.bucket] = items.get(image.bucket, 0) + image.repeats
        return dict(sorted(items.items()))

    def dataset_dirs(self) -> dict[str, dict[str, int]]:
        """Kohya's ``ss_dataset_dirs``: per training folder, its repeats and image count."""
        dirs: dict[str, dict[str, int]] = {}
        for image in self.trained:
            entry = dirs.setdefault(image.folder, {"n_repeats": image.repeats, "img_count": 0})
            entry["img_count"] += 1
        return dirs

    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """Kohya's ``ss_tag_frequency``: per folder, how many captions hold each comma-separated tag."""
        frequency: dict[str, dict[str, int]] = {}
        for image in self.trained:
            tags = frequency.setdefault(image.folder, {})
            for tag in {tag.strip() for tag in image.caption.split(",") if tag.strip()}:
                tags[tag] = tags.get(tag, 0) + 1
        return frequency


def bucket_spec(config: DatasetConfig) -> BucketSpec:
    """Kohya's bucket settings from the ``[dataset]`` table."""
    return BucketSpec(
        resolution=config.resolution,
        min_size=config.min_bucket_reso,
        max_size=config.max_bucket_reso,
        step=config.bucket_reso_steps,
        no_upscale=config.bucket_no_upscale,
    )


def training_set(config: DatasetConfig) -> TrainingSet:
    """Scan the dataset and bucket what Kohya would train, honouring Kiln's selection.

    Raises:
        DatasetError: The folder is missing, or nothing in it can be trained.
    """
    dataset = scan_dataset(Path(config.path), config.caption_extension)
    spec = bucket_spec(config)
    with Store(dataset.root) as store:
        records = included_records(dataset.images, store)
        counted = [record for record in records if record.trained]
        placed, problems = bucketed(counted, store, spec)
    skipped = tuple(record.rel_path for record in records if not record.trained)
    images: list[TrainImage] = []
    warnings: list[str] = []
    missing_captions = 0
    for record, size, assignment in placed:
        caption = read_caption(record.caption_path)
        if not caption.exists:
            missing_captions += 1
        if caption.lossy:
            warnings.append(
                f"{record.rel_path}: caption is not valid UTF-8; trained with replacement characters"
            )
        images.append(
            TrainImage(
                rel_path=record.rel_path,
                path=record.path,
                folder=record.folder,
                repeats=record.repeats,
                caption=caption.text.strip(),
                size=size,
                file_key=f"{record.size}:{record.mtime_ns}",
                assignment=assignment,
            )
        )
    if missing_captions:
        warnings.append(
            f"{missing_captions} image(s) have no {dataset.caption_extension} caption; "
            "trained with an empty one"
        )
    if skipped:
        warnings.append(
            f"{len(skipped)} included image(s) are in folders Kohya skips (no N_ prefix); not trained"
        )
    for rel_path, reason in sorted(problems.items()):
        warnings.append(f"{rel_path}: {reason}; not trained")
    if not images:
        raise DatasetError(
            f"{dataset.root}: no image to train; Kiln trains included images in N_name/ folders, e.g. "
            f"{dataset.root}/10_name/001.png"
        )
    return TrainingSet(
        root=dataset.root,
        images=tuple(images),
        skipped=skipped,
        unreadable=tuple(sorted(problems.items())),
        warnings=tuple(warnings),
    )


REG_PREFIX = "reg/"


def with_reg_images(
    data: TrainingSet, config: DatasetConfig, log: logging.Logger | None = None
) -> TrainingSet:
    """``data`` with the regularisation images of ``config.reg_path`` added, balanced to its
    training samples as Kohya balances them (:mod:`kiln.engine.plan.reg`): the used ones with
    their repeats, a reg image without a caption file captioned with its folder's class word
    (``1_dog`` -> ``dog``), as Kohya's class tokens.

    Raises:
        DatasetError: The folder is missing or holds no class image Kohya would use.
    """
    from kiln.engine.plan.reg import reg_set

    root = Path(config.reg_path)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder; set dataset.reg_path to a folder of N_class/ folders")
    dataset = scan_dataset(root, config.caption_extension)
    spec = bucket_spec(config)
    reg = reg_set(dataset, spec)
    if not reg.images:
        raise DatasetError(
            f"{root}: no class image Kohya would use; put them in a folder such as {root}/1_class/"
        )
    repeats = reg.repeats_for(sum(image.repeats for image in data.trained))
    records = {record.rel_path: record for record in dataset.images}
    added: list[TrainImage] = []
    for image in reg.images:
        if image.rel_path not in repeats:
            continue
        record = records[image.rel_path]
        caption = read_caption(record.caption_path)
        text = caption.text.strip() if caption.exists else image.folder.partition("_")[2]
        added.append(
            TrainImage(
                rel_path=REG_PREFIX + image.rel_path,
                path=record.path,
                folder=image.folder,
                repeats=repeats[image.rel_path],
                caption=text,
                size=image.size,
                file_key=f"{record.size}:{record.mtime_ns}",
                assignment=assign_bucket(image.size, spec),
                is_reg=True,
            )
        )
    if log is not None:
        log.info(
            "reg: %d of %d class image(s) from %s, %d samples per epoch",
            len(added),
            len(reg.images),
            root,
            sum(image.repeats for image in added),
        )
    return replace(
        data,
        images=data.images + tuple(added),
        reg_items=reg.items,
        reg_dirs={c.folder: {"n_repeats": c.repeats, "img_count": c.images} for c in reg.concepts},
        warnings=data.warnings + tuple(f"{rel_path}: {why}; not used" for rel_path, why in reg.unreadable),
    )


def epoch_batches(images: Iterable[TrainImage], batch_size: int, seed: int, epoch: int) -> list[Batch]:
    """The batches of one epoch, as indices into ``images``, in training order.

    Kohya's way: every image appears ``repeats`` times in its bucket; each bucket is
    shuffled and cut into batches (the last one may be short); then the batches are
    shuffled together. The order depends only on ``(seed, epoch)``.
    """
    rng = random.Random(f"kiln-order:{seed}:{epoch}")
    by_bucket: dict[Size, list[int]] = {}
    for index, image in enumerate(images):
        by_bucket.setdefault(image.bucket, []).extend([index] * image.repeats)
    batches: list[Batch] = []
    for bucket in sorted(by_bucket):
        items = by_bucket[bucket]
        rng.shuffle(items)
        batches.extend(tuple(items[start : start + batch_size]) for start in range(0, len(items), batch_size))
    rng.shuffle(batches)
    return batches


def step_caption(caption: str, config: DatasetConfig, rng: random.Random) -> str:
    """The caption one step trains on: dropped out, or its tags shuffled after ``keep_tokens``."""
    if config.caption_dropout_rate > 0 and rng.random() < config.caption_dropout_rate:
        return ""
    if not config.shuffle_caption:
        return caption
    tags = [tag.strip() for tag in caption.split(",")]
    kept, rest = tags[: config.keep_tokens], tags[config.keep_tokens :]
    rng.shuffle(rest)
    return ", ".join(tag for tag in kept + rest if tag)


def caption_rng(seed: int, epoch: int, batch: int) -> random.Random:
    """The random source for one batch's captions (reproducible on resume)."""
    return random.Random(f"kiln-caption:{seed}:{epoch}:{batch}")


def load_pixels(image: TrainImage) -> torch.Tensor:
    """The image resized to cover its bucket and centre-cropped, as a ``(3, H, W)`` tensor in [-1, 1].

    Colour handling follows Kohya: first frame, converted to RGB (alpha dropped, EXIF
    rotation ignored); 16-bit images are scaled to 8 bits, not clipped.
    """
    import numpy as np
    import torch
    from kiln.engine.analysis.decode import decode_image
    from PIL import Image

    try:
        decoded = decode_image(image.path, exact=True)
    except ImageError as exc:  # name the file: a step's error must say which image to fix
        raise ImageError(f"{image.rel_path}: {exc}") from exc
    pixels = decoded.pixels
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    picture = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    target = image.assignment.resized
    if picture.size != target:
        upscale = target[0] > picture.size[0]
        picture = picture.resize(target, Image.Resampling.LANCZOS if upscale else Image.Resampling.BOX)
    left, top = image.assignment.crop
    width, height = image.bucket
    picture = picture.crop((left, top, left + width, top + height))
    array = np.asarray(picture, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class LatentCache:
    """VAE latents per image and bucket, computed once (in memory, and on disk when asked).

    Disk entries live in ``<dataset>/.kiln/latents/<model fingerprint>/`` so runs and
    sweeps on the same dataset and model share them; a changed file, bucket or model gets
    a new entry.
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._memory: dict[str, torch.Tensor] = {}

    @staticmethod
    def key(image: TrainImage) -> str:
        """The entry's name: the image's path, file state and crop."""
        assignment = image.assignment
        text = f"{image.rel_path}|{image.file_key}|{image.bucket}|{assignment.resized}|{assignment.crop}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def get(self, image: TrainImage) -> torch.Tensor | None:
        """The cached latent, or None."""
        key = self.key(image)
        latent = self._memory.get(key)
        if latent is None and self.folder is not None:
            path = self.folder / f"{key}.safetensors"
            if path.is_file():
                from safetensors.torch import load_file

                try:
                    latent = load_file(str(path))["latent"]
                except Exception:  # a damaged entry is recomputed
                    latent = None
                if latent is not None:
                    self._memory[key] = latent
        return latent

    def put(self, image: TrainImage, latent: torch.Tensor) -> None:
        """Keep a latent (float32, on the CPU)."""
        key = self.key(image)
        latent = latent.detach().to("cpu").float().contiguous()
        self._memory[key] = latent
        if self.folder is not None:
            from kiln.engine.fsutil import atomic_write_bytes
            from safetensors.torch import save

            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.folder / f"{key}.safetensors", save({"latent": latent}))

    def __len__(self) -> int:
        return len(self._memory)


def disk_cache_folder(root: Path, fingerprint: str) -> Path:
    """Where disk-cached latents for a dataset and model live."""
    return root / STATE_FOLDER / "latents" / fingerprint


def split_validation(
    data: TrainingSet, share: float, seed: int
) -> tuple[TrainingSet, tuple[TrainImage, ...]]:
    """Hold out about ``share`` of the images for a validation loss; the rest train.

    The held-out images are a pure function of the seed and the images' paths, so a resumed
    run and every run of a sweep with the same seed hold out the same slice. At least one
    image is held out and at least one trains.

    Raises:
        DatasetError: Fewer than two images, so nothing can be held out.
    """
    images = list(data.images)
    if len(images) < 2:
        raise DatasetError(
            f"{data.root}: train.validation_split needs at least 2 images (1 to train, 1 to hold out); "
            "set it to 0"
        )
    count = min(len(images) - 1, max(1, round(share * len(images))))

    def rank(image: TrainImage) -> str:
        return hashlib.sha256(f"kiln-validation:{seed}:{image.rel_path}".encode()).hexdigest()

    held = {image.rel_path for image in sorted(images, key=rank)[:count]}
    trained = tuple(image for image in images if image.rel_path not in held)
    validation = tuple(image for image in images if image.rel_path in held)
    return replace(data, images=trained), validation
