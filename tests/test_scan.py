"""Scanning a Kohya training folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from kiln.engine.dataset.scan import normalise_caption_extension, parse_concept_folder, scan_dataset
from kiln.engine.errors import DatasetError
from PIL import Image


def touch_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path, format="PNG")


def test_concept_folders_give_repeats_and_names(tmp_path: Path) -> None:
    touch_image(tmp_path / "15_cat" / "a.png")
    touch_image(tmp_path / "3_cat_dog" / "b.jpg")
    dataset = scan_dataset(tmp_path)
    assert [(c.folder, c.name, c.repeats, c.kohya_ok) for c in dataset.concepts] == [
        ("15_cat", "cat", 15, True),
        ("3_cat_dog", "cat_dog", 3, True),
    ]
    assert [r.rel_path for r in dataset.images] == ["15_cat/a.png", "3_cat_dog/b.jpg"]
    assert dataset.warnings == []


def test_root_images_and_unprefixed_folders_count_once_with_a_warning(tmp_path: Path) -> None:
    touch_image(tmp_path / "loose.png")
    touch_image(tmp_path / "misc" / "c.png")
    dataset = scan_dataset(tmp_path)
    by_path = dataset.by_path()
    assert by_path["loose.png"].repeats == 1
    assert by_path["misc/c.png"].repeats == 1
    assert len(dataset.warnings) == 2
    assert any("Kohya skips" in w and "misc" in w for w in dataset.warnings)


def test_excluded_dot_and_runs_folders_are_ignored(tmp_path: Path) -> None:
    touch_image(tmp_path / "10_a" / "keep.png")
    touch_image(tmp_path / "10_a" / "_excluded" / "gone.png")
    touch_image(tmp_path / "_excluded" / "gone.png")
    touch_image(tmp_path / ".kiln" / "thumb.png")
    touch_image(tmp_path / "runs" / "x.png")
    touch_image(tmp_path / "10_a" / ".hidden.png")
    assert [r.rel_path for r in scan_dataset(tmp_path).images] == ["10_a/keep.png"]


@pytest.mark.parametrize("extension", ["png", "jpg", "jpeg", "webp", "bmp", "gif", "PNG", "JPG"])
def test_every_kohya_extension_is_found(tmp_path: Path, extension: str) -> None:
    touch_image(tmp_path / "1_a" / f"x.{extension}")
    (tmp_path / "1_a" / "notes.txt").write_text("hi")
    (tmp_path / "1_a" / "x.psd").write_bytes(b"8BPS")
    assert [r.rel_path for r in scan_dataset(tmp_path).images] == [f"1_a/x.{extension}"]


def test_caption_extension_is_configurable(tmp_path: Path) -> None:
    touch_image(tmp_path / "1_a" / "x.y.png")
    assert scan_dataset(tmp_path).images[0].caption_path.name == "x.y.txt"
    assert scan_dataset(tmp_path, "caption").images[0].caption_path.name == "x.y.caption"
    assert normalise_caption_extension(".caption") == ".caption"
    with pytest.raises(DatasetError):
        normalise_caption_extension("")


def test_parse_concept_folder() -> None:
    assert parse_concept_folder("15_catdiffusion") == (15, "catdiffusion")
    assert parse_concept_folder("15cat") is None
    assert parse_concept_folder("cat_15") is None
    assert parse_concept_folder("-1_cat") is None


def test_zero_repeats_warns(tmp_path: Path) -> None:
    touch_image(tmp_path / "0_a" / "x.png")
    dataset = scan_dataset(tmp_path)
    assert dataset.concepts[0].kohya_ok is False
    assert "0 repeats" in dataset.warnings[0]


def test_missing_or_file_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such folder"):
        scan_dataset(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        scan_dataset(tmp_path / "f")


def test_empty_folder_scans_to_no_images(tmp_path: Path) -> None:
    assert scan_dataset(tmp_path).images == []
