"""Image quality: per-image figures measured in the analysis pass, and the dataset's judgement.

The figures come from the same decode as the white/black share (``measure.analyse_image``)
and are cached with it. They are measured on a grey copy resampled to a fixed area (about
512 x 512, the scale a LoRA trains at), so they neither depend on a file's resolution nor
on whether the fast or the exact path decoded it:

* ``sharpness``: variance of the 4-neighbour Laplacian; blur and flat areas make it small.
* ``clipped_dark`` / ``clipped_bright``: percent of pixels crushed to black / blown to white.
* ``entropy``: bits of the grey histogram; a nearly flat image holds little information.
* ``transparent``: percent of pixels with alpha below 128 (Kohya drops alpha and trains on
  whatever colour lies under them).
* ``phash`` / ``phash_mirror``: 64-bit perceptual hashes (imagehash) of the image and of its
  mirror, as hex, for near-duplicates that were re-encoded, resized or flipped.

:func:`judge_dataset` is pure: from every image's figures it ranks sharpness, groups
near-duplicates and gives each image its flags, each with a stable id and a one-line
reason. Thresholds live in :class:`QualityThresholds`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import imagehash
import numpy as np
from kiln.engine.analysis.tones import ALPHA_OPAQUE
from PIL import Image

QUALITY_AREA = 512 * 512
CLIP_DARK = 3  # grey values 0..3 count as crushed black
CLIP_BRIGHT = 252  # 252..255 count as blown white
# A perceptual hash splits 64 DCT coefficients at their median, so a structured image sets
# about 32 bits; a flat or one-directional image sets few, and all such images look alike.
MIN_HASH_BITS = 16

# Flag ids: stable, scripts and the dataset screen's filter match on them.
BLURRY = "blurry"
OVEREXPOSED = "overexposed"
UNDEREXPOSED = "underexposed"
LOW_INFORMATION = "low_information"
TRANSPARENCY = "transparency"
EXIF_ROTATION = "exif_rotation"
ODD_ASPECT = "odd_aspect"
LOW_RESOLUTION = "low_resolution"
DUPLICATE = "duplicate"
FLAG_IDS: tuple[str, ...] = (
    BLURRY,
    OVEREXPOSED,
    UNDEREXPOSED,
    LOW_INFORMATION,
    TRANSPARENCY,
    EXIF_ROTATION,
    ODD_ASPECT,
    LOW_RESOLUTION,
    DUPLICATE,
)

FIGURES: tuple[str, ...] = (
    "sharpness",
    "clipped_dark",
    "clipped_bright",
    "entropy",
    "transparent",
    "phash",
    "phash_mirror",
)

_ROTATIONS = {
    2: "mirrored",
    3: "rotated 180°",
    4: "flipped vertically",
    5: "transposed",
    6: "rotated 90°",
    7: "transversed",
    8: "rotated 270°",
}


@dataclass(frozen=True)
class Flag:
    """A quality problem: ``id`` is stable (one of :data:`FLAG_IDS`), ``reason`` one line."""

    id: str
    reason: str


@dataclass(frozen=True)
class QualityThresholds:
    """When a figure becomes a flag. The defaults suit SD 1.5 LoRAs trained at 512.

    Attributes:
        resolution: Training resolution; smaller images would be upscaled to their bucket.
        upscale_tolerance: Upscaling by less than this factor is not worth a flag.
        min_sharpness: Laplacian variance below which an image is blurry whatever its peers.
        relative_sharpness: Blurry too when under this share of the dataset's median...
        relative_min_images: ...provided the dataset has at least this many measured images.
        max_clipped: Percent of crushed or blown pixels above which exposure is flagged.
        min_entropy: Bits of grey histogram below which an image holds little information.
        max_transparent: Percent of transparent pixels above which transparency is flagged.
        max_aspect: Long side over short side above which the aspect is odd.
        duplicate_distance: Hamming distance between perceptual hashes for near-duplicates.
    """

    resolution: int = 512
    upscale_tolerance: float = 1.05
    min_sharpness: float = 25.0
    relative_sharpness: float = 0.2
    relative_min_images: int = 5
    max_clipped: float = 25.0
    min_entropy: float = 2.5
    max_transparent: float = 1.0
    max_aspect: float = 2.0
    duplicate_distance: int = 8


@dataclass(frozen=True)
class ImageQuality:
    """One image's judgement within its dataset.

    Attributes:
        flags: Its problems, in :data:`FLAG_IDS` order; empty when none.
        sharpness_rank: 1 for the sharpest image of the dataset; None when not measured.
        duplicate_of: The group member kept as the original when this one is a duplicate.
    """

    flags: tuple[Flag, ...] = ()
    sharpness_rank: int | None = None
    duplicate_of: str | None = None

    @property
    def flag_ids(self) -> list[str]:
        """The flags' ids."""
        return [flag.id for flag in self.flags]


