"""A dataset's per-bucket load (sizes from cache or headers) and the repeats folder rename."""

from __future__ import annotations

from pathlib import Path

import kiln.engine.plan.loads as loads_module
import pytest
from kiln.engine.analysis.cache import save_analyses
from kiln.engine.analysis.measure import ImageAnalysis
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.selection import excluded_paths, set_included
from kiln.engine.dataset.store import Store
from kiln.engine.errors import DatasetError, ImageError, UsageError
from kiln.engine.plan.buckets import BucketSpec
from kiln.engine.plan.loads import BucketLoad, ConceptLoad, dataset_load, header_size
from kiln.engine.plan.repeats import rename_concept_repeats, renamed_folder
from kiln.engine.plan.steps import plan_steps
from PIL import Image


def sized_dataset(root: Path, images: dict[str, tuple[int, int]]) -> Path:
    """Images of given sizes (solid grey: tiny files)."""
    for rel_path, size in images.items():
        path = root / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (128, 128, 128)).save(path)
    return root


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    # At 512: 3:2 goes to 640x384, 2:3 to 384x640, square to 512x512.
    return sized_dataset(
        tmp_path / "data",
        {
            "2_cat/a.png": (300, 200),
            "2_cat/b.png": (600, 400),
            "2_cat/c.png": (150, 100),
            "2_cat/d.png": (200, 300),
            "1_dog/e.png": (64, 64),
            "1_dog/f.png": (256, 256),
            "loose/g.png": (64, 64),
            "root.png": (64, 64),
        },
    )


def test_load_counts_images_times_folder_repeats_per_bucket(mixed: Path) -> None:
    with Store(mixed) as store:
        load = dataset_load(scan_dataset(mixed), store, BucketSpec(512))
    assert load.buckets == (
        BucketLoad((384, 640), images=1, items=2),
        BucketLoad((512, 512), images=2, items=2),
        BucketLoad((640, 384), images=3, items=6),
    )
    assert load.concepts == (ConceptLoad("1_dog", 1, 2), ConceptLoad("2_cat", 2, 4))
    assert set(load.skipped) == {"loose/g.png", "root.png"}  # Kohya skips both
    assert (load.images, load.items) == (6, 10)
    # batch 4: 1 + 1 + 2 batches per epoch, where the plain formula says 10 / 4 = 2.5
    plan = plan_steps(load.bucket_items(), batch=4, epochs=10)
    assert (plan.steps_per_epoch, plan.total_steps, plan.plain_total_steps) == (4, 40, 25.0)


def test_excluded_images_and_the_repeats_override(mixed: Path) -> None:
    with Store(mixed) as store:
        set_included(store, ["2_cat/a.png", "2_cat/b.png"], False)
        load = dataset_load(scan_dataset(mixed), store, BucketSpec(512), repeats=5)
    assert load.bucket_items() == {(384, 640): 5, (512, 512): 10, (640, 384): 5}
    assert load.bucket_images() == {(384, 640): 1, (512, 512): 2, (640, 384): 1}
    assert load.concepts == (ConceptLoad("1_dog", 1, 2), ConceptLoad("2_cat", 2, 2))  # the folders' own


def test_sizes_come_from_a_valid_cache_without_opening_files(mixed: Path, monkeypatch) -> None:
    dataset = scan_dataset(mixed)
    record = dataset.by_path()["2_cat/a.png"]
    with Store(mixed) as store:
        # The cache says a.png is portrait, so a stale header read would show as 640x384.
        metrics = {"width": 200, "height": 300}
        save_analyses(store, [(record, ImageAnalysis(40.0, 60.0, metrics=metrics))], "lightness", False)
        opened: list[Path] = []
        real = loads_module.header_size
        monkeypatch.setattr(loads_module, "header_size", lambda path: opened.append(path) or real(path))
        load = dataset_load(dataset, store, BucketSpec(512))
    assert record.path not in opened and len(opened) == 5
    assert load.bucket_images()[(384, 640)] == 2


def test_a_stale_cache_row_is_ignored(mixed: Path) -> None:
    dataset = scan_dataset(mixed)
    record = dataset.by_path()["2_cat/a.png"]
    with Store(mixed) as store:
        save_analyses(
            store, [(record, ImageAnalysis(40.0, 60.0, metrics={"width": 200, "height": 300}))], "x", False
        )
        with store.transaction() as conn:
            conn.execute("UPDATE analysis SET mtime_ns = mtime_ns + 1")
        load = dataset_load(dataset, store, BucketSpec(512))
    assert load.bucket_images()[(640, 384)] == 3


