"""The style "precision method": cut one to three very large images into a grid of tiles.

The guide cuts a high-resolution image into 16 sectors, trains on them, and drops the sectors
that hold little information (strong blur, exposure). Here each tile is scored against its
siblings (the other tiles of the same image) and flagged when it is much blurrier than they
are, clipped, or nearly flat. Rows and columns are numbered from 1, as the guide numbers its
sectors; a tile is written as ``<stem>_r<row>c<col>.png`` with a caption beside it.

Planning (:func:`plan_tiles`) reads and measures without writing, so a screen can show the
grid and let the user choose; :func:`write_tiles` then writes a chosen subset, all or
nothing: the tiles go to a temporary folder next to the output first and are moved in once
every one of them is written. The source image is only ever read. Tiles are cut from the
image as it is displayed (its EXIF orientation applied), and written without EXIF, so Kohya
trains them the right way up.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import numpy as np
from kiln.engine.analysis.decode import UPRIGHT, decode_image, fixed_area_grey
from kiln.engine.analysis.quality import (
    BLURRY,
    LOW_INFORMATION,
    OVEREXPOSED,
    QUALITY_AREA,
    UNDEREXPOSED,
    Flag,
    QualityThresholds,
    grey_figures,
    training_upscale,
)
from kiln.engine.dataset.scan import parse_concept_folder
from kiln.engine.errors import ImageError, KilnError, UsageError
from PIL import Image

MIN_TILE_SIDE = 64
TILE_EXTENSION = ".png"
_GRID_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


@dataclass(frozen=True)
class Grid:
    """How many rows and columns of tiles to cut."""

    rows: int
    cols: int

    @classmethod
    def parse(cls, text: str) -> Grid:
        """Read ``ROWSxCOLS`` such as ``4x4`` or ``3x2``.

        Raises:
            UsageError: The text is not two whole numbers of at least 1 around an ``x``.
        """
        match = _GRID_RE.match(text)
        if match is None or int(match.group(1)) < 1 or int(match.group(2)) < 1:
            raise UsageError(f"grid {text!r}: write it as ROWSxCOLS, e.g. 4x4 or 3x2")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.rows}x{self.cols}"


@dataclass(frozen=True)
class TileThresholds:
    """When a tile counts as low-information, mostly relative to its siblings.

    Attributes:
        relative_sharpness: Blurry when its sharpness is under this share of the siblings'
            median (a quarter: the variance of the Laplacian falls fast with blur).
        max_clipped: Percent of blown or crushed pixels above which exposure is flagged.
        entropy_drop: Low information when its histogram holds this many bits fewer than
            the siblings' median...
        min_entropy: ...or fewer than this many bits at all.
    """

    relative_sharpness: float = 0.25
    max_clipped: float = 25.0
    entropy_drop: float = 2.0
    min_entropy: float = 2.5


@dataclass(frozen=True, eq=False)
class Source:
    """A decoded source image, upright (EXIF orientation applied), ready to cut.

    Attributes:
        path: The image file.
        pixels: ``(H, W)`` grey or ``(H, W, 3)`` RGB, uint8.
        alpha: ``(H, W)`` alpha, or None when opaque.
    """

    path: Path
    pixels: np.ndarray
    alpha: np.ndarray | None

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` as displayed."""
        return self.pixels.shape[1], self.pixels.shape[0]


@dataclass(frozen=True)
class Tile:
    """One tile of a source image, measured.

    Attributes:
        source: The source image's path.
        row: Row, from 1 at the top.
        col: Column, from 1 at the left.
        box: ``(left, top, right, bottom)`` in the upright source, overlap included.
        name: The file name it is written under.
        sharpness: Laplacian variance on a fixed-area grey copy (as in ``kiln quality``).
        clipped_dark: Percent of pixels crushed to black.
        clipped_bright: Percent of pixels blown to white.
        entropy: Bits of the grey histogram.
        score: Information relative to the siblings, 0..1 (1: the best on every count).
        flags: Why it holds little information; empty for a good tile.
    """

    source: Path
    row: int
    col: int
    box: tuple[int, int, int, int]
    name: str
    sharpness: float
    clipped_dark: float
    clipped_bright: float
    entropy: float
    score: float
    flags: tuple[Flag, ...]

    @property
    def low_information(self) -> bool:
        """Whether the tile earned any flag (the guide would drop it)."""
        return bool(self.flags)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return self.box[2] - self.box[0], self.box[3] - self.box[1]