@dataclass(frozen=True)
class DatasetQuality:
    """The quality judgement of a set of images (see :func:`judge_dataset`).

    Attributes:
        images: Each image's judgement, keyed by the paths given.
        duplicates: Near-duplicate groups, each listing every member once, sorted.
    """

    images: dict[str, ImageQuality] = field(default_factory=dict)
    duplicates: list[list[str]] = field(default_factory=list)

    def flagged(self, path: str) -> bool:
        """Whether ``path`` has any flag."""
        quality = self.images.get(path)
        return bool(quality and quality.flags)


# Figures on a grey copy: used by the analysis pass and by the tile scorer.


def sharpness(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a grey image: small when blurred or flat."""
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    g = grey.astype(np.int16)
    centre = g[1:-1, 1:-1]
    laplacian = 4 * centre - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(laplacian.var(dtype=np.float64))


def grey_histogram(grey: np.ndarray) -> np.ndarray:
    """Pixel counts of the 256 grey levels."""
    return np.bincount(grey.ravel(), minlength=256)


def clipped_shares(histogram: np.ndarray) -> tuple[float, float]:
    """Percent of pixels crushed to black and blown to white, from a grey histogram."""
    total = max(1, int(histogram.sum()))
    return (
        100.0 * float(histogram[: CLIP_DARK + 1].sum()) / total,
        100.0 * float(histogram[CLIP_BRIGHT:].sum()) / total,
    )


def entropy_bits(histogram: np.ndarray) -> float:
    """Shannon entropy of a grey histogram, in bits (0 flat .. 8)."""
    counts = histogram[histogram > 0].astype(np.float64)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def perceptual_hashes(grey: np.ndarray) -> tuple[str, str]:
    """Hex perceptual hashes of the grey image and of its mirror: imagehash's pHash.

    The grey copy is reduced to 32 x 32 (box, then Lanczos: a tenth of the time of Lanczos
    alone), then hashed the way ``imagehash.phash`` hashes a 32 x 32 image: 2-D DCT-II, the
    8 x 8 lowest frequencies against their median. The DCT is two products with a cached
    matrix because ``imagehash.phash`` calls ``scipy.fftpack``, whose import alone costs
    half a second in every worker pool Kiln starts. Mirroring a signal negates its odd DCT
    coefficients, so the mirror's hash comes from the same transform. A test checks the
    hashes against ``imagehash.phash`` itself.
    """
    small = Image.fromarray(grey, "L").resize(
        (_PHASH_SIDE, _PHASH_SIDE), Image.Resampling.LANCZOS, reducing_gap=2.0
    )
    pixels = np.asarray(small, dtype=np.float64)
    # Rounding drops the matrix products' float noise (1e-10), so coefficients that are zero,
    # as in a flat image, are exactly zero as scipy gives them, and sit on the median.
    low = np.round((_DCT_LOW @ pixels @ _DCT_LOW.T)[:_HASH_SIDE, :_HASH_SIDE], 6)
    mirrored = low * _MIRROR_SIGNS
    return (
        str(imagehash.ImageHash(low > np.median(low))),
        str(imagehash.ImageHash(mirrored > np.median(mirrored))),
    )


def _dct_matrix(size: int) -> np.ndarray:
    """Rows of the unnormalised DCT-II (scipy.fftpack's type 2): 2 cos(pi k (2n + 1) / 2N)."""
    k = np.arange(size)[:, None]
    n = np.arange(size)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * size))


_HASH_SIDE = 8  # imagehash's hash_size: 64-bit hashes
_PHASH_SIDE = 32  # hash_size x imagehash's highfreq_factor 4
_DCT_LOW = _dct_matrix(_PHASH_SIDE)[:_HASH_SIDE]
_MIRROR_SIGNS = np.where(np.arange(_HASH_SIDE) % 2 == 1, -1.0, 1.0)[None, :]


