"""Benchmark: Kiln's training loop on a GPU against a plain diffusers + peft loop, in one run.

An SD 1.5-sized pipeline is built from the configs Kiln ships (``engine/models/configs/sd15``) with
seeded random weights (no download; speed and memory do not depend on the weights). Both
loops train LoRA rank 32 (alpha 16) on the same modules (Kohya's 192 U-Net + 72 text-encoder
layers), at 512 px, in bf16 mixed precision with cached latents, AdamW, clipping at 1.0, at
batch 1 and batch 4. Per loop and batch: the median step time after a warm-up (it/s) and the
peak GPU memory (``torch.cuda.max_memory_allocated``, weights included). The loops alternate
(baseline, Kiln) per batch size, each on a fresh copy of the pipeline.

With ``--family sdxl``: a full-size SDXL pipeline (``engine/models/configs/sdxl``, random
weights) at 1024 px, batch 1, bf16, rank 32 on the U-Net only, with the text encoders frozen
and their outputs cached (computed once before the loop) and gradient checkpointing, as an
SDXL LoRA is trained on a 24 GB card; the baseline is ``train_dreambooth_lora_sdxl.py``'s loop
written plainly (cached prompt embeddings, size/crop time ids).

With ``--sd-scripts PATH`` (a checkout of kohya-ss/sd-scripts, with ``--sd-scripts-python`` the
interpreter of the venv it is installed in): Kiln against sd-scripts' ``train_network.py``
(``sdxl_train_network.py`` for SDXL) instead of the plain loop. Kiln writes the random-weight
pipeline as one checkpoint in the original single-file layout (LDM for SD 1.5, SGM for SDXL),
which sd-scripts and Kiln both load, and the two train it with the settings above, each run in
a fresh process, alternating for ``--rounds`` rounds (who goes first alternates too). Figures
per run: the median step time after the warm-up, from the moments each side reported its steps
(:mod:`bench.step_times`), and the peak memory (:mod:`bench.peak_probe`: CUDA allocator peak on
a GPU, peak resident set size on the CPU); per side the median over rounds (peak: the largest),
and the ratios kiln/sd-scripts. sd-scripts builds the full-size architectures only, so it cannot
load the tiny model: on a CPU use ``--resolution 64`` with the full-size SD 1.5 model instead.

Run from the repository root:  python -m bench.train_gpu [--steps 30] [--batches 1 4] [--family sdxl]
Smoke run without a GPU:       python -m bench.train_gpu --device cpu --tiny --steps 2 [--family sdxl]
Against sd-scripts:            python -m bench.train_gpu --sd-scripts ~/sd-scripts \\
                                   --sd-scripts-python ~/sd-scripts/venv/bin/python [--family sdxl]
  on a CPU:                    ... --device cpu --resolution 64 --batches 1 --steps 6 --warmup 2
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import gc
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from kiln.engine.train.config import parse_override
from PIL import Image

from bench.step_times import median_step

RANK = 32
ALPHA = 16.0
UNET_LR = 1e-4
TE_LR = 2e-5
IMAGES = 8
SEED = 42
REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="default: cuda")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model at 64 px (smoke runs)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per loop and batch size")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument(
        "--batches", type=int, nargs="+", default=None, help="batch sizes (default 1 4; SDXL: 1)"
    )
    parser.add_argument("--family", choices=("sd15", "sdxl"), default="sd15", help="model family")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument(
        "--resolution", type=int, default=None, help="training resolution (default 512; SDXL 1024; --tiny 64)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--json-out", type=Path, default=None, metavar="FILE", help="also write the figures to FILE as JSON"
    )
    parser.add_argument(
        "--sd-scripts",
        type=Path,
        default=None,
        metavar="PATH",
        help="a kohya-ss/sd-scripts checkout: compare Kiln with it instead of the plain loop",
    )
    parser.add_argument(
        "--sd-scripts-python",
        default=sys.executable,
        metavar="PYTHON",
        help="the interpreter of sd-scripts' venv (default: this one)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds against sd-scripts")
    parser.add_argument(
        "--kiln-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config key for Kiln's side as kiln train --set takes it, e.g. train.compile=true "
        "(repeatable): one speed option measured against the same baseline",
    )
    return parser.parse_args(argv)


def build_pipeline(tiny: bool, family: str = "sd15"):
    """The pipeline in memory on the CPU: SD 1.5's or SDXL's shapes (or the tiny model's), random weights."""
    import torch

    if family == "sdxl":
        return _build_sdxl(tiny)
    if tiny:
        from kiln.engine.models.tiny import build_tiny_pipeline

        return build_tiny_pipeline()
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from kiln.engine.models.loading import SD15_CONFIG_DIR
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SD15_CONFIG_DIR / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(SD15_CONFIG_DIR / "vae"))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(SD15_CONFIG_DIR / "text_encoder"))
    tokenizer = CLIPTokenizer.from_pretrained(SD15_CONFIG_DIR / "tokenizer")
    scheduler = PNDMScheduler.from_config(PNDMScheduler.load_config(SD15_CONFIG_DIR / "scheduler"))
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _build_sdxl(tiny: bool):
    import torch

    if tiny:
        from kiln.engine.models.tiny_sdxl import build_tiny_sdxl_pipeline

        return build_tiny_sdxl_pipeline()
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from kiln.engine.models.loading import SDXL_CONFIG_DIR, sdxl_config_dir
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        configs = sdxl_config_dir(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(configs / "tokenizer")
        tokenizer_2 = CLIPTokenizer.from_pretrained(configs / "tokenizer_2")
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SDXL_CONFIG_DIR / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(SDXL_CONFIG_DIR / "vae"))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(SDXL_CONFIG_DIR / "text_encoder"))
    text_encoder_2 = CLIPTextModelWithProjection(
        CLIPTextConfig.from_pretrained(SDXL_CONFIG_DIR / "text_encoder_2")
    )
    scheduler = EulerDiscreteScheduler.from_config(
        EulerDiscreteScheduler.load_config(SDXL_CONFIG_DIR / "scheduler")
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )


