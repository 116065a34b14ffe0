"""Benchmark: tiled super-resolution against the whole image at once, and Lanczos throughput.

An ESRGAN-architecture model (random weights in Real-ESRGAN's layout, loaded through spandrel
exactly as a user's 4x-UltraSharp file would be) upscales one photo-like image 4x, once as a
whole and once in overlapping tiles (``kiln fixup``'s way). Each variant runs in its own
process so its peak memory (max RSS, less the RSS once the model is loaded) is its own. The
outputs are compared: the largest difference in 8-bit grey levels.

Then Lanczos, what ``kiln fixup`` does without a model: images per second taking a 400x320
image to its 576x461 bucket size.

Run from the repository root:
    python -m bench.fixup [--size 384] [--features 32] [--blocks 2] [--tile 128] [--overlap 32]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def child(model: Path, size: int, tile: int, overlap: int, out: Path) -> None:
    """One variant in this process: print its time and memory as JSON, save its output."""
    from kiln.engine.fixup.upscaler import load_upscaler

    from tests.esrgan import import_spandrel_for_tests
    from tests.imagegen import photo_like

    import_spandrel_for_tests()
    upscaler = load_upscaler(model, tile=tile)
    upscaler.overlap = overlap
    pixels = np.asarray(photo_like((size, size), seed=3), dtype=np.float32) / 255
    upscaler.run(pixels[:32, :32])  # warm the kernels
    base_kb = _rss_kb()
    started = time.perf_counter()
    result = upscaler.run(pixels)
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(out, result)
    print(json.dumps({"seconds": seconds, "peak_mb": (peak_kb - base_kb) / 1024}))


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_variant(model: Path, size: int, tile: int, overlap: int, out: Path) -> dict:
    command = [sys.executable, "-m", "bench.fixup", "--child", str(model), "--size", str(size)]
    command += ["--tile", str(tile), "--overlap", str(overlap), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def lanczos_rate(count: int) -> float:
    from kiln.engine.fixup.ops import lanczos

    from tests.imagegen import photo_like

    images = [photo_like((400, 320), seed=seed) for seed in range(4)]
    lanczos(images[0], (576, 461))
    started = time.perf_counter()
    for index in range(count):
        lanczos(images[index % 4], (576, 461))
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384, help="input side in pixels (output is 4x)")
    parser.add_argument("--features", type=int, default=32, help="ESRGAN feature channels (Real-ESRGAN: 64)")
    parser.add_argument("--blocks", type=int, default=2, help="RRDB blocks (Real-ESRGAN: 23)")
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--lanczos", type=int, default=60, help="images for the Lanczos rate")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.size, args.tile, args.overlap, args.out)
        return
    import torch
    from safetensors.torch import save_file

    from tests.esrgan import esrgan_state

    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "esrgan.safetensors"
        state = esrgan_state(features=args.features, blocks=args.blocks)
        save_file(state, str(model))
        params = sum(t.numel() for t in state.values())
        print(
            f"ESRGAN x4, {args.features} features, {args.blocks} block(s), {params / 1e6:.2f} M parameters; "
            f"{args.size}x{args.size} -> {args.size * 4}x{args.size * 4} on the CPU "
            f"({torch.get_num_threads()} threads)"
        )
        whole = run_variant(model, args.size, 0, 0, Path(folder) / "whole.npy")
        tiled = run_variant(model, args.size, args.tile, args.overlap, Path(folder) / "tiled.npy")
        difference = np.abs(np.load(Path(folder) / "whole.npy") - np.load(Path(folder) / "tiled.npy")).max()
    print(f"{'variant':<28}{'seconds':>10}{'peak MB':>10}")
    print(f"{'whole image':<28}{whole['seconds']:>10.2f}{whole['peak_mb']:>10.0f}")
    label = f"tiles {args.tile} px, overlap {args.overlap}"
    print(f"{label:<28}{tiled['seconds']:>10.2f}{tiled['peak_mb']:>10.0f}")
    print(
        f"tiled/whole: time {tiled['seconds'] / whole['seconds']:.2f}x, "
        f"peak memory {tiled['peak_mb'] / whole['peak_mb']:.2f}x; "
        f"largest difference {difference * 255:.4f} grey levels"
    )
    print(f"Lanczos 400x320 -> 576x461: {lanczos_rate(args.lanczos):.1f} images/s")


if __name__ == "__main__":
    main()
