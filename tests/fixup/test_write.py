"""Planning and applying a fix-up: what each flagged image gets, a new dataset beside the
source (captions and selection carried, fixup.json), in place with the originals kept and
undo restoring them byte for byte, broken images skipped with a message."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from kiln.engine.analysis.quality import QualityThresholds
from kiln.engine.analysis.quality_report import quality_report
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.selection import excluded_paths, set_included
from kiln.engine.dataset.store import Store
from kiln.engine.errors import UsageError
from kiln.engine.fixup.plan import FixupOptions, plan_fixes
from kiln.engine.fixup.upscaler import load_upscaler
from kiln.engine.fixup.write import (
    applied_operations,
    default_out,
    fixed_image,
    undo_in_place,
    write_in_place,
    write_new_dataset,
)
from kiln.engine.plan.buckets import BucketSpec, assign_bucket
from PIL import Image


def hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and ".kiln" not in path.parts
    }


def planned(root: Path, **options):
    dataset = scan_dataset(root)
    with Store(root) as store:
        report = quality_report(dataset, store, thresholds=QualityThresholds(resolution=512))
    fixes, problems = plan_fixes(report, FixupOptions(**options))
    return dataset, {fix.rel_path: fix for fix in fixes}, problems


def test_each_flagged_image_gets_the_operations_its_flags_ask_for(flagged_dataset: Path) -> None:
    _, fixes, problems = planned(flagged_dataset)
    names = {path: [op.name for op in fix.operations] for path, fix in fixes.items()}
    assert names == {
        "10_subject/small.jpg": ["upscale"],
        "10_subject/rotated.jpg": ["orientation"],
        "10_subject/cutout.png": ["flatten"],
        "10_subject/blown.png": ["levels"],
    }
    assert problems and problems[0].startswith("10_subject/broken.png: not an image")
    small = fixes["10_subject/small.jpg"]
    # The upscale target is exactly what Kohya's bucketing would resize the image to.
    assert small.result_size == assign_bucket((200, 160), BucketSpec(512)).resized
    assert fixes["10_subject/blown.png"].operations[0].params["gamma"] == 0.8
    only_rotated = planned(flagged_dataset, kinds=frozenset({"rotated"}))[1]
    assert list(only_rotated) == ["10_subject/rotated.jpg"]
    scaled = planned(flagged_dataset, scale=3.0)[1]["10_subject/small.jpg"]
    assert scaled.result_size == (600, 480)


def test_a_new_dataset_is_written_beside_and_the_source_is_only_read(flagged_dataset: Path) -> None:
    before = hashes(flagged_dataset)
    with Store(flagged_dataset) as store:
        set_included(store, ["10_subject/cutout.png", "10_subject/good.png"], False)
    dataset, fixes, _ = planned(flagged_dataset)
    out = default_out(flagged_dataset)
    assert out.name == "data-fixed"
    with Store(flagged_dataset) as store:
        outcome = write_new_dataset(dataset, store, list(fixes.values()), out)
    assert hashes(flagged_dataset) == before  # every original byte for byte
    written = hashes(out)
    assert "10_subject/cutout.png" in written and "10_subject/small.png" in written
    assert "10_subject/small.jpg" not in written and "10_subject/rotated.png" in written
    for stem in ("good", "small", "rotated", "cutout", "blown"):
        assert (out / "10_subject" / f"{stem}.txt").read_text(encoding="utf-8") == f"{stem}, photo"
    assert written["10_subject/good.png"] == before["10_subject/good.png"]  # copied, not re-encoded
    assert written["10_subject/broken.png"] == before["10_subject/broken.png"]  # copied as it is
    with Image.open(out / "10_subject/rotated.png") as image:
        assert image.size == (512, 768) and image.getexif().get(0x0112) is None
    with Image.open(out / "10_subject/small.png") as image:
        assert image.size == fixes["10_subject/small.jpg"].result_size
    with Image.open(out / "10_subject/cutout.png") as image:
        assert image.mode == "RGB" and image.getpixel((10, 10)) == (255, 255, 255)
    with Store(out) as store:
        assert excluded_paths(store) == {"10_subject/cutout.png", "10_subject/good.png"}
    record = json.loads((out / "fixup.json").read_text(encoding="utf-8"))
    levels = next(fix for fix in record["fixes"] if fix["source"] == "10_subject/blown.png")
    op = levels["operations"][0]
    assert op["op"] == "levels" and {"black", "white", "gamma", "clip"} <= set(op)
    assert outcome.copied == 2 and len(outcome.fixed) == 4
    assert not any(path.name.startswith(".data-fixed") for path in flagged_dataset.parent.iterdir())


def test_a_cancelled_new_dataset_leaves_nothing_behind(flagged_dataset: Path) -> None:
    dataset, fixes, _ = planned(flagged_dataset)
    out = flagged_dataset.parent / "out"
    calls = iter(range(100))
    with pytest.raises(InterruptedError):
        write_new_dataset(dataset, None, list(fixes.values()), out, cancelled=lambda: next(calls) >= 3)
    assert sorted(path.name for path in flagged_dataset.parent.iterdir()) == ["data"]


def test_an_out_folder_inside_the_dataset_or_not_empty_is_refused(flagged_dataset: Path) -> None:
    dataset, fixes, _ = planned(flagged_dataset)
    with pytest.raises(UsageError, match="inside the dataset"):
        write_new_dataset(dataset, None, list(fixes.values()), flagged_dataset / "fixed")
    busy = flagged_dataset.parent / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="already exists and is not empty"):
        write_new_dataset(dataset, None, list(fixes.values()), busy)
    assert (busy / "keep.txt").read_text() == "mine"


def test_in_place_keeps_every_original_and_undo_restores_them_exactly(flagged_dataset: Path) -> None:
    before = hashes(flagged_dataset)
    with Store(flagged_dataset) as store:
        set_included(store, ["10_subject/small.jpg"], False)
    dataset, fixes, _ = planned(flagged_dataset)
    with Store(flagged_dataset) as store:
        outcome = write_in_place(dataset, store, list(fixes.values()))
        assert excluded_paths(store) == {"10_subject/small.png"}  # the selection follows the rename
    assert len(outcome.fixed) == 4
    originals = flagged_dataset / ".kiln" / "originals"
    for source in fixes:
        kept = originals / source
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == before[source]
    now = hashes(flagged_dataset)
    assert "10_subject/small.jpg" not in now and "10_subject/small.png" in now
    assert now["10_subject/good.png"] == before["10_subject/good.png"]
    # Levels cannot unblow pixels: the still-blown image is not offered levels a second time.
    again = scan_dataset(flagged_dataset)
    with Store(flagged_dataset) as store:
        report = quality_report(again, store)
    blown = next(row for row in report.rows if row.record.rel_path == "10_subject/blown.png")
    assert "overexposed" in blown.quality.flag_ids
    replanned, _ = plan_fixes(report, FixupOptions(), applied_operations(flagged_dataset))
    # Nor is the flattened cutout, whose new white background now reads as blown.
    assert not {"10_subject/blown.png", "10_subject/cutout.png"} & {fix.rel_path for fix in replanned}
    assert applied_operations(flagged_dataset)["10_subject/small.png"] == frozenset({"upscale"})
    # A second in-place pass over a fixed image keeps the first original, not the fix.
    with Store(flagged_dataset) as store:
        report = quality_report(again, store)
        second, _ = plan_fixes(report, FixupOptions(scale=2.0))
        write_in_place(again, store, second)
        restored = undo_in_place(flagged_dataset, store)
        assert excluded_paths(store) == {"10_subject/small.jpg"}
    assert restored == sorted(fixes)
    assert hashes(flagged_dataset) == before
    assert not originals.exists()
    with pytest.raises(UsageError, match="no in-place fix-up to undo"):
        undo_in_place(flagged_dataset)


def test_a_broken_image_is_skipped_with_its_name_and_the_rest_is_fixed(flagged_dataset: Path) -> None:
    dataset, fixes, _ = planned(flagged_dataset)
    rotated = fixes["10_subject/rotated.jpg"]
    (flagged_dataset / "10_subject/rotated.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with Store(flagged_dataset) as store:
        outcome = write_in_place(dataset, store, [rotated, fixes["10_subject/cutout.png"]])
    assert [fixed.source for fixed in outcome.fixed] == ["10_subject/cutout.png"]
    assert len(outcome.skipped) == 1 and "rotated.jpg: cannot decode" in outcome.skipped[0]
    assert (flagged_dataset / "10_subject/rotated.jpg").read_bytes() == b"\xff\xd8\xff garbage"


def test_a_model_upscale_records_the_model_and_reaches_the_target(flagged_dataset, tiny_esrgan) -> None:
    upscaler = load_upscaler(tiny_esrgan)
    _, fixes, _ = planned(flagged_dataset, method=upscaler.name)
    fix = fixes["10_subject/small.jpg"]
    image, applied = fixed_image(flagged_dataset / fix.rel_path, fix, upscaler)
    assert image.size == fix.result_size and applied[0].params["method"] == "ESRGAN"
    assert applied[0].params["model"] == tiny_esrgan.name
    lanczos_image, _ = fixed_image(flagged_dataset / fix.rel_path, planned(flagged_dataset)[1][fix.rel_path])
    assert not np.array_equal(np.asarray(image), np.asarray(lanczos_image))


def test_a_cancelled_in_place_run_stops_between_images_and_undo_restores_it(flagged_dataset: Path) -> None:
    before = hashes(flagged_dataset)
    dataset, fixes, _ = planned(flagged_dataset)
    calls = iter(range(100))
    with Store(flagged_dataset) as store:
        outcome = write_in_place(dataset, store, list(fixes.values()), cancelled=lambda: next(calls) >= 2)
        assert 1 <= len(outcome.fixed) < len(fixes)
        undo_in_place(flagged_dataset, store)
    assert hashes(flagged_dataset) == before
