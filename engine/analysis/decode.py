"""Decode any image Kohya accepts into 8-bit RGB plus an optional alpha mask.

Real datasets hold CMYK JPEGs, palette PNGs with transparency, grey+alpha, 16-bit PNGs and
animated GIF/WebP. Pillow's own ``convert`` clips 16-bit data instead of scaling it, so
16-bit modes are scaled here.

The fast path decodes JPEGs reduced with libjpeg's DCT scaling (1/2, 1/4, 1/8: the Huffman
decode still reads the whole file, but the inverse DCT and colour conversion shrink), to no
less than ``long_side`` pixels, then takes every n-th pixel of what is still larger.
Subsampling, unlike averaging, keeps the share of pixels on each side of the threshold
unbiased; averaging pulls fine texture towards its local mean and moves the share by
points on textured photos. The default long side is 1024 rather than 512 because the
DCT scaling itself averages: at 1/8 a textured 16 MP photo drifts by up to half a point,
at 1/4 by a third of that, for about 5 ms more per image (bench/analysis.py).

Measures that depend on scale (sharpness, perceptual hashes) ask for a grey copy resampled
to a fixed area (``grey_area``). It is made with area averaging from the pixels before the
fast path subsamples them, so it does not depend on the file's resolution nor on whether
the fast or the exact path decoded it (JPEG DCT scaling is itself block averaging).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from kiln.engine.errors import ImageError
from PIL import Image, UnidentifiedImageError

FAST_LONG_SIDE = 1024

# EXIF orientation -> the Pillow transpose that shows the image upright (EXIF 2.3, 4.6.4).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_GREY_MODES = {"1", "L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


@dataclass(frozen=True)
class Decoded:
    """Pixels ready for measuring.

    Attributes:
        pixels: ``(H, W)`` grey or ``(H, W, 3)`` RGB, uint8.
        alpha: ``(H, W)`` uint8 alpha, or None when the image is opaque.
        size: The image's full-resolution size ``(width, height)``.
        mode: The file's own Pillow mode, for reports.
        format: The file format Pillow detected (``JPEG``, ``PNG``...).
        exif_orientation: The EXIF orientation tag (1 when absent).
        grey: A Rec. 601 grey copy of about ``grey_area`` pixels (uint8), when asked for.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    size: tuple[int, int]
    mode: str
    format: str
    exif_orientation: int = 1
    grey: np.ndarray | None = None


