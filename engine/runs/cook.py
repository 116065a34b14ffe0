"""Over/undercooked hints: a run's samples measured against its epoch-0 baseline and its dataset.

The guide reads a run by eye: high noise or extreme contrast means *overcooked*; missing or
smudged detail means *undercooked*. This module puts figures behind that reading. Each
epoch's samples (same prompts and seeds as the epoch-0 baseline, rendered before training)
are measured, and so are the dataset's included images, all resampled to the samples' area:

* ``noise``: the grey level's noise sigma, from the median response of a Laplacian-of-
  Laplacian mask (Immerkær's estimator made robust with a median, so edges and texture,
  which cover a minority of pixels, do not count as noise).
* ``detail``: variance of the 4-neighbour Laplacian (the quality pass's ``sharpness``).
* ``contrast``: RMS contrast, the grey level's standard deviation in percent of full scale.
* ``clipped``: percent of pixels crushed to black or blown to white.
* ``saturation``: mean HSV saturation in percent.
* ``colourfulness``: Hasler and Süsstrunk's colourfulness (opponent-channel spread).

A figure far above both the baseline and the dataset is a sign of overcooking; detail far
below the dataset's is a sign of undercooking. The result is a hint with the figures behind
it, never a verdict: the thresholds are in :class:`CookThresholds`.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median

import numpy as np
from kiln.engine.analysis.quality import CLIP_BRIGHT, CLIP_DARK, sharpness
from kiln.engine.errors import ImageError
from PIL import Image

FIGURES: tuple[str, ...] = ("noise", "detail", "contrast", "clipped", "saturation", "colourfulness")
OVERCOOKED = "overcooked"
UNDERCOOKED = "undercooked"
COOK_STATS_FILE = "cook-stats.json"
_EPOCH_FOLDER = re.compile(r"^e(\d{3,})$")
# Rows/columns of the 3x3 mask [[1,-2,1],[-2,4,-2],[1,-2,1]]: its L2 norm is 6.
_NOISE_NORM = 6.0
# Median absolute value of a standard normal: turns a median |response| into a sigma.
_MAD_TO_SIGMA = 1.0 / 0.6745


@dataclass(frozen=True)
class CookThresholds:
    """When a figure counts as a sign. Ratios compare with the baseline; the dataset's
    90th percentile (or median, for detail) is the other bound a figure must pass.

    Attributes:
        noise_ratio: Noise this many times the baseline's...
        noise_floor: ...and at least this many grey levels above it (tiny absolute changes
            on clean images are not noise).
        contrast_ratio: RMS contrast this many times the baseline's.
        clipped_points: Clipped pixels this many percentage points above the baseline's and
            above the dataset's 90th percentile.
        colour_ratio: Saturation or colourfulness this many times the baseline's.
        dataset_margin: A figure must also exceed the dataset's 90th percentile times this.
        detail_share: Detail below this share of the dataset's median is a sign of
            undercooking.
    """

    noise_ratio: float = 1.5
    noise_floor: float = 1.0
    contrast_ratio: float = 1.3
    clipped_points: float = 5.0
    colour_ratio: float = 1.4
    dataset_margin: float = 1.1
    detail_share: float = 0.35


@dataclass(frozen=True)
class Sign:
    """One figure that points one way.

    Attributes:
        figure: One of :data:`FIGURES`.
        kind: ``overcooked`` or ``undercooked``.
        value: The epoch's figure (mean over its samples).
        baseline: The epoch-0 figure, if there is a baseline.
        dataset: The dataset's reference (90th percentile, or median for detail), if known.
    """

    figure: str
    kind: str
    value: float
    baseline: float | None
    dataset: float | None

    def text(self) -> str:
        """``noise 6.1 (2.4x baseline 2.5; dataset 1.9)``."""
        parts = []
        if self.baseline is not None:
            ratio = self.value / self.baseline if self.baseline > 0 else math.inf
            if self.figure == "clipped":
                parts.append(f"baseline {self.baseline:.1f}%")
            elif math.isfinite(ratio):
                parts.append(f"{ratio:.1f}x baseline {_fmt(self.baseline)}")
            else:
                parts.append(f"baseline {_fmt(self.baseline)}")
        if self.dataset is not None:
            label = "dataset median" if self.figure == "detail" else "dataset p90"
            parts.append(f"{label} {_fmt(self.dataset)}")
        unit = "%" if self.figure in ("clipped", "contrast", "saturation") else ""
        return f"{self.figure} {_fmt(self.value)}{unit} ({'; '.join(parts)})"


@dataclass(frozen=True)
class CookHint:
    """What one epoch's samples suggest.

    Attributes:
        epoch: The epoch (its samples folder ``samples/eNNN``).
        samples: How many sample images were measured.
        figures: Mean figures of the epoch's samples.
        baseline: Mean figures of the epoch-0 samples (empty without a baseline).
        signs: The figures that point to over- or undercooking.
    """

    epoch: int
    samples: int
    figures: dict[str, float]
    baseline: dict[str, float] = field(default_factory=dict)
    signs: tuple[Sign, ...] = ()

    @property
    def label(self) -> str | None:
        """``overcooked``, ``undercooked``, both (``overcooked+undercooked``) or None."""
        kinds = sorted({sign.kind for sign in self.signs}, key=(OVERCOOKED, UNDERCOOKED).index)
        return "+".join(kinds) if kinds else None

    def summary(self) -> str | None:
        """One line for a table: ``overcooked? noise 6.1 (2.4x baseline 2.5; ...)``, or None."""
        if not self.signs:
            return None
        return f"{self.label}? " + ", ".join(sign.text() for sign in self.signs)

    def to_json(self) -> dict:
        """Plain values for ``--json``."""
        return {
            "epoch": self.epoch,
            "samples": self.samples,
            "hint": self.label,
            "summary": self.summary(),
            "figures": self.figures,
            "baseline": self.baseline,
            "signs": [asdict(sign) for sign in self.signs],
        }


@dataclass(frozen=True)
class DatasetFigures:
    """The dataset's figures at one area: per figure its median and 90th percentile."""

    area: int
    images: int
    medians: dict[str, float]
    p90: dict[str, float]


