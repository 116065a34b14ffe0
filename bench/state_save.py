"""Benchmark: what a resume-state save costs, against a plain ``torch.save`` of the same state.

The state is the size Kiln saves for SD 1.5 with LoRA rank 32 on Kohya's 192 U-Net and 72
text-encoder modules: the adapters plus AdamW's two moments, float32 (the shapes come from
the real SD 1.5 configs, built on the meta device, so no weights are made). Kiln's save
(``kiln.engine.train.checkpoint.write_save``: temp folder, fsync, SHA-256 manifest, rename, prune)
and the check a resume makes (``save_problem``: sizes and SHA-256) are timed against a
plain ``torch.save`` to one file, in alternating rounds; medians are reported.

Run from the repository root:  python -m bench.state_save [--rounds 5] [--rank 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def state_payload(rank: int) -> dict:
    """Random tensors shaped like Kiln's resume state for SD 1.5 at ``rank``."""
    import torch
    from diffusers import UNet2DConditionModel
    from kiln.engine.models.loading import SD15_CONFIG_DIR
    from kiln.engine.models.sd15 import text_encoder_targets, unet_targets
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SD15_CONFIG_DIR / "unet"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(SD15_CONFIG_DIR / "text_encoder"))
    shapes = []
    for model, targets in (
        (unet, unet_targets(unet, rank, rank / 2)),
        (text_encoder, text_encoder_targets(text_encoder, rank, rank / 2)),
    ):
        modules = dict(model.named_modules())
        for target in targets:
            weight = modules[target.module].weight
            fan_in = weight.shape[1] * (weight[0, 0].numel() if weight.dim() > 2 else 1)
            shapes += [(rank, fan_in), (weight.shape[0], rank)]
    generator = torch.Generator().manual_seed(0)
    adapters = [torch.randn(shape, generator=generator) for shape in shapes]
    moments = {
        index: {"step": torch.tensor(100.0), "exp_avg": torch.randn_like(t), "exp_avg_sq": torch.rand_like(t)}
        for index, t in enumerate(adapters)
    }
    return {
        "state": {"step": 100, "epoch": 3, "batch_in_epoch": 7, "losses": [0.1] * 7},
        "adapters": adapters,
        "optimizer": {"state": moments, "param_groups": [{"lr": 1e-4, "params": list(range(len(adapters)))}]},
        "scheduler": {"last_epoch": 100, "_step_count": 101},
        "torch_rng": torch.get_rng_state(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp folder)")
    args = parser.parse_args()
    import torch
    from kiln.engine.train.checkpoint import PAYLOAD, save_problem, write_save

    payload = state_payload(args.rank)
    params = sum(t.numel() for t in payload["adapters"])
    with tempfile.TemporaryDirectory(prefix="kiln-bench-state-", dir=args.dir) as tmp:
        root = Path(tmp)
        plain, kiln, check = [], [], []
        for index in range(args.rounds):
            started = time.perf_counter()
            torch.save(payload, root / f"plain-{index}.pt")
            plain.append(time.perf_counter() - started)
            os.unlink(root / f"plain-{index}.pt")
            started = time.perf_counter()
            path = write_save(root / "state", 100 + index, payload, {"epoch": 3})
            kiln.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert save_problem(path) is None
            check.append(time.perf_counter() - started)
        size = (path / PAYLOAD).stat().st_size
    base, ours, verify = (statistics.median(times) for times in (plain, kiln, check))
    print(
        f"SD 1.5 rank {args.rank}: {params / 1e6:.1f}M adapter parameters, "
        f"state file {size / 2**20:.0f} MiB, "
        f"{args.rounds} rounds"
    )
    print(
        f"plain torch.save {base:.2f} s, Kiln's atomic save {ours:.2f} s "
        f"(ratio {ours / base:.2f}), resume check {verify:.2f} s"
    )


if __name__ == "__main__":
    main()
