"""Benchmark: per-step time of Kiln's training loop against a plain diffusers + peft loop, in one run.

Both train the same tiny model (built here: SD 1.5-shaped, or with ``--family sdxl`` the tiny
SDXL with its two text encoders and size/crop conditioning), at the same batch size,
resolution and precision (fp32), with LoRA on the same layers (Kohya's U-Net + text-encoder
modules, rank 8), the text encoders trained, AdamW, gradient clipping at 1.0 and cached
latents. The baseline is what the diffusers example scripts do (``train_text_to_image_lora``,
and ``train_dreambooth_lora_sdxl`` for SDXL), written out plainly. Rounds
alternate (baseline, Kiln, baseline, Kiln...) so machine load hits both alike. Each step is
timed twice: wall clock, and the thread's CPU time, which other processes on a shared
machine cannot inflate (torch runs single-threaded here, so the thread does all the work).
The figures are medians over all rounds after a warm-up.

Run from the repository root:
    python -m bench.train_cpu [--steps 40] [--rounds 3] [--threads 1] [--family sdxl]
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


def baseline_step_times(model: Path, data: Path, steps: int, family: str = "sd15") -> Times:
    """A plain loop: diffusers pipeline, peft adapters, cached latents, AdamW."""
    import diffusers
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from kiln.engine.models.family import family_named
    from peft import LoraConfig, inject_adapter_in_model

    xl = family == "sdxl"
    fam = family_named(family)
    cls = diffusers.StableDiffusionXLPipeline if xl else diffusers.StableDiffusionPipeline
    extra = {} if xl else {"safety_checker": None}
    pipe = cls.from_pretrained(model, local_files_only=True, **extra)
    pipe.set_progress_bar_config(disable=True)
    unet, vae = pipe.unet, pipe.vae
    encoders = [pipe.text_encoder, pipe.text_encoder_2] if xl else [pipe.text_encoder]
    tokenizers = [pipe.tokenizer, pipe.tokenizer_2] if xl else [pipe.tokenizer]
    for module in (unet, vae, *encoders):
        module.requires_grad_(False)
    # The same layers as Kiln (the bench compares loops, not target choices).
    unet_names = [t.module for t in fam.unet_targets(unet, RANK, RANK / 2)]
    unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK / 2, target_modules=unet_names))
    for encoder in encoders:
        te_names = [t.module for t in fam.text_encoder_targets(encoder, RANK, RANK / 2)]
        # transformers' own add_adapter wants a newer peft than diffusers does; inject directly.
        inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=RANK / 2, target_modules=te_names), encoder)
    params = [p for m in (unet, *encoders) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in unet.parameters() if p.requires_grad], "lr": 1e-4}]
        + [{"params": [p for p in e.parameters() if p.requires_grad], "lr": 2e-5} for e in encoders],
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
    for encoder in encoders:
        encoder.train()
    # SDXL's size/crop ids: every bench image is RESOLUTION square in a square bucket.
    time_ids = torch.tensor(
        [[RESOLUTION, RESOLUTION, 0, 0, RESOLUTION, RESOLUTION]] * BATCH, dtype=torch.float32
    )
    stamps = []
    for step in range(steps + WARMUP):
        picks = [(step * BATCH + i) % len(files) for i in range(BATCH)]
        batch = torch.stack([latents[i] for i in picks])
        ids = [
            tokenizer(
                [captions[i] for i in picks],
                padding="max_length",
                max_length=77,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            for tokenizer in tokenizers
        ]
        noise = torch.randn_like(batch)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (BATCH,))
        noisy = scheduler.add_noise(batch, noise, timesteps)
        if xl:
            first = encoders[0](ids[0], output_hidden_states=True)
            second = encoders[1](ids[1], output_hidden_states=True)
            hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
            added = {"text_embeds": second.text_embeds, "time_ids": time_ids}
            prediction = unet(noisy, timesteps, hidden, added_cond_kwargs=added).sample
        else:
            hidden = encoders[0](ids[0]).last_hidden_state
            prediction = unet(noisy, timesteps, hidden).sample
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
    parser.add_argument("--family", choices=("sd15", "sdxl"), default="sd15", help="tiny model family")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from kiln.engine.models.family import family_named

    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        root = Path(tmp)
        model = family_named(args.family).write_tiny(root / "tiny")
        data = make_dataset(root, images=2 * BATCH * (args.steps + WARMUP))
        base: Times = ([], [])
        kiln: Times = ([], [])
        for index in range(args.rounds):
            for into, (wall, cpu) in (
                (base, baseline_step_times(model, data, args.steps, args.family)),
                (kiln, kiln_step_times(model, data, root / "runs" / str(index), args.steps)),
            ):
                into[0].extend(wall)
                into[1].extend(cpu)
    print(
        f"{args.family}: torch threads {args.threads}; batch {BATCH}, {RESOLUTION} px, fp32, rank {RANK}, "
        "text encoders trained"
    )
    for label, which in (("CPU time", 1), ("wall clock", 0)):
        base_ms, kiln_ms = statistics.median(base[which]) * 1000, statistics.median(kiln[which]) * 1000
        print(
            f"{label:>10}: plain diffusers+peft {base_ms:.1f} ms/step, kiln {kiln_ms:.1f} ms/step "
            f"({len(kiln[which])} steps each): ratio kiln/baseline {kiln_ms / base_ms:.3f} (target <= 1.0)"
        )


if __name__ == "__main__":
    main()