# ---------------------------------------------------------------- figures of one image


def fixed_area_rgb(image: Image.Image, area: int) -> np.ndarray:
    """The image as RGB uint8 resampled to about ``area`` pixels (aspect kept).

    Shrinking averages (box filter) as a trainer's resize does; enlarging is bicubic.
    """
    rgb = image.convert("RGB")
    width, height = rgb.size
    scale = math.sqrt(area / (width * height))
    size = (max(3, round(width * scale)), max(3, round(height * scale)))
    if size != rgb.size:
        method = Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
        rgb = rgb.resize(size, method, reducing_gap=2.0 if scale < 1 else None)
    return np.asarray(rgb, dtype=np.uint8)


def noise_sigma(grey: np.ndarray) -> float:
    """Noise sigma of a grey image in grey levels (0 for a clean smooth image)."""
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    g = grey.astype(np.float32)
    response = (
        g[:-2, :-2]
        + g[:-2, 2:]
        + g[2:, :-2]
        + g[2:, 2:]
        - 2 * (g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:])
        + 4 * g[1:-1, 1:-1]
    )
    return float(np.median(np.abs(response)) * _MAD_TO_SIGMA / _NOISE_NORM)


def image_cook_figures(rgb: np.ndarray) -> dict[str, float]:
    """Every figure of :data:`FIGURES` for one ``(H, W, 3)`` uint8 image."""
    channels = rgb.astype(np.float32)
    red, green, blue = channels[..., 0], channels[..., 1], channels[..., 2]
    grey_float = 0.299 * red + 0.587 * green + 0.114 * blue
    grey = np.clip(np.rint(grey_float), 0, 255).astype(np.uint8)
    total = grey.size
    clipped = np.count_nonzero(grey <= CLIP_DARK) + np.count_nonzero(grey >= CLIP_BRIGHT)
    high = channels.max(axis=-1)
    low = channels.min(axis=-1)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)
    rg = red - green
    yb = 0.5 * (red + green) - blue
    colourfulness = math.hypot(float(rg.std()), float(yb.std())) + 0.3 * math.hypot(
        float(rg.mean()), float(yb.mean())
    )
    return {
        "noise": round(noise_sigma(grey), 4),
        "detail": round(sharpness(grey), 3),
        "contrast": round(100.0 * float(grey_float.std()) / 255.0, 4),
        "clipped": round(100.0 * clipped / total, 4),
        "saturation": round(100.0 * float(saturation.mean()), 4),
        "colourfulness": round(colourfulness, 4),
    }