def test_unreadable_and_unbucketable_images_are_reported_not_counted(tmp_path: Path) -> None:
    root = sized_dataset(tmp_path / "d", {"3_a/ok.png": (640, 640), "3_a/tiny.png": (40, 40)})
    (root / "3_a" / "broken.png").write_bytes(b"not a png")
    load = dataset_load(scan_dataset(root), None, BucketSpec(512, no_upscale=True))
    assert load.bucket_items() == {(512, 512): 3}
    reasons = dict(load.unreadable)
    assert set(reasons) == {"3_a/broken.png", "3_a/tiny.png"}
    assert "Pillow" in reasons["3_a/broken.png"] and "no_upscale" in reasons["3_a/tiny.png"]
    with pytest.raises(ImageError):
        header_size(root / "3_a" / "missing.png")


def test_header_size_ignores_exif_rotation_like_kohya(tmp_path: Path) -> None:
    image = Image.new("RGB", (300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: a viewer shows it 200x300
    image.save(tmp_path / "r.jpg", exif=exif)
    assert header_size(tmp_path / "r.jpg") == (300, 200)


def test_rename_moves_the_folder_and_carries_the_selection(tmp_path: Path) -> None:
    root = sized_dataset(tmp_path / "d", {"10_cat/x.png": (64, 64), "10_cat/y.png": (64, 64)})
    (root / "10_cat" / "x.txt").write_text("a cat", encoding="utf-8")
    with Store(root) as store:
        set_included(store, ["10_cat/x.png"], False)
        assert rename_concept_repeats(root, "10_cat", 35, store) == "35_cat"
        assert excluded_paths(store) == {"35_cat/x.png"}
    assert not (root / "10_cat").exists()
    assert sorted(path.name for path in (root / "35_cat").iterdir()) == ["x.png", "x.txt", "y.png"]
    dataset = scan_dataset(root)
    assert {record.repeats for record in dataset.images} == {35}


@pytest.mark.parametrize("existing", ["empty folder", "full folder", "file"])
def test_rename_never_overwrites_what_has_the_new_name(tmp_path: Path, existing: str) -> None:
    root = sized_dataset(tmp_path / "d", {"10_cat/x.png": (64, 64)})
    target = root / "35_cat"
    if existing == "file":
        target.write_text("keep me")
    else:
        target.mkdir()
        if existing == "full folder":
            (target / "other.png").write_bytes(b"keep me")
    with Store(root) as store:
        set_included(store, ["10_cat/x.png"], False)
        with pytest.raises(DatasetError, match="already exists"):
            rename_concept_repeats(root, "10_cat", 35, store)
        assert excluded_paths(store) == {"10_cat/x.png"}
    assert (root / "10_cat" / "x.png").is_file()
    if existing == "file":
        assert target.read_text() == "keep me"
    else:
        assert [path.name for path in target.iterdir()] == (
            [] if existing == "empty folder" else ["other.png"]
        )


def test_rename_puts_the_folder_back_when_the_state_cannot_follow(tmp_path: Path, monkeypatch) -> None:
    import kiln.engine.plan.repeats as repeats_module

    root = sized_dataset(tmp_path / "d", {"10_cat/x.png": (64, 64)})

    def broken(*args) -> None:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(repeats_module, "move_folder_state", broken)
    with Store(root) as store, pytest.raises(DatasetError, match="left as it was"):
        rename_concept_repeats(root, "10_cat", 35, store)
    assert (root / "10_cat" / "x.png").is_file() and not (root / "35_cat").exists()


def test_rename_edge_cases(tmp_path: Path) -> None:
    root = sized_dataset(tmp_path / "d", {"10_cat/x.png": (64, 64), "dog/y.png": (64, 64)})
    with Store(root) as store:
        assert rename_concept_repeats(root, "10_cat", 10, store) == "10_cat"  # nothing to do
        assert rename_concept_repeats(root, "dog", 3, store) == "3_dog"  # gains the prefix Kohya needs
        with pytest.raises(DatasetError, match="no such concept folder"):
            rename_concept_repeats(root, "5_bird", 3, store)
        for bad in (0, -2, 1.5, True):
            with pytest.raises(UsageError):
                rename_concept_repeats(root, "10_cat", bad, store)
        for folder in ("", "..", "10_cat/sub"):
            with pytest.raises(UsageError):
                rename_concept_repeats(root, folder, 3, store)
    assert renamed_folder("10_my_cat", 35) == "35_my_cat"
