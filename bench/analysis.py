"""Benchmark: Kiln's W/B analysis against a naive baseline, in one run.

* Cold: a folder of 16 MP photo-like JPEGs (made here, cached in bench/_data/) analysed by
  Kiln (reduced decode, process pool, no cache) against the naive way (full decode with
  Pillow, ``convert("L")``, threshold, one process). Reports images/s of both, the ratio,
  and the largest gap between Kiln's fast figure and its ``--exact`` one.
* CPU: the same comparison in CPU time per image, one process each (``time.process_time``):
  unlike wall-clock ratios it holds on a machine shared with other work. Kiln's side
  includes the quality figures (engine/analysis/quality.py) measured in the same decode.
* Warm: reopening a dataset of 10,000 already-cached images (scan, cache read, DSB).

Run from the repository root:  python -m bench.analysis [--images 24] [--warm 10000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from kiln.engine.analysis.dsb import summarise
from kiln.engine.analysis.measure import analyse_image
from kiln.engine.analysis.run import analyse_dataset, default_workers, iter_analyses
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.store import Store
from PIL import Image

from tests.imagegen import photo_like

DATA = Path(__file__).resolve().parent / "_data"
SIZE = (4896, 3264)  # 16 MP


def make_photos(count: int) -> Path:
    """Write ``count`` 16 MP JPEGs (once; reused by later runs)."""
    folder = DATA / "photos" / "10_photos"
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        path = folder / f"photo_{index:03d}.jpg"
        if not path.exists():
            photo_like(SIZE, seed=1000 + index).save(path, quality=92)
    for extra in sorted(folder.glob("*.jpg"))[count:]:
        extra.unlink()
    return folder.parent


def naive_white(path: Path) -> float:
    """The baseline: what a script without Kiln would do."""
    with Image.open(path) as image:
        grey = np.asarray(image.convert("L"))
    return float((grey >= 128).mean() * 100)


def bench_cold(count: int) -> dict:
    root = make_photos(count)
    dataset = scan_dataset(root)
    # Warm the OS page cache so both sides read from memory.
    for record in dataset.images:
        record.path.read_bytes()
    start = time.perf_counter()
    for record in dataset.images:
        naive_white(record.path)
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    fast = analyse_dataset(dataset, None, "luma601")
    kiln = time.perf_counter() - start
    exact = analyse_dataset(dataset, None, "luma601", exact=True)
    gaps = [abs(fast[p].white - exact[p].white) for p in fast]
    n = len(dataset.images)
    return {
        "images": n,
        "workers": default_workers(),
        "baseline_ips": n / baseline,
        "kiln_ips": n / kiln,
        "ratio": baseline / kiln,
        "max_gap": max(gaps),
        "mean_gap": sum(gaps) / len(gaps),
        "mean_file_mb": sum(r.size for r in dataset.images) / n / 1e6,
    }


def bench_cpu(count: int) -> dict:
    """CPU seconds per image of the baseline and of Kiln's single-image analysis, serially."""
    paths = [record.path for record in scan_dataset(make_photos(count)).images]
    analyse_image(paths[0])  # imports and first-call set-up out of the timing
    start = time.process_time()
    for path in paths:
        naive_white(path)
    baseline = (time.process_time() - start) / len(paths)
    start = time.process_time()
    for path in paths:
        analyse_image(path)
    kiln = (time.process_time() - start) / len(paths)
    return {
        "images": len(paths),
        "baseline_ms": baseline * 1000,
        "kiln_ms": kiln * 1000,
        "ratio": baseline / kiln,
    }


def bench_warm(count: int) -> dict:
    root = DATA / f"warm{count}"
    folder = root / "1_many"
    if not folder.exists() or len(list(folder.iterdir())) != count:
        shutil.rmtree(root, ignore_errors=True)
        folder.mkdir(parents=True)
        tile = Image.new("L", (8, 8), 200)
        for index in range(count):
            tile.save(folder / f"{index:05d}.png")
    with Store(root) as store:  # fill the cache (once)
        analyse_dataset(scan_dataset(root), store, "luma601")
    start = time.perf_counter()
    dataset = scan_dataset(root)
    with Store(root) as store:
        results = list(iter_analyses(dataset.images, store, "luma601"))
    summary = summarise((analysis.white, record.repeats) for record, analysis, _ in results)
    elapsed = time.perf_counter() - start
    assert all(cached for _, _, cached in results), "warm reopen decoded images"
    return {"images": summary.images, "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--warm", type=int, default=10_000)
    args = parser.parse_args()
    os.environ.setdefault("TMPDIR", tempfile.gettempdir())
    cold = bench_cold(args.images)
    print(
        f"cold: {cold['images']} x 16 MP JPEG (mean {cold['mean_file_mb']:.1f} MB), "
        f"{cold['workers']} workers: "
        f"baseline {cold['baseline_ips']:.2f} img/s, kiln {cold['kiln_ips']:.2f} img/s, "
        f"ratio {cold['ratio']:.1f}x; fast vs exact: max gap {cold['max_gap']:.3f} points, "
        f"mean {cold['mean_gap']:.3f}"
    )
    cpu = bench_cpu(args.images)
    print(
        f"cpu: {cpu['images']} x 16 MP JPEG, one process each: baseline {cpu['baseline_ms']:.1f} ms/img, "
        f"kiln {cpu['kiln_ms']:.1f} ms/img (W/B + quality figures), ratio {cpu['ratio']:.1f}x per core"
    )
    warm = bench_warm(args.warm)
    print(f"warm: reopen of {warm['images']} cached images in {warm['seconds']:.3f} s")


if __name__ == "__main__":
    main()
