"""Kohya's sd-scripts as the peer of ``bench.train_gpu``: its command line, its run, its log read.

sd-scripts is not a dependency: the user gives a checkout (``git clone
https://github.com/kohya-ss/sd-scripts``) and the interpreter of the virtual environment it
was installed into (it pins its own diffusers, transformers and accelerate). Its
``train_network.py`` (SD 1.5) or ``sdxl_train_network.py`` (SDXL) runs without ``accelerate
launch`` (one process), with Kiln's settings spelled as Kohya's flags: the same single-file
checkpoint, ``N_name`` dataset, resolution, batch, LoRA rank and alpha, learning rates,
precision, AdamW, clipping, seed, cached latents and PyTorch SDPA attention; for SDXL the
U-Net only, with cached text-encoder outputs and gradient checkpointing.

Step time. sd-scripts' ``steps`` progress bar (tqdm, on stderr) is the only per-step signal
it gives, and each bar line carries the step count (``steps:  50%|#####| 5/10 [...]``). The
parent stamps (``time.perf_counter()``) each chunk of the child's output as it arrives and
keeps, per step count, the stamp of the first line that shows it; :mod:`bench.step_times`
turns those into a median time per step after the warm-up. Why not tqdm's own rate:
sd-scripts draws the bar with ``smoothing=0``, so the rate is the mean since the bar started
(the first, slow steps included) rounded to three figures, and the elapsed field counts whole
seconds: neither gives a step's time, nor a median after a warm-up. The stamps are on the
clock Kiln's side is timed with (its ``kiln step N/M`` lines, stamped the same way), and the
pipe adds microseconds. tqdm redraws at most every 0.1 s, so the child runs with
``TQDM_MININTERVAL=0`` and the bar's ``update(1)``, right after the optimizer step, prints each
step; should a count still be skipped, the interval is shared among the steps it spans. The
last rate tqdm printed is kept as a cross-check (``reported_it_s``).

Peak memory: sd-scripts prints none. The script runs under :mod:`bench.peak_probe`, which
runs it via ``runpy`` in the same process and writes ``torch.cuda.max_memory_allocated()``
(CUDA) and the peak resident set size (CPU) when it exits. Kiln's side runs the same way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.engine.errors import RunError, UsageError

from bench.step_times import StepTimes, median_step, split_stamped, step_times

SCRIPTS = {"sd15": "train_network.py", "sdxl": "sdxl_train_network.py"}
# The files a checkout of kohya-ss/sd-scripts has, whichever its version.
CHECKOUT_MARKERS = ("library/train_util.py", "networks/lora.py")
# The hub ids sd-scripts loads its tokenizers from; with --tokenizer_cache_dir it reads
# <dir>/<id with / as _> first, so the runs stay offline.
TOKENIZER_IDS = {
    "sd15": ("openai/clip-vit-large-patch14",),
    "sdxl": ("openai/clip-vit-large-patch14", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"),
}
PROBE = Path(__file__).resolve().parent / "peak_probe.py"
# tqdm's bar: "{desc}: {percent}%|{bar}| {n}/{total} [{elapsed}<{remaining}, {rate}{postfix}]".
_BAR = re.compile(r"(?P<desc>[\w ]+):\s+\d+%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*\[(?P<info>[^\]]*)\]")
_RATE = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<unit>it/s|s/it)")
_KILN_STEP = re.compile(r"^kiln step (?P<n>\d+)/(?P<total>\d+)$")
_KILN_ESTIMATE = re.compile(r"^kiln estimate (?P<mib>[0-9.]+) MiB$", re.MULTILINE)


@dataclass(frozen=True)
class PeerSettings:
    """What both sides train with (Kiln's names; :func:`sd_scripts_command` spells them as Kohya's).

    Attributes:
        family: ``sd15`` or ``sdxl``.
        checkpoint: The single-file model both load.
        data: The folder holding the ``N_name`` image folder.
        resolution: Square training resolution (px).
        batch: Batch size.
        steps: Optimizer steps in all (warm-up and timed).
        rank, alpha: LoRA rank (``network_dim``) and alpha.
        unet_lr, text_encoder_lr: Learning rates.
        precision: ``bf16`` or ``fp32``.
        seed: Seed of both runs.
    """

    family: str
    checkpoint: Path
    data: Path
    resolution: int
    batch: int
    steps: int
    rank: int
    alpha: float
    unet_lr: float
    text_encoder_lr: float
    precision: str
    seed: int = 42


def checkout_script(checkout: Path | str, family: str) -> Path:
    """The training script of the sd-scripts checkout at ``checkout`` for ``family``.

    Raises:
        UsageError: The folder is missing, or is not an sd-scripts checkout with that script.
    """
    folder = Path(checkout).expanduser()
    script = folder / SCRIPTS[family]
    markers = [folder / name for name in (SCRIPTS[family], *CHECKOUT_MARKERS)]
    if not all(marker.is_file() for marker in markers):
        raise UsageError(
            f"{folder}: not a kohya sd-scripts checkout (no {SCRIPTS[family]}, library/train_util.py "
            "or networks/lora.py); pass the folder `git clone https://github.com/kohya-ss/sd-scripts` made"
        )
    return script.resolve()


def checkout_commit(checkout: Path) -> str | None:
    """The sd-scripts commit: the ``COMMIT`` file of a copy made by scripts/device_kit.py, else
    the commit of the checkout when it is a git work tree's top (not of a repository around it)."""
    recorded = checkout / "COMMIT"
    if recorded.is_file():
        return recorded.read_text(encoding="utf-8").strip() or None
    git = ["git", "-C", str(checkout), "rev-parse", "--show-toplevel", "HEAD"]
    try:
        done = subprocess.run(git, capture_output=True, text=True, check=False)
    except OSError:
        return None
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != checkout.resolve():
        return None
    return lines[1]