def grey_figures(grey: np.ndarray) -> dict[str, float]:
    """Sharpness, clipped shares and entropy of a grey copy, rounded for storage."""
    histogram = grey_histogram(grey)
    dark, bright = clipped_shares(histogram)
    return {
        "sharpness": round(sharpness(grey), 2),
        "clipped_dark": round(dark, 3),
        "clipped_bright": round(bright, 3),
        "entropy": round(entropy_bits(histogram), 3),
    }


def image_figures(grey: np.ndarray, alpha: np.ndarray | None) -> dict[str, float | str]:
    """Every per-image quality figure (:data:`FIGURES`) from a fixed-area grey copy and alpha."""
    figures: dict[str, float | str] = dict(grey_figures(grey))
    transparent = 0.0
    if alpha is not None and alpha.size:
        transparent = 100.0 * float(np.count_nonzero(alpha < ALPHA_OPAQUE)) / alpha.size
    figures["transparent"] = round(transparent, 3)
    figures["phash"], figures["phash_mirror"] = perceptual_hashes(grey)
    return figures


# Judgements.


def training_upscale(width: int, height: int, resolution: int) -> float:
    """How much training at ``resolution`` would enlarge an image (1.0: not at all).

    Kohya fits each image to an aspect bucket of at most ``resolution**2`` pixels whose
    sides are at least ``resolution / 2``; an image smaller than its bucket in area, or with
    a short side under that minimum, is upscaled.
    """
    if width <= 0 or height <= 0:
        return 1.0
    by_area = resolution / math.sqrt(width * height)
    by_side = (resolution / 2) / min(width, height)
    return max(1.0, by_area, by_side)


def image_flags(
    metrics: Mapping[str, Any], thresholds: QualityThresholds = QualityThresholds()
) -> list[Flag]:
    """The flags one image earns on its own figures (no comparison with other images)."""
    flags: list[Flag] = []
    t = thresholds
    value = metrics.get("sharpness")
    if isinstance(value, (int, float)) and value < t.min_sharpness:
        flags.append(
            Flag(BLURRY, f"sharpness {value:.0f} is under {t.min_sharpness:g}: blurred or featureless")
        )
    value = metrics.get("clipped_bright")
    if isinstance(value, (int, float)) and value > t.max_clipped:
        flags.append(Flag(OVEREXPOSED, f"{value:.0f}% of pixels are blown to white"))
    value = metrics.get("clipped_dark")
    if isinstance(value, (int, float)) and value > t.max_clipped:
        flags.append(Flag(UNDEREXPOSED, f"{value:.0f}% of pixels are crushed to black"))
    value = metrics.get("entropy")
    if isinstance(value, (int, float)) and value < t.min_entropy:
        flags.append(
            Flag(
                LOW_INFORMATION, f"grey histogram holds {value:.1f} bits (photos hold 6 to 7.5): nearly flat"
            )
        )
    value = metrics.get("transparent")
    if isinstance(value, (int, float)) and value > t.max_transparent:
        flags.append(
            Flag(
                TRANSPARENCY,
                f"{value:.0f}% of pixels are transparent; Kohya drops alpha: flatten it on a background",
            )
        )
    orientation = metrics.get("exif_orientation", 1)
    if isinstance(orientation, int) and orientation in _ROTATIONS:
        flags.append(
            Flag(
                EXIF_ROTATION,
                f"EXIF says {_ROTATIONS[orientation]} but Kohya ignores EXIF, so it trains as stored: "
                "rotate the pixels and drop the tag",
            )
        )
    width, height = metrics.get("width"), metrics.get("height")
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        aspect = max(width, height) / min(width, height)
        if aspect > t.max_aspect:
            flags.append(
                Flag(ODD_ASPECT, f"aspect {aspect:.2f}:1 lands in a sparse bucket (Kohya crops beyond 4:1)")
            )
        factor = training_upscale(width, height, t.resolution)
        if factor > t.upscale_tolerance:
            flags.append(
                Flag(
                    LOW_RESOLUTION,
                    f"{width}x{height} would be upscaled {factor:.2f}x to train at {t.resolution}",
                )
            )
    return flags


def hash_value(text: object) -> int | None:
    """A stored hex hash as an integer; None when absent, malformed or too flat to compare."""
    if not isinstance(text, str):
        return None
    try:
        value = int(text, 16)
    except ValueError:
        return None
    return value if value.bit_count() >= MIN_HASH_BITS else None


