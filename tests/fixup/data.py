"""Images and a dataset with one image of each problem the quality checks flag (fix-up tests,
the Fix-up tab's tests, and trying ``kiln fixup`` by hand)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.imagegen import photo_like


def rotated_jpeg(path: Path, orientation: int, size: tuple[int, int] = (96, 64)) -> Path:
    """A JPEG whose EXIF says ``orientation``; its quadrants differ so a wrong turn shows."""
    image = photo_like(size, seed=orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


def make_flagged_dataset(root: Path) -> Path:
    """``root/10_subject/``: a good image, a small one, an EXIF-rotated one, a transparent one, a
    blown-out one and a broken file; captions beside the first five."""
    folder = root / "10_subject"
    folder.mkdir(parents=True)
    photo_like((640, 512), seed=1).save(folder / "good.png")
    photo_like((200, 160), seed=2).save(folder / "small.jpg", quality=95)
    rotated_jpeg(folder / "rotated.jpg", 6, (768, 512))
    rgba = photo_like((512, 640), seed=3).convert("RGBA")
    alpha = np.full((640, 512), 255, dtype=np.uint8)
    alpha[:, :200] = 0
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(folder / "cutout.png")
    bright = np.asarray(photo_like((512, 512), seed=4), dtype=np.int16) + 140
    Image.fromarray(np.clip(bright, 0, 255).astype(np.uint8)).save(folder / "blown.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    for stem in ("good", "small", "rotated", "cutout", "blown"):
        (folder / f"{stem}.txt").write_text(f"{stem}, photo", encoding="utf-8")
    return root