@dataclass(frozen=True)
class TilePlan:
    """The tiles of one source image for one grid, measured but not written."""

    source: Path
    size: tuple[int, int]
    grid: Grid
    overlap: int
    tiles: tuple[Tile, ...]
    warnings: tuple[str, ...]


def load_source(path: Path) -> Source:
    """Decode ``path`` at full resolution, upright.

    Raises:
        ImageError: The file cannot be read as an image; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file; check the path")
    try:
        decoded = decode_image(path, exact=True)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from None
    except MemoryError:
        raise ImageError(f"{path}: out of memory while decoding; downscale it") from None
    pixels, alpha = decoded.pixels, decoded.alpha
    transpose = UPRIGHT.get(decoded.exif_orientation)
    if transpose is not None:
        pixels = np.asarray(Image.fromarray(pixels).transpose(transpose))
        if alpha is not None:
            alpha = np.asarray(Image.fromarray(alpha).transpose(transpose))
    return Source(path, pixels, alpha)


def tile_boxes(
    size: tuple[int, int], grid: Grid, overlap: int = 0
) -> list[tuple[int, int, tuple[int, int, int, int]]]:
    """``(row, col, box)`` for every tile, rows then columns, numbered from 1.

    The image is cut at ``round(i * side / n)``, so tiles of a side that does not divide
    evenly differ by at most a pixel and together cover every pixel exactly once. With an
    overlap, each cut is widened so neighbouring tiles share ``overlap`` pixels (half on
    each side of the cut); the outer edges stay where they are.

    Raises:
        UsageError: A tile would be under 64 px, or the overlap is not smaller than a tile.
    """
    width, height = size
    tile_w, tile_h = width // grid.cols, height // grid.rows
    if min(tile_w, tile_h) < MIN_TILE_SIDE:
        raise UsageError(
            f"grid {grid} cuts a {width}x{height} image into {tile_w}x{tile_h} px tiles; tiles must be "
            f"at least {MIN_TILE_SIDE} px: use a smaller grid"
        )
    if overlap < 0:
        raise UsageError(f"overlap {overlap}: give 0 or more pixels")
    if overlap >= min(tile_w, tile_h):
        raise UsageError(
            f"overlap {overlap} px is not smaller than the {tile_w}x{tile_h} px tiles of grid {grid}; "
            "use a smaller overlap"
        )
    xs = _spans(width, grid.cols, overlap)
    ys = _spans(height, grid.rows, overlap)
    return [
        (row, col, (xs[col - 1][0], ys[row - 1][0], xs[col - 1][1], ys[row - 1][1]))
        for row in range(1, grid.rows + 1)
        for col in range(1, grid.cols + 1)
    ]


def _spans(length: int, count: int, overlap: int) -> list[tuple[int, int]]:
    cuts = [round(i * length / count) for i in range(count + 1)]
    before, after = overlap // 2, overlap - overlap // 2
    return [
        (cuts[i] - (before if i > 0 else 0), cuts[i + 1] + (after if i < count - 1 else 0))
        for i in range(count)
    ]


def tile_name(stem: str, row: int, col: int) -> str:
    """The file name of a tile: ``<stem>_r<row>c<col>.png``."""
    return f"{stem}_r{row}c{col}{TILE_EXTENSION}"


def plan_tiles(
    source: Source,
    grid: Grid,
    overlap: int = 0,
    resolution: int = 512,
    thresholds: TileThresholds = TileThresholds(),
) -> TilePlan:
    """Cut ``source`` in memory, measure each tile and judge it against its siblings.

    Nothing is written; a screen calls this again when the grid changes, without decoding
    the image again.

    Raises:
        UsageError: The grid makes tiles under 64 px, or the overlap is too large.
    """
    boxes = tile_boxes(source.size, grid, overlap)
    # Siblings are the same size, so small tiles are measured as they are: upscaling them to
    # the training area would soften all alike and hide the blur that sets one apart.
    figures = [
        grey_figures(fixed_area_grey(_crop(source.pixels, box), QUALITY_AREA, enlarge=False))
        for _, _, box in boxes
    ]
    sharp = [f["sharpness"] for f in figures]
    bits = [f["entropy"] for f in figures]
    typical_sharp, typical_bits = median(sharp), median(bits)
    top_sharp, top_bits = max(sharp), max(bits)
    t = thresholds
    tiles = []
    for (row, col, box), f in zip(boxes, figures, strict=True):
        flags = []
        if typical_sharp > 0 and f["sharpness"] < t.relative_sharpness * typical_sharp:
            flags.append(
                Flag(
                    BLURRY,
                    f"sharpness {f['sharpness']:.0f} is under {t.relative_sharpness:.0%} of its siblings' "
                    f"median ({typical_sharp:.0f})",
                )
            )
        if f["clipped_bright"] > t.max_clipped:
            flags.append(Flag(OVEREXPOSED, f"{f['clipped_bright']:.0f}% of pixels are blown to white"))
        if f["clipped_dark"] > t.max_clipped:
            flags.append(Flag(UNDEREXPOSED, f"{f['clipped_dark']:.0f}% of pixels are crushed to black"))
        if f["entropy"] < t.min_entropy or f["entropy"] < typical_bits - t.entropy_drop:
            flags.append(
                Flag(
                    LOW_INFORMATION,
                    f"grey histogram holds {f['entropy']:.1f} bits against its siblings' {typical_bits:.1f}",
                )
            )
        # Sharpness enters as its square root (the Laplacian's RMS), which is linear in contrast.
        score = (
            (math.sqrt(f["sharpness"] / top_sharp) if top_sharp > 0 else 0.0)
            * (f["entropy"] / top_bits if top_bits > 0 else 0.0)
            * max(0.0, 1.0 - (f["clipped_dark"] + f["clipped_bright"]) / 100.0)
        )
        tiles.append(
            Tile(
                source=source.path,
                row=row,
                col=col,
                box=box,
                name=tile_name(source.path.stem, row, col),
                sharpness=f["sharpness"],
                clipped_dark=f["clipped_dark"],
                clipped_bright=f["clipped_bright"],
                entropy=f["entropy"],
                score=round(score, 3),
                flags=tuple(flags),
            )
        )
    warnings = []
    smallest = min(tiles, key=lambda tile: tile.size[0] * tile.size[1])
    factor = training_upscale(*smallest.size, resolution)
    if factor > QualityThresholds.upscale_tolerance:
        width, height = smallest.size
        warnings.append(
            f"{source.path.name}: grid {grid} gives {width}x{height} px tiles, below the {resolution} px "
            f"training resolution (Kohya upscales them {factor:.2f}x); use a smaller grid or a larger image"
        )
    return TilePlan(source.path, source.size, grid, overlap, tuple(tiles), tuple(warnings))


def _crop(pixels: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, right, bottom = box
    return pixels[top:bottom, left:right]


def tile_image(source: Source, tile: Tile) -> Image.Image:
    """The tile's pixels as a Pillow image (RGB, L, RGBA or LA), for previews and writing."""
    pixels = np.ascontiguousarray(_crop(source.pixels, tile.box))
    if source.alpha is None:
        return Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB")
    alpha = np.ascontiguousarray(_crop(source.alpha, tile.box))
    if pixels.ndim == 2:
        return Image.fromarray(np.stack([pixels, alpha], axis=-1), "LA")
    return Image.fromarray(np.dstack([pixels, alpha]), "RGBA")


