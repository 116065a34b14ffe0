"""Preview images for the workbench: the picture and its 4-tone posterized twin.

The posterized view is what the W/B measure sees (desaturated, 4 equal tones), so the user
can check a share by eye. Images are decoded reduced and scaled down here, off the UI thread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from kiln.engine.analysis.decode import decode_image, to_eight_bit
from kiln.engine.analysis.tones import DEFAULT_METHOD, desaturate, posterize4
from PIL import Image

PREVIEW_LONG_SIDE = 384


def preview_pair(
    path: Path, method: str = DEFAULT_METHOD, long_side: int = PREVIEW_LONG_SIDE
) -> tuple[Image.Image, Image.Image]:
    """Return ``(picture, posterized)`` scaled to ``long_side`` pixels, RGB.

    Transparent pixels are shown on a checkered grey in the picture and as mid-grey in the
    posterized view, where they do not count.

    Raises:
        ImageError: the image cannot be decoded.
    """
    decoded = decode_image(Path(path), long_side=long_side * 2)
    return _pair(decoded.pixels, decoded.alpha, method, long_side)


def preview_pair_of(
    image: Image.Image, method: str = DEFAULT_METHOD, long_side: int = PREVIEW_LONG_SIDE
) -> tuple[Image.Image, Image.Image]:
    """:func:`preview_pair` of an image in memory (a fix-up's result before it is written)."""
    small = image.copy()
    small.thumbnail((long_side * 2, long_side * 2))
    pixels, alpha = to_eight_bit(small)
    return _pair(pixels, alpha, method, long_side)


def _pair(
    pixels: np.ndarray, alpha: np.ndarray | None, method: str, long_side: int
) -> tuple[Image.Image, Image.Image]:
    rgb = np.repeat(pixels[..., None], 3, axis=-1) if pixels.ndim == 2 else pixels
    grey = desaturate(pixels, method)
    tones = posterize4(grey)
    poster = np.repeat(tones[..., None], 3, axis=-1)
    if alpha is not None:
        transparent = alpha < 128
        checker = _checker(rgb.shape[:2])
        weight = alpha[..., None].astype(np.float32) / 255.0
        rgb = (rgb * weight + checker[..., None] * (1.0 - weight)).astype(np.uint8)
        poster = poster.copy()
        poster[transparent] = (128, 96, 128)
    picture = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    posterized = Image.fromarray(np.ascontiguousarray(poster), "RGB")
    picture.thumbnail((long_side, long_side))
    posterized.thumbnail((long_side, long_side), Image.Resampling.NEAREST)
    return picture, posterized


def _checker(shape: tuple[int, int], cell: int = 8) -> np.ndarray:
    rows, cols = np.indices(shape)
    return np.where(((rows // cell) + (cols // cell)) % 2 == 0, 170, 110).astype(np.float32)