def duplicate_groups(
    hashes: Mapping[str, tuple[object, object]], max_distance: int = QualityThresholds.duplicate_distance
) -> list[list[str]]:
    """Groups of near-duplicate images from their ``(phash, phash_mirror)`` hex hashes.

    Two images are near-duplicates when their hashes, or one's hash and the other's mirrored
    hash, differ in at most ``max_distance`` bits. Groups are the connected components of
    that relation (union-find), so every member is listed once; singletons are left out.
    """
    paths = []
    plain: list[int] = []
    mirror: list[int] = []
    for path in sorted(hashes):
        first, second = (hash_value(h) for h in hashes[path])
        if first is None:
            continue
        paths.append(path)
        plain.append(first)
        mirror.append(second if second is not None else first)
    if len(paths) < 2:
        return []
    plain_arr = np.array(plain, dtype=np.uint64)
    mirror_arr = np.array(mirror, dtype=np.uint64)
    parent = list(range(len(paths)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(paths) - 1):
        rest = slice(i + 1, None)
        distance = np.minimum(
            _popcount(plain_arr[rest] ^ plain_arr[i]), _popcount(plain_arr[rest] ^ mirror_arr[i])
        )
        distance = np.minimum(distance, _popcount(mirror_arr[rest] ^ plain_arr[i]))
        for j in np.flatnonzero(distance <= max_distance):
            a, b = root(i), root(i + 1 + int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
    members: dict[int, list[str]] = {}
    for i, path in enumerate(paths):
        members.setdefault(root(i), []).append(path)
    return sorted(group for group in members.values() if len(group) > 1)


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(values)
    bits = np.unpackbits(values.view(np.uint8).reshape(-1, 8), axis=1)  # pragma: no cover
    return bits.sum(axis=1)  # pragma: no cover


def judge_dataset(
    metrics: Mapping[str, Mapping[str, Any]], thresholds: QualityThresholds = QualityThresholds()
) -> DatasetQuality:
    """Judge a set of images from their cached figures: ranks, duplicate groups and flags.

    Args:
        metrics: Each image's ``ImageAnalysis.metrics``, keyed by path. Images without
            figures (unreadable, or cached by an older Kiln) get no flags and no rank.
        thresholds: When figures become flags.

    Returns:
        The judgement. In a duplicate group the largest, then sharpest, then first image by
        path is the original; the others are flagged ``duplicate``.
    """
    t = thresholds
    sharp = {
        path: float(m["sharpness"])
        for path, m in metrics.items()
        if isinstance(m.get("sharpness"), (int, float))
    }
    ranked = sorted(sharp, key=lambda path: (-sharp[path], path))
    ranks = {path: rank for rank, path in enumerate(ranked, start=1)}
    typical = median(sharp.values()) if len(sharp) >= max(1, t.relative_min_images) else None
    groups = duplicate_groups(
        {path: (m.get("phash"), m.get("phash_mirror")) for path, m in metrics.items()},
        t.duplicate_distance,
    )
    original_of: dict[str, str] = {}
    for group in groups:
        keeper = min(group, key=lambda path: (-_area(metrics[path]), -sharp.get(path, 0.0), path))
        for path in group:
            if path != keeper:
                original_of[path] = keeper
    images: dict[str, ImageQuality] = {}
    for path, m in metrics.items():
        flags = image_flags(m, t)
        if (
            path in sharp
            and typical is not None
            and typical > 0
            and sharp[path] < t.relative_sharpness * typical
            and not any(flag.id == BLURRY for flag in flags)
        ):
            flags.append(
                Flag(
                    BLURRY,
                    f"sharpness {sharp[path]:.0f} is under {t.relative_sharpness:.0%} of the dataset's "
                    f"median ({typical:.0f}): blurred or featureless",
                )
            )
        if path in original_of:
            flags.append(Flag(DUPLICATE, f"near-duplicate of {original_of[path]}"))
        flags.sort(key=lambda flag: FLAG_IDS.index(flag.id))
        images[path] = ImageQuality(tuple(flags), ranks.get(path), original_of.get(path))
    return DatasetQuality(images, groups)


def _area(m: Mapping[str, Any]) -> int:
    width, height = m.get("width"), m.get("height")
    return width * height if isinstance(width, int) and isinstance(height, int) else 0
