"""Synthetic images for tests and benchmarks: photo-like ones and ones with a known white share.

Natural photos have an amplitude spectrum falling roughly as 1/f^1.2 once a camera's optics
and noise reduction have softened the finest scales; these images are random fields with
that spectrum, softened by a small blur and given sensor noise, then coloured.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter


def photo_like(size: tuple[int, int], seed: int = 0, slope: float = 1.2) -> Image.Image:
    """A photo-like RGB image of ``size`` (width, height), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    width, height = size
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    frequency = np.sqrt(fx**2 + fy**2)
    frequency[0, 0] = 1.0
    amplitude = 1.0 / frequency**slope
    amplitude[0, 0] = 0.0
    phase = rng.uniform(0, 2 * np.pi, frequency.shape)
    channels = []
    for _ in range(3):
        # Channels share most of their structure, as colour channels of photos do.
        jitter = rng.normal(0, 0.3, frequency.shape)
        field = np.fft.irfft2(amplitude * np.exp(1j * (phase + jitter)), s=(height, width))
        channels.append((field - field.mean()) / field.std())
    mean = rng.uniform(90, 170)
    rgb = np.stack(channels, axis=-1) * 45 + mean
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").filter(
        ImageFilter.GaussianBlur(1.2)
    )
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 2, (height, width, 1))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def share_image(white_percent: float, size: tuple[int, int] = (100, 100), mode: str = "L") -> Image.Image:
    """An image whose first ``white_percent`` of pixels (row-major) are white, the rest black."""
    width, height = size
    total = width * height
    white = round(total * white_percent / 100)
    flat = np.zeros(total, dtype=np.uint8)
    flat[:white] = 255
    image = Image.fromarray(flat.reshape(height, width), "L")
    return image.convert(mode) if mode != "L" else image
