"""Measure one image in a single decode: its white/black share and its quality figures.

This is the function the process pool runs, so it takes and returns plain picklable data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kiln.engine.analysis.decode import decode_image
from kiln.engine.analysis.quality import QUALITY_AREA, image_figures
from kiln.engine.analysis.tones import DEFAULT_METHOD, tone_share
from kiln.engine.errors import ImageError

# Bump when a measure changes, so cached figures from an older Kiln are recomputed.
ANALYSIS_VERSION = 2  # 2: quality figures (kiln.engine.analysis.quality)


@dataclass(frozen=True)
class ImageAnalysis:
    """What Kiln knows about one image's pixels.

    Attributes:
        white: White share in percent, None when the image could not be measured.
        black: ``100 - white``, None likewise.
        error: A one-line reason when the image could not be decoded or measured.
        metrics: Further figures keyed by name: ``width``, ``height``, ``mode``, ``format``,
            ``exif_orientation``, ``has_alpha`` and the quality figures
            (``kiln.engine.analysis.quality.FIGURES``).
    """

    white: float | None
    black: float | None
    error: str | None = None
    metrics: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the image was measured."""
        return self.error is None and self.white is not None


def analyse_image(path: Path | str, method: str = DEFAULT_METHOD, exact: bool = False) -> ImageAnalysis:
    """Decode ``path`` once and measure it; a broken image yields an ``error``, never raises."""
    try:
        decoded = decode_image(Path(path), exact=exact, grey_ok=method == "luma601", grey_area=QUALITY_AREA)
        share = tone_share(decoded.pixels, decoded.alpha, method)
        figures = image_figures(decoded.grey, decoded.alpha) if decoded.grey is not None else {}
    except ImageError as exc:
        return ImageAnalysis(white=None, black=None, error=str(exc))
    except MemoryError:
        return ImageAnalysis(white=None, black=None, error="out of memory while decoding; downscale it")
    metrics: dict[str, float | int | str] = {
        "width": decoded.size[0],
        "height": decoded.size[1],
        "mode": decoded.mode,
        "format": decoded.format,
        "exif_orientation": decoded.exif_orientation,
        "has_alpha": int(decoded.alpha is not None),
        **figures,
    }
    return ImageAnalysis(white=share.white, black=share.black, metrics=metrics)