def make_dataset(root: Path, resolution: int) -> Path:
    folder = root / "data" / "20_bench"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(IMAGES):
        pixels = rng.integers(0, 255, (resolution, resolution, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")
        (folder / f"{index:03d}.txt").write_text(f"bench image {index}, red, blue", encoding="utf-8")
    return folder.parent


def kiln_mapping(
    base: Path, data: Path, runs: Path, args, batch: int, resolution: int, name: str
) -> tuple[dict, dict | None]:
    """Kiln's config (mapping and overrides) for one timed run: the settings both peers share."""
    xl = args.family == "sdxl"
    mapping = {
        "model": {"base": str(base)},
        "dataset": {
            "path": str(data),
            "resolution": resolution,
            "min_bucket_reso": min(256, resolution),
            "max_bucket_reso": max(1024, resolution),
        },
        "network": {"rank": RANK, "alpha": ALPHA},
        "train": {
            "epochs": 1,
            "max_steps": args.warmup + args.steps,
            "batch_size": batch,
            "precision": args.precision,
            "unet_lr": UNET_LR,
            "text_encoder_lr": TE_LR,
            "gradient_checkpointing": xl,
            "seed": SEED,
        },
        "output": {"dir": str(runs), "name": name},
    }
    # SDXL: the U-Net only, text-encoder outputs cached (what a 24 GB card trains).
    overrides: dict = {"network.train_text_encoder": False} if xl else {}
    overrides.update(parse_override(text) for text in getattr(args, "kiln_set", []))
    return mapping, overrides or None


def kiln_run(pipe, base: Path, data: Path, runs: Path, args, batch: int, resolution: int) -> dict:
    """Kiln's Trainer on a copy of ``pipe`` (loaded from memory instead of disk)."""
    import kiln.engine.models.sd15 as sd15
    import kiln.engine.models.sdxl as sdxl
    from kiln.engine.runs.control import controlled_trainer
    from kiln.engine.runs.layout import create_run_dir
    from kiln.engine.train.config import config_from_mapping

    mapping, overrides = kiln_mapping(base, data, runs, args, batch, resolution, f"bench-b{batch}")
    config = config_from_mapping(mapping, overrides=overrides)
    xl = args.family == "sdxl"
    stamps: list[float] = []

    def on_event(event: dict) -> None:
        if event["type"] == "step":
            stamps.append(time.perf_counter())

    module = sdxl if xl else sd15
    load_pipeline = module.load_pipeline
    module.load_pipeline = lambda base, *rest, **kw: copy.deepcopy(pipe)  # type: ignore[assignment]  # the bench times the loop
    try:
        _reset_memory(args.device)
        trainer = controlled_trainer(
            config, create_run_dir(config), listeners=[on_event], cpu=args.device == "cpu"
        )
        result = trainer.run()
    finally:
        module.load_pipeline = load_pipeline  # type: ignore[assignment]
    if result.state != "done":
        raise SystemExit(f"bench.train_gpu: Kiln's run {result.state}: {result.error}")
    peak = _peak_memory(args.device)
    if peak is not None:  # the run's memory probe reset the counters after loading: its own peak covers it
        from kiln.engine.train.memory import run_peak_bytes

        peak = max(peak, run_peak_bytes().get("cuda", 0))
    del trainer
    return _figures(stamps, args.warmup, peak)


def baseline_run(pipe, data: Path, args, batch: int) -> dict:
    """A plain loop as the diffusers examples write it: peft adapters, cached latents, AdamW."""
    if args.family == "sdxl":
        return baseline_run_sdxl(pipe, data, args, batch)
    import torch
    import torch.nn.functional as F
    from kiln.engine.models.sd15 import text_encoder_targets, unet_targets
    from peft import LoraConfig, inject_adapter_in_model

    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    _reset_memory(args.device)
    pipe = copy.deepcopy(pipe)
    unet, text_encoder, vae, tokenizer = pipe.unet, pipe.text_encoder, pipe.vae, pipe.tokenizer
    for module in (unet, text_encoder, vae):
        module.requires_grad_(False)
    unet_names = [t.module for t in unet_targets(unet, RANK, ALPHA)]
    te_names = [t.module for t in text_encoder_targets(text_encoder, RANK, ALPHA)]
    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=unet_names), unet)
    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=te_names), text_encoder)
    vae.to(device, torch.float32)
    for model in (unet, text_encoder):
        model.to(device)
        for name, param in model.named_parameters():
            # Frozen weights in the training dtype, adapters in float32 (as Kohya and Kiln keep them).
            param.data = param.data.to(torch.float32 if "lora_" in name else dtype)
    unet_params = [p for p in unet.parameters() if p.requires_grad]
    te_params = [p for p in text_encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": unet_params, "lr": UNET_LR}, {"params": te_params, "lr": TE_LR}], weight_decay=0.01
    )
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    files = sorted(data.rglob("*.png"))
    with torch.no_grad():
        latents = []
        for path in files:
            pixels = torch.from_numpy(
                np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1
            )
            encoded = vae.encode(pixels.permute(2, 0, 1)[None].to(device)).latent_dist.mode()
            latents.append(encoded[0] * vae.config.scaling_factor)
        captions = [path.with_suffix(".txt").read_text(encoding="utf-8") for path in files]
    unet.train()
    text_encoder.train()
    stamps = []
    for step in range(args.warmup + args.steps):
        picks = [(step * batch + i) % len(files) for i in range(batch)]
        sample = torch.stack([latents[i] for i in picks])
        ids = tokenizer(
            [captions[i] for i in picks],
            padding="max_length",
            max_length=77,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        noise = torch.randn_like(sample)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), device=device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            hidden = text_encoder(ids).last_hidden_state
            prediction = unet(
                scheduler.add_noise(sample, noise, timesteps).to(dtype), timesteps, hidden
            ).sample
        loss = F.mse_loss(prediction.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet_params + te_params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        stamps.append(time.perf_counter())
    peak = _peak_memory(args.device)
    del pipe, unet, text_encoder, vae, optimizer, latents
    return _figures(stamps, args.warmup, peak)


def baseline_run_sdxl(pipe, data: Path, args, batch: int) -> dict:
    """``train_dreambooth_lora_sdxl.py``'s loop written plainly: U-Net adapters only, prompt
    embeddings and pooled embeddings computed once, size/crop time ids, gradient checkpointing."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from kiln.engine.models.sdxl import unet_targets
    from peft import LoraConfig, inject_adapter_in_model

    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    _reset_memory(args.device)
    pipe = copy.deepcopy(pipe)
    unet, vae = pipe.unet, pipe.vae
    encoders, tokenizers = (pipe.text_encoder, pipe.text_encoder_2), (pipe.tokenizer, pipe.tokenizer_2)
    for module in (unet, vae, *encoders):
        module.requires_grad_(False)
    inject_adapter_in_model(
        LoraConfig(
            r=RANK, lora_alpha=ALPHA, target_modules=[t.module for t in unet_targets(unet, RANK, ALPHA)]
        ),
        unet,
    )
    vae.to(device, torch.float32)
    files = sorted(data.rglob("*.png"))
    captions = [path.with_suffix(".txt").read_text(encoding="utf-8") for path in files]
    with torch.no_grad():
        latents = []
        for path in files:
            pixels = torch.from_numpy(
                np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1
            )
            encoded = vae.encode(pixels.permute(2, 0, 1)[None].to(device)).latent_dist.mode()
            latents.append(encoded[0] * vae.config.scaling_factor)
        hidden_rows, pooled_rows = [], []
        for encoder in encoders:
            encoder.to(device, dtype)
        for caption in captions:
            outputs = [
                encoder(
                    tokenizer(
                        caption, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
                    ).input_ids.to(device),
                    output_hidden_states=True,
                )
                for encoder, tokenizer in zip(encoders, tokenizers, strict=True)
            ]
            hidden_rows.append(torch.cat([out.hidden_states[-2] for out in outputs], dim=-1)[0])
            pooled_rows.append(outputs[1].text_embeds[0])
        for encoder in encoders:
            encoder.to("cpu")
    unet.to(device)
    for name, param in unet.named_parameters():
        param.data = param.data.to(torch.float32 if "lora_" in name else dtype)
    unet.enable_gradient_checkpointing()
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": params, "lr": UNET_LR}], weight_decay=0.01)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    size = latents[0].shape[-1] * 8
    time_ids = torch.tensor([[size, size, 0, 0, size, size]] * batch, dtype=torch.float32, device=device)
    stamps = []
    for step in range(args.warmup + args.steps):
        picks = [(step * batch + i) % len(files) for i in range(batch)]
        sample = torch.stack([latents[i] for i in picks])
        hidden = torch.stack([hidden_rows[i] for i in picks])
        added = {"text_embeds": torch.stack([pooled_rows[i] for i in picks]), "time_ids": time_ids}
        noise = torch.randn_like(sample)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), device=device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            noisy = scheduler.add_noise(sample, noise, timesteps).to(dtype)
            prediction = unet(noisy, timesteps, hidden, added_cond_kwargs=added).sample
        loss = F.mse_loss(prediction.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        stamps.append(time.perf_counter())
    peak = _peak_memory(args.device)
    del pipe, unet, vae, optimizer, latents
    return _figures(stamps, args.warmup, peak)


def _figures(stamps: list[float], warmup: int, peak: int | None) -> dict:
    """Figures of a loop timed in this process: ``stamps[i]`` when step ``i + 1`` was reported
    (Kiln on a GPU reports its steps in bursts: :func:`bench.step_times.median_step` allows for that)."""
    median, timed = median_step(dict(enumerate(stamps, start=1)), warmup)
    return {
        "ms_per_step": round(median * 1000, 2),
        "it_s": round(1 / median, 3),
        "peak_gib": peak and round(peak / 2**30, 2),
        "steps": timed,
    }


def write_random_checkpoint(path: Path, family_name: str) -> Path:
    """The full-size random-weight pipeline (:func:`build_pipeline`) as one fp16 checkpoint in the
    family's original single-file layout (LDM / SGM keys, as A1111 models come), written by Kiln's
    checkpoint writer: the file both sd-scripts and Kiln load in the comparison."""
    import torch
    from kiln.engine.models.family import family_named
    from kiln.engine.train.checkpoint_file import write_checkpoint_file

    family = family_named(family_name)
    pipe = build_pipeline(False, family_name)
    # Cast in place first (the file is fp16 either way): the writer's fp16 copy of an fp32 SDXL
    # beside it took the process past 24 GB.
    pipe.to(torch.float16)
    encoders = [getattr(pipe, slot.attr) for slot in family.text_encoders]
    metadata = {
        "modelspec.architecture": family.checkpoint_architecture,
        "modelspec.title": "Kiln benchmark, random weights",
    }
    write_checkpoint_file(path, family, pipe.unet, pipe.vae, encoders, torch.float16, metadata)
    del pipe, encoders
    gc.collect()
    return path


@dataclass(frozen=True)
class PeerRuns:
    """What every run of the sd-scripts comparison shares.

    Attributes:
        args: The bench's arguments.
        root: Scratch folder (checkpoint, dataset, run folders, probe reports).
        logs: Folder the runs' logs are kept in (it outlives the scratch folder).
        python: sd-scripts' interpreter.
        script: sd-scripts' training script.
        tokenizers: The tokenizer cache sd-scripts reads offline.
        env: Both sides' environment.
    """

    args: argparse.Namespace
    root: Path
    logs: Path
    python: Path
    script: Path
    tokenizers: Path
    env: dict[str, str]

    def run(self, side: str, settings: Any, index: int) -> dict:
        """One run of ``side`` (``kiln`` or ``sd_scripts``) in a fresh process under the peak
        probe, its output stamped as it arrives: its figures (``sd_scripts_peer.figures``)."""
        from bench import sd_scripts_peer as peer

        tag = f"b{settings.batch}-r{index}"
        report = self.root / f"{side}-{tag}.peak.json"
        log = self.logs / f"{side}-{tag}.log"
        if side == "sd_scripts":
            out = self.root / "sd-scripts-out" / tag
            command = peer.sd_scripts_command(
                self.python, self.script, settings, out, self.tokenizers, report
            )
            cwd, parse, name = self.script.parent, peer.sd_scripts_bar, "sd-scripts"
        else:
            mapping, overrides = kiln_mapping(
                settings.checkpoint,
                settings.data,
                self.root / "runs",
                self.args,
                settings.batch,
                settings.resolution,
                f"bench-{tag}",
            )
            spec = self.root / f"kiln-{tag}.json"
            spec.write_text(
                json.dumps({"mapping": mapping, "overrides": overrides, "device": self.args.device}),
                encoding="utf-8",
            )
            command = [sys.executable, str(peer.PROBE), str(report), "-m", "bench.kiln_side", str(spec)]
            cwd, parse, name = REPO, peer.kiln_step_line, "Kiln"
        output = peer.run_stamped(command, parse, cwd=cwd, env=self.env, log=log, report=report)
        result = peer.figures(output, self.args.warmup, self.args.device, name)
        if side == "kiln":
            result["estimate_gib"] = peer.kiln_estimate_gib(log)
        return result


def _side_summary(runs: list[dict]) -> dict:
    """One side's figures over the rounds: median speed, largest peak."""
    peaks = [run["peak_gib"] for run in runs if run["peak_gib"] is not None]
    summary = {
        "it_s": float(f"{statistics.median(run['it_s'] for run in runs):.4g}"),
        "ms_per_step": round(statistics.median(run["ms_per_step"] for run in runs), 2),
        "peak_gib": max(peaks) if peaks else None,
        "steps": runs[0]["steps"],
    }
    estimates = [run["estimate_gib"] for run in runs if run.get("estimate_gib") is not None]
    if estimates:  # Kiln's side: its own estimate, and how it compares with the measured peak
        summary["estimate_gib"] = max(estimates)
        if summary["peak_gib"]:
            summary["estimate_ratio"] = round(max(estimates) / summary["peak_gib"], 3)
    return summary


def sd_scripts_comparison(args, resolution: int, batches: list[int]) -> dict:
    """Kiln against sd-scripts, alternating, per batch size: the report's ``results`` and where
    the runs' logs are.

    Raises:
        KilnError: The checkout or interpreter is not usable (UsageError), or a run failed (RunError).
    """
    from bench import sd_scripts_peer as peer

    script = peer.checkout_script(args.sd_scripts, args.family)
    python = peer.python_of(args.sd_scripts_python)
    logs = Path(tempfile.mkdtemp(prefix="kiln-bench-sd-scripts-logs-"))
    results = []
    with tempfile.TemporaryDirectory(prefix="kiln-bench-sd-scripts-") as tmp:
        root = Path(tmp)
        # Written by a process of its own, so that this one (the children's parent) never holds
        # the full-size pipeline: on a CPU both sides need the memory.
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            path = root / f"random-{args.family}.safetensors"
            checkpoint = pool.submit(write_random_checkpoint, path, args.family).result()
        data = make_dataset(root, resolution)
        runs = PeerRuns(
            args=args,
            root=root,
            logs=logs,
            python=python,
            script=script,
            tokenizers=peer.write_tokenizer_cache(root / "tokenizers", args.family),
            env=peer.child_environment(args.device),
        )
        for batch in batches:
            settings = peer.PeerSettings(
                family=args.family,
                checkpoint=checkpoint,
                data=data,
                resolution=resolution,
                batch=batch,
                steps=args.warmup + args.steps,
                rank=RANK,
                alpha=ALPHA,
                unet_lr=UNET_LR,
                text_encoder_lr=TE_LR,
                precision=args.precision,
                seed=SEED,
            )
            rounds = []
            for index in range(1, args.rounds + 1):
                # Who goes first alternates, so a machine warming up or throttling favours neither.
                order = ("sd_scripts", "kiln") if index % 2 else ("kiln", "sd_scripts")
                row: dict = {"round": index, "first": order[0]}
                for side in order:
                    row[side] = runs.run(side, settings, index)
                rounds.append(row)
            kiln = _side_summary([row["kiln"] for row in rounds])
            sds = _side_summary([row["sd_scripts"] for row in rounds])
            results.append(
                {
                    "batch": batch,
                    "rounds": rounds,
                    "kiln": kiln,
                    "sd_scripts": sds,
                    "ratio_it_s": round(kiln["it_s"] / sds["it_s"], 3),
                    "ratio_peak": round(kiln["peak_gib"] / sds["peak_gib"], 3)
                    if kiln["peak_gib"] and sds["peak_gib"]
                    else None,
                }
            )
    source = {
        "checkout": str(script.parent),
        "commit": peer.checkout_commit(script.parent),
        "python": str(python),
    }
    return {
        "sd_scripts": source,
        "logs": str(logs),
        "results": results,
    }


def _reset_memory(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_memory(device: str) -> int | None:
    import torch

    if device != "cuda":
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    peer = args.sd_scripts is not None
    if peer and args.tiny:
        sys.stderr.write(
            "bench.train_gpu: sd-scripts builds the full-size models and cannot load the tiny one; "
            "drop --tiny (on a CPU: --resolution 64)\n"
        )
        return 2
    from kiln.engine.errors import ConfigError
    from kiln.engine.train.config import config_from_mapping

    try:  # --kiln-set checked as a run checks its config (keys and values), before anything runs
        mapping, overrides = kiln_mapping(REPO, REPO, REPO, args, 1, 512, "check")
        config_from_mapping(mapping, overrides=overrides, overrides_source="--kiln-set")
    except ConfigError as exc:
        sys.stderr.write(f"bench.train_gpu: {str(exc).replace('--set ', '--kiln-set ')}\n")
        return 2
    if peer:
        from kiln.engine.errors import KilnError

        from bench import sd_scripts_peer

        try:
            sd_scripts_peer.checkout_script(args.sd_scripts, args.family)
            sd_scripts_peer.python_of(args.sd_scripts_python)
        except KilnError as exc:
            sys.stderr.write(f"bench.train_gpu: {exc}\n")
            return 2
    import torch
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.stderr.write(
            "bench.train_gpu: no CUDA GPU on this machine; run it on a GPU server, "
            "or use --device cpu --tiny for a smoke run\n"
        )
        return 2
    if args.warmup < 1 or args.steps < 2 or args.rounds < 1:
        sys.stderr.write("bench.train_gpu: --warmup and --rounds must be at least 1 and --steps at least 2\n")
        return 2
    if args.device == "cuda":
        # TF32 for the plain loop too, as Kiln's train.tf32 sets it (both APIs in agreement).
        torch.set_float32_matmul_precision("high")
    xl = args.family == "sdxl"
    resolution = args.resolution or (64 if args.tiny else (1024 if xl else 512))
    batches = args.batches or ([1] if xl else [1, 4])
    card = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    report = {
        "device": card,
        "model": ("tiny" if args.tiny else "random") + f"-{args.family}",
        "family": args.family,
        "resolution": resolution,
        "precision": args.precision,
        "rank": RANK,
        "kiln_set": args.kiln_set,
    }
    if peer:
        from kiln.engine.errors import KilnError, UsageError

        try:
            report.update(peer="sd-scripts", **sd_scripts_comparison(args, resolution, batches))
        except KilnError as exc:
            sys.stderr.write(f"bench.train_gpu: {exc}\n")
            return 2 if isinstance(exc, UsageError) else 1
    else:
        report["results"] = baseline_comparison(args, resolution, batches)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    trained = (
        "U-Net only, text-encoder outputs cached, gradient checkpointing" if xl else "text encoder trained"
    )
    options = f"; kiln with {', '.join(args.kiln_set)}" if args.kiln_set else ""
    print(f"{card}: {report['model']}, {resolution} px, {args.precision}, rank {RANK}, {trained}{options}")
    if peer:
        print_sd_scripts_comparison(report, args.device)
        return 0
    for row in report["results"]:
        base, kiln = row["baseline"], row["kiln"]
        memory = (
            f", peak {base['peak_gib']} GiB vs {kiln['peak_gib']} GiB" if base["peak_gib"] is not None else ""
        )
        ratio = kiln["it_s"] / base["it_s"]
        print(
            f"batch {row['batch']}: plain diffusers+peft {base['it_s']:.2f} it/s, "
            f"kiln {kiln['it_s']:.2f} it/s (ratio kiln/baseline {ratio:.3f}, {kiln['steps']} steps){memory}"
        )
    return 0


def baseline_comparison(args, resolution: int, batches: list[int]) -> list[dict]:
    """Kiln's loop against the plain diffusers + peft loop, in this process, per batch size."""
    xl = args.family == "sdxl"
    results = []
    with tempfile.TemporaryDirectory(prefix="kiln-bench-gpu-") as tmp:
        root = Path(tmp)
        pipe = build_pipeline(args.tiny, args.family)
        if args.tiny:
            from kiln.engine.models.family import family_named

            base = family_named(args.family).write_tiny(root / "tiny")
        else:
            from kiln.engine.models.loading import SD15_CONFIG_DIR, SDXL_CONFIG_DIR

            base = SDXL_CONFIG_DIR if xl else SD15_CONFIG_DIR  # configs only: the weights come from memory
        data = make_dataset(root, resolution)
        for batch in batches:
            base_figures = baseline_run(pipe, data, args, batch)
            kiln_figures = kiln_run(pipe, base, data, root / "runs", args, batch, resolution)
            results.append({"batch": batch, "baseline": base_figures, "kiln": kiln_figures})
    return results


def print_sd_scripts_comparison(report: dict, device: str) -> None:
    """The comparison with sd-scripts as text: per batch size, each side's median it/s and peak
    memory over the rounds, and the ratios kiln/sd-scripts."""
    source = report["sd_scripts"]
    memory = "CUDA allocator peak" if device == "cuda" else "peak RSS"
    print(f"kohya sd-scripts {source['commit'] or '(not a git checkout)'} at {source['checkout']}")
    for row in report["results"]:
        kiln, sds = row["kiln"], row["sd_scripts"]
        line = (
            f"batch {row['batch']}: sd-scripts {sds['it_s']:.3f} it/s, kiln {kiln['it_s']:.3f} it/s "
            f"(ratio kiln/sd-scripts {row['ratio_it_s']:.3f}; median of {len(row['rounds'])} alternating "
            f"rounds, {kiln['steps']} timed steps each)"
        )
        if row["ratio_peak"] is not None:
            line += (
                f"; {memory} sd-scripts {sds['peak_gib']} GiB, kiln {kiln['peak_gib']} GiB "
                f"(ratio {row['ratio_peak']:.3f})"
            )
        if kiln.get("estimate_ratio") is not None:
            line += (
                f"; kiln's own estimate {kiln['estimate_gib']} GiB ({kiln['estimate_ratio']:.3f} of its peak)"
            )
        print(line)
        for run in row["rounds"]:
            print(
                f"  round {run['round']} ({run['first'].replace('_', '-')} first): "
                f"sd-scripts {run['sd_scripts']['it_s']:.3f} it/s {run['sd_scripts']['peak_gib']} GiB, "
                f"kiln {run['kiln']['it_s']:.3f} it/s {run['kiln']['peak_gib']} GiB"
            )
    print(f"logs: {report['logs']}")


if __name__ == "__main__":
    sys.exit(main())
