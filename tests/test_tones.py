"""Per-image white/black share across methods and every pixel format datasets hold."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from kiln.engine.analysis.decode import decode_image
from kiln.engine.analysis.measure import analyse_image
from kiln.engine.analysis.tones import METHODS, desaturate, posterize4, tone_share
from PIL import Image

from tests.imagegen import photo_like, share_image


def measure(path: Path, method: str = "luma601", exact: bool = True) -> float:
    result = analyse_image(path, method, exact)
    assert result.error is None, result.error
    return result.white


@pytest.mark.parametrize("white", [0.0, 12.5, 30.0, 50.0, 71.0, 100.0])
def test_known_share_on_grey_png(tmp_path: Path, white: float) -> None:
    path = tmp_path / "x.png"
    share_image(white, (80, 50)).save(path)
    assert measure(path) == pytest.approx(white)
    assert analyse_image(path).black == pytest.approx(100 - white)


def test_threshold_is_the_upper_two_of_four_tones(tmp_path: Path) -> None:
    # 127 is the top of the second tone (black), 128 the bottom of the third (white).
    data = np.array([[0, 63, 64, 127, 128, 191, 192, 255]], dtype=np.uint8)
    path = tmp_path / "steps.png"
    Image.fromarray(data, "L").save(path)
    assert measure(path) == pytest.approx(50.0)
    assert posterize4(data.astype(np.float32)).tolist() == [[0, 0, 85, 85, 170, 170, 255, 255]]


@pytest.mark.parametrize(
    ("colour", "expected"),
    [
        # pure red: luma601 76, luma709 54, lightness 127.5, average 85
        ((255, 0, 0), {"luma601": 0, "luma709": 0, "lightness": 100, "average": 0}),
        # pure green: 150, 182, 127.5, 85
        ((0, 255, 0), {"luma601": 100, "luma709": 100, "lightness": 100, "average": 0}),
        # a mid yellow: 0.299*200+0.587*200 = 177; 709: 185.6; lightness 100; average 133
        ((200, 200, 0), {"luma601": 100, "luma709": 100, "lightness": 0, "average": 100}),
        # blue-ish: 601: 0.299*60+0.587*90+0.114*250=99.3; 709: 95.2; light 155; avg 133.3
        ((60, 90, 250), {"luma601": 0, "luma709": 0, "lightness": 100, "average": 100}),
    ],
)
def test_desaturation_methods_differ_as_documented(tmp_path: Path, colour, expected) -> None:
    path = tmp_path / "c.png"
    Image.new("RGB", (10, 10), colour).save(path)
    for method in METHODS:
        assert measure(path, method) == pytest.approx(expected[method]), method


def test_desaturate_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown desaturation method"):
        desaturate(np.zeros((2, 2, 3), np.uint8), "hsv")


def test_transparent_pixels_do_not_count(tmp_path: Path) -> None:
    # Left half white and opaque, right half black and transparent: 100% white.
    rgba = np.zeros((10, 20, 4), np.uint8)
    rgba[:, :10] = (255, 255, 255, 255)
    rgba[:, 10:] = (0, 0, 0, 0)
    path = tmp_path / "cut.png"
    Image.fromarray(rgba, "RGBA").save(path)
    assert measure(path) == pytest.approx(100.0)
    # alpha 127 counts as transparent, 128 as opaque
    rgba[:, 10:, 3] = 128
    Image.fromarray(rgba, "RGBA").save(path)
    assert measure(path) == pytest.approx(50.0)


def test_grey_with_alpha(tmp_path: Path) -> None:
    la = np.zeros((10, 10, 2), np.uint8)
    la[:5, :, 0] = 255
    la[:, :, 1] = 255
    la[8:, :, 1] = 0  # bottom two rows transparent (black, do not count)
    path = tmp_path / "la.png"
    Image.fromarray(la, "LA").save(path)
    assert measure(path) == pytest.approx(5 / 8 * 100)


def test_fully_transparent_image_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    Image.new("RGBA", (4, 4), (255, 255, 255, 0)).save(path)
    result = analyse_image(path)
    assert result.white is None
    assert "no opaque pixels" in result.error


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    # 30000/65535 is 45.8% grey: black. Pillow's convert("L") would clip it to white.
    data = np.full((8, 8), 30000, dtype=np.uint16)
    data[:2] = 50000  # 76% grey: white
    path = tmp_path / "g16.png"
    Image.fromarray(data).save(path)
    assert Image.open(path).mode.startswith("I")
    assert measure(path) == pytest.approx(25.0)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    rgb = share_image(40.0, (64, 64), "RGB")
    path = tmp_path / "cmyk.jpg"
    rgb.convert("CMYK").save(path, quality=100)
    assert Image.open(path).mode == "CMYK"
    assert measure(path) == pytest.approx(40.0, abs=1.0)


def test_palette_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (10, 10), 0)
    image.putpalette([255, 255, 255, 0, 0, 0] + [0] * (256 * 3 - 6))
    pixels = image.load()
    for x in range(10):
        for y in range(5, 10):
            pixels[x, y] = 1  # black, made transparent below
    path = tmp_path / "p.png"
    image.save(path, transparency=1)
    assert measure(path) == pytest.approx(100.0)
    image.save(path)  # without transparency the black half counts
    assert measure(path) == pytest.approx(50.0)


def test_bilevel_image(tmp_path: Path) -> None:
    path = tmp_path / "b.png"
    share_image(30.0, (10, 10)).convert("1").save(path)
    assert measure(path) == pytest.approx(30.0)


def test_animated_gif_uses_first_frame(tmp_path: Path) -> None:
    first = share_image(20.0, (20, 20)).convert("P")
    second = share_image(90.0, (20, 20)).convert("P")
    path = tmp_path / "anim.gif"
    first.save(path, save_all=True, append_images=[second], duration=100, loop=0)
    assert Image.open(path).n_frames == 2
    assert measure(path) == pytest.approx(20.0)


def test_animated_webp_uses_first_frame(tmp_path: Path) -> None:
    first = share_image(20.0, (20, 20), "RGB")
    second = share_image(90.0, (20, 20), "RGB")
    path = tmp_path / "anim.webp"
    first.save(path, save_all=True, append_images=[second], lossless=True)
    assert measure(path) == pytest.approx(20.0)


def test_bmp_and_webp(tmp_path: Path) -> None:
    for name in ("x.bmp", "x.webp"):
        path = tmp_path / name
        share_image(35.0, (20, 20), "RGB").save(path, **({"lossless": True} if name.endswith("webp") else {}))
        assert measure(path) == pytest.approx(35.0)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_fast_path_stays_within_half_a_point_of_exact(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"photo.{fmt.lower()}"
    for seed in range(2):
        photo_like((2400, 1600), seed=seed).save(path, format=fmt, quality=90)
        fast = analyse_image(path, exact=False)
        exact = analyse_image(path, exact=True)
        assert decode_image(path).pixels.shape[1] <= 1200  # it really measured reduced
        assert abs(fast.white - exact.white) <= 0.5


def test_tone_share_counts_only_opaque() -> None:
    pixels = np.array([[255, 0], [255, 0]], np.uint8)
    alpha = np.array([[255, 255], [0, 0]], np.uint8)
    share = tone_share(pixels, alpha)
    assert (share.white, share.pixels) == (50.0, 2)


def test_exif_orientation_is_reported_not_applied(tmp_path: Path) -> None:
    image = share_image(25.0, (40, 20), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=100)
    path = tmp_path / "rot.jpg"
    path.write_bytes(buffer.getvalue())
    result = analyse_image(path, exact=True)
    assert result.metrics["exif_orientation"] == 6
    assert (result.metrics["width"], result.metrics["height"]) == (40, 20)
