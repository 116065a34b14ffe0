"""Images as captioners want them: RGB, transparent pixels composited on white."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from kiln.engine.analysis.decode import decode_image
from PIL import Image


def rgb_on_white(path: Path) -> Image.Image:
    """Decode ``path`` (first frame, any mode Kohya accepts) to RGB with alpha on white.

    Both reference taggers and BLIP expect opaque RGB; a transparent background becomes
    white rather than the black that a plain ``convert("RGB")`` would leave.

    Raises:
        ImageError: The file cannot be decoded; the message says how to fix it.
    """
    decoded = decode_image(Path(path), exact=True)
    pixels = decoded.pixels
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if decoded.alpha is not None:
        alpha = decoded.alpha.astype(np.uint32)[..., None]
        # out = rgb * a + 255 * (1 - a), rounded, in integers.
        blended = (pixels.astype(np.uint32) * alpha + 255 * (255 - alpha) + 127) // 255
        pixels = blended.astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")
