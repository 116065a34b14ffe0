"""What to fix: each flagged image's operations, proposed from the quality judgement.

Nothing is read or written here beyond the quality report: a plan can be shown, edited
(accept or skip an image) and then applied (:mod:`kiln.engine.fixup.write`). The upscale
target is the size Kohya's bucketing would resize the image to (the plan's bucket
assignment): an image that bucketing would enlarge by more than the quality check's
tolerance is the one to fix, and enlarging it to exactly that size leaves Kohya nothing to
stretch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kiln.engine.analysis.quality import (
    EXIF_ROTATION,
    LOW_RESOLUTION,
    OVEREXPOSED,
    TRANSPARENCY,
    UNDEREXPOSED,
)
from kiln.engine.analysis.quality_report import QualityReport, QualityRow
from kiln.engine.errors import ImageError, UsageError
from kiln.engine.fixup.ops import (
    CROP,
    DEFAULT_CLIP,
    FLATTEN,
    LEVELS,
    ORIENTATION,
    UPSCALE,
    Operation,
)
from kiln.engine.plan.buckets import BucketSpec, assign_bucket

SMALL, ROTATED, TRANSPARENT, EXPOSURE = "small", "rotated", "transparent", "levels"
KINDS = (SMALL, ROTATED, TRANSPARENT, EXPOSURE)
# Mid-tone gamma proposed for each exposure flag (levels' manual gamma): an image blown to
# white is darkened a little, one crushed to black brightened; the user can set it.
EXPOSURE_GAMMA = {OVEREXPOSED: 0.8, UNDEREXPOSED: 1.25}
MAX_SCALE = 8.0
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class FixupOptions:
    """How to fix (the CLI's and the Fix-up tab's settings).

    Attributes:
        kinds: Which problems to fix, from :data:`KINDS`.
        spec: The training buckets (resolution and bucket settings), for the upscale target.
        scale: Upscale the small images by this factor instead of to their bucket's size.
        method: ``lanczos`` or the super-resolution model's name, recorded per image.
        background: Colour transparency is flattened onto, as ``#rrggbb``.
        clip: Auto levels: percent of pixels clipped at each end.
        gamma: Levels' mid-tone gamma for every exposure fix; None: by flag.
        upscale_tolerance: Bucketing enlarging by no more than this is left alone.
    """

    kinds: frozenset[str] = frozenset(KINDS)
    spec: BucketSpec = field(default_factory=BucketSpec)
    scale: float | None = None
    method: str = "lanczos"
    background: str = "#ffffff"
    clip: float = DEFAULT_CLIP
    gamma: float | None = None
    upscale_tolerance: float = 1.05

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise UsageError(f"fix-up kinds {sorted(unknown)}: choose from {', '.join(KINDS)}")
        if self.scale is not None and not 1 < self.scale <= MAX_SCALE:
            raise UsageError(f"--scale {self.scale:g}: upscale by more than 1 and at most {MAX_SCALE:g}")


@dataclass(frozen=True)
class ImageFix:
    """The operations proposed for one image, in the order they apply.

    Attributes:
        rel_path: The image, relative to the dataset root.
        operations: What to do (levels' points are found when it is applied).
        reasons: Why, one line per operation.
        size: The stored size, ``(width, height)``.
        result_size: The size after the operations.
    """

    rel_path: str
    operations: tuple[Operation, ...]
    reasons: tuple[str, ...]
    size: tuple[int, int]
    result_size: tuple[int, int]

    def to_json(self) -> dict:
        return {
            "path": self.rel_path,
            "operations": [op.to_json() for op in self.operations],
            "reasons": list(self.reasons),
            "size": list(self.size),
            "result_size": list(self.result_size),
        }


def plan_fixes(
    report: QualityReport,
    options: FixupOptions,
    done: Mapping[str, frozenset[str]] | None = None,
    crops: Mapping[str, Box] | None = None,
) -> tuple[list[ImageFix], list[str]]:
    """One :class:`ImageFix` per image that needs any of ``options.kinds``, in path order;
    and one line for each image that cannot be fixed (unreadable), naming it. ``done`` holds
    the operations earlier fix-ups applied to each image; they are not proposed again.
    ``crops`` are boxes the user chose, by image.

    Raises:
        UsageError: a crop names an image the dataset does not hold, or a box outside it.
    """
    done, crops = done or {}, crops or {}
    unknown = sorted(set(crops) - {row.record.rel_path for row in report.rows})
    if unknown:
        raise UsageError(f"--crop {unknown[0]}: no such image in the dataset; give its path inside it")
    fixes: list[ImageFix] = []
    problems: list[str] = []
    for row in report.rows:
        if row.analysis.error:
            problems.append(f"{row.record.rel_path}: {row.analysis.error}; left as it is")
            continue
        path = row.record.rel_path
        fix = plan_image(row, options, done.get(path, frozenset()), crops.get(path))
        if fix is not None:
            fixes.append(fix)
    return fixes, problems


def plan_image(
    row: QualityRow, options: FixupOptions, done: frozenset[str] = frozenset(), crop: Box | None = None
) -> ImageFix | None:
    """The fix for one image of a quality report, or None when it needs none of the kinds
    (or only operations in ``done``, which earlier fix-ups applied to it already).

    ``crop`` is a box ``(left, top, right, bottom)`` in the image as the fix has it by then
    (upright when its orientation is baked); a crop the bucketing would then enlarge is
    upscaled too, flagged or not.

    Raises:
        UsageError: the crop box does not lie inside the image.
    """
    metrics = row.analysis.metrics
    width, height = metrics.get("width"), metrics.get("height")
    if not isinstance(width, int) or not isinstance(height, int) or width < 1 or height < 1:
        return None
    flags = {flag.id: flag.reason for flag in row.quality.flags}
    operations: list[Operation] = []
    reasons: list[str] = []
    size = (width, height)
    exif = metrics.get("exif_orientation", 1)
    if (
        ROTATED in options.kinds
        and EXIF_ROTATION in flags
        and ORIENTATION not in done
        and isinstance(exif, int)
    ):
        operations.append(Operation(ORIENTATION, {"exif": exif}))
        reasons.append(flags[EXIF_ROTATION])
        if exif >= 5:  # orientations 5..8 turn the image a quarter: the sides swap
            size = (height, width)
    if crop is not None:
        left, top, right, bottom = crop
        if not (0 <= left < right <= size[0] and 0 <= top < bottom <= size[1]):
            raise UsageError(
                f"--crop {row.record.rel_path}={left},{top},{right},{bottom}: the box must lie inside "
                f"its {size[0]}x{size[1]} image (left < right, top < bottom)"
            )
        operations.append(Operation(CROP, {"box": [left, top, right, bottom]}))
        reasons.append(f"cropped to {right - left}x{bottom - top} as asked")
        size = (right - left, bottom - top)
    if TRANSPARENT in options.kinds and TRANSPARENCY in flags and FLATTEN not in done:
        operations.append(Operation(FLATTEN, {"background": options.background}))
        reasons.append(flags[TRANSPARENCY])
    exposure = next((flag for flag in (OVEREXPOSED, UNDEREXPOSED) if flag in flags), None)
    # After a flatten the blown (or crushed) share is largely the new background: levels
    # would only darken (or lift) the subject, so it is not proposed then.
    if EXPOSURE in options.kinds and exposure is not None and not {LEVELS, FLATTEN} & done:
        gamma = options.gamma if options.gamma is not None else EXPOSURE_GAMMA[exposure]
        operations.append(Operation(LEVELS, {"clip": options.clip, "gamma": gamma}))
        reasons.append(flags[exposure])
    target = upscale_target(size, options)
    small = LOW_RESOLUTION in flags or crop is not None
    if SMALL in options.kinds and small and target is not None and UPSCALE not in done:
        params = {"width": target[0], "height": target[1], "method": options.method}
        operations.append(Operation(UPSCALE, params))
        reasons.append(
            flags[LOW_RESOLUTION]
            if crop is None and LOW_RESOLUTION in flags
            else f"{size[0]}x{size[1]} would be upscaled to {target[0]}x{target[1]} to train"
        )
        result = target
    else:
        result = size
    if not operations:
        return None
    return ImageFix(row.record.rel_path, tuple(operations), tuple(reasons), (width, height), result)


def upscale_target(size: tuple[int, int], options: FixupOptions) -> tuple[int, int] | None:
    """The size to upscale an upright ``size`` to, or None when bucketing would not enlarge it
    by more than the tolerance (and no ``scale`` is asked for)."""
    width, height = size
    if options.scale:
        return round(width * options.scale), round(height * options.scale)
    try:
        resized = assign_bucket(size, options.spec).resized
    except ImageError:
        return None
    if resized[0] <= width * options.upscale_tolerance and resized[1] <= height * options.upscale_tolerance:
        return None
    return resized