def write_tokenizer_cache(folder: Path, family: str) -> Path:
    """Lay out Kiln's shipped CLIP tokenizer where sd-scripts' ``--tokenizer_cache_dir`` looks
    for each hub id the family needs (SDXL's second tokenizer is the same BPE; sd-scripts sets
    its padding id itself)."""
    from kiln.engine.models.loading import SD15_CONFIG_DIR

    for hub_id in TOKENIZER_IDS[family]:
        shutil.copytree(SD15_CONFIG_DIR / "tokenizer", folder / hub_id.replace("/", "_"), dirs_exist_ok=True)
    return folder


def sd_scripts_command(
    python: Path | str, script: Path, settings: PeerSettings, out: Path, tokenizers: Path, report: Path
) -> list[str]:
    """The command line that trains ``settings`` with sd-scripts under :mod:`bench.peak_probe`.

    Args:
        python: sd-scripts' interpreter.
        script: ``train_network.py`` or ``sdxl_train_network.py`` of the checkout.
        settings: What to train.
        out: Folder for the LoRA sd-scripts saves at the end.
        tokenizers: The tokenizer cache (:func:`write_tokenizer_cache`).
        report: Where the probe writes the peak memory.
    """
    s = settings
    command = [
        str(python),
        str(PROBE),
        str(report),
        str(script),
        "--pretrained_model_name_or_path", str(s.checkpoint),
        "--train_data_dir", str(s.data),
        "--caption_extension", ".txt",
        "--resolution", f"{s.resolution},{s.resolution}",
        "--train_batch_size", str(s.batch),
        "--max_train_steps", str(s.steps),
        "--network_module", "networks.lora",
        "--network_dim", str(s.rank),
        "--network_alpha", f"{s.alpha:g}",
        "--learning_rate", f"{s.unet_lr:g}",
        "--unet_lr", f"{s.unet_lr:g}",
        "--optimizer_type", "AdamW",
        "--lr_scheduler", "constant",
        "--max_grad_norm", "1.0",
        "--mixed_precision", "bf16" if s.precision == "bf16" else "no",
        "--seed", str(s.seed),
        "--cache_latents",
        "--sdpa",
        # Kiln batches cached latents in the training process; so does sd-scripts with no workers.
        "--max_data_loader_n_workers", "0",
        "--tokenizer_cache_dir", str(tokenizers),
        "--output_dir", str(out),
        "--output_name", "bench",
        "--save_model_as", "safetensors",
    ]  # fmt: skip
    if s.family == "sdxl":
        # What Kiln's SDXL side trains: the U-Net only, text-encoder outputs encoded once.
        command += ["--network_train_unet_only", "--cache_text_encoder_outputs", "--gradient_checkpointing"]
    else:
        command += ["--text_encoder_lr", f"{s.text_encoder_lr:g}"]
    return command


