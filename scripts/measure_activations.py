"""Measure the activation memory of a full-size U-Net's LoRA training step, for the plan's estimate.

The plan advisor and the pre-run check estimate memory before any model is loaded, so they
need each family's activation bytes per latent pixel as a constant
(``kiln.engine.plan.memory.ACTIVATIONS``). This script measures them with the trainer's own
probe (:mod:`kiln.engine.train.memory_probe`): the family's full-size U-Net built from the
configs Kiln ships (random weights), LoRA rank 32 on Kohya's modules, one random latent at
two sizes, forward + backward (the probe's own step, ``loss_step``) under the precision's
autocast, with and without gradient checkpointing. On a GPU it reads CUDA's allocator; on a
Linux CPU the resident high-water mark (bf16 autocast runs there; fp16 needs a GPU).

    python scripts/measure_activations.py --family sd15 [--device cuda] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys


def build_unet(family: str, dtype):
    import torch
    from diffusers import UNet2DConditionModel
    from kiln.engine.models.loading import SD15_CONFIG_DIR, SDXL_CONFIG_DIR

    torch.manual_seed(0)
    folder = SDXL_CONFIG_DIR if family == "sdxl" else SD15_CONFIG_DIR
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
    return unet.to(dtype)


def measure(family: str, precision: str, checkpointing: bool, device: str, latent: int) -> dict:
    import torch
    import torch.nn.functional as F
    from kiln.engine.models.family import family_named
    from kiln.engine.train.memory import PeakMeter
    from kiln.engine.train.memory_probe import fit_line, loss_step, measure_steps
    from peft import LoraConfig, inject_adapter_in_model

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    unet = build_unet(family, dtype)
    unet.requires_grad_(False)
    targets = [t.module for t in family_named(family).unet_targets(unet, 32, 16.0)]
    inject_adapter_in_model(LoraConfig(r=32, lora_alpha=16, target_modules=targets), unet)
    for name, param in unet.named_parameters():
        if "lora_" in name:
            param.data = param.data.float()
    unet.to(device)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    trainable = [p for p in unet.parameters() if p.requires_grad]
    context = unet.config.cross_attention_dim
    xl = family == "sdxl"
    hidden = torch.randn((1, 77, context), generator=torch.Generator("cpu").manual_seed(1)).to(device)

    def loss_of(latents, noise, timesteps):
        batch = latents.shape[0]
        added = (
            {
                "text_embeds": torch.zeros(batch, 1280, device=device),
                "time_ids": torch.zeros(batch, 6, device=device),
            }
            if xl
            else None
        )
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32):
            out = unet(latents.to(dtype), timesteps, hidden.expand(batch, -1, -1), added_cond_kwargs=added)
        return F.mse_loss(out.sample.float(), noise, reduction="none").mean(dim=(1, 2, 3))

    step = loss_step(loss_of, trainable, torch.device(device))
    meter = PeakMeter(torch.device(device))
    shapes = [(latent // 2, latent // 2, 1), (latent, latent, 1)]
    fit = fit_line(measure_steps(step, shapes, meter))
    return {
        "family": family,
        "precision": precision,
        "gradient_checkpointing": checkpointing,
        "device": device,
        "intercept_mib": round(fit.intercept / 2**20, 1),
        "bytes_per_latent_px": round(fit.per_latent_px),
        "points": [[area, round(peak / 2**20, 1)] for area, peak in fit.points],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("sd15", "sdxl"), default="sd15")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("bf16", "fp16", "fp32"), nargs="+", default=["bf16", "fp32"])
    parser.add_argument("--latent", type=int, default=32, help="the larger probe's latent side (default 32)")
    parser.add_argument("--checkpointing", choices=("off", "on", "both"), default="both")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = [
        measure(args.family, precision, checkpointing, args.device, args.latent)
        for precision in args.precision
        for checkpointing in {"off": (False,), "on": (True,), "both": (False, True)}[args.checkpointing]
    ]
    for row in rows:
        print(json.dumps(row) if args.json else row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
