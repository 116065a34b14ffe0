"""Kohya's aspect-ratio buckets: the bucket list for a resolution and where each image lands.

This follows sd-scripts' ``make_bucket_resolutions`` and ``BucketManager.select_bucket``
(``library/model_util.py``, ``library/train_util.py``), so Kiln's step counts match what
Kohya prints, and the training engine crops images exactly as Kohya does.

- Bucket list: the square ``floor(sqrt(area) / step) * step``, then for every width from
  ``min_size`` to ``max_size`` in steps of ``step`` the height
  ``min(max_size, floor(area / width / step) * step)``, when it is at least ``min_size``,
  in both orientations. At 512 this gives 17 buckets.
- Assignment (default): the bucket whose aspect ratio is nearest the image's (the first in
  sorted order on a tie; an image already of a bucket's size keeps it), the image scaled
  to cover it (rounded half up) and centre-cropped.
- ``no_upscale``: an image larger than the area shrinks to the area keeping its aspect
  ratio (one side rounded to the step, the one that keeps the ratio better), smaller images
  keep their size; the bucket is that size with both sides floored to the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from kiln.engine.errors import ImageError, UsageError

Size = tuple[int, int]


@dataclass(frozen=True)
class BucketSpec:
    """Kohya's bucketing settings.

    Attributes:
        resolution: Kohya's ``resolution``: the training size whose area the buckets share,
            either one side (``512`` means 512x512) or a ``(width, height)`` pair
            (``(512, 768)``). :attr:`target_size` always gives the pair.
        min_size: ``min_bucket_reso``, the smallest bucket side (default 256).
        max_size: ``max_bucket_reso``, the largest bucket side (default 1024).
        step: ``bucket_reso_steps``, what bucket sides are multiples of (default 64).
        no_upscale: ``bucket_no_upscale``: never enlarge an image; buckets follow image sizes.

    Like Kohya, a ``min_size`` that is not a multiple of ``step`` is rounded down to one and
    a ``max_size`` rounded up (see :attr:`min_bucket` and :attr:`max_bucket`).

    Raises:
        UsageError: a value Kohya would refuse (named by its Kohya key).
    """

    resolution: int | Size = 512
    min_size: int = 256
    max_size: int = 1024
    step: int = 64
    no_upscale: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.resolution, list):
            # Keep the spec hashable when a config file gives the pair as a list.
            object.__setattr__(self, "resolution", tuple(self.resolution))
        for name, value in (("min_bucket_reso", self.min_size), ("max_bucket_reso", self.max_size)):
            _require_positive_int(name, value)
        _require_positive_int("bucket_reso_steps", self.step)
        if self.step % 8:
            raise UsageError(
                f"bucket_reso_steps {self.step} is not a multiple of 8 (the VAE's cell); use 64, "
                "as Kohya does for SD 1.5"
            )
        width, height = self.target_size
        if self.max_bucket < self.min_bucket:
            raise UsageError(
                f"max_bucket_reso {self.max_size} is below min_bucket_reso {self.min_size}; swap them"
            )
        if min(width, height) < self.min_bucket:
            raise UsageError(
                f"resolution {width}x{height} is below min_bucket_reso {self.min_bucket}; "
                "lower min_bucket_reso or raise the resolution"
            )
        if max(width, height) > self.max_bucket:
            raise UsageError(
                f"resolution {width}x{height} is above max_bucket_reso {self.max_bucket}; "
                "raise max_bucket_reso or lower the resolution"
            )

    @property
    def target_size(self) -> Size:
        """The training resolution as ``(width, height)``."""
        if isinstance(self.resolution, tuple | list):
            if len(self.resolution) != 2:
                raise UsageError(f"resolution {self.resolution!r} must be one side or a (width, height) pair")
            width, height = self.resolution
        else:
            width = height = self.resolution
        _require_positive_int("resolution", width)
        _require_positive_int("resolution", height)
        return int(width), int(height)

    @property
    def area(self) -> int:
        """The pixel area every bucket stays within (Kohya's ``max_area``)."""
        width, height = self.target_size
        return width * height

    @property
    def min_bucket(self) -> int:
        """``min_size`` rounded down to the step, as Kohya adjusts it."""
        return self.min_size - self.min_size % self.step

    @property
    def max_bucket(self) -> int:
        """``max_size`` rounded up to the step, as Kohya adjusts it."""
        remainder = self.max_size % self.step
        return self.max_size if remainder == 0 else self.max_size + self.step - remainder


@dataclass(frozen=True)
class BucketAssignment:
    """Where one image goes: resize it to ``resized`` (covering the bucket), then crop.

    Attributes:
        bucket: The bucket's ``(width, height)``: the size the model trains on.
        resized: The size the image is resized to before cropping (never smaller than the
            bucket on either side).
        crop: ``(left, top)`` of the centre crop in the resized image.
    """

    bucket: Size
    resized: Size
    crop: Size


def bucket_resolutions(spec: BucketSpec) -> list[Size]:
    """The predefined buckets for ``spec``, sorted by ``(width, height)``.

    Why: the bucket list decides how images group into batches, and so how many steps an
    epoch takes. With ``no_upscale`` Kohya does not use this list (buckets follow image
    sizes); it is still returned for display.
    """
    return list(_resolutions(spec.area, spec.min_bucket, spec.max_bucket, spec.step))


@lru_cache(maxsize=64)
def _resolutions(area: int, min_size: int, max_size: int, step: int) -> tuple[Size, ...]:
    square = math.isqrt(area) // step * step
    found = {(square, square)}
    for width in range(min_size, max_size + 1, step):
        height = min(max_size, area // width // step * step)
        if height >= min_size:
            found.add((width, height))
            found.add((height, width))
    return tuple(sorted(found))


def assign_bucket(image_size: Size, spec: BucketSpec) -> BucketAssignment:
    """The bucket, resize and crop Kohya uses for an image of ``image_size`` (width, height).

    Why: step counts depend on how many images share a bucket, and a trainer that crops
    differently from Kohya trains on different pixels.

    Raises:
        ImageError: the size is not positive, or (with ``no_upscale``) the image is too
            small or too thin to fill one step, which Kohya cannot train either.
    """
    width, height = image_size
    if width < 1 or height < 1:
        raise ImageError(f"image size {width}x{height} is empty; the file is broken")
    if spec.no_upscale:
        resized = _shrunk_to_area(width, height, spec)
        bucket = (resized[0] - resized[0] % spec.step, resized[1] - resized[1] % spec.step)
        if bucket[0] < 1 or bucket[1] < 1:
            raise ImageError(
                f"image of {width}x{height} gives a {resized[0]}x{resized[1]} image with no_upscale, "
                f"under one bucket step ({spec.step} px) on a side; upscale it or train without no_upscale"
            )
    else:
        bucket = _nearest_bucket(width, height, spec)
        # A wider image than its bucket fits the bucket's height and overhangs sideways.
        wider = width / height > bucket[0] / bucket[1]
        scale = bucket[1] / height if wider else bucket[0] / width
        resized = (_round_half_up(width * scale), _round_half_up(height * scale))
    crop = ((resized[0] - bucket[0]) // 2, (resized[1] - bucket[1]) // 2)
    return BucketAssignment(bucket=bucket, resized=resized, crop=crop)


def _nearest_bucket(width: int, height: int, spec: BucketSpec) -> Size:
    buckets = _resolutions(spec.area, spec.min_bucket, spec.max_bucket, spec.step)
    if (width, height) in buckets:
        return (width, height)
    aspect = width / height
    # min() keeps the first of equal errors, as numpy's argmin does in Kohya.
    return min(buckets, key=lambda bucket: abs(bucket[0] / bucket[1] - aspect))


def _shrunk_to_area(width: int, height: int, spec: BucketSpec) -> Size:
    area = spec.area
    if width * height <= area:
        return (width, height)
    aspect = width / height
    exact_width = math.sqrt(area * aspect)
    exact_height = area / exact_width
    # Round one side to the step and derive the other; keep whichever pair is closer in ratio.
    width_first = _round_to_step(exact_width, spec.step)
    height_for_width = _round_to_step(width_first / aspect, spec.step)
    height_first = _round_to_step(exact_height, spec.step)
    width_for_height = _round_to_step(height_first * aspect, spec.step)
    if min(width_first, height_for_width, height_first, width_for_height) < 1:
        raise ImageError(
            f"image of {width}x{height} is too thin for no_upscale at {spec.step} px steps; "
            "crop it or train without no_upscale"
        )
    error_width_first = abs(width_first / height_for_width - aspect)
    error_height_first = abs(width_for_height / height_first - aspect)
    if error_width_first < error_height_first:
        return (width_first, _round_half_up(width_first / aspect))
    return (_round_half_up(height_first * aspect), height_first)


def _round_half_up(value: float) -> int:
    return int(value + 0.5)


def _round_to_step(value: float, step: int) -> int:
    # Kohya rounds to the nearest pixel, then down to the step.
    pixels = _round_half_up(value)
    return pixels - pixels % step


def _require_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} {value!r} must be a whole number of pixels, at least 1")
