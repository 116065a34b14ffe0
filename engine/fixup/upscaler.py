"""Super-resolution models from the user's disk, run tile by tile.

``spandrel`` (the loader ComfyUI and chaiNNer use) detects the architecture from the weights:
ESRGAN and Real-ESRGAN, 4x-UltraSharp, SwinIR, HAT, DAT, ... and the model's scale. It is an
optional extra (``pip install "lora-kiln[upscale]"``); without it Kiln upscales with Lanczos.
``import spandrel`` imports torchvision (for two architectures Kiln never loads), so a
torchvision that does not match torch fails it: the error says so and how to fix it.

A 4x model on a 2000 px photo would hold 8000 x 8000 activations per channel per layer, so
the image is cut into tiles: each tile is run with ``overlap`` pixels of context on every
side and only its centre is kept. When the overlap covers the model's receptive field the
result equals the whole-image output (tested on a small ESRGAN); for deep models the
remaining difference is far below one grey level (bench/fixup.py measures it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from kiln.engine.errors import ModelError
from kiln.engine.fixup.ops import lanczos
from PIL import Image

SAFE_EXTENSIONS = (".safetensors",)
PICKLE_EXTENSIONS = (".pth", ".pt", ".ckpt", ".bin")
DEFAULT_TILE = 256
DEFAULT_OVERLAP = 32
INSTALL_HINT = 'pip install "lora-kiln[upscale]"'


@dataclass
class Upscaler:
    """A loaded super-resolution model.

    Attributes:
        path: The model file.
        name: The architecture spandrel detected (``ESRGAN``, ``SwinIR``...).
        scale: How many times larger its output is on each side.
        tile: Tile side in input pixels (0: the whole image at once).
        overlap: Context around each tile, in input pixels.
    """

    path: Path
    name: str
    scale: int
    descriptor: Any
    device: Any
    dtype: Any
    tile: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP

    def upscale(self, image: Image.Image, cancelled: Callable[[], bool] = lambda: False) -> Image.Image:
        """``image`` (RGB or RGBA) ``scale`` times larger; alpha is resized with Lanczos."""
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        out = self.run(rgb, cancelled)
        result = Image.fromarray(np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8), "RGB")
        if image.mode == "RGBA":
            result.putalpha(image.getchannel("A").resize(result.size, Image.Resampling.LANCZOS))
        return result

    def run(self, pixels: np.ndarray, cancelled: Callable[[], bool] = lambda: False) -> np.ndarray:
        """``(H, W, 3)`` floats in 0..1 -> ``(H*scale, W*scale, 3)``, tile by tile."""
        import torch

        height, width = pixels.shape[:2]
        scale = self.scale
        out = np.empty((height * scale, width * scale, 3), dtype=np.float32)
        tile = self.tile if self.tile > 0 else max(height, width)
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                if cancelled():
                    raise InterruptedError("upscale cancelled")
                bottom, right = min(top + tile, height), min(left + tile, width)
                y0, x0 = max(0, top - self.overlap), max(0, left - self.overlap)
                y1, x1 = min(height, bottom + self.overlap), min(width, right + self.overlap)
                window = torch.from_numpy(np.ascontiguousarray(pixels[y0:y1, x0:x1].transpose(2, 0, 1)))
                with torch.inference_mode():
                    result = self.descriptor(window[None].to(self.device, self.dtype))
                result = result[0].float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0)
                dy, dx = (top - y0) * scale, (left - x0) * scale
                out[top * scale : bottom * scale, left * scale : right * scale] = result[
                    dy : dy + (bottom - top) * scale, dx : dx + (right - left) * scale
                ]
        return out


def import_spandrel() -> Any:
    """The spandrel module, or a one-line error saying how to get it working.

    Raises:
        ModelError: spandrel is not installed, or its torchvision import fails.
    """
    try:
        import spandrel
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "spandrel":
            raise ModelError(
                f"super-resolution models need spandrel: {INSTALL_HINT} (or upscale with Lanczos: no --model)"
            ) from None
        raise ModelError(f"spandrel cannot be imported ({exc}); {INSTALL_HINT}") from None
    except (RuntimeError, ImportError, AttributeError) as exc:
        raise ModelError(
            f"spandrel cannot be imported: its torchvision does not match torch ({exc}); install the "
            "torchvision built for your torch (pip install torch torchvision), or upscale with Lanczos"
        ) from None
    return spandrel


def load_upscaler(
    path: Path, allow_pickle: bool = False, device: str | None = None, tile: int = DEFAULT_TILE
) -> Upscaler:
    """Load a super-resolution model file with spandrel, on the GPU when there is one.

    Raises:
        ModelError: a missing file, a pickle file without ``allow_pickle``, a file spandrel
            does not recognise, or a model that is not an upscaler; the message names the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ModelError(f"{path}: no such model file; give an ESRGAN-family .safetensors file")
    if suffix in PICKLE_EXTENSIONS and not allow_pickle:
        raise ModelError(
            f"{path}: {suffix} files can run code when loaded; convert it to .safetensors "
            "or pass --allow-pickle if you trust it"
        )
    if suffix not in SAFE_EXTENSIONS + PICKLE_EXTENSIONS:
        raise ModelError(f"{path}: not a model file Kiln reads (.safetensors, or .pth with --allow-pickle)")
    spandrel = import_spandrel()
    import torch

    chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        descriptor = spandrel.ModelLoader(chosen).load_from_file(str(path))
    except Exception as exc:  # spandrel raises many kinds for files it does not know
        raise ModelError(f"{path}: spandrel does not recognise it as an image model ({exc})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.scale < 2:
        raise ModelError(
            f"{path}: a {descriptor.architecture.name} {descriptor.purpose} model, not an upscaler; "
            "give a super-resolution model (2x, 4x...)"
        )
    if descriptor.input_channels != 3:
        raise ModelError(f"{path}: the model takes {descriptor.input_channels} channels; Kiln upscales RGB")
    descriptor.eval()
    dtype = torch.float32
    if chosen.type == "cuda" and descriptor.supports_half:
        descriptor.half()
        dtype = torch.float16
    return Upscaler(
        path=path,
        name=descriptor.architecture.name,
        scale=int(descriptor.scale),
        descriptor=descriptor,
        device=chosen,
        dtype=dtype,
        tile=tile,
    )


def resize_to(image: Image.Image, size: tuple[int, int], upscaler: Upscaler | None = None) -> Image.Image:
    """``image`` at exactly ``size``: through the model (as many passes as reach it) and then
    Lanczos to the exact size, or Lanczos alone without a model."""
    current = image
    if upscaler is not None:
        while current.width < size[0] or current.height < size[1]:
            current = upscaler.upscale(current)
    return lanczos(current, size)
