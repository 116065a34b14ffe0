"""Regularisation images counted as Kohya counts them: balanced to the training samples, then
bucketed beside them. The batch counts below were produced by sd-scripts' own
DreamBoothDataset on the same folders (scripts/check_kohya_reg_steps.py, 2026-12-06)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kiln.cli import main
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.plan.buckets import BucketSpec
from kiln.engine.plan.reg import reg_set

from scripts.check_kohya_reg_steps import CASES, kiln_batches, write

SPEC = BucketSpec(512, 256, 1024, 64, False)
# Batches per epoch sd-scripts' DreamBoothDataset counted for the script's cases, in order.
KOHYA_BATCHES = [120, 60, 22, 18, 80]


@pytest.mark.parametrize(("case", "expected"), list(zip(CASES, KOHYA_BATCHES, strict=True)))
def test_batches_per_epoch_equal_sd_scripts(tmp_path: Path, case, expected) -> None:
    train, reg, batch = case
    assert kiln_batches(write(tmp_path / "train", train), write(tmp_path / "reg", reg), batch) == expected


def test_reg_repeats_follow_kohyas_balancing(tmp_path: Path) -> None:
    reg = reg_set(
        scan_dataset(write(tmp_path / "reg", {"2_a": [(512, 512)] * 3, "1_b": [(512, 512)] * 2})), SPEC
    )
    names = [image.rel_path for image in reg.images]
    assert names == ["1_b/000.png", "1_b/001.png", "2_a/000.png", "2_a/001.png", "2_a/002.png"]
    assert reg.items == 8
    # Fewer training samples than reg samples: the walk stops once they are matched.
    assert reg.repeats_for(3) == {"1_b/000.png": 1, "1_b/001.png": 1, "2_a/000.png": 2}
    # More: after one pass with the folders' repeats, one more repeat per image in order.
    assert reg.repeats_for(11) == {
        "1_b/000.png": 2,
        "1_b/001.png": 2,
        "2_a/000.png": 3,
        "2_a/001.png": 2,
        "2_a/002.png": 2,
    }
    assert sum(reg.repeats_for(11).values()) == 11 and reg.repeats_for(0) == {}


def test_kiln_calc_counts_reg_images_and_says_so(tmp_path: Path, capsys) -> None:
    train = write(tmp_path / "train", {"10_pot": [(512, 512)] * 6})
    reg = write(tmp_path / "reg", {"1_pot": [(512, 512)] * 100})
    assert main(["calc", str(train), "--reg", str(reg), "--batch", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["steps_per_epoch"] == 60 and data["total_steps"] == 600
    assert data["reg"]["images"] == 100 and data["reg"]["used_images"] == 60 and data["reg"]["items"] == 60
    assert data["buckets"] == [
        {"resolution": [512, 512], "images": 6, "items": 120, "reg_items": 60, "batches": 60}
    ]
    assert main(["calc", str(train), "--reg", str(reg), "--batch", "2"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "+ 60 reg samples per epoch from 60 of 100 class image(s)" in out and "40 not used" in out
    # Solving epochs for a target counts the reg samples too: 600 steps are 10 epochs of 60.
    assert (
        main(["calc", str(train), "--reg", str(reg), "--batch", "2", "--target-steps", "600", "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["epochs"] == 10


def test_reg_without_a_dataset_or_without_class_images_is_one_line(tmp_path: Path, capsys) -> None:
    reg = write(tmp_path / "reg", {"pot": [(512, 512)]})  # no N_ prefix: Kohya skips it
    train = write(tmp_path / "train", {"10_pot": [(512, 512)] * 2})
    # A usage error exits 2; a dataset that cannot be used exits 1, as for the training set.
    for args, expected, says in (
        (["--images", "4", "--repeats", "2", "--reg", str(reg)], 2, "give the dataset PATH too"),
        ([str(train), "--reg", str(reg)], 1, "no class image Kohya would use"),
    ):
        try:
            code = main(["calc", *args])
        except SystemExit as exc:
            code = int(exc.code)
        err = capsys.readouterr().err
        assert code == expected and err.strip().count("\n") == 0 and says in err, err
