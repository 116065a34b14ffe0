"""bench/train_gpu.py: a smoke run on the CPU with the tiny model, and a clear refusal without a GPU."""

from __future__ import annotations

import json

import pytest
import torch

from bench import train_gpu


@pytest.mark.slow
def test_smoke_run_reports_both_loops_per_batch(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    torch.set_num_threads(1)
    argv = ["--device", "cpu", "--tiny", "--steps", "2", "--warmup", "1", "--batches", "1", "2", "--json"]
    saved = tmp_path / "figures.json"
    assert train_gpu.main([*argv, "--kiln-set", "train.prefetch=false", "--json-out", str(saved)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert json.loads(saved.read_text()) == report  # bench/gpu_checks.sh keeps them in files
    assert report["model"] == "tiny-sd15" and report["precision"] == "bf16" and report["rank"] == 32
    assert report["kiln_set"] == ["train.prefetch=false"]
    assert [row["batch"] for row in report["results"]] == [1, 2]
    for row in report["results"]:
        for loop in ("baseline", "kiln"):
            figures = row[loop]
            assert figures["steps"] == 2 and figures["it_s"] > 0 and figures["peak_gib"] is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_stops_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert train_gpu.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA GPU on this machine" in err and "--device cpu --tiny" in err


@pytest.mark.slow
def test_sdxl_smoke_run_trains_the_unet_with_cached_text(capsys: pytest.CaptureFixture[str]) -> None:
    torch.set_num_threads(1)
    argv = ["--device", "cpu", "--tiny", "--family", "sdxl", "--steps", "2", "--warmup", "1", "--json"]
    assert train_gpu.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "tiny-sdxl" and report["family"] == "sdxl"
    assert [row["batch"] for row in report["results"]] == [1]
    assert all(row[loop]["it_s"] > 0 for row in report["results"] for loop in ("baseline", "kiln"))


def test_kiln_set_reaches_kilns_config_only(tmp_path) -> None:
    """--kiln-set measures one speed option: Kiln's config gets it, over the shared settings."""
    from kiln.engine.train.config import config_from_mapping

    args = train_gpu.parse_args(
        ["--kiln-set", "train.channels_last=true", "--kiln-set", "train.compile=false"]
    )
    mapping, overrides = train_gpu.kiln_mapping(tmp_path, tmp_path, tmp_path / "runs", args, 4, 512, "b4")
    assert overrides == {"train.channels_last": True, "train.compile": False}
    config = config_from_mapping(mapping, overrides=overrides)
    assert config.train.channels_last and not config.train.compile and config.train.batch_size == 4
    xl = train_gpu.parse_args(["--family", "sdxl", "--kiln-set", "train.channels_last=true"])
    _, overrides = train_gpu.kiln_mapping(tmp_path, tmp_path, tmp_path / "runs", xl, 1, 1024, "b1")
    assert overrides == {"network.train_text_encoder": False, "train.channels_last": True}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("train.chanels_last=true", "unknown key train.chanels_last; did you mean train.channels_last?"),
        ("compile", "KEY=VALUE"),
        ("train.compile=maybe", "must be true or false"),
    ],
)
def test_a_wrong_kiln_set_is_refused_in_one_line_before_anything_runs(
    setting: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train_gpu.main(["--device", "cpu", "--tiny", "--kiln-set", setting]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "--kiln-set" in err
