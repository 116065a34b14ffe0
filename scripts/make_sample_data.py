"""Write ``sample_data/``: a small, deterministic Kohya-layout dataset for demos and tests.

Two concepts drawn procedurally (no downloads, no copyrighted pictures): ``10_kilnpot``,
glazed pots captioned BLIP-style (sentences ending in the trigger word), and
``5_kilnstyle``, landscapes captioned WD14-style (tags after the trigger word). The shares
are spread so that the dataset starts outside the optimal DSB band and the rebalance
suggestion has something to do.

Run from the repository root:  python scripts/make_sample_data.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parent.parent / "sample_data"


def gradient(size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    """A vertical colour gradient."""
    width, height = size
    t = np.linspace(0.0, 1.0, height)[:, None, None]
    colours = (1 - t) * np.asarray(top, float) + t * np.asarray(bottom, float)
    return Image.fromarray(np.repeat(colours, width, axis=1).astype(np.uint8), "RGB")


def grain(image: Image.Image, rng: np.random.Generator, amount: float) -> Image.Image:
    """Add mild film grain so the images look less synthetic to the quality checks."""
    data = np.asarray(image, dtype=np.float32)
    noise = rng.normal(0.0, amount, data.shape[:2])[..., None]
    return Image.fromarray(np.clip(data + noise, 0, 255).astype(np.uint8), image.mode)


def pot(
    seed: int,
    background: tuple,
    floor: tuple,
    glaze: tuple,
    shape: str = "round",
    size=(512, 640),
    noise=6.0,
) -> Image.Image:
    """A glazed pot of a given shape (round, tall, bowl, jar, jug) on a table against a wall."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = gradient(size, background, tuple(int(c * 0.8) for c in background))
    draw = ImageDraw.Draw(image)
    table_top = int(height * 0.72)
    draw.rectangle((0, table_top, width, height), fill=floor)
    cx = width // 2 + int(rng.integers(-30, 30))
    bottom = table_top + 12
    highlight = tuple(min(255, c + 70) for c in glaze)
    if shape == "bowl":
        body_w, body_h = int(width * 0.7), int(height * 0.22)
        draw.chord((cx - body_w // 2, bottom - 2 * body_h, cx + body_w // 2, bottom), 0, 180, fill=glaze)
        draw.ellipse(
            (cx - body_w // 2, bottom - body_h - 12, cx + body_w // 2, bottom - body_h + 12), fill=highlight
        )
    elif shape == "jar":
        body_w, body_h = int(width * 0.45), int(height * 0.42)
        draw.rounded_rectangle((cx - body_w // 2, bottom - body_h, cx + body_w // 2, bottom), 40, fill=glaze)
        draw.rectangle(
            (cx - body_w // 3, bottom - body_h - 24, cx + body_w // 3, bottom - body_h + 4), fill=glaze
        )
        draw.rectangle(
            (cx - body_w // 3 + 12, bottom - body_h + 30, cx - body_w // 3 + 28, bottom - 30), fill=highlight
        )
    else:
        tall = shape == "tall"
        body_w = int(width * (0.26 if tall else rng.uniform(0.38, 0.5)))
        body_h = int(height * (0.55 if tall else rng.uniform(0.38, 0.46)))
        draw.ellipse((cx - body_w // 2, bottom - body_h, cx + body_w // 2, bottom), fill=glaze)
        neck_w = body_w // (2 if tall else 3)
        neck = int(height * (0.14 if tall else 0.08))
        draw.rectangle(
            (cx - neck_w // 2, bottom - body_h - neck, cx + neck_w // 2, bottom - body_h + 20), fill=glaze
        )
        if shape == "jug":
            draw.arc(
                (cx + body_w // 4, bottom - body_h, cx + body_w // 2 + 60, bottom - body_h // 3),
                270,
                90,
                fill=glaze,
                width=18,
            )
        draw.ellipse(
            (cx - body_w // 4, bottom - body_h + 20, cx - body_w // 8, bottom - body_h // 2), fill=highlight
        )
    image = image.filter(ImageFilter.GaussianBlur(1.2))
    return grain(image, rng, noise)


def landscape(
    seed: int, sky: tuple, ground: tuple, sun: tuple | None, size=(640, 512), noise=5.0
) -> Image.Image:
    """Layered hills under a sky, optionally with a sun or moon."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = gradient(size, sky[0], sky[1])
    draw = ImageDraw.Draw(image)
    if sun is not None:
        x, y, r = int(width * rng.uniform(0.2, 0.8)), int(height * rng.uniform(0.15, 0.35)), 38
        draw.ellipse((x - r, y - r, x + r, y + r), fill=sun)
    for layer in range(3):
        base = int(height * (0.5 + 0.15 * layer))
        xs = np.linspace(0, width, 9)
        ys = base + rng.normal(0, 25, xs.size)
        points = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)] + [(width, height), (0, height)]
        shade = tuple(int(c * (1.0 - 0.25 * layer)) for c in ground)
        draw.polygon(points, fill=shade)
    image = image.filter(ImageFilter.GaussianBlur(1.0))
    return grain(image, rng, noise)


POTS = [
    (
        "pot_01",
        dict(background=(146, 140, 131), floor=(150, 110, 70), glaze=(40, 70, 150)),
        "a round blue vase on a wooden table against a pale wall",
    ),
    (
        "pot_02",
        dict(background=(40, 38, 44), floor=(60, 45, 35), glaze=(150, 60, 40), shape="tall"),
        "a red clay pot on a dark table in a dim room",
    ),
    (
        "pot_03",
        dict(background=(30, 30, 30), floor=(20, 20, 20), glaze=(90, 90, 95), shape="jar"),
        "a grey stoneware jar on a black shelf",
    ),
    (
        "pot_04",
        dict(background=(235, 232, 225), floor=(210, 200, 185), glaze=(245, 245, 240)),
        "a white porcelain vase on a light table in soft daylight",
    ),
    (
        "pot_05",
        dict(background=(60, 70, 60), floor=(45, 40, 30), glaze=(70, 120, 80), shape="bowl"),
        "a green celadon bowl on a walnut table",
    ),
    (
        "pot_06",
        dict(background=(25, 22, 30), floor=(35, 30, 28), glaze=(200, 160, 60), shape="jug"),
        "a gold glazed jug on a dark wooden table",
    ),
]

LANDSCAPES = [
    (
        "hills_01",
        dict(sky=((120, 170, 230), (200, 220, 240)), ground=(70, 120, 60), sun=(255, 240, 200)),
        "scenery, outdoors, sky, hill, grass, sun, day",
    ),
    (
        "hills_02",
        dict(sky=((10, 12, 35), (40, 40, 80)), ground=(20, 30, 25), sun=(230, 230, 210)),
        "no humans, night, night sky, moon, hill",
    ),
    (
        "hills_03",
        dict(sky=((250, 150, 80), (255, 210, 150)), ground=(90, 60, 50), sun=(255, 250, 220)),
        "no humans, scenery, sunset, orange sky, hill, sun",
    ),
    (
        "hills_04",
        dict(sky=((15, 15, 20), (30, 25, 35)), ground=(12, 12, 14), sun=None),
        "no humans, outdoors, night, dark, hill",
    ),
    (
        "hills_05",
        dict(sky=((200, 205, 210), (230, 230, 232)), ground=(180, 185, 190), sun=None),
        "no humans, scenery, outdoors, fog, winter, snow",
    ),
    (
        "hills_06",
        dict(sky=((35, 50, 80), (70, 90, 120)), ground=(30, 50, 40), sun=None),
        "no humans, scenery, outdoors, evening, cloudy sky, grass",
    ),
]


def main() -> int:
    if OUT.exists():
        for child in OUT.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            elif child.name != "README.md":
                child.unlink()
    pots = OUT / "10_kilnpot"
    styles = OUT / "5_kilnstyle"
    pots.mkdir(parents=True, exist_ok=True)
    styles.mkdir(parents=True, exist_ok=True)
    for index, (stem, spec, caption) in enumerate(POTS):
        image = pot(100 + index, **spec, noise=0.0 if stem == "pot_04" else 6.0)
        if stem == "pot_04":
            # One cut-out with transparency: only opaque pixels count towards the shares.
            rgba = image.convert("RGBA")
            alpha = Image.new("L", image.size, 0)
            ImageDraw.Draw(alpha).rectangle((40, 60, image.width - 40, image.height - 20), fill=255)
            rgba.putalpha(alpha)
            rgba.save(pots / f"{stem}.png", optimize=True)
        else:
            image.save(pots / f"{stem}.jpg", quality=82, optimize=True)
        (pots / f"{stem}.txt").write_text(f"{caption}, kilnpot\n", encoding="utf-8")
    for index, (stem, spec, tags) in enumerate(LANDSCAPES):
        image = landscape(200 + index, **spec, noise=0.0 if stem == "hills_05" else 5.0)
        if stem == "hills_05":
            image.convert("L").save(styles / f"{stem}.png", optimize=True)
        else:
            image.save(styles / f"{stem}.jpg", quality=82, optimize=True)
        (styles / f"{stem}.txt").write_text(f"kilnstyle, {tags}\n", encoding="utf-8")
    total = sum(path.stat().st_size for path in OUT.rglob("*") if path.is_file())
    print(f"wrote {OUT} ({total / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
