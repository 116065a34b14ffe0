"""Benchmark: how fast ``kiln calc PATH`` learns image sizes, against decoding, in one run.

* Sizes of 16 MP photo-like JPEGs (shared with bench.analysis, cached in bench/_data/):
  Kiln's header read against the naive way (open and decode every image), one process.
* Planning a dataset of many small images (bucket load and step count), with an empty
  analysis cache (header reads) and with a full one (no file opened).

Run from the repository root:  python -m bench.plan [--images 24] [--many 5000]
"""

from __future__ import annotations

import argparse
import shutil
import time

from kiln.engine.analysis.run import analyse_dataset
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.store import Store
from kiln.engine.plan.buckets import BucketSpec
from kiln.engine.plan.loads import dataset_load, header_size
from kiln.engine.plan.steps import plan_steps
from PIL import Image

from bench.analysis import DATA, make_photos


def naive_size(path) -> tuple[int, int]:
    """The baseline: decode the image and take its size."""
    with Image.open(path) as image:
        image.load()
        return image.size


def bench_sizes(count: int) -> dict:
    dataset = scan_dataset(make_photos(count))
    for record in dataset.images:  # page cache warm for both sides
        record.path.read_bytes()
    start = time.perf_counter()
    naive = [naive_size(record.path) for record in dataset.images]
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    kiln = [header_size(record.path) for record in dataset.images]
    header = time.perf_counter() - start
    assert naive == kiln
    n = len(dataset.images)
    return {"images": n, "baseline_ips": n / baseline, "kiln_ips": n / header, "ratio": baseline / header}


def bench_plan(count: int) -> dict:
    root = DATA / f"plan{count}"
    folder = root / "10_many"
    if not folder.exists() or len(list(folder.iterdir())) != count:
        shutil.rmtree(root, ignore_errors=True)
        folder.mkdir(parents=True)
        for index in range(count):
            Image.new("L", (12 + index % 7, 12 + index % 5), 200).save(folder / f"{index:05d}.png")
    spec = BucketSpec(512)
    shutil.rmtree(root / ".kiln", ignore_errors=True)
    timings = {}
    for label in ("uncached", "cached"):
        if label == "cached":
            with Store(root) as store:
                analyse_dataset(scan_dataset(root), store, "luma601")
        start = time.perf_counter()
        dataset = scan_dataset(root)
        with Store(root) as store:
            load = dataset_load(dataset, store, spec)
        plan_steps(load.bucket_items(), batch=2, epochs=10)
        timings[label] = time.perf_counter() - start
    return {"images": count, **timings, "ratio": timings["uncached"] / timings["cached"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--many", type=int, default=5000)
    args = parser.parse_args()
    sizes = bench_sizes(args.images)
    print(
        f"sizes: {sizes['images']} x 16 MP JPEG: decode {sizes['baseline_ips']:.1f} img/s, "
        f"header {sizes['kiln_ips']:.0f} img/s, ratio {sizes['ratio']:.0f}x"
    )
    plan = bench_plan(args.many)
    print(
        f"plan: {plan['images']} images, scan + bucket load + steps: no cache {plan['uncached']:.3f} s, "
        f"cached sizes {plan['cached']:.3f} s (ratio {plan['ratio']:.1f}x)"
    )


if __name__ == "__main__":
    main()
