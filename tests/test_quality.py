"""Quality figures (measured in the analysis pass) and the dataset's judgement: flags, ranks, duplicates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kiln.engine.analysis.measure import analyse_image
from kiln.engine.analysis.quality import (
    BLURRY,
    DUPLICATE,
    EXIF_ROTATION,
    LOW_INFORMATION,
    LOW_RESOLUTION,
    ODD_ASPECT,
    OVEREXPOSED,
    TRANSPARENCY,
    UNDEREXPOSED,
    QualityThresholds,
    duplicate_groups,
    image_flags,
    judge_dataset,
    training_upscale,
)
from PIL import Image, ImageFilter, ImageOps

from tests.imagegen import photo_like


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return photo_like((960, 720), seed=11)


def save(image: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        kwargs.setdefault("compress_level", 1)  # fast to write; tests need no small files
    image.save(path, **kwargs)
    return path


def flag_ids(path: Path, thresholds: QualityThresholds = QualityThresholds()) -> set[str]:
    analysis = analyse_image(path)
    assert analysis.ok, analysis.error
    return {flag.id for flag in image_flags(analysis.metrics, thresholds)}


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def test_clean_photo_earns_no_flag(photo: Image.Image, tmp_path: Path) -> None:
    assert flag_ids(save(photo, tmp_path / "clean.png")) == set()


def test_each_problem_earns_its_own_flag(photo: Image.Image, tmp_path: Path) -> None:
    pixels = np.asarray(photo, dtype=np.int16)
    cases = {
        BLURRY: photo.filter(ImageFilter.GaussianBlur(6)),
        OVEREXPOSED: Image.fromarray(np.clip(pixels + 140, 0, 255).astype(np.uint8)),
        UNDEREXPOSED: Image.fromarray(np.clip(pixels - 140, 0, 255).astype(np.uint8)),
        ODD_ASPECT: photo.crop((0, 0, 960, 320)).resize((1500, 500)),
        LOW_RESOLUTION: photo.resize((320, 240)),
    }
    for expected, image in cases.items():
        assert expected in flag_ids(save(image, tmp_path / f"{expected}.png")), expected
    # A flat card holds almost no information (and no detail).
    flat = Image.new("RGB", (640, 640), (120, 130, 140))
    assert {LOW_INFORMATION, BLURRY} <= flag_ids(save(flat, tmp_path / "flat.png"))
    # Half the pixels transparent: Kohya would train on whatever colour lies under them.
    rgba = photo.convert("RGBA")
    alpha = np.full((720, 960), 255, np.uint8)
    alpha[:, :480] = 0
    rgba.putalpha(Image.fromarray(alpha))
    path = save(rgba, tmp_path / "cutout.png")
    assert TRANSPARENCY in flag_ids(path)
    assert analyse_image(path).metrics["transparent"] == pytest.approx(50.0)
    # EXIF says "rotate 90°": Kohya ignores the tag and would train the image sideways.
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = flag_ids(save(photo, tmp_path / "rotated.jpg", exif=exif, quality=92))
    assert EXIF_ROTATION in rotated
    assert EXIF_ROTATION not in flag_ids(save(photo, tmp_path / "upright.jpg", quality=92))


def test_reasons_are_one_line_and_ids_stable(photo: Image.Image, tmp_path: Path) -> None:
    metrics = analyse_image(save(photo.resize((200, 900)), tmp_path / "odd.png")).metrics
    flags = image_flags(metrics)
    assert [flag.id for flag in flags] == [ODD_ASPECT, LOW_RESOLUTION]
    assert all(flag.reason and "\n" not in flag.reason for flag in flags)
    assert "4.50:1" in flags[0].reason


def test_thresholds_are_configurable(photo: Image.Image, tmp_path: Path) -> None:
    path = save(photo.resize((400, 300)), tmp_path / "small.png")
    assert LOW_RESOLUTION in flag_ids(path)
    assert LOW_RESOLUTION not in flag_ids(path, QualityThresholds(resolution=320))
    blurred = save(photo.filter(ImageFilter.GaussianBlur(2)), tmp_path / "soft.png")
    sharpness = analyse_image(blurred).metrics["sharpness"]
    assert BLURRY in flag_ids(blurred, QualityThresholds(min_sharpness=sharpness + 1))
    assert BLURRY not in flag_ids(blurred, QualityThresholds(min_sharpness=sharpness - 1))


def test_sharpness_does_not_depend_on_resolution(tmp_path: Path) -> None:
    big = photo_like((1500, 1000), seed=5)
    sizes = {"full": big, "two_thirds": big.resize((1000, 667), Image.Resampling.LANCZOS)}
    figures = {
        name: analyse_image(save(image, tmp_path / f"{name}.png")).metrics for name, image in sizes.items()
    }
    assert figures["two_thirds"]["sharpness"] == pytest.approx(figures["full"]["sharpness"], rel=0.15)
    assert figures["two_thirds"]["entropy"] == pytest.approx(figures["full"]["entropy"], abs=0.1)
    # Blur is a different matter: a visibly softer copy of the same size falls far below.
    soft = analyse_image(save(big.filter(ImageFilter.GaussianBlur(4)), tmp_path / "soft.png")).metrics
    assert soft["sharpness"] < 0.3 * figures["full"]["sharpness"]


def test_fast_and_exact_decodes_give_the_same_quality_figures(tmp_path: Path) -> None:
    path = save(photo_like((2200, 1500), seed=6), tmp_path / "large.jpg", quality=90)
    fast, exact = analyse_image(path).metrics, analyse_image(path, exact=True).metrics
    assert fast["sharpness"] == pytest.approx(exact["sharpness"], rel=0.05)
    assert fast["entropy"] == pytest.approx(exact["entropy"], abs=0.05)
    assert fast["clipped_bright"] == pytest.approx(exact["clipped_bright"], abs=0.1)
    assert hamming(fast["phash"], exact["phash"]) <= 2


def test_duplicates_reencoded_resized_and_mirrored_are_grouped(photo: Image.Image, tmp_path: Path) -> None:
    root = tmp_path / "data" / "10_set"
    paths = {
        "original": save(photo, root / "original.png"),
        "reencoded": save(photo, root / "reencoded.jpg", quality=45),
        "resized": save(photo.resize((480, 360)), root / "resized.png"),
        "mirrored": save(ImageOps.mirror(photo), root / "mirrored.png"),
        "other": save(photo_like((960, 720), seed=12), root / "other.png"),
        "another": save(photo_like((720, 960), seed=13), root / "another.png"),
    }
    metrics = {name: analyse_image(path).metrics for name, path in paths.items()}
    quality = judge_dataset(metrics)
    assert quality.duplicates == [["mirrored", "original", "reencoded", "resized"]]
    # The largest (then sharpest) copy is the original; the others carry the flag.
    flagged = {name for name, judged in quality.images.items() if DUPLICATE in judged.flag_ids}
    keeper = {judged.duplicate_of for judged in quality.images.values() if judged.duplicate_of}
    assert len(keeper) == 1 and keeper <= {"original", "mirrored", "reencoded"}
    assert flagged == {"original", "reencoded", "resized", "mirrored"} - keeper
    assert DUPLICATE not in quality.images["other"].flag_ids + quality.images["another"].flag_ids


def test_duplicate_groups_are_transitive_and_list_each_member_once() -> None:
    base = 0x0F0F_0F0F_0F0F_0F0F  # 32 bits set, like a real pHash
    near = base ^ 0xFF  # 8 bits from base
    far = near ^ 0xFF00  # 8 bits from near, 16 from base
    hashes = {
        "c": (f"{far:016x}", f"{far:016x}"),
        "a": (f"{base:016x}", f"{base:016x}"),
        "b": (f"{near:016x}", f"{near:016x}"),
        "x": (f"{~base & (2**64 - 1):016x}", f"{~base & (2**64 - 1):016x}"),
    }
    assert duplicate_groups(hashes, 8) == [["a", "b", "c"]]
    assert duplicate_groups(hashes, 7) == []
    # Mirrored: x's mirror hash equals a's hash.
    hashes["x"] = (f"{~base & (2**64 - 1):016x}", f"{base:016x}")
    assert duplicate_groups(hashes, 0) == [["a", "x"]]


def test_flat_images_are_not_duplicates_of_each_other(tmp_path: Path) -> None:
    black = analyse_image(save(Image.new("L", (600, 600), 10), tmp_path / "black.png")).metrics
    white = analyse_image(save(Image.new("L", (600, 600), 245), tmp_path / "white.png")).metrics
    assert judge_dataset({"black": black, "white": white}).duplicates == []


def test_sharpness_rank_and_relative_blur() -> None:
    def figures(sharpness: float) -> dict:
        return {"sharpness": sharpness, "width": 768, "height": 768, "entropy": 7.0}

    values = {"a": 200.0, "b": 210.0, "c": 190.0, "d": 205.0, "e": 30.0, "f": 195.0}
    quality = judge_dataset({name: figures(value) for name, value in values.items()})
    assert [quality.images[name].sharpness_rank for name in "abcdef"] == [3, 1, 5, 2, 6, 4]
    assert [name for name in "abcdef" if quality.flagged(name)] == ["e"]
    assert "median" in quality.images["e"].flags[0].reason
    # Too few images to judge by the median: 30 is above the absolute floor of 25.
    small = judge_dataset({name: figures(values[name]) for name in "abe"})
    assert not small.flagged("e")


def test_images_without_figures_get_no_flags() -> None:
    quality = judge_dataset({"broken.png": {}, "old.png": {"width": 768, "height": 768}})
    assert quality.images["broken.png"].flags == ()
    assert quality.images["broken.png"].sharpness_rank is None
    assert not quality.flagged("old.png")


def test_training_upscale_by_area_and_short_side() -> None:
    assert training_upscale(512, 512, 512) == 1.0
    assert training_upscale(4000, 3000, 512) == 1.0
    assert training_upscale(256, 256, 512) == pytest.approx(2.0)
    # Large enough in area, but a 100 px short side is under the 256 px smallest bucket side.
    assert training_upscale(4000, 100, 512) == pytest.approx(2.56)


def test_hashes_are_imagehash_phash_of_the_image_and_its_mirror() -> None:
    import imagehash
    from kiln.engine.analysis.quality import perceptual_hashes

    halves = np.zeros((60, 60), np.uint8)
    halves[:25] = 200
    greys = [np.asarray(photo_like((96, 64), seed=seed).convert("L")) for seed in (31, 32, 33)]
    for grey in [*greys, halves, np.full((40, 40), 9, np.uint8)]:
        small = Image.fromarray(grey, "L").resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=2.0)
        expected = (str(imagehash.phash(small)), str(imagehash.phash(ImageOps.mirror(small))))
        assert perceptual_hashes(grey) == expected
