"""bench.train_gpu against kohya sd-scripts: the command line, the log reading, the step clock,
the peak-memory probe, the refusals, and (with a checkout at hand) the comparison itself."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from kiln.engine.errors import RunError, UsageError

from bench import peak_probe, train_gpu
from bench import sd_scripts_peer as peer
from bench.step_times import median_step, split_stamped, step_times

# sd-scripts' output around its training loop as it came from a real CPU run (commit 48d368fa,
# tqdm 4.70.1, TQDM_MININTERVAL=0): the bar redraws after \r, twice per step (update(1), then
# set_postfix), between rich log lines; the bar is drawn once more after the LoRA is saved.
BAR = "\rsteps: {pct:>3}%|{bar:<10}| {n}/6 [00:{e:02d}<00:{r:02d}, {rate}{post}]"
SAMPLE = (
    "                    INFO     caching latents...               train_util.py:1170\n"
    "\r  0%|          | 0/8 [00:00<?, ?it/s]\r 12%|█▎        | 1/8 [00:01<00:10,  1.56s/it]"
    "\r100%|██████████| 8/8 [00:07<00:00,  1.29it/s]\r100%|██████████| 8/8 [00:07<00:00,  1.10it/s]\n"
    "\rread caption: 100%|██████████| 8/8 [00:00<00:00, 7139.24it/s]\n"
    "  total optimization steps / 学習ステップ数: 6\n"
    "2026-12-06 21:39:06 INFO     unet dtype: torch.bfloat16,   train_network.py:1347\n"
    "\rsteps:   0%|          | 0/6 [00:00<?, ?it/s]\nepoch 1/1\n\n"
    "2026-12-06 21:39:07 INFO     epoch is incremented.             train_util.py:784\n"
)
STEPS = [
    BAR.format(pct=17, bar="█▋", n=1, e=9, r=46, rate=" 9.28s/it", post=""),
    BAR.format(pct=17, bar="█▋", n=1, e=9, r=46, rate=" 9.28s/it", post=", avr_loss=1.32"),
    BAR.format(pct=33, bar="███▎", n=2, e=18, r=37, rate=" 9.44s/it", post=", avr_loss=1.32"),
    BAR.format(pct=33, bar="███▎", n=2, e=18, r=37, rate=" 9.44s/it", post=", avr_loss=1.19"),
    BAR.format(pct=50, bar="█████", n=3, e=27, r=27, rate=" 9.12s/it", post=", avr_loss=1.19"),
    BAR.format(pct=50, bar="█████", n=3, e=27, r=27, rate=" 9.12s/it", post=", avr_loss=1.17"),
    BAR.format(pct=67, bar="██████▋", n=4, e=33, r=16, rate=" 8.26s/it", post=", avr_loss=1.17"),
    BAR.format(pct=67, bar="██████▋", n=4, e=33, r=16, rate=" 8.26s/it", post=", avr_loss=1.11"),
    BAR.format(pct=83, bar="████████▎", n=5, e=39, r=7, rate=" 7.85s/it", post=", avr_loss=1.11"),
    BAR.format(pct=83, bar="████████▎", n=5, e=39, r=7, rate=" 7.85s/it", post=", avr_loss=1.12"),
    BAR.format(pct=100, bar="██████████", n=6, e=45, r=0, rate=" 7.56s/it", post=", avr_loss=1.12"),
    BAR.format(pct=100, bar="██████████", n=6, e=45, r=0, rate=" 7.56s/it", post=", avr_loss=1.14"),
]
TAIL = (
    "\nsaving checkpoint: /tmp/out/b1-r1/bench.safetensors\n"
    "2026-12-06 21:39:52 INFO     model saved.                  train_network.py:1729\n"
    + BAR.format(pct=100, bar="██████████", n=6, e=45, r=0, rate=" 7.61s/it", post=", avr_loss=1.14")
    + "\n"
)


def settings(family: str = "sd15", precision: str = "bf16") -> peer.PeerSettings:
    return peer.PeerSettings(
        family=family,
        checkpoint=Path("/models/random.safetensors"),
        data=Path("/data"),
        resolution=64,
        batch=2,
        steps=11,
        rank=32,
        alpha=16.0,
        unet_lr=1e-4,
        text_encoder_lr=2e-5,
        precision=precision,
        seed=42,
    )


def flags(command: list[str]) -> dict[str, str | None]:
    """``--name value`` pairs of a command line (None for a switch)."""
    found: dict[str, str | None] = {}
    for index, word in enumerate(command):
        if word.startswith("--"):
            following = command[index + 1] if index + 1 < len(command) else "--"
            found[word[2:]] = None if following.startswith("--") else following
    return found


def command_for(family: str, precision: str = "bf16") -> list[str]:
    script = Path("/sd-scripts") / peer.SCRIPTS[family]
    return peer.sd_scripts_command(
        "/venv/bin/python", script, settings(family, precision), Path("/out"), Path("/tok"), Path("/r.json")
    )


def test_sd15_command_spells_kilns_settings_as_kohyas_flags() -> None:
    command = command_for("sd15")
    assert command[:4] == ["/venv/bin/python", str(peer.PROBE), "/r.json", "/sd-scripts/train_network.py"]
    assert flags(command) == {
        "pretrained_model_name_or_path": "/models/random.safetensors",
        "train_data_dir": "/data",
        "caption_extension": ".txt",
        "resolution": "64,64",
        "train_batch_size": "2",
        "max_train_steps": "11",
        "network_module": "networks.lora",
        "network_dim": "32",
        "network_alpha": "16",
        "learning_rate": "0.0001",
        "unet_lr": "0.0001",
        "text_encoder_lr": "2e-05",
        "optimizer_type": "AdamW",
        "lr_scheduler": "constant",
        "max_grad_norm": "1.0",
        "mixed_precision": "bf16",
        "seed": "42",
        "cache_latents": None,
        "sdpa": None,
        "max_data_loader_n_workers": "0",
        "tokenizer_cache_dir": "/tok",
        "output_dir": "/out",
        "output_name": "bench",
        "save_model_as": "safetensors",
    }


def test_sdxl_command_trains_the_unet_only_on_cached_text_with_checkpointing() -> None:
    command = command_for("sdxl")
    assert command[3] == "/sd-scripts/sdxl_train_network.py"
    found = flags(command)
    for switch in ("network_train_unet_only", "cache_text_encoder_outputs", "gradient_checkpointing"):
        assert switch in found and found[switch] is None
    assert "text_encoder_lr" not in found
    assert found["network_dim"] == "32" and found["mixed_precision"] == "bf16" and "sdpa" in found


def test_fp32_runs_sd_scripts_without_mixed_precision() -> None:
    assert flags(command_for("sd15", "fp32"))["mixed_precision"] == "no"


def test_children_run_offline_with_every_tqdm_update_printed_and_no_gpu_on_cpu() -> None:
    env = peer.child_environment("cpu")
    assert env["HF_HUB_OFFLINE"] == "1" and env["TQDM_MININTERVAL"] == "0"
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    gpu = peer.child_environment("cuda")
    assert gpu.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")


def test_tokenizer_cache_has_every_hub_id_sd_scripts_asks_for(tmp_path: Path) -> None:
    peer.write_tokenizer_cache(tmp_path, "sdxl")
    for name in ("openai_clip-vit-large-patch14", "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k"):
        assert (tmp_path / name / "vocab.json").is_file() and (tmp_path / name / "merges.txt").is_file()


def chunked(text: str, stamps: list[float]) -> list[tuple[float, bytes]]:
    """``text`` cut into len(stamps) chunks at arbitrary places (mid-line too), each stamped."""
    data = text.encode("utf-8")
    size = -(-len(data) // len(stamps))
    return [(stamp, data[i * size : (i + 1) * size]) for i, stamp in enumerate(stamps)]


def test_bar_lines_give_steps_and_tqdms_rate_and_nothing_else_does() -> None:
    assert peer.sd_scripts_bar(STEPS[2].strip("\r")) == (2, 6, pytest.approx(1 / 9.44))
    assert peer.sd_scripts_bar("steps:  50%|#####     | 5/10 [00:03<00:03,  1.52it/s, avr_loss=0.1]") == (
        5,
        10,
        1.52,
    )
    assert peer.sd_scripts_bar("steps:   0%|          | 0/6 [00:00<?, ?it/s]") == (0, 6, None)
    for other in (
        " 12%|█▎        | 1/8 [00:01<00:10,  1.56s/it]",  # latent caching: no label
        "read caption: 100%|██████████| 8/8 [00:00<00:00, 7139.24it/s]",
        "validation steps:  50%|█████     | 2/4 [00:01<00:01,  1.9it/s]",
        "2026-12-06 21:39:07 INFO     epoch is incremented.             train_util.py:784",
        "  total optimization steps / 学習ステップ数: 6",
    ):
        assert peer.sd_scripts_bar(other) is None, other


def test_recorded_output_gives_each_step_the_moment_it_was_first_drawn() -> None:
    # One chunk per bar redraw, 10 s apart per step (update and set_postfix 0.5 s apart).
    chunks = [(0.0, SAMPLE.encode())]
    for index, line in enumerate(STEPS):
        chunks.append((10.0 * (index // 2 + 1) + 0.5 * (index % 2), line.encode()))
    chunks.append((99.0, TAIL.encode()))
    times = step_times(split_stamped(chunks), peer.sd_scripts_bar)
    assert times.stamps == {1: 10.0, 2: 20.0, 3: 30.0, 4: 40.0, 5: 50.0, 6: 60.0}
    assert times.total == 6
    assert times.reported_it_s == pytest.approx(1 / 7.61)  # the redraw after saving came last
    assert median_step(times.stamps, warmup=2) == (pytest.approx(10.0), 4)


def test_a_line_split_across_chunks_gets_the_stamp_of_the_chunk_that_ends_it() -> None:
    text = SAMPLE + "".join(STEPS[:3])
    lines = list(split_stamped(chunked(text, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])))
    assert [line for _, line in lines][-3:] == [step.strip("\r") for step in STEPS[:3]]
    assert lines[-1][0] == 7.0  # the unterminated last line comes out at the end
    whole = "".join(line for _, line in split_stamped([(0.0, text.encode())]))
    assert whole == "".join(line for _, line in lines)


def test_kiln_step_lines_parse() -> None:
    assert peer.kiln_step_line("kiln step 7/11\n") == (7, 11, None)
    assert peer.kiln_step_line("steps:  50%|#####| 5/10 [00:03<00:03, 1.52it/s]") is None


def test_kilns_estimate_is_read_from_its_log_and_set_beside_its_peak(tmp_path: Path) -> None:
    log = tmp_path / "kiln.log"
    log.write_bytes(b"loading\r\nkiln estimate 3481.6 MiB\nkiln step 1/2\nkiln step 2/2\n")
    assert peer.kiln_estimate_gib(log) == 3.4
    log.write_bytes(b"kiln step 1/2\n")
    assert peer.kiln_estimate_gib(log) is None
    runs = [
        {"it_s": 2.0, "ms_per_step": 500.0, "peak_gib": 4.0, "steps": 8, "estimate_gib": 3.4},
        {"it_s": 3.0, "ms_per_step": 333.0, "peak_gib": 4.1, "steps": 8, "estimate_gib": 3.4},
    ]
    summary = train_gpu._side_summary(runs)
    assert summary["peak_gib"] == 4.1 and summary["estimate_gib"] == 3.4
    assert summary["estimate_ratio"] == round(3.4 / 4.1, 3)
    assert "estimate_gib" not in train_gpu._side_summary([{**run, "estimate_gib": None} for run in runs])


def test_steps_reported_in_bursts_are_timed_by_the_last_report_of_each_burst() -> None:
    # Kiln on a GPU: steps read back 10 at a time, their events a few microseconds apart.
    stamps = {step: 10.0 * -(-step // 10) + 1e-5 * ((step - 1) % 10) for step in range(1, 31)}
    seconds, timed = median_step(stamps, warmup=5)
    assert seconds == pytest.approx(1.0, rel=1e-3) and timed == 20


def test_skipped_counts_share_their_interval_and_a_slow_step_does_not_move_the_median() -> None:
    stamps = {2: 2.0, 3: 3.0, 6: 6.0, 7: 7.0, 8: 8.0, 9: 20.0, 10: 21.0}
    assert median_step(stamps, warmup=2) == (1.0, 8)


def test_too_few_timed_steps_is_an_error_naming_the_fix() -> None:
    with pytest.raises(RunError, match="raise --steps"):
        median_step({1: 1.0, 2: 2.0}, warmup=1)


def make_checkout(
    folder: Path, scripts: tuple[str, ...] = ("train_network.py", "sdxl_train_network.py")
) -> Path:
    for name in (*scripts, *peer.CHECKOUT_MARKERS):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("", encoding="utf-8")
    return folder


def test_a_checkout_gives_the_familys_script(tmp_path: Path) -> None:
    make_checkout(tmp_path)
    assert peer.checkout_script(tmp_path, "sd15") == (tmp_path / "train_network.py").resolve()
    assert peer.checkout_script(tmp_path, "sdxl") == (tmp_path / "sdxl_train_network.py").resolve()


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_a_folder_that_is_not_a_checkout_is_refused_in_one_line(tmp_path: Path, family: str) -> None:
    make_checkout(tmp_path, scripts=("train_network.py",) if family == "sdxl" else ())
    with pytest.raises(UsageError) as refused:
        peer.checkout_script(tmp_path, family)
    message = str(refused.value)
    assert "\n" not in message and "not a kohya sd-scripts checkout" in message
    assert peer.SCRIPTS[family] in message and str(tmp_path) in message


def test_the_bench_refuses_a_wrong_checkout_before_building_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--device", "cpu", "--resolution", "64", "--sd-scripts", str(tmp_path / "nowhere")]
    assert train_gpu.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bench.train_gpu: ") and "not a kohya sd-scripts" in err


def test_the_bench_refuses_a_missing_interpreter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--device", "cpu", "--sd-scripts", str(make_checkout(tmp_path))]
    assert train_gpu.main([*argv, "--sd-scripts-python", str(tmp_path / "no-python")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--sd-scripts-python" in err


def test_the_bench_refuses_the_tiny_model_against_sd_scripts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train_gpu.main(["--device", "cpu", "--tiny", "--sd-scripts", str(make_checkout(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot load the tiny one" in err and "--resolution 64" in err


def test_peak_rss_reads_the_high_water_mark(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text(
        "Name:\tpython\nVmPeak:\t 9000 kB\nVmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n", encoding="ascii"
    )
    assert peak_probe.peak_rss(status) == 2048 * 1024


FAKE_TRAINER = """
import sys, time
big = bytearray(300 * 2**20)
for i in range(0, len(big), 4096):
    big[i] = 1
