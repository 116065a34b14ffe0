"""solve_plan (shared by kiln calc and the plan screen), load notices, and a rescan after a rename."""

from __future__ import annotations

from pathlib import Path

import pytest
from kiln.engine.analysis.run import analyse_dataset
from kiln.engine.curate import Curation
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.store import Store
from kiln.engine.errors import UsageError
from kiln.engine.plan.buckets import BucketSpec
from kiln.engine.plan.loads import dataset_load, load_notices
from kiln.engine.plan.repeats import rename_concept_repeats
from kiln.engine.plan.solve import solve_plan
from PIL import Image


def test_counting_steps_uses_given_repeats_or_the_folders() -> None:
    solution = solve_plan("steps", {None: 10}, repeats=35, epochs=9, batch=4)
    assert (solution.mode, solution.repeats, solution.epochs, solution.bucket_items) == (
        "steps",
        35,
        9,
        {None: 350},
    )
    folders = solve_plan(
        "steps", {(512, 512): 3}, epochs=10, folder_items={(512, 512): 20}, folder_repeats=None
    )
    assert (folders.repeats, folders.bucket_items) == (None, {(512, 512): 20})


def test_guide_reverse_modes() -> None:
    solution = solve_plan("repeats", {None: 10}, target_steps=3500, epochs=10, repeats=99)
    assert (solution.repeats, solution.epochs, solution.bucket_items) == (35, 10, {None: 350})
    solution = solve_plan("epochs", {None: 10}, target_steps=3500, repeats=35, batch=4, epochs=1)
    assert (solution.repeats, solution.epochs) == (35, 40)


@pytest.mark.parametrize(
    "mode, kwargs, message",
    [
        ("weeks", {"repeats": 1, "epochs": 1}, "cannot solve for 'weeks'"),
        ("steps", {"epochs": 1}, "no repeats"),
        ("steps", {"repeats": 1}, "needs the epochs"),
        ("repeats", {"epochs": 10}, "needs a target step count and the epochs"),
        ("epochs", {"repeats": 3}, "needs a target step count"),
    ],
)
def test_missing_numbers_are_usage_errors(mode: str, kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        solve_plan(mode, {None: 10}, **kwargs)


def test_load_notices_name_skipped_and_unreadable_images(tmp_path: Path) -> None:
    (tmp_path / "10_cat").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "10_cat" / "a.png")
    (tmp_path / "10_cat" / "broken.png").write_bytes(b"not a png")
    Image.new("RGB", (64, 64)).save(tmp_path / "loose.png")
    load = dataset_load(scan_dataset(tmp_path), None, BucketSpec())
    notices = load_notices(load)
    assert [notice.id for notice in notices] == ["kohya-skips", "unreadable-images"]
    assert "10_cat/broken.png" in notices[1].message and "1 included image(s)" in notices[0].message


def test_rescan_after_a_rename_keeps_selection_and_cached_analyses(tmp_path: Path) -> None:
    (tmp_path / "10_cat").mkdir()
    for index in range(3):
        Image.new("RGB", (64, 64), (40 * index, 40 * index, 40 * index)).save(
            tmp_path / "10_cat" / f"{index}.png"
        )
    with Store(tmp_path) as store:
        analyse_dataset(scan_dataset(tmp_path), store, "luma601", workers=1)
    curation = Curation(tmp_path)
    try:
        curation.toggle("10_cat/1.png")
        before = curation.summary()
        assert rename_concept_repeats(tmp_path, "10_cat", 35, curation.store) == "35_cat"
        diff = curation.rescan()
        assert sorted(diff.added) == ["35_cat/0.png", "35_cat/1.png", "35_cat/2.png"] and not diff.changed
        assert not curation.rows["35_cat/1.png"].included and curation.included_count() == 2
        assert curation.pending() == []  # the cache followed the folder
        after = curation.summary()
        assert (after.white, after.images) == (before.white, before.images)
    finally:
        curation.close()
