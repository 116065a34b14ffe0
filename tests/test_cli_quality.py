"""``kiln quality``: JSON shape, the shared cache, and quality flags steering the rebalance."""

from __future__ import annotations

import json
from pathlib import Path

import kiln.engine.analysis.run as run_module
import numpy as np
import pytest
from kiln.cli import main
from kiln.engine.analysis.cache import load_cached
from kiln.engine.analysis.quality import FIGURES
from kiln.engine.analysis.report import dsb_report
from kiln.engine.analysis.run import analyse_dataset
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.store import Store
from PIL import Image, ImageFilter, ImageOps

from tests.imagegen import photo_like


@pytest.fixture(scope="module")
def quality_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A photo, its mirror, a blurred photo and an unrelated one in a Kohya folder."""
    root = tmp_path_factory.mktemp("quality") / "data"
    folder = root / "10_set"
    folder.mkdir(parents=True)
    photo = photo_like((800, 600), seed=21)
    photo.save(folder / "a.png", compress_level=1)
    ImageOps.mirror(photo).save(folder / "b_mirror.jpg", quality=90)
    photo_like((800, 600), seed=22).filter(ImageFilter.GaussianBlur(6)).save(
        folder / "c_soft.png", compress_level=1
    )
    photo_like((600, 800), seed=23).save(folder / "d.png", compress_level=1)
    return root


def quality_json(capsys: pytest.CaptureFixture, *args: str) -> dict:
    assert main(["quality", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_shape_flags_and_duplicate_groups(quality_dataset: Path, capsys) -> None:
    data = quality_json(capsys, str(quality_dataset))
    assert {"images", "duplicates"} <= set(data)
    assert [image["path"] for image in data["images"]] == [
        "10_set/a.png",
        "10_set/b_mirror.jpg",
        "10_set/c_soft.png",
        "10_set/d.png",
    ]
    for image in data["images"]:
        assert {"path", "flags", "reasons", "sharpness_rank", "width", "height", *FIGURES} <= set(image)
        assert isinstance(image["flags"], list) and len(image["flags"]) == len(image["reasons"])
    by_path = {image["path"]: image for image in data["images"]}
    assert data["duplicates"] == [["10_set/a.png", "10_set/b_mirror.jpg"]]
    assert by_path["10_set/c_soft.png"]["flags"] == ["blurry"]
    assert by_path["10_set/c_soft.png"]["sharpness_rank"] == 4
    assert by_path["10_set/d.png"]["flags"] == []
    # Exactly one of the mirrored pair is the duplicate of the other.
    assert sorted(by_path[p]["flags"] for p in data["duplicates"][0]) == [[], ["duplicate"]]


def test_second_run_decodes_nothing(quality_dataset: Path, capsys, monkeypatch) -> None:
    first = quality_json(capsys, str(quality_dataset))

    def refuse(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(run_module, "analyse_image", refuse)
    assert quality_json(capsys, str(quality_dataset)) == first


def test_cache_stores_the_quality_figures(quality_dataset: Path) -> None:
    dataset = scan_dataset(quality_dataset)
    with Store(quality_dataset) as store:
        analyse_dataset(dataset, store, "luma601", workers=1)
        cached = load_cached(store, dataset.images, "luma601", False)
    assert set(cached) == {record.rel_path for record in dataset.images}
    for analysis in cached.values():
        assert set(FIGURES) <= set(analysis.metrics)
        assert isinstance(analysis.metrics["phash"], str) and len(analysis.metrics["phash"]) == 16


def test_text_report_lists_groups_and_reasons(quality_dataset: Path, capsys) -> None:
    assert main(["quality", str(quality_dataset)]) == 0
    out = capsys.readouterr().out
    assert "Near-duplicates: 1 group(s)" in out
    assert "blurry" in out and "10_set/c_soft.png" in out


def test_bad_distance_is_a_usage_error(quality_dataset: Path, capsys) -> None:
    assert main(["quality", str(quality_dataset), "--distance", "70"]) == 2
    assert "--distance" in capsys.readouterr().err


def textured_share(size: tuple[int, int], white_percent: float, seed: int) -> Image.Image:
    """Random texture with an exact white share: sharp, rich in information, no clipping flags."""
    rng = np.random.default_rng(seed)
    total = size[0] * size[1]
    white = round(total * white_percent / 100)
    values = np.concatenate([rng.integers(128, 256, white), rng.integers(0, 128, total - white)])
    rng.shuffle(values)
    return Image.fromarray(values.reshape(size[1], size[0]).astype(np.uint8), "L")


@pytest.mark.parametrize(("b_side", "dropped"), [(300, "10_set/b.png"), (800, "10_set/a.png")])
def test_rebalance_prefers_dropping_the_flagged_image_on_a_tie(
    tmp_path: Path, b_side: int, dropped: str
) -> None:
    # a.png and b.png are both exactly 10% white. At 300 px b.png is flagged (it would be
    # upscaled) and the solver drops it; at 800 px neither is flagged and path order decides.
    root = tmp_path / "data"
    folder = root / "10_set"
    folder.mkdir(parents=True)
    textured_share((800, 800), 10.0, seed=1).save(folder / "a.png", compress_level=1)
    textured_share((b_side, b_side), 10.0, seed=2).save(folder / "b.png", compress_level=1)
    for name, white in (("c", 40.0), ("d", 45.0), ("e", 50.0)):
        textured_share((600, 600), white, seed=ord(name)).save(folder / f"{name}.png", compress_level=1)
    with Store(root) as store:
        report = dsb_report(scan_dataset(root), store, "luma601", workers=1)
    assert report.rebalance.exclude == (dropped,)