def file_cook_figures(path: Path, area: int | None = None) -> dict[str, float]:
    """The figures of an image file, resampled to ``area`` pixels (None: as it is).

    Raises:
        ImageError: The file cannot be decoded.
    """
    from kiln.engine.analysis.decode import decode_image

    decoded = decode_image(Path(path), exact=area is None, long_side=1024)
    pixels = decoded.pixels
    mode = "L" if pixels.ndim == 2 else "RGB"
    image = Image.fromarray(np.ascontiguousarray(pixels), mode)
    target = area if area is not None else image.size[0] * image.size[1]
    return image_cook_figures(fixed_area_rgb(image, target))


def mean_figures(items: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each figure over several images (empty for none)."""
    items = list(items)
    if not items:
        return {}
    return {name: round(sum(item[name] for item in items) / len(items), 4) for name in FIGURES}


# ---------------------------------------------------------------- the dataset's figures


def dataset_figures(root: Path, area: int, caption_extension: str = ".txt") -> DatasetFigures | None:
    """The included images' figures at ``area`` pixels: median and 90th percentile of each.

    Cached in ``<dataset>/.kiln/cook-stats.json`` by area and by every image's size and
    modification time, so a sweep's report measures the dataset once. None when the
    dataset has no readable included image.
    """
    from kiln.engine.dataset.scan import scan_dataset
    from kiln.engine.dataset.selection import included_records
    from kiln.engine.dataset.store import STATE_FOLDER, Store

    root = Path(root)
    dataset = scan_dataset(root, caption_extension)
    with Store(dataset.root) as store:
        records = included_records(dataset.images, store)
    key = f"{area}:" + "|".join(f"{r.rel_path}:{r.size}:{r.mtime_ns}" for r in records)
    cache_path = dataset.root / STATE_FOLDER / COOK_STATS_FILE
    cache = _read_cache(cache_path)
    entry = cache.get(str(area))
    if isinstance(entry, dict) and entry.get("key") == key:
        return DatasetFigures(area, int(entry["images"]), dict(entry["medians"]), dict(entry["p90"]))
    measured = []
    for record in records:
        try:
            measured.append(file_cook_figures(record.path, area))
        except ImageError:
            continue
    if not measured:
        return None
    medians = {name: round(float(median(m[name] for m in measured)), 4) for name in FIGURES}
    p90 = {name: round(float(np.percentile([m[name] for m in measured], 90)), 4) for name in FIGURES}
    cache[str(area)] = {"key": key, "images": len(measured), "medians": medians, "p90": p90}
    _write_cache(cache_path, cache)
    return DatasetFigures(area, len(measured), medians, p90)


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, data: dict) -> None:
    from kiln.engine.fsutil import atomic_write_text

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data))
    except OSError:  # a read-only dataset still gets its hints, just not cached
        pass


# ---------------------------------------------------------------- hints


def cook_signs(
    figures: Mapping[str, float],
    baseline: Mapping[str, float] | None,
    dataset: DatasetFigures | None,
    thresholds: CookThresholds = CookThresholds(),
) -> list[Sign]:
    """The figures that point to over- or undercooking (see :class:`CookThresholds`).

    An overcooked sign needs the figure above the baseline by the ratio (when there is a
    baseline) and above the dataset's 90th percentile with a margin (when the dataset is
    known): what the base model already did, or what the dataset itself looks like, is not
    the training's doing. At least one of the two references must exist.
    """
    th = thresholds
    signs: list[Sign] = []
    base = dict(baseline or {})

    def over(name: str, ratio: float, points: float = 0.0, floor: float = 0.0) -> None:
        value = figures[name]
        reference = base.get(name)
        high = dataset.p90.get(name) if dataset else None
        if reference is None and high is None:
            return
        if reference is not None:
            if points and not value >= reference + points:
                return
            # Strictly above: a figure of 0 against a baseline of 0 is no sign of anything.
            if not points and not (value > reference * ratio and value - reference >= floor):
                return
        if high is not None:
            bound = high + points if points else high * th.dataset_margin
            if value <= bound:
                return
        signs.append(Sign(name, OVERCOOKED, value, reference, high))

    over("noise", th.noise_ratio, floor=th.noise_floor)
    over("contrast", th.contrast_ratio)
    over("clipped", 1.0, points=th.clipped_points)
    over("saturation", th.colour_ratio)
    over("colourfulness", th.colour_ratio)
    if dataset is not None and "detail" in dataset.medians:
        typical = dataset.medians["detail"]
        if typical > 0 and figures["detail"] < th.detail_share * typical:
            signs.append(Sign("detail", UNDERCOOKED, figures["detail"], base.get("detail"), typical))
    return signs


def sample_epochs(run_dir: Path) -> dict[int, list[Path]]:
    """Sample images per epoch in a run folder (``samples/eNNN/*.png``), epoch 0 included."""
    folder = Path(run_dir) / "samples"
    epochs: dict[int, list[Path]] = {}
    if not folder.is_dir():
        return epochs
    for child in folder.iterdir():
        match = _EPOCH_FOLDER.match(child.name)
        if match and child.is_dir():
            files = sorted(path for path in child.glob("*.png") if not path.name.startswith("."))
            if files:
                epochs[int(match.group(1))] = files
    return dict(sorted(epochs.items()))


def run_cook_hints(
    run_dir: Path,
    dataset_root: Path | None = None,
    thresholds: CookThresholds = CookThresholds(),
    epochs: Iterable[int] | None = None,
) -> list[CookHint]:
    """A hint per trained epoch with samples (epoch 0 is the baseline, not hinted).

    Args:
        run_dir: The run folder.
        dataset_root: The dataset to compare with; None reads ``dataset.path`` from the
            run's ``config.toml`` (and skips the dataset when that is gone).
        thresholds: When a figure counts.
        epochs: Only these epochs (None: all).
    """
    samples = sample_epochs(run_dir)
    if dataset_root is None:
        dataset_root = _run_dataset(Path(run_dir))
    baseline_files = samples.get(0, [])
    wanted = set(epochs) if epochs is not None else None
    trained = [epoch for epoch in samples if epoch > 0 and (wanted is None or epoch in wanted)]
    if not trained:
        return []
    area = _sample_area(samples[trained[-1]][0])
    baseline = mean_figures(_measure(baseline_files, area))
    dataset = None
    if dataset_root is not None and Path(dataset_root).is_dir():
        try:
            dataset = dataset_figures(Path(dataset_root), area)
        except Exception:  # a dataset that cannot be read only loses its reference
            dataset = None
    hints = []
    for epoch in trained:
        measured = _measure(samples[epoch], area)
        if not measured:
            continue
        figures = mean_figures(measured)
        signs = tuple(cook_signs(figures, baseline or None, dataset, thresholds))
        hints.append(CookHint(epoch, len(measured), figures, baseline, signs))
    return hints


def latest_cook_hint(run_dir: Path, dataset_root: Path | None = None) -> CookHint | None:
    """The hint for the run's newest sampled epoch, or None when it has none yet."""
    samples = sample_epochs(run_dir)
    trained = [epoch for epoch in samples if epoch > 0]
    if not trained:
        return None
    hints = run_cook_hints(run_dir, dataset_root, epochs=[max(trained)])
    return hints[-1] if hints else None


def _measure(files: Iterable[Path], area: int) -> list[dict[str, float]]:
    measured = []
    for path in files:
        try:
            measured.append(file_cook_figures(path, area))
        except ImageError:
            continue
    return measured


def _sample_area(path: Path) -> int:
    try:
        with Image.open(path) as image:
            return image.size[0] * image.size[1]
    except OSError:
        return 512 * 512


def _run_dataset(run_dir: Path) -> Path | None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    try:
        data = tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    path = data.get("dataset", {}).get("path") if isinstance(data.get("dataset"), dict) else None
    return Path(path) if isinstance(path, str) and path else None


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"