_TILE_FILE_RE = re.compile(r"^(?P<stem>.+)_r(?P<row>\d+)c(?P<col>\d+)\.png$", re.IGNORECASE)


def existing_tiles(out: Path, stems: Iterable[str]) -> list[Path]:
    """Tiles of these stems already in ``out`` (any grid), sorted; empty when ``out`` is new."""
    out = Path(out)
    wanted = set(stems)
    if not out.is_dir():
        return []
    found = []
    for entry in out.iterdir():
        match = _TILE_FILE_RE.match(entry.name)
        if match and match.group("stem") in wanted and entry.is_file():
            found.append(entry)
    return sorted(found)


def default_caption(out: Path) -> str:
    """The caption tiles get unless told otherwise: the concept name of a ``N_name`` folder."""
    parsed = parse_concept_folder(Path(out).name)
    return parsed[1].replace("_", " ") if parsed else Path(out).name


def check_output(out: Path, stems: Sequence[str], force: bool, sources: Iterable[Path] = ()) -> list[str]:
    """Refuse an output that already holds tiles of these images, unless ``force``.

    Returns:
        Warnings (a folder Kohya would skip, stale tiles that ``force`` leaves in place).

    Raises:
        UsageError: Two sources share a stem, ``out`` is a file, it holds tiles without
            ``force``, or a tile name would replace one of the sources.
    """
    out = Path(out)
    seen: set[str] = set()
    for stem in stems:
        if stem in seen:
            raise UsageError(f"two images are named {stem!r}; their tiles would collide: rename one")
        seen.add(stem)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder such as DATASET/10_style")
    warnings = []
    if parse_concept_folder(out.name) is None:
        warnings.append(
            f"{out.name}: Kohya skips folders without a repeats prefix; name it like 10_{out.name}"
        )
    existing = existing_tiles(out, stems)
    if existing and not force:
        raise UsageError(
            f"{out} already holds {len(existing)} tile(s) of these images (e.g. {existing[0].name}); "
            "pass --force to replace them, or choose another --out"
        )
    source_paths = {Path(p).resolve() for p in sources}
    for path in existing:
        if path.resolve() in source_paths:
            raise UsageError(f"{path} is one of the source images; tiles may not replace it: move it first")
    return warnings


