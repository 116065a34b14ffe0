"""The fix-up operations on every hidden format: 16-bit, CMYK, palette with transparency,
grey with alpha, and the eight EXIF orientations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kiln.engine.errors import UsageError
from kiln.engine.fixup import ops
from PIL import Image, ImageOps

from tests.fixup.data import rotated_jpeg
from tests.imagegen import photo_like


def hidden_formats(folder: Path) -> dict[str, Path]:
    """One file per format Pillow would mishandle with a plain ``convert``."""
    folder.mkdir(parents=True, exist_ok=True)
    ramp = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "sixteen.png")  # I;16
    photo_like((64, 48), seed=1).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    palette = photo_like((64, 48), seed=2).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    palette.save(folder / "palette.png", transparency=0)
    grey_alpha = Image.merge("LA", (photo_like((64, 48), seed=3).convert("L"), Image.new("L", (64, 48), 100)))
    grey_alpha.save(folder / "grey_alpha.png")
    return {path.stem: path for path in folder.iterdir()}


def test_the_working_image_scales_sixteen_bits_and_keeps_transparency(tmp_path: Path) -> None:
    files = hidden_formats(tmp_path)
    with Image.open(files["sixteen"]) as image:
        assert image.mode in ("I;16", "I")
        working = ops.working_image(image)
    assert working.mode == "RGB"
    values = np.asarray(working)[..., 0]
    assert values.min() == 0 and values.max() == 255  # scaled, not clipped to 255 everywhere
    assert len(np.unique(values)) > 200
    with Image.open(files["cmyk"]) as image:
        assert image.mode == "CMYK"
        assert ops.working_image(image).mode == "RGB"
    with Image.open(files["palette"]) as image:
        working = ops.working_image(image)
        expected_alpha = np.asarray(image.convert("RGBA"))[..., 3]
    assert working.mode == "RGBA"
    assert np.array_equal(np.asarray(working)[..., 3], expected_alpha) and expected_alpha.min() == 0
    with Image.open(files["grey_alpha"]) as image:
        working = ops.working_image(image)
    assert working.mode == "RGBA" and set(np.unique(np.asarray(working)[..., 3])) == {100}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_baking_each_exif_orientation_matches_pillows_exif_transpose(tmp_path: Path, orientation) -> None:
    path = rotated_jpeg(tmp_path / f"o{orientation}.jpg", orientation)
    with Image.open(path) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        baked = ops.bake_orientation(ops.working_image(image), orientation)
    assert np.array_equal(np.asarray(baked), expected)
    assert baked.size == ((64, 96) if orientation >= 5 else (96, 64))


@pytest.mark.parametrize("name", ["sixteen", "cmyk", "palette", "grey_alpha"])
def test_every_operation_runs_on_every_hidden_format(tmp_path: Path, name: str) -> None:
    with Image.open(hidden_formats(tmp_path)[name]) as image:
        working = ops.working_image(image)
    original = working.copy()
    results = [
        ops.bake_orientation(working, 6),
        ops.crop(working, (4, 4, 40, 30)),
        ops.flatten(working, (255, 255, 255)),
        ops.levels(working, *ops.level_points(working, 0.5), gamma=0.8),
        ops.lanczos(working, (128, 96)),
    ]
    assert [r.size for r in results] == [(48, 64), (36, 26), (64, 48), (64, 48), (128, 96)]
    assert results[2].mode == "RGB"
    assert all(r.mode in ("RGB", "RGBA") for r in results)
    assert np.array_equal(np.asarray(working), np.asarray(original))  # the input is never changed


def test_flatten_composites_on_the_chosen_colour_where_kohya_would_keep_hidden_pixels() -> None:
    rgba = Image.new("RGBA", (4, 1), (10, 200, 30, 255))
    rgba.putpixel((0, 0), (255, 0, 0, 0))  # red hidden under full transparency
    rgba.putpixel((1, 0), (0, 0, 0, 128))
    flat = np.asarray(ops.flatten(rgba, ops.parse_colour("#0000ff")))
    assert tuple(flat[0, 0]) == (0, 0, 255)  # Kohya's convert("RGB") would train on red
    assert tuple(np.asarray(rgba.convert("RGB"))[0, 0]) == (255, 0, 0)
    assert tuple(flat[0, 1]) == (0, 0, 127) or tuple(flat[0, 1]) == (0, 0, 128)
    assert tuple(flat[0, 2]) == (10, 200, 30)


def test_levels_stretches_to_the_clip_points_and_gamma_moves_mid_tones() -> None:
    grey = np.tile(np.arange(50, 201, dtype=np.uint8), (10, 1))
    image = Image.fromarray(np.dstack([grey] * 3), "RGB")
    black, white = ops.level_points(image, 0.0)
    assert (black, white) == (50, 200)
    stretched = np.asarray(ops.levels(image, black, white))
    assert stretched.min() == 0 and stretched.max() == 255
    darker = np.asarray(ops.levels(image, black, white, gamma=0.8))
    assert darker.mean() < stretched.mean()
    flat = Image.new("RGB", (8, 8), (90, 90, 90))
    assert ops.level_points(flat, 0.5) == (0, 255)  # nothing to stretch


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda img: ops.crop(img, (0, 0, 99, 10)), "does not lie inside the 64x48 image"),
        (lambda img: ops.levels(img, 200, 100), "need 0 <= black < white"),
        (lambda img: ops.levels(img, 0, 255, gamma=0), "gamma 0"),
        (lambda img: ops.level_points(img, 60), "clip 60%"),
        (lambda img: ops.parse_colour("pink"), "colour 'pink'"),
    ],
)
def test_absurd_values_are_refused_in_one_line(call, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        call(photo_like((64, 48)))