def decode_image(
    path: Path,
    *,
    exact: bool = False,
    long_side: int = FAST_LONG_SIDE,
    grey_ok: bool = False,
    grey_area: int | None = None,
) -> Decoded:
    """Open ``path`` and return its first frame as 8-bit pixels.

    Args:
        path: The image file.
        exact: Decode at full resolution instead of about ``long_side`` pixels.
        long_side: Target long side of the fast path.
        grey_ok: The caller wants Rec. 601 luma only; a colour JPEG may then be decoded to
            its Y plane directly (JFIF's Y is exactly that luma), skipping chroma work.
        grey_area: Also return ``grey``, a grey copy resampled to about this many pixels
            (aspect kept), for measures that must not depend on resolution.

    Raises:
        ImageError: The file is empty, not an image, truncated, too large or unreadable.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageError("empty file (0 bytes); re-export or remove it")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return _decode_open(
                    image, exact=exact, long_side=long_side, grey_ok=grey_ok, grey_area=grey_area
                )
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"too many pixels for Pillow's bomb guard ({exc}); downscale it") from exc
    except UnidentifiedImageError as exc:
        raise ImageError("not an image Pillow can read; re-export it as PNG or JPEG") from exc
    except PermissionError as exc:
        raise ImageError("permission denied; make it readable (chmod a+r)") from exc
    except OSError as exc:
        message = str(exc) or exc.__class__.__name__
        if "truncated" in message or "broken data stream" in message:
            raise ImageError(f"truncated or corrupt ({message}); re-export it") from exc
        raise ImageError(f"cannot decode ({message}); re-export it") from exc
    except (ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"corrupt image data ({exc}); re-export it") from exc


def _decode_open(
    image: Image.Image, *, exact: bool, long_side: int, grey_ok: bool, grey_area: int | None
) -> Decoded:
    full_size = image.size
    file_mode = image.mode
    file_format = image.format or "?"
    orientation = exif_orientation(image)
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    if not exact and image.format == "JPEG" and max(full_size) > long_side:
        scale = long_side / max(full_size)
        request = (max(1, math.ceil(full_size[0] * scale)), max(1, math.ceil(full_size[1] * scale)))
        image.draft("L" if grey_ok and image.mode == "RGB" else image.mode, request)
    image.load()
    pixels, alpha = to_eight_bit(image)
    grey = fixed_area_grey(pixels, grey_area) if grey_area else None
    if not exact:
        pixels, alpha = _reduce(pixels, alpha, long_side)
    return Decoded(
        pixels=pixels,
        alpha=alpha,
        size=full_size,
        mode=file_mode,
        format=file_format,
        exif_orientation=orientation,
        grey=grey,
    )


def fixed_area_grey(pixels: np.ndarray, area: int, enlarge: bool = True) -> np.ndarray:
    """A Rec. 601 grey copy of ``pixels`` resampled to about ``area`` pixels, aspect kept.

    Downscaling averages areas (Pillow's box filter) so fine detail is weighed the way a
    trainer's resize weighs it; a smaller image is upscaled bicubically, as Kohya upscales
    it to its bucket, so its softness shows in the figures measured on the copy. With
    ``enlarge=False`` a smaller image is kept as it is (for comparing equal-sized tiles,
    where upscaling would only soften every one of them alike and hide blur).
    """
    height, width = pixels.shape[:2]
    grey = Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB")
    if grey.mode != "L":
        grey = grey.convert("L")
    scale = math.sqrt(area / (width * height))
    if not enlarge:
        scale = min(scale, 1.0)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return np.asarray(grey, dtype=np.uint8)
    if scale < 1:
        # reducing_gap: integer box reduction first, then the exact resize; same filter family.
        resized = grey.resize(size, Image.Resampling.BOX, reducing_gap=2.0)
    else:
        resized = grey.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.uint8)


def to_eight_bit(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Any Pillow mode as 8-bit grey or RGB pixels and an alpha mask (None when opaque):
    16-bit scaled, not clipped; CMYK, palettes and palette transparency converted."""
    mode = image.mode
    if mode in _SIXTEEN_BIT or mode == "I":
        data = np.asarray(image, dtype=np.float64)
        if mode == "I" and data.max(initial=0) <= 255:
            # A 32-bit container holding 8-bit data (rare): take it as is.
            return np.clip(data, 0, 255).astype(np.uint8), None
        # Scale 0..65535 to 0..255 with rounding; Pillow's convert() would clip instead.
        return np.clip(np.rint(data / 257.0), 0, 255).astype(np.uint8), None
    if mode == "F":
        data = np.asarray(image, dtype=np.float64)
        top = 1.0 if data.max(initial=0) <= 1.0 else 255.0
        return np.clip(np.rint(data * (255.0 / top)), 0, 255).astype(np.uint8), None
    if mode in ("1", "L"):
        return np.asarray(image.convert("L"), dtype=np.uint8), None
    if mode == "LA" or mode == "La":
        la = np.asarray(image.convert("LA"), dtype=np.uint8)
        return np.ascontiguousarray(la[..., 0]), np.ascontiguousarray(la[..., 1])
    has_alpha = mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in image.info)
    if mode == "P" and image.palette is not None and image.palette.mode == "RGBA":
        has_alpha = True
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8)
        return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
    if mode == "I;16" or mode in _GREY_MODES:  # pragma: no cover - handled above
        return np.asarray(image.convert("L"), dtype=np.uint8), None
    return np.asarray(image.convert("RGB"), dtype=np.uint8), None


def _reduce(
    pixels: np.ndarray, alpha: np.ndarray | None, long_side: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Take every n-th pixel so the long side is about ``long_side`` (a view, no copy)."""
    height, width = pixels.shape[:2]
    step = max(height, width) // long_side
    if step < 2:
        return pixels, alpha
    pixels = pixels[::step, ::step]
    if alpha is not None:
        alpha = alpha[::step, ::step]
    return pixels, alpha


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag, 1..8 (1, upright, when absent or malformed)."""
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1
