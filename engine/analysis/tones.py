"""Per-image white/black share, the guide's way: desaturate, posterize to 4 tones, count.

A pixel is *white* when its desaturated value falls in the upper two of four equal tones,
that is a value of 128 or more on 0..255 (a float value >= 127.5, as 8-bit editors round).
Only opaque pixels (alpha >= 128) count, so a cut-out's transparent background does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from kiln.engine.errors import ImageError

METHODS: tuple[str, ...] = ("luma601", "luma709", "lightness", "average")
DEFAULT_METHOD = "luma601"
WHITE_THRESHOLD = 127.5
ALPHA_OPAQUE = 128
_ROWS_PER_CHUNK = 256

_WEIGHTS = {
    "luma601": (0.299, 0.587, 0.114),
    "luma709": (0.2126, 0.7152, 0.0722),
    "average": (1 / 3, 1 / 3, 1 / 3),
}


@dataclass(frozen=True)
class ToneShare:
    """White and black shares of one image, in percent of its opaque pixels."""

    white: float
    black: float
    pixels: int


def desaturate(rgb: np.ndarray, method: str = DEFAULT_METHOD) -> np.ndarray:
    """Grey value (float32, 0..255) of each pixel of an ``(H, W, 3)`` RGB array.

    Methods: ``luma601`` (0.299/0.587/0.114, the default), ``luma709``, ``lightness``
    ((max + min) / 2, Photoshop's Desaturate) and ``average``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown desaturation method {method!r}; use one of {', '.join(METHODS)}")
    if rgb.ndim == 2:
        return rgb.astype(np.float32)
    if method == "lightness":
        return (rgb.max(axis=-1).astype(np.float32) + rgb.min(axis=-1).astype(np.float32)) / 2
    weights = np.asarray(_WEIGHTS[method], dtype=np.float32)
    return rgb.astype(np.float32) @ weights


def posterize4(grey: np.ndarray) -> np.ndarray:
    """Map grey values to the 4 equal tones the guide uses (0, 85, 170, 255), for previews."""
    tones = np.clip(np.floor(np.rint(grey) / 64.0), 0, 3).astype(np.uint8)
    return (tones * 85).astype(np.uint8)


def tone_share(pixels: np.ndarray, alpha: np.ndarray | None, method: str = DEFAULT_METHOD) -> ToneShare:
    """White/black share of decoded pixels (grey ``(H, W)`` or RGB ``(H, W, 3)``).

    Works through row chunks so a 16 MP exact measurement never holds a float copy of the
    whole image.

    Raises:
        ImageError: the image has no opaque pixel, so it has no balance to measure.
    """
    if method not in METHODS:
        raise ValueError(f"unknown desaturation method {method!r}; use one of {', '.join(METHODS)}")
    white = 0
    counted = 0
    height = pixels.shape[0]
    for top in range(0, height, _ROWS_PER_CHUNK):
        grey = desaturate(pixels[top : top + _ROWS_PER_CHUNK], method)
        is_white = grey >= WHITE_THRESHOLD
        if alpha is None:
            white += int(np.count_nonzero(is_white))
            counted += is_white.size
        else:
            opaque = alpha[top : top + _ROWS_PER_CHUNK] >= ALPHA_OPAQUE
            white += int(np.count_nonzero(is_white & opaque))
            counted += int(np.count_nonzero(opaque))
    if counted == 0:
        raise ImageError("no opaque pixels (fully transparent); nothing to measure")
    white_pct = 100.0 * white / counted
    return ToneShare(white=white_pct, black=100.0 - white_pct, pixels=counted)
