"""Benchmark: per-step time of Kiln's training loop against a plain diffusers + peft loop, in one run.

Both train the same tiny SD 1.5-shaped model (built here), at the same batch size,
resolution and precision (fp32), with LoRA on the same layers (Kohya's 192 U-Net + text-encoder
modules, rank 8), the text encoder trained, AdamW, gradient clipping at 1.0 and cached
latents. The baseline is what the diffusers example scripts do, written out plainly. Rounds
alternate (baseline, Kiln, baseline, Kiln...) so machine load hits both alike. Each step is
timed twice: wall clock, and the thread's CPU time, which other processes on a shared
machine cannot inflate (torch runs single-threaded here, so the thread does all the work).
The figures are medians over all rounds after a warm-up.

Run from the repository root:  python -m bench.train_cpu [--steps 40] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

BATCH = 2
RESOLUTION = 64
RANK = 8
WARMUP = 5


def make_dataset(root: Path, images: int) -> Path:
    folder = root / "data" / "1_bench"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(images):
        pixels = rng.integers(0, 255, (RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")
        (folder / f"{index:03d}.txt").write_text(f"bench image {index}, red, blue", encoding="utf-8")
    return folder.parent


Times = tuple[list[float], list[float]]


def now() -> tuple[float, float]:
    """(wall clock, this thread's CPU time)."""
    return time.perf_counter(), time.thread_time()


def step_times(stamps: list[tuple[float, float]]) -> Times:
    """Per-step wall and CPU seconds after the warm-up steps."""
    kept = np.array(stamps[WARMUP - 1 :])
    return list(np.diff(kept[:, 0])), list(np.diff(kept[:, 1]))


def kiln_step_times(model: Path, data: Path, runs: Path, steps: int) -> Times:
    from kiln.engine.runs.control import controlled_trainer
    from kiln.engine.runs.layout import create_run_dir
    from kiln.engine.train.config import config_from_mapping

    config = config_from_mapping(
        {
            "model": {"base": str(model)},
            "dataset": {
                "path": str(data),
                "resolution": RESOLUTION,
                "min_bucket_reso": 64,
                "max_bucket_reso": 128,
            },
            "network": {"rank": RANK, "alpha": RANK / 2},
            "train": {"epochs": 1, "max_steps": steps + WARMUP, "batch_size": BATCH, "precision": "fp32"},
            "output": {"dir": str(runs), "name": "bench"},
        }
    )
    stamps: list[tuple[float, float]] = []
    trainer = controlled_trainer(config, create_run_dir(config), cpu=True)
    trainer.add_listener(lambda event: event["type"] == "step" and stamps.append(now()))
    result = trainer.run()
    assert result.state == "done", result.error
    return step_times(stamps)


def baseline_step_times(model: Path, data: Path, steps: int) -> Times:
    """A plain loop: diffusers pipeline, peft adapters, cached latents, AdamW."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from kiln.engine.models.sd15 import text_encoder_targets, unet_targets
    from peft import LoraConfig, inject_adapter_in_model

    pipe = StableDiffusionPipeline.from_pretrained(model, local_files_only=True, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    unet, text_encoder, vae, tokenizer = pipe.unet, pipe.text_encoder, pipe.vae, pipe.tokenizer
    for module in (unet, text_encoder, vae):
        module.requires_grad_(False)
    # The same layers as Kiln (the bench compares loops, not target choices).
    unet_names = [t.module for t in unet_targets(unet, RANK, RANK / 2)]
    te_names = [t.module for t in text_encoder_targets(text_encoder, RANK, RANK / 2)]
    unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK / 2, target_modules=unet_names))
    # transformers' own add_adapter wants a newer peft than diffusers does; inject directly.
    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=RANK / 2, target_modules=te_names), text_encoder)
    params = [p for m in (unet, text_encoder) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in unet.parameters() if p.requires_grad], "lr": 1e-4},
            {"params": [p for p in text_encoder.parameters() if p.requires_grad], "lr": 2e-5},
        ],
        weight_decay=0.01,
    )
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    files = sorted(data.rglob("*.png"))
    latents, captions = [], []
    with torch.no_grad():
        for path in files:
            pixels = torch.from_numpy(
                np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1
            )
            latent = vae.encode(pixels.permute(2, 0, 1)[None]).latent_dist.mode() * vae.config.scaling_factor
            latents.append(latent[0])
            captions.append(path.with_suffix(".txt").read_text(encoding="utf-8"))
    unet.train()
    text_encoder.train()
    stamps = []
    for step in range(steps + WARMUP):
        picks = [(step * BATCH + i) % len(files) for i in range(BATCH)]
        batch = torch.stack([latents[i] for i in picks])
        ids = tokenizer(
            [captions[i] for i in picks],
            padding="max_length",
            max_length=77,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        noise = torch.randn_like(batch)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (BATCH,))
        hidden = text_encoder(ids).last_hidden_state
        prediction = unet(scheduler.add_noise(batch, noise, timesteps), timesteps, hidden).sample
        loss = F.mse_loss(prediction.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        stamps.append(now())
    return step_times(stamps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each loop")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for both loops")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from kiln.engine.models.tiny import write_tiny_model

    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        root = Path(tmp)
        model = write_tiny_model(root / "tiny")
        data = make_dataset(root, images=2 * BATCH * (args.steps + WARMUP))
        base: Times = ([], [])
        kiln: Times = ([], [])
        for index in range(args.rounds):
            for into, (wall, cpu) in (
                (base, baseline_step_times(model, data, args.steps)),
                (kiln, kiln_step_times(model, data, root / "runs" / str(index), args.steps)),
            ):
                into[0].extend(wall)
                into[1].extend(cpu)
    print(
        f"torch threads {args.threads}; batch {BATCH}, {RESOLUTION} px, fp32, rank {RANK}, "
        "text encoder trained"
    )
    for label, which in (("CPU time", 1), ("wall clock", 0)):
        base_ms, kiln_ms = statistics.median(base[which]) * 1000, statistics.median(kiln[which]) * 1000
        print(
            f"{label:>10}: plain diffusers+peft {base_ms:.1f} ms/step, kiln {kiln_ms:.1f} ms/step "
            f"({len(kiln[which])} steps each): ratio kiln/baseline {kiln_ms / base_ms:.3f} (target <= 1.0)"
        )


if __name__ == "__main__":
    main()