print("2026-12-06 21:39:07 INFO     epoch is incremented.", flush=True)
for n in range(1, 7):
    time.sleep(0.02 if n < 3 else 0.1)
    bar = f"\\rsteps: {n * 100 // 6:3d}%|#         | {n}/6 [00:0{n}<00:00,  9.1it/s"
    sys.stderr.write(bar + "]")
    sys.stderr.flush()
    sys.stderr.write(bar + ", avr_loss=0.1]")
    sys.stderr.flush()
sys.exit(int(sys.argv[1]))
"""


@pytest.mark.slow
def test_a_run_under_the_probe_is_timed_from_its_output_and_measured(tmp_path: Path) -> None:
    script = tmp_path / "train_network.py"
    script.write_text(FAKE_TRAINER, encoding="utf-8")
    report, log = tmp_path / "peak.json", tmp_path / "run.log"
    command = [sys.executable, str(peer.PROBE), str(report), str(script), "0"]
    output = peer.run_stamped(
        command, peer.sd_scripts_bar, cwd=tmp_path, env=peer.child_environment("cpu"), log=log, report=report
    )
    assert output.status == 0 and sorted(output.times.stamps) == [1, 2, 3, 4, 5, 6]
    figures = peer.figures(output, warmup=2, device="cpu", side="sd-scripts")
    assert figures["steps"] == 4 and 80 < figures["ms_per_step"] < 200
    assert figures["peak_gib"] >= 0.29 and figures["reported_it_s"] == 9.1
    assert "epoch is incremented" in log.read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_failed_run_is_an_error_with_its_last_lines_and_log(tmp_path: Path) -> None:
    script = tmp_path / "train_network.py"
    script.write_text(FAKE_TRAINER.replace("big = bytearray(300 * 2**20)", "big = b''"), encoding="utf-8")
    report, log = tmp_path / "peak.json", tmp_path / "run.log"
    command = [sys.executable, str(peer.PROBE), str(report), str(script), "3"]
    output = peer.run_stamped(
        command, peer.sd_scripts_bar, cwd=tmp_path, env=peer.child_environment("cpu"), log=log, report=report
    )
    assert output.status == 3 and json.loads(report.read_text())["status"] == 3
    with pytest.raises(RunError, match=r"sd-scripts's run failed \(exit 3\).*6/6.*full log: .*run\.log"):
        peer.figures(output, warmup=2, device="cpu", side="sd-scripts")


SD_SCRIPTS = os.environ.get("KILN_SD_SCRIPTS")
SD_SCRIPTS_PYTHON = os.environ.get("KILN_SD_SCRIPTS_PYTHON", sys.executable)


@pytest.mark.slow
@pytest.mark.skipif(
    not SD_SCRIPTS, reason="set KILN_SD_SCRIPTS (and KILN_SD_SCRIPTS_PYTHON) to an sd-scripts checkout"
)
def test_comparison_with_a_real_sd_scripts_checkout_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    """The whole comparison for real: full-size SD 1.5 random weights at 64 px, one round
    (about 4 minutes and 11 GB of memory on 2 cores)."""
    argv = ["--device", "cpu", "--resolution", "64", "--batches", "1", "--steps", "2", "--warmup", "1"]
    argv += [
        "--rounds",
        "1",
        "--json",
        "--sd-scripts",
        str(SD_SCRIPTS),
        "--sd-scripts-python",
        SD_SCRIPTS_PYTHON,
    ]
    assert train_gpu.main(argv) == 0, shlex.join(argv)
    report = json.loads(capsys.readouterr().out)
    assert report["peer"] == "sd-scripts" and report["model"] == "random-sd15"
    (row,) = report["results"]
    for side in ("kiln", "sd_scripts"):
        assert row[side]["it_s"] > 0 and row[side]["peak_gib"] > 1 and row[side]["steps"] == 2
    assert row["kiln"]["estimate_gib"] > 1  # the trainer's estimate, printed by bench.kiln_side
    assert row["ratio_it_s"] > 0 and row["ratio_peak"] > 0


def test_the_reported_commit_is_sd_scripts_own_never_a_repository_around_it(tmp_path: Path) -> None:
    outer = tmp_path / "kiln"
    copy = outer / ".device" / "sd-scripts"
    copy.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(outer)], check=True)
    identity = ["-c", "user.name=k", "-c", "user.email=k@k"]
    subprocess.run(
        ["git", "-C", str(outer), *identity, "commit", "-q", "--allow-empty", "-m", "x"], check=True
    )
    assert peer.checkout_commit(copy) is None  # inside Kiln's repository, not a checkout of its own
    (copy / "COMMIT").write_text("48d368fa557731ad0488c07304dfeba8c07910eb\n")
    assert peer.checkout_commit(copy) == "48d368fa557731ad0488c07304dfeba8c07910eb"
    head = subprocess.run(
        ["git", "-C", str(outer), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert peer.checkout_commit(outer) == head
