"""Benchmark: the workbench on 10,000 cached images.

* first paint: from constructing the app to the first frame with every row in the table
  (headless, Textual's test driver), against the same app on an empty folder as baseline;
* toggle: from the ``space`` action to the gauge showing the new value, after a repaint,
  against recomputing the DSB from every row (what a non-incremental gauge would do).

Run from the repository root:  python -m bench.tui [--images 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from kiln.engine.analysis.dsb import summarise
from kiln.tui.app import KilnApp
from kiln.tui.widgets.dsb_gauge import DsbGauge

from bench.analysis import bench_warm

DATA = Path(__file__).resolve().parent / "_data"


async def first_paint(path: Path, rows: int) -> float:
    start = time.perf_counter()
    app = KilnApp(path, images="none", watch=False)
    async with app.run_test(size=(120, 40)) as pilot:
        while app.screen.query_one("#images").row_count < rows:
            await pilot.pause(0.01)
        await pilot.pause()
        return time.perf_counter() - start


async def toggles(path: Path, count: int = 30) -> tuple[list[float], list[float]]:
    app = KilnApp(path, images="none", watch=False)
    incremental, full = [], []
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        screen = app.screen
        gauge = screen.query_one(DsbGauge)
        for _ in range(count):
            before = gauge.summary
            start = time.perf_counter()
            screen.action_toggle_include()
            await pilot.pause()  # let the gauge repaint
            incremental.append(time.perf_counter() - start)
            assert gauge.summary != before
            start = time.perf_counter()
            summarise((r.analysis.white, r.record.repeats) for r in app.curation.rows.values() if r.counted)
            full.append(time.perf_counter() - start)
            await pilot.press("down")
    return incremental, full


async def main_async(images: int) -> None:
    bench_warm(images)  # builds and caches bench/_data/warm<images>
    root = DATA / f"warm{images}"
    with tempfile.TemporaryDirectory() as empty:
        baseline = min([await first_paint(Path(empty), 0) for _ in range(3)])
    paint = min([await first_paint(root, images) for _ in range(3)])
    incremental, full = await toggles(root)
    print(
        f"first paint with {images} cached rows: {paint:.3f} s (empty app {baseline:.3f} s, "
        f"ratio {paint / baseline:.1f}x; target < 1.5 s)"
    )
    print(
        f"toggle to gauge repaint: median {statistics.median(incremental) * 1000:.1f} ms, "
        f"max {max(incremental) * 1000:.1f} ms (target < 50 ms); recomputing the DSB from all rows "
        f"alone takes median {statistics.median(full) * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=10_000)
    asyncio.run(main_async(parser.parse_args().images))


if __name__ == "__main__":
    main()
