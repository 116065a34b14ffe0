"""``kiln fixup``: the dry run writes nothing, a run reports the DSB before and after and the
flags left, --in-place and --undo round-trip, bad input fails in one line before any write."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from kiln.cli import main

from tests.fixup.test_write import hashes


def run_json(capsys: pytest.CaptureFixture, *args: str) -> dict:
    assert main(["fixup", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_dry_run_lists_the_fixes_and_writes_nothing(flagged_dataset: Path, capsys) -> None:
    before = hashes(flagged_dataset)
    data = run_json(capsys, str(flagged_dataset), "--dry-run")
    assert data["dry_run"] is True
    assert [fix["path"] for fix in data["fixes"]] == [
        "10_subject/blown.png",
        "10_subject/cutout.png",
        "10_subject/rotated.jpg",
        "10_subject/small.jpg",
    ]
    assert data["skipped"][0].startswith("10_subject/broken.png")
    assert hashes(flagged_dataset) == before
    assert sorted(path.name for path in flagged_dataset.parent.iterdir()) == ["data"]
    rotated_only = run_json(capsys, str(flagged_dataset), "--dry-run", "--rotated")
    assert [fix["path"] for fix in rotated_only["fixes"]] == ["10_subject/rotated.jpg"]


def test_a_run_writes_a_new_dataset_and_shows_the_dsb_before_and_after(flagged_dataset: Path, capsys) -> None:
    before = hashes(flagged_dataset)
    data = run_json(capsys, str(flagged_dataset), "--transparent", "--levels")
    assert data["root"] == str(flagged_dataset.parent / "data-fixed") and not data["in_place"]
    assert hashes(flagged_dataset) == before
    cutout = next(image for image in data["fixed"] if image["source"] == "10_subject/cutout.png")
    # Flattening on white turns the transparent fifth of the image white: W% must move up.
    assert cutout["white_after"] > cutout["white_before"] + 10
    assert data["dsb"]["after"]["white"] != data["dsb"]["before"]["white"]
    assert "overexposed" in cutout["flags_after"]  # the new white background is seen as blown
    assert data["copied"] == 4  # good, small, rotated, broken copied unchanged
    record = json.loads((flagged_dataset.parent / "data-fixed" / "fixup.json").read_text())
    assert {fix["source"] for fix in record["fixes"]} == {"10_subject/cutout.png", "10_subject/blown.png"}


def test_in_place_then_undo_restores_every_byte(flagged_dataset: Path, capsys) -> None:
    before = hashes(flagged_dataset)
    data = run_json(capsys, str(flagged_dataset), "--in-place")
    assert data["in_place"] and len(data["fixed"]) == 4
    kept = flagged_dataset / ".kiln" / "originals" / "10_subject" / "small.jpg"
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == before["10_subject/small.jpg"]
    assert run_json(capsys, str(flagged_dataset), "--undo")["restored"] == [
        "10_subject/blown.png",
        "10_subject/cutout.png",
        "10_subject/rotated.jpg",
        "10_subject/small.jpg",
    ]
    assert hashes(flagged_dataset) == before


def test_a_model_upscales_the_small_image(flagged_dataset: Path, tiny_esrgan: Path, capsys) -> None:
    data = run_json(capsys, str(flagged_dataset), "--small", "--model", str(tiny_esrgan), "--tile", "64")
    (small,) = data["fixed"]
    assert small["operations"][0]["method"] == "ESRGAN" and small["output"] == "10_subject/small.png"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--model", "x.pth"], "no such model file"),
        (["--scale", "20"], "--scale 20"),
        (["--clip", "70"], "--clip 70"),
        (["--gamma", "0"], "--gamma 0"),
        (["--background", "pink"], "colour 'pink'"),
        (["--tile", "8"], "--tile 8"),
        (["--rotated", "--model", "m.safetensors"], "add --small"),
    ],
)
def test_bad_input_fails_in_one_line_before_anything_is_written(
    flagged_dataset: Path, capsys, args, says
) -> None:
    before = hashes(flagged_dataset)
    assert main(["fixup", str(flagged_dataset), *args]) != 0
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert hashes(flagged_dataset) == before and not (flagged_dataset / ".kiln").exists()


def test_a_pth_model_needs_the_pickle_flag(flagged_dataset: Path, tmp_path: Path, capsys) -> None:
    from tests.esrgan import write_tiny_esrgan

    pth = write_tiny_esrgan(tmp_path / "m.pth")
    assert main(["fixup", str(flagged_dataset), "--small", "--model", str(pth), "--dry-run"]) != 0
    assert "--allow-pickle" in capsys.readouterr().err
    assert (
        main(["fixup", str(flagged_dataset), "--small", "--model", str(pth), "--allow-pickle", "--dry-run"])
        == 0
    )


def test_an_out_folder_in_use_is_refused_before_analysis(flagged_dataset: Path, capsys) -> None:
    busy = flagged_dataset.parent / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("x")
    assert main(["fixup", str(flagged_dataset), "--out", str(busy)]) != 0
    assert "not empty" in capsys.readouterr().err
    assert not (flagged_dataset / ".kiln").exists()


def test_a_crop_is_applied_and_a_crop_too_small_to_train_is_upscaled(flagged_dataset: Path, capsys) -> None:
    from kiln.engine.plan.buckets import BucketSpec, assign_bucket
    from PIL import Image

    data = run_json(capsys, str(flagged_dataset), "--small", "--crop", "10_subject/good.png=100,50,400,250")
    good = next(image for image in data["fixed"] if image["source"] == "10_subject/good.png")
    assert [op["op"] for op in good["operations"]] == ["crop", "upscale"]
    assert good["operations"][0]["box"] == [100, 50, 400, 250]
    expected = assign_bucket((300, 200), BucketSpec(512)).resized
    with Image.open(flagged_dataset.parent / "data-fixed" / "10_subject" / "good.png") as image:
        assert image.size == expected


@pytest.mark.parametrize(
    ("crop", "says"),
    [
        ("10_subject/good.png=0,0,900,100", "must lie inside its 640x512 image"),
        ("10_subject/absent.png=0,0,10,10", "no such image in the dataset"),
        ("10_subject/good.png=1,2,3", "write IMAGE=LEFT,TOP,RIGHT,BOTTOM"),
    ],
)
def test_a_bad_crop_is_refused_before_anything_is_written(
    flagged_dataset: Path, capsys, crop: str, says: str
) -> None:
    before = hashes(flagged_dataset)
    assert main(["fixup", str(flagged_dataset), "--crop", crop]) != 0
    assert says in capsys.readouterr().err
    assert hashes(flagged_dataset) == before
    assert sorted(path.name for path in flagged_dataset.parent.iterdir()) == ["data"]