def write_tiles(
    sources: Mapping[Path, Source],
    tiles: Iterable[Tile],
    out: Path,
    caption: str | None = None,
    caption_extension: str = ".txt",
    force: bool = False,
) -> list[Path]:
    """Write ``tiles`` (a chosen subset of planned tiles) and their captions into ``out``.

    Every tile is written into a temporary folder beside ``out`` first; only when all of them
    are written are they moved in, so a failure leaves ``out`` as it was.

    Args:
        sources: The decoded sources, keyed by path (as in ``Tile.source``).
        tiles: The tiles to write.
        out: The concept folder, e.g. ``dataset/10_style``; created when missing.
        caption: Caption text for every tile; default the folder's concept name.
        caption_extension: The caption sidecar's extension.
        force: Replace tiles of the same images already in ``out``.

    Returns:
        The written tile paths, in the order given.

    Raises:
        UsageError: ``out`` holds tiles of these images and ``force`` is False.
        KilnError: The files could not be written (disk full, permissions).
    """
    out = Path(out)
    tiles = list(tiles)
    by_name: dict[str, Path] = {}
    for tile in tiles:
        if by_name.setdefault(tile.name, tile.source) != tile.source:
            raise UsageError(
                f"{tile.source} and {by_name[tile.name]} would both write {tile.name}: rename one of them"
            )
    check_output(out, sorted({tile.source.stem for tile in tiles}), force, sources.keys())
    text = (caption if caption is not None else default_caption(out)).strip() + "\n"
    if not caption_extension.startswith("."):
        caption_extension = "." + caption_extension
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = out.parent / f".{out.name}.kiln-tiles-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
    except OSError as exc:
        raise KilnError(f"{out.parent}: cannot create the output folder ({exc}); check the path") from None
    names: list[str] = []
    try:
        for tile in tiles:
            buffer = io.BytesIO()
            tile_image(sources[tile.source], tile).save(buffer, format="PNG")
            _write_synced(staging / tile.name, buffer.getvalue())
            caption_name = Path(tile.name).stem + caption_extension
            _write_synced(staging / caption_name, text.encode("utf-8"))
            names += [tile.name, caption_name]
        if not out.exists():
            staging.rename(out)
        else:
            for name in names:
                os.replace(staging / name, out / name)
    except OSError as exc:
        raise KilnError(f"{out}: cannot write the tiles ({exc}); nothing was changed there") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    with contextlib.suppress(OSError):
        _fsync_folder(out)
    return [out / tile.name for tile in tiles]


def stale_tiles(out: Path, stems: Iterable[str], written: Iterable[Path]) -> list[Path]:
    """Tiles of these images in ``out`` that were not just written (another grid, or dropped)."""
    names = {Path(path).name for path in written}
    return [path for path in existing_tiles(out, stems) if path.name not in names]


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
