"""``kiln calc``: the guide's worked examples, a dataset's buckets, warnings, exit codes."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from kiln.cli import main
from PIL import Image


def calc(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(["calc", *args])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def calc_json(capsys, *args: str) -> dict:
    code, out, err = calc(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_guide_batch_4_example(capsys) -> None:
    data = calc_json(capsys, "--images", "10", "--repeats", "35", "--batch", "4", "--epochs", "9")
    assert (data["steps_per_epoch"], data["total_steps"], data["plain_total_steps"]) == (88, 792, 787.5)
    assert data["mode"] == "steps" and data["items_per_epoch"] == 350
    assert data["buckets"] == [
        {"resolution": None, "images": 10, "items": 350, "reg_items": 0, "batches": 88}
    ]
    assert {warning["id"] for warning in data["warnings"]} == {"epochs-below-10", "steps-per-epoch-low"}
    assert all(set(warning) == {"id", "message"} for warning in data["warnings"])


def test_guide_reverse_example_solves_35_repeats(capsys) -> None:
    data = calc_json(capsys, "--images", "10", "--target-steps", "3500", "--epochs", "10")
    assert (data["mode"], data["repeats"], data["total_steps"], data["batch"]) == ("repeats", 35, 3500, 1)
    data = calc_json(capsys, "--images", "10", "--target-steps", "3500", "--repeats", "35", "--batch", "4")
    assert (data["mode"], data["epochs"], data["total_steps"]) == ("epochs", 40, 3520)


def test_epochs_default_to_the_guides_minimum(capsys) -> None:
    data = calc_json(capsys, "--images", "10", "--repeats", "10")
    assert (data["epochs"], data["total_steps"], data["warnings"]) == (10, 1000, [])


def test_accumulation_and_gpus(capsys) -> None:
    data = calc_json(
        capsys, "--images", "10", "--repeats", "15", "--batch", "2", "--grad-accumulation", "2", "--gpus", "2"
    )
    assert (data["batches_per_epoch"], data["steps_per_epoch"], data["plain_total_steps"]) == (75, 19, 187.5)


@pytest.fixture
def shaped(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for rel_path, size in {
        "3_cat/a.png": (300, 200),
        "3_cat/b.png": (300, 200),
        "3_cat/c.png": (200, 300),
        "1_dog/d.png": (1024, 1024),
    }.items():
        (root / rel_path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (200, 200, 200)).save(root / rel_path)
    return root


def test_dataset_buckets_and_rounding(shaped: Path, capsys) -> None:
    data = calc_json(capsys, str(shaped), "--batch", "4", "--epochs", "10")
    assert data["buckets"] == [
        {"resolution": [384, 640], "images": 1, "items": 3, "reg_items": 0, "batches": 1},
        {"resolution": [512, 512], "images": 1, "items": 1, "reg_items": 0, "batches": 1},
        {"resolution": [640, 384], "images": 2, "items": 6, "reg_items": 0, "batches": 2},
    ]
    assert (data["images"], data["repeats"], data["items_per_epoch"]) == (4, None, 10)
    assert (data["steps_per_epoch"], data["total_steps"], data["plain_total_steps"]) == (4, 40, 25.0)
    assert data["concepts"] == [
        {"folder": "1_dog", "repeats": 1, "images": 1},
        {"folder": "3_cat", "repeats": 3, "images": 3},
    ]
    assert data["bucketing"] == {
        "resolution": [512, 512],
        "min": 256,
        "max": 1024,
        "step": 64,
        "no_upscale": False,
    }
    assert data["dsb_verdict"] is None  # not analysed yet


def test_dataset_no_upscale_and_solving_epochs(shaped: Path, capsys) -> None:
    data = calc_json(capsys, str(shaped), "--no-upscale", "--target-steps", "100")
    assert [bucket["resolution"] for bucket in data["buckets"]] == [[192, 256], [256, 192], [512, 512]]
    assert (data["mode"], data["epochs"], data["steps_per_epoch"]) == ("epochs", 10, 10)
    data = calc_json(capsys, str(shaped), "--target-steps", "100", "--epochs", "5")
    assert (data["mode"], data["repeats"], data["total_steps"]) == ("repeats", 5, 100)
    assert [concept["repeats"] for concept in data["concepts"]] == [1, 3]  # as the folders say
    code, out, _ = calc(capsys, str(shaped), "--target-steps", "100", "--epochs", "5")
    assert code == 0 and "5 repeats reach 100 steps" in out
    assert "to apply, rename 1_dog -> 5_dog, 3_cat -> 5_cat" in " ".join(out.split())


def test_dataset_dsb_verdict_comes_from_the_cache(guide_dataset: Path, capsys) -> None:
    assert main(["dsb", str(guide_dataset), "--json"]) == 0
    capsys.readouterr()
    data = calc_json(capsys, str(guide_dataset), "--epochs", "10")
    assert data["dsb_verdict"] == "mediocre"
    assert "dsb-not-optimal" in {warning["id"] for warning in data["warnings"]}


def test_dataset_notices_for_images_kohya_skips(shaped: Path, capsys) -> None:
    Image.new("RGB", (64, 64)).save(shaped / "loose.png")
    data = calc_json(capsys, str(shaped))
    assert data["warnings"][0]["id"] == "kohya-skips" and data["images"] == 4


def test_text_output_explains_the_difference(shaped: Path, capsys) -> None:
    code, out, _ = calc(capsys, str(shaped), "--batch", "4", "--epochs", "10")
    assert code == 0
    assert "640x384" in out and "Total steps     40" in out and "Plain formula   25" in out
    assert "Kohya batches each aspect bucket separately and rounds up: 3 of 3 bucket(s)" in " ".join(
        out.split()
    )
    code, out, _ = calc(capsys, "--images", "10", "--repeats", "35", "--batch", "4", "--epochs", "9")
    assert "350 samples = 87 batches of 4 + a short one of 2" in " ".join(out.split())
    assert "epochs-below-10" in out


@pytest.mark.parametrize(
    "args",
    [
        ["--images", "0", "--repeats", "1"],
        ["--images", "-3", "--repeats", "1"],
        ["--images", "ten", "--repeats", "1"],
        ["--images", "10", "--repeats", "1.5"],
        ["--images", "10", "--repeats", "2", "--batch", "0"],
        ["--images", "10", "--repeats", "2", "--epochs", "-1"],
        ["--images", "10", "--repeats", "2", "--resolution", "big"],
        ["--images", "10", "--repeats", "2", "--unet-lr", "-1"],
        ["--images", "2", "--repeats", "1", "--batch", "4"],  # batch above the samples
        ["--images", "10"],  # nothing to count
        ["--images", "10", "--target-steps", "100"],  # nothing to solve for
        ["--images", "10", "--target-steps", "100", "--epochs", "2", "--repeats", "3"],
        ["--images", "10", "--repeats", "10", "--subject", "hero"],
        [],
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, args: list[str]) -> None:
    code, out, err = calc(capsys, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "error" in err


def test_path_and_images_together_or_bad_buckets_exit_2(shaped: Path, capsys) -> None:
    assert calc(capsys, str(shaped), "--images", "3")[0] == 2
    code, _, err = calc(capsys, str(shaped), "--resolution", "2048")
    assert code == 2 and "max_bucket_reso" in err
    code, _, err = calc(capsys, str(shaped), "--batch", "20")
    assert code == 2 and "batch 20 is larger than the 10 sample(s)" in err


def test_missing_dataset_exits_1(tmp_path: Path, capsys) -> None:
    code, _, err = calc(capsys, str(tmp_path / "nope"))
    assert code == 1 and "no such folder" in err


def test_sdxl_plans_at_1024_and_advises_on_memory(shaped: Path, capsys) -> None:
    data = calc_json(capsys, str(shaped), "--family", "sdxl", "--gpu-memory", "16", "--epochs", "10")
    assert data["family"] == "sdxl" and data["bucketing"]["resolution"] == [1024, 1024]
    assert {tuple(bucket["resolution"]) for bucket in data["buckets"]} <= {
        (1024, 1024),
        (832, 1024),
        (1024, 832),
        (768, 1024),
        (1024, 768),
        (704, 1024),
        (1024, 704),
    }
    ids = [warning["id"] for warning in data["warnings"]]
    assert "sdxl-memory" in ids
    fitted = calc_json(
        capsys,
        str(shaped),
        "--family",
        "sdxl",
        "--gpu-memory",
        "16",
        "--gradient-checkpointing",
        "--te-lr",
        "0",
    )
    assert "sdxl-memory" not in [warning["id"] for warning in fitted["warnings"]]
    assert calc_json(capsys, str(shaped))["bucketing"]["resolution"] == [512, 512]


def test_sdxl_refuses_a_bucket_step_kohya_refuses(shaped: Path, capsys) -> None:
    code, _, err = calc(capsys, str(shaped), "--family", "sdxl", "--bucket-step", "40")
    assert code == 2 and err.strip().count("\n") == 0
    assert "--bucket-step 40: SDXL needs a multiple of 32" in err


def fake_gpu(monkeypatch, capability: tuple[int, int] | None) -> None:
    """Stand in torch with one CUDA GPU of ``capability`` (None: no GPU), so the bf16 advice
    can be checked for GPUs this machine does not have."""
    cuda = types.SimpleNamespace(
        is_available=lambda: capability is not None,
        get_device_capability=lambda device=0: capability,
        get_device_properties=lambda device=0: types.SimpleNamespace(total_memory=24 * 1024**3),
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setattr("kiln.engine.plan.advisor.nvidia_gpu_visible", lambda: capability is not None)


def test_subject_text_names_the_guides_precision_and_why(capsys, monkeypatch) -> None:
    fake_gpu(monkeypatch, (8, 6))
    code, out, _ = calc(
        capsys, "--images", "10", "--repeats", "10", "--subject", "outfit", "--precision", "bf16"
    )
    text = " ".join(out.split())
    assert code == 0
    assert "warning precision-for-subject: bf16 for an outfit: the guide picks fp16 or bf16" in text
    assert "use fp16: it gives significantly better results for outfits" in text
    assert "bf16-unsupported" not in text
    code, out, _ = calc(
        capsys, "--images", "10", "--repeats", "10", "--subject", "hairstyle", "--precision", "fp16"
    )
    text = " ".join(out.split())
    assert (
        "warning" not in text and "note fp16-loss-scaling: fp16: Kiln trains fp16 as mixed precision" in text
    )


def test_subject_json_with_and_without_bf16_on_the_gpu(capsys, monkeypatch) -> None:
    args = ("--images", "10", "--repeats", "10", "--subject", "character")
    fake_gpu(monkeypatch, (8, 0))
    data = calc_json(capsys, *args, "--precision", "fp16")
    assert [warning["id"] for warning in data["warnings"]] == ["precision-for-subject"]
    assert data["warnings"][0]["message"].startswith("fp16 for a character: ")
    assert "use bf16: in almost all other cases it is more precise" in data["warnings"][0]["message"]
    assert [info["id"] for info in data["info"]] == ["fp16-loss-scaling"]
    assert all(set(item) == {"id", "message"} for item in data["warnings"] + data["info"])
    suggested = calc_json(capsys, *args)  # no --precision: a note, not a warning
    assert suggested["warnings"] == [] and [info["id"] for info in suggested["info"]] == [
        "precision-suggestion"
    ]
    assert suggested["info"][0]["message"].startswith("no precision chosen for a character: ")
    # A Turing GPU (7.5): fp16 is the best it can do for a character, and bf16 is refused.
    fake_gpu(monkeypatch, (7, 5))
    assert calc_json(capsys, *args, "--precision", "fp16")["warnings"] == []
    suggested = calc_json(capsys, *args)
    assert suggested["info"][0]["message"].endswith(
        "this GPU lacks bf16 (compute capability below 8.0): use fp16"
    )
    ids = [warning["id"] for warning in calc_json(capsys, *args, "--precision", "bf16")["warnings"]]
    assert ids == ["bf16-unsupported"]
    fp32 = calc_json(capsys, *args, "--precision", "fp32")["warnings"]
    assert [warning["id"] for warning in fp32] == ["precision-for-subject"]
    assert fp32[0]["message"].endswith("use fp16")
    # No GPU here: nothing to say about bf16 support, the guide's choice stands.
    fake_gpu(monkeypatch, None)
    fp32 = calc_json(capsys, *args, "--precision", "fp32")["warnings"]
    assert "use bf16: " in fp32[0]["message"]


def test_a_bad_subject_is_refused_naming_the_choices(capsys) -> None:
    code, out, err = calc(capsys, "--images", "10", "--repeats", "10", "--subject", "hero")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "'hero'" in err and "character, outfit, hairstyle, colour-theme, artist-style" in err.replace(
        "'", ""
    )


def test_steps_per_epoch_advice_names_epochs_and_repeats(capsys) -> None:
    code, out, _ = calc(capsys, "--images", "10", "--repeats", "35", "--batch", "4", "--epochs", "9")
    assert code == 0
    assert "40 repeats make about 100 steps per epoch (1000 in 10 epochs)" in " ".join(out.split())
    data = calc_json(capsys, "--images", "10", "--repeats", "50", "--epochs", "1")
    (high,) = [warning for warning in data["warnings"] if warning["id"] == "steps-per-epoch-high"]
    assert high["message"].endswith(
        "for the same 500 steps the guide would train 5 epochs, where 10 repeats make about 100 steps "
        "per epoch (500 in all)"
    )
