"""The dataset's DSB (the guide's mean white share), its dominant share and verdict.

Shares are kept as integers in millionths of a percent, so adding and removing images (the
TUI does this on every toggle) is exact and never drifts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

UNITS = 1_000_000
MEDIOCRE_ABOVE = 70.0
VERDICTS: tuple[str, ...] = ("optimal", "fair", "mediocre", "generic")


def to_units(percent: float) -> int:
    """A percentage as an integer number of millionths of a percent."""
    return round(percent * UNITS)


@dataclass(frozen=True)
class Target:
    """The band the guide calls best: ``center ± tolerance`` of dominant share.

    The band is closed below and open above: with 60 ± 5 it is [55, 65).
    """

    center: float = 60.0
    tolerance: float = 5.0

    def __post_init__(self) -> None:
        if not 50.0 <= self.center <= 100.0:
            raise ValueError(f"target centre {self.center} must lie between 50 and 100")
        if not 0.0 < self.tolerance <= 50.0:
            raise ValueError(f"tolerance {self.tolerance} must be above 0 and at most 50")

    @property
    def low(self) -> float:
        """Lowest optimal dominant share (inclusive)."""
        return self.center - self.tolerance

    @property
    def high(self) -> float:
        """Dominant share where the optimal band ends (exclusive)."""
        return self.center + self.tolerance


def dominant(white: float) -> float:
    """The larger of the white and black shares."""
    return max(white, 100.0 - white)


def verdict(dominant_share: float, target: Target = Target()) -> str:
    """The guide's verdict for a dominant share.

    Bands, each closed below and open above: below the target band ``generic`` (easily
    overtrained), inside it ``optimal``, from its top to 70 inclusive ``fair`` (the guide does
    not name it), above 70 ``mediocre``.
    """
    if dominant_share < target.low:
        return "generic"
    if dominant_share < target.high:
        return "optimal"
    if dominant_share <= MEDIOCRE_ABOVE:
        return "fair"
    return "mediocre"


@dataclass(frozen=True)
class DsbSummary:
    """The DSB of a set of images.

    Attributes:
        white: Plain mean white share (the guide's DSB), None with no measured image.
        black: ``100 - white``.
        dominant: ``max(white, black)``.
        verdict: ``optimal``, ``fair``, ``mediocre`` or ``generic``; None with no image.
        effective_white: Mean white share weighted by folder repeats (what training sees).
        images: How many measured images the figures cover.
    """

    white: float | None
    black: float | None
    dominant: float | None
    verdict: str | None
    effective_white: float | None
    images: int

    def label(self) -> str:
        """The guide's notation with integers, e.g. ``29%W | 71%B  mediocre``."""
        if self.white is None:
            return "no measured images"
        white = round(self.white)
        return f"{white}%W | {100 - white}%B  {self.verdict}"


class DsbAccumulator:
    """Running sums for the DSB, updated in O(1) as images are included or excluded."""

    def __init__(self, target: Target = Target()) -> None:
        self.target = target
        self.count = 0
        self.white_sum = 0
        self.weighted_sum = 0
        self.repeats_sum = 0

    def add(self, white: float, repeats: int = 1) -> None:
        """Count one image in."""
        units = to_units(white)
        self.count += 1
        self.white_sum += units
        self.weighted_sum += units * repeats
        self.repeats_sum += repeats

    def remove(self, white: float, repeats: int = 1) -> None:
        """Take one image out (it must have been added with the same figures)."""
        units = to_units(white)
        self.count -= 1
        self.white_sum -= units
        self.weighted_sum -= units * repeats
        self.repeats_sum -= repeats

    def summary(self) -> DsbSummary:
        """The DSB of the images currently counted."""
        if self.count <= 0:
            return DsbSummary(None, None, None, None, None, 0)
        # Exact integer mean, rounded once at the end.
        white_units = self.white_sum / self.count
        white = white_units / UNITS
        dominant_units = max(self.white_sum, 100 * UNITS * self.count - self.white_sum)
        # Compare count * dominant against the bands to keep the verdict exact.
        verdict_name = verdict_of_sum(dominant_units, self.count, self.target)
        effective = self.weighted_sum / self.repeats_sum / UNITS if self.repeats_sum > 0 else white
        return DsbSummary(
            white=white,
            black=100.0 - white,
            dominant=max(white, 100.0 - white),
            verdict=verdict_name,
            effective_white=effective,
            images=self.count,
        )


def verdict_of_sum(dominant_sum: int, count: int, target: Target) -> str:
    """Exact verdict of the mean ``dominant_sum / count`` (in units), without dividing."""
    if dominant_sum < to_units(target.low) * count:
        return "generic"
    if dominant_sum < to_units(target.high) * count:
        return "optimal"
    if dominant_sum <= to_units(MEDIOCRE_ABOVE) * count:
        return "fair"
    return "mediocre"


def summarise(entries: Iterable[tuple[float, int]], target: Target = Target()) -> DsbSummary:
    """DSB of ``(white, repeats)`` pairs of the included, measured images."""
    accumulator = DsbAccumulator(target)
    for white, repeats in entries:
        accumulator.add(white, repeats)
    return accumulator.summary()
