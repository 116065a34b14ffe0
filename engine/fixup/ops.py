"""The fix-up operations: each a pure function from an image to a new image.

Every operation works on the *working image*: the file's first frame as 8-bit RGB, or RGBA
when it has transparency, with 16-bit data scaled (not clipped), CMYK and palettes converted
(:func:`working_image`). Each returns a new image and never touches its input, and each is
described by an :class:`Operation` (a name and its parameters, as ``fixup.json`` records it)
so a fix can be read back, shown and repeated.

Orientation is read from the file before this (the working image is the stored pixels, as
Kohya trains them: it ignores EXIF), so baking it is explicit and recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kiln.engine.analysis.decode import UPRIGHT, to_eight_bit
from kiln.engine.errors import UsageError
from PIL import Image

ORIENTATION = "orientation"
FLATTEN = "flatten"
LEVELS = "levels"
CROP = "crop"
UPSCALE = "upscale"
# The order a fix applies them in: orientation changes which side is long, flattening and
# levels are cheaper before an upscale multiplies the pixels, the upscale is sized last.
ORDER = (ORIENTATION, CROP, FLATTEN, LEVELS, UPSCALE)

DEFAULT_CLIP = 0.5  # percent of pixels let through at each end by auto levels
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class Operation:
    """One step of a fix, as ``fixup.json`` records it: a name from :data:`ORDER` and its
    parameters (JSON values only)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """A few words for tables and the dry run: ``levels 12..241 gamma 0.8``."""
        p = self.params
        if self.name == ORIENTATION:
            return f"bake EXIF orientation {p.get('exif')}"
        if self.name == FLATTEN:
            return f"flatten on {p.get('background')}"
        if self.name == LEVELS:
            points = f" {p['black']}..{p['white']}" if "black" in p else f" auto (clip {p.get('clip')}%)"
            return f"levels{points} gamma {p.get('gamma', 1.0):g}"
        if self.name == CROP:
            return "crop to {}".format("x".join(str(v) for v in p.get("box", ())))
        if self.name == UPSCALE:
            return f"upscale to {p.get('width')}x{p.get('height')} ({p.get('method')})"
        return self.name

    def to_json(self) -> dict[str, Any]:
        return {"op": self.name, **self.params}


def working_image(image: Image.Image) -> Image.Image:
    """The first frame of ``image`` as 8-bit RGB, or RGBA when any pixel is transparent."""
    return working_from(*to_eight_bit(image))


def working_from(pixels: np.ndarray, alpha: np.ndarray | None) -> Image.Image:
    """The working image from decoded 8-bit pixels (grey or RGB) and alpha (``decode_image``'s)."""
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if alpha is not None and int(alpha.min(initial=255)) < 255:
        return Image.fromarray(np.dstack([pixels, alpha]).astype(np.uint8), "RGBA")
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")


def bake_orientation(image: Image.Image, exif: int) -> Image.Image:
    """The pixels as a viewer shows them for EXIF orientation ``exif`` (1..8); the written
    file then carries no orientation tag, so Kohya trains it the right way up."""
    transpose = UPRIGHT.get(exif)
    return image.transpose(transpose) if transpose is not None else image.copy()


def parse_colour(text: str) -> tuple[int, int, int]:
    """``white``, ``black``, ``grey`` or ``#rrggbb`` as an RGB triple.

    Raises:
        UsageError: anything else, with the forms it accepts.
    """
    named = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128), "gray": (128, 128, 128)}
    value = text.strip().lower()
    if value in named:
        return named[value]
    if len(value) == 7 and value.startswith("#"):
        try:
            return (int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))
        except ValueError:
            pass
    raise UsageError(f"colour {text!r}: use white, black, grey or #rrggbb")


def flatten(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Composite an RGBA image onto a solid ``background`` (alpha blending, as a viewer shows it).

    Kohya opens images with ``convert("RGB")``, which drops alpha and keeps whatever colour the
    file stores under transparent pixels (often black, sometimes leftovers of an erased
    background): the model then learns that colour. Flattening decides it.
    """
    if image.mode != "RGBA":
        return image.convert("RGB")
    base = Image.new("RGB", image.size, background)
    base.paste(image, mask=image.getchannel("A"))
    return base


def level_points(image: Image.Image, clip: float) -> tuple[int, int]:
    """Auto black and white points: the grey levels below and above which ``clip`` percent
    of the pixels lie (luma, so colours keep their balance)."""
    if not 0 <= clip < 50:
        raise UsageError(f"levels clip {clip:g}%: use a percentage from 0 to under 50")
    grey = np.asarray(image.convert("RGB"), dtype=np.float64) @ _LUMA
    low, high = np.percentile(grey, [clip, 100 - clip])
    black, white = int(np.floor(low)), int(np.ceil(high))
    if white - black < 2:  # a flat image: stretching it would only amplify noise
        return 0, 255
    return black, white


def levels(image: Image.Image, black: int, white: int, gamma: float = 1.0) -> Image.Image:
    """Map ``black``..``white`` to 0..255 on every colour channel, then apply ``gamma``
    (above 1 brightens the mid-tones, below 1 darkens them). Alpha is kept."""
    if not 0 <= black < white <= 255:
        raise UsageError(f"levels {black}..{white}: need 0 <= black < white <= 255")
    if not 0.1 <= gamma <= 10:
        raise UsageError(f"levels gamma {gamma:g}: use a value from 0.1 to 10 (1 = unchanged)")
    ramp = np.clip((np.arange(256) - black) / (white - black), 0, 1) ** (1.0 / gamma)
    table = np.rint(ramp * 255).astype(np.uint8)
    rgb = np.asarray(image.convert("RGB"))
    out = Image.fromarray(table[rgb], "RGB")
    if image.mode == "RGBA":
        out.putalpha(image.getchannel("A"))
    return out


def crop(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """The part of ``image`` inside ``box`` = ``(left, top, right, bottom)``.

    Raises:
        UsageError: a box outside the image or without area.
    """
    left, top, right, bottom = box
    if not (0 <= left < right <= image.width and 0 <= top < bottom <= image.height):
        raise UsageError(
            f"crop box {left},{top},{right},{bottom} does not lie inside the "
            f"{image.width}x{image.height} image"
        )
    return image.crop(box)


def lanczos(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` resized to ``size`` with Lanczos (alpha premultiplied, so edges keep no halo)."""
    if image.size == size:
        return image.copy()
    if image.mode == "RGBA":
        return image.convert("RGBa").resize(size, Image.Resampling.LANCZOS).convert("RGBA")
    return image.resize(size, Image.Resampling.LANCZOS)
