"""Benchmark: judging a dataset's quality from cached figures (what reopening a dataset costs).

The expensive part is the near-duplicate search, every pair of images compared on two hashes.
Kiln compares one image against all later ones at once with numpy; the baseline is what a
script would write with imagehash: ``a - b`` on ``ImageHash`` objects for every pair, plain
and mirrored. Both find the same groups, which the run checks.

Run from the repository root:  python -m bench.quality [--images 1000] [--large 10000]
"""

from __future__ import annotations

import argparse
import time

import imagehash
import numpy as np
from kiln.engine.analysis.quality import QualityThresholds, judge_dataset


def random_figures(count: int, seed: int = 0) -> dict[str, dict]:
    """Figures of ``count`` images whose hashes are random, with a near-copy every 50 images."""
    rng = np.random.default_rng(seed)
    figures = {}
    previous = None
    for index in range(count):
        bits = rng.random(64) < 0.5
        if previous is not None and index % 50 == 1:
            bits = previous.copy()
            bits[rng.choice(64, 3, replace=False)] ^= True  # 3 bits off: a near-duplicate
        previous = bits
        value = int("".join("1" if b else "0" for b in bits), 2)
        mirror = int("".join("1" if b else "0" for b in rng.random(64) < 0.5), 2)
        figures[f"10_set/{index:05d}.png"] = {
            "width": 768,
            "height": 768,
            "sharpness": float(rng.uniform(50, 500)),
            "entropy": 7.0,
            "clipped_dark": 0.0,
            "clipped_bright": 0.0,
            "transparent": 0.0,
            "phash": f"{value:016x}",
            "phash_mirror": f"{mirror:016x}",
        }
    return figures


def naive_groups(figures: dict[str, dict], max_distance: int) -> list[list[str]]:
    """The baseline: every pair through imagehash's own distance, then merge pairs into groups."""
    paths = sorted(figures)
    plain = [imagehash.hex_to_hash(figures[p]["phash"]) for p in paths]
    mirror = [imagehash.hex_to_hash(figures[p]["phash_mirror"]) for p in paths]
    group_of = {p: {p} for p in paths}
    for i in range(len(paths)):
        for j in range(i + 1, len(paths)):
            distance = min(plain[i] - plain[j], plain[i] - mirror[j], mirror[i] - plain[j])
            if distance <= max_distance and group_of[paths[i]] is not group_of[paths[j]]:
                merged = group_of[paths[i]] | group_of[paths[j]]
                for member in merged:
                    group_of[member] = merged
    unique = {id(group): sorted(group) for group in group_of.values() if len(group) > 1}
    return sorted(unique.values())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1000, help="dataset size for the comparison")
    parser.add_argument("--large", type=int, default=10_000, help="dataset size timed for Kiln alone")
    args = parser.parse_args()
    thresholds = QualityThresholds()
    figures = random_figures(args.images)
    start = time.perf_counter()
    expected = naive_groups(figures, thresholds.duplicate_distance)
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    judged = judge_dataset(figures, thresholds)
    kiln = time.perf_counter() - start
    assert judged.duplicates == expected, "Kiln and the baseline found different groups"
    print(
        f"judge: {args.images} images ({len(expected)} duplicate groups): baseline {baseline:.3f} s "
        f"(imagehash pairwise), kiln {kiln:.3f} s (whole judgement), ratio {baseline / kiln:.1f}x"
    )
    large = random_figures(args.large, seed=1)
    start = time.perf_counter()
    judge_dataset(large, thresholds)
    print(f"judge: {args.large} images in {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
