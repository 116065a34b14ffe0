"""Cook hints: figures that move the right way on noisy, contrasty, saturated and blurred images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kiln.engine.runs.cook import (
    OVERCOOKED,
    UNDERCOOKED,
    dataset_figures,
    image_cook_figures,
    latest_cook_hint,
    noise_sigma,
    run_cook_hints,
)
from PIL import Image, ImageEnhance, ImageFilter

from tests.imagegen import photo_like

SIZE = (128, 128)


def figures(image: Image.Image) -> dict[str, float]:
    return image_cook_figures(np.asarray(image.convert("RGB")))


def noisy(image: Image.Image, sigma: float, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, sigma, (*image.size[::-1], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def contrasty(image: Image.Image, factor: float = 2.5) -> Image.Image:
    return ImageEnhance.Contrast(image).enhance(factor)


def saturated(image: Image.Image, factor: float = 3.0) -> Image.Image:
    return ImageEnhance.Color(image).enhance(factor)


def blurred(image: Image.Image, radius: float = 3.0) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius))


@pytest.fixture(scope="module")
def clean() -> Image.Image:
    return photo_like(SIZE, seed=3)


def test_noise_estimate_recovers_added_gaussian_noise() -> None:
    flat = np.full((96, 96), 128, dtype=np.uint8)
    assert noise_sigma(flat) == 0.0
    rng = np.random.default_rng(1)
    grey = np.clip(128 + rng.normal(0, 8, (96, 96)), 0, 255).astype(np.uint8)
    assert noise_sigma(grey) == pytest.approx(8, rel=0.15)


def test_noise_rises_with_added_noise_and_not_with_detail(clean: Image.Image) -> None:
    base = figures(clean)
    # Per-channel noise of 6 is about 4 grey levels (luma weights), on top of the image's own.
    assert figures(noisy(clean, 6))["noise"] > base["noise"] + 2
    assert figures(noisy(clean, 12))["noise"] > figures(noisy(clean, 6))["noise"]
    # A sharpened image has more detail but is not noise.
    sharpened = clean.filter(ImageFilter.UnsharpMask(radius=2, percent=80, threshold=0))
    assert figures(sharpened)["detail"] > base["detail"]
    assert figures(sharpened)["noise"] < figures(noisy(clean, 6))["noise"]


def test_contrast_and_clipping_rise_with_contrast(clean: Image.Image) -> None:
    base, strong = figures(clean), figures(contrasty(clean))
    assert strong["contrast"] > base["contrast"] * 1.5
    assert strong["clipped"] > base["clipped"] + 5


def test_saturation_and_colourfulness_rise_with_colour(clean: Image.Image) -> None:
    base, vivid = figures(clean), figures(saturated(clean))
    assert vivid["saturation"] > base["saturation"] * 1.4
    assert vivid["colourfulness"] > base["colourfulness"] * 1.4
    grey = figures(clean.convert("L").convert("RGB"))
    assert grey["saturation"] == 0 and grey["colourfulness"] == pytest.approx(0, abs=1e-3)


def test_detail_falls_with_blur(clean: Image.Image) -> None:
    assert figures(blurred(clean, 1.0))["detail"] < figures(clean)["detail"]
    assert figures(blurred(clean, 3.0))["detail"] < figures(blurred(clean, 1.0))["detail"]


def make_run(tmp_path: Path, dataset: Path, epochs: dict[int, list[Image.Image]]) -> Path:
    run_dir = tmp_path / "run"
    for epoch, images in epochs.items():
        folder = run_dir / "samples" / f"e{epoch:03d}"
        folder.mkdir(parents=True)
        for index, image in enumerate(images):
            image.save(folder / f"{index:02d}.png")
    (run_dir / "config.toml").write_text(f"[dataset]\npath = {json.dumps(str(dataset))}\n")
    return run_dir


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cook") / "data"
    (root / "5_thing").mkdir(parents=True)
    for seed in range(6):
        photo_like(SIZE, seed=10 + seed).save(root / "5_thing" / f"{seed}.png")
    return root


def baseline_images() -> list[Image.Image]:
    return [photo_like(SIZE, seed=20), photo_like(SIZE, seed=21)]


def test_run_hints_mark_noisy_contrasty_epochs_overcooked_and_blurred_undercooked(
    tmp_path: Path, dataset: Path
) -> None:
    base = baseline_images()
    run_dir = make_run(
        tmp_path,
        dataset,
        {
            0: base,
            1: [photo_like(SIZE, seed=30), photo_like(SIZE, seed=31)],  # like the dataset
            2: [noisy(contrasty(image, 2.0), 14) for image in base],
            3: [blurred(image, 4.0) for image in base],
        },
    )
    hints = {hint.epoch: hint for hint in run_cook_hints(run_dir)}
    assert set(hints) == {1, 2, 3}
    assert hints[1].label is None and hints[1].summary() is None
    over = hints[2]
    assert over.label == OVERCOOKED
    assert {"noise", "contrast"} <= {sign.figure for sign in over.signs}
    assert over.summary().startswith("overcooked? ") and "x baseline" in over.summary()
    under = hints[3]
    assert under.label == UNDERCOOKED and [s.figure for s in under.signs] == ["detail"]
    assert "dataset median" in under.summary()
    assert latest_cook_hint(run_dir).epoch == 3
    assert hints[2].to_json()["hint"] == OVERCOOKED


def test_no_overcooked_sign_when_the_dataset_itself_is_that_contrasty(tmp_path: Path) -> None:
    # A high-contrast dataset: contrasty samples match it, so they are not a sign.
    root = tmp_path / "data" / "5_ink"
    root.mkdir(parents=True)
    for seed in range(5):
        contrasty(photo_like(SIZE, seed=40 + seed), 2.5).save(root / f"{seed}.png")
    base = baseline_images()
    run_dir = make_run(tmp_path, root.parent, {0: base, 1: [contrasty(image, 2.5) for image in base]})
    hint = run_cook_hints(run_dir)[0]
    assert "contrast" not in {sign.figure for sign in hint.signs}


def test_dataset_figures_are_cached_and_refreshed_when_an_image_changes(dataset: Path) -> None:
    first = dataset_figures(dataset, 64 * 64)
    assert first is not None and first.images == 6
    assert (dataset / ".kiln" / "cook-stats.json").is_file()
    assert dataset_figures(dataset, 64 * 64) == first
    blurred(photo_like(SIZE, seed=10), 5).save(dataset / "5_thing" / "0.png")
    changed = dataset_figures(dataset, 64 * 64)
    assert changed.medians["detail"] <= first.medians["detail"]
    assert changed != first


def test_a_run_without_trained_samples_has_no_hint(tmp_path: Path, dataset: Path) -> None:
    run_dir = make_run(tmp_path, dataset, {0: baseline_images()})
    assert run_cook_hints(run_dir) == [] and latest_cook_hint(run_dir) is None
