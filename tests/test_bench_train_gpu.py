"""bench/train_gpu.py: a smoke run on the CPU with the tiny model, and a clear refusal without a GPU."""

from __future__ import annotations

import json

import pytest
import torch

from bench import train_gpu


@pytest.mark.slow
def test_smoke_run_reports_both_loops_per_batch(capsys: pytest.CaptureFixture[str]) -> None:
    torch.set_num_threads(1)
    argv = ["--device", "cpu", "--tiny", "--steps", "2", "--warmup", "1", "--batches", "1", "2", "--json"]
    assert train_gpu.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "tiny-sd15" and report["precision"] == "bf16" and report["rank"] == 32
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
