"""Benchmark: ``kiln dsb`` as a user runs it (a whole process, cold cache) against a naive script.

Both sides are timed as whole processes from start to exit, so interpreter start-up, imports,
the worker pool and writing the cache all count. The naive side is one Python process that
decodes every image at full size with Pillow, converts it to grey and thresholds it (what a
script without Kiln would do). Kiln's cache (``.kiln/``) is deleted before each of its runs,
so every run decodes every image. Runs alternate (naive, kiln, naive, kiln, ...) so a machine
that gets busier affects both sides alike; the medians are reported with their ratio.

Run from the repository root:  python -m bench.dsb_process [--images 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from kiln.engine.analysis.run import default_workers

from bench.analysis import make_photos

NAIVE = """
import sys
from pathlib import Path
import numpy as np
from PIL import Image
shares = []
for path in sorted(Path(sys.argv[1]).rglob("*.jpg")):
    with Image.open(path) as image:
        grey = np.asarray(image.convert("L"))
    shares.append(float((grey >= 128).mean() * 100))
print(sum(shares) / len(shares))
"""


def timed(command: list[str]) -> float:
    """Wall-clock seconds of one process, start to exit; it must succeed."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def reduced_decode_seconds(root: Path) -> float:
    """Seconds one process spends only decoding every JPEG reduced, as Kiln's fast path does.

    This is the floor under any exact share: libjpeg must Huffman-decode the whole file at any
    DCT scale (measured: 1/4 and 1/8 decodes cost the same), so no analysis can go below it.
    """
    from kiln.engine.analysis.decode import FAST_LONG_SIDE
    from PIL import Image

    start = time.perf_counter()
    for path in sorted(root.rglob("*.jpg")):
        with Image.open(path) as image:
            scale = FAST_LONG_SIDE / max(image.size)
            image.draft("L", (round(image.size[0] * scale), round(image.size[1] * scale)))
            image.load()
    return time.perf_counter() - start


def kiln_command(root: Path) -> list[str]:
    return [sys.executable, "-m", "kiln", "dsb", str(root), "--json"]


def bench(images: int, rounds: int) -> dict:
    root = make_photos(images)
    for path in root.rglob("*.jpg"):  # page cache warm for both sides
        path.read_bytes()
    naive, kiln = [], []
    for _ in range(rounds):
        naive.append(timed([sys.executable, "-c", NAIVE, str(root)]))
        shutil.rmtree(root / ".kiln", ignore_errors=True)
        kiln.append(timed(kiln_command(root)))
    help_s = statistics.median(timed([sys.executable, "-m", "kiln", "dsb", "--help"]) for _ in range(5))
    decode_s = statistics.median(reduced_decode_seconds(root) for _ in range(rounds))
    cores = default_workers()
    # The best any whole process can do: start-up, then the decodes spread over every core.
    floor_s = help_s + decode_s / cores
    return {
        "images": images,
        "cores": cores,
        "decode_s": decode_s,
        "floor_s": floor_s,
        "floor_ratio": statistics.median(naive) / floor_s,
        "rounds": rounds,
        "naive_s": statistics.median(naive),
        "kiln_s": statistics.median(kiln),
        "ratio": statistics.median(naive) / statistics.median(kiln),
        "help_s": help_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=60, help="16 MP JPEGs to analyse (default 60)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side (default 3)")
    args = parser.parse_args()
    result = bench(args.images, args.rounds)
    print(
        f"kiln dsb as a process, {result['images']} x 16 MP JPEG, cold cache, median of {result['rounds']}:\n"
        f"  naive one-process full decode  {result['naive_s']:.2f} s\n"
        f"  kiln dsb --json                {result['kiln_s']:.2f} s\n"
        f"  ratio                          {result['ratio']:.2f}x\n"
        f"  kiln dsb --help                {result['help_s']:.3f} s\n"
        f"  reduced decodes alone, 1 core  {result['decode_s']:.2f} s\n"
        f"  floor on {result['cores']} cores (start + decodes / cores) {result['floor_s']:.2f} s "
        f"= at best {result['floor_ratio']:.2f}x"
    )


if __name__ == "__main__":
    main()