def child_environment(device: str) -> dict[str, str]:
    """The environment both sides run in: offline, unbuffered, every tqdm update printed; with
    ``device`` ``cpu``, no GPU visible (sd-scripts has no CPU switch: accelerate takes a GPU
    whenever it sees one)."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        TQDM_MININTERVAL="0",
        TRANSFORMERS_VERBOSITY="error",
    )
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def sd_scripts_bar(line: str) -> tuple[int, int, float | None] | None:
    """(step, total, tqdm's rate in it/s or None) of a line of sd-scripts' ``steps`` bar; None
    for any other line (its log, the latent-caching bar, a validation bar)."""
    match = _BAR.search(line)
    if match is None or match["desc"].strip() != "steps":
        return None
    rate = _RATE.search(match["info"])
    it_s = None
    if rate is not None:
        value = float(rate["value"])
        it_s = value if rate["unit"] == "it/s" else (1 / value if value else None)
    return int(match["n"]), int(match["total"]), it_s


def kiln_step_line(line: str) -> tuple[int, int, float | None] | None:
    """(step, total, None) of a ``kiln step N/M`` line of Kiln's side (:mod:`bench.kiln_side`)."""
    match = _KILN_STEP.match(line.strip())
    return None if match is None else (int(match["n"]), int(match["total"]), None)


def kiln_estimate_gib(log: Path) -> float | None:
    """The memory estimate Kiln's side printed (``kiln estimate X MiB``) in GiB; None if none."""
    match = _KILN_ESTIMATE.search(log.read_bytes().decode("utf-8", errors="replace").replace("\r", "\n"))
    return None if match is None else round(float(match["mib"]) / 1024, 2)


@dataclass(frozen=True)
class RunOutput:
    """A finished child run: its exit status, step times, peak memory and log file."""

    status: int
    times: StepTimes
    peak: dict[str, int | None]
    log: Path


def run_stamped(
    command: Sequence[str],
    parse: Callable[[str], tuple[int, int, float | None] | None],
    *,
    cwd: Path,
    env: dict[str, str],
    log: Path,
    report: Path,
) -> RunOutput:
    """Run ``command`` (under the probe, which writes ``report``), stamping its merged stdout and
    stderr as it arrives and copying it to ``log``."""
    report.unlink(missing_ok=True)
    chunks: list[tuple[float, bytes]] = []
    with log.open("wb") as sink:
        process = subprocess.Popen(
            list(command), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0
        )
        assert process.stdout is not None
        fd = process.stdout.fileno()
        while chunk := os.read(fd, 1 << 16):
            chunks.append((time.perf_counter(), chunk))
            sink.write(chunk)
        status = process.wait()
    try:
        peak = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        peak = {"rss_peak_bytes": None, "cuda_peak_bytes": None}
    return RunOutput(status, step_times(split_stamped(chunks), parse), peak, log)


def last_lines(log: Path, count: int = 3) -> str:
    """The last non-empty lines of a log, joined on one line (for a one-line error)."""
    text = log.read_bytes().decode("utf-8", errors="replace")
    lines = [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]
    return " | ".join(lines[-count:])


def figures(output: RunOutput, warmup: int, device: str, side: str) -> dict:
    """A finished run's figures, as ``bench.train_gpu`` reports them.

    Raises:
        RunError: The run failed or timed too few steps; the message names its log.
    """
    if output.status != 0:
        raise RunError(
            f"{side}'s run failed (exit {output.status}): {last_lines(output.log)} (full log: {output.log})"
        )
    seconds, timed = median_step(output.times.stamps, warmup)
    peak = output.peak.get("cuda_peak_bytes" if device == "cuda" else "rss_peak_bytes")
    return {
        "ms_per_step": round(seconds * 1000, 2),
        "it_s": float(f"{1 / seconds:.4g}"),  # four figures: a CPU run goes at 0.1 it/s
        "peak_gib": None if peak is None else round(peak / 2**30, 2),
        "steps": timed,
        "reported_it_s": output.times.reported_it_s,
    }


def python_of(path: str | Path) -> Path:
    """sd-scripts' interpreter, checked.

    Raises:
        UsageError: No such executable file.
    """
    python = Path(path).expanduser()
    if not python.is_file() or not os.access(python, os.X_OK):
        raise UsageError(
            f"{python}: no such Python interpreter; pass --sd-scripts-python with the python of the "
            "virtual environment sd-scripts is installed in"
        )
    return python
