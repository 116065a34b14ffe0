"""Following a long run: what one poll and one chart redraw cost, against the naive way.

    python -m bench.watch --steps 100000 --polls 200

* poll: a run with ``--steps`` step events gets 5 more; the baseline re-reads and re-parses
  the whole ``events.jsonl`` (``read_events``), Kiln's ``RunFeed.poll`` reads the new bytes.
* chart: the loss chart's plotext build for the whole curve against the downsampled one
  (:data:`kiln.tui.widgets.loss_chart.MAX_POINTS` points) the runs section draws.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path


def write_events(run_dir: Path, steps: int) -> None:
    with open(run_dir / "events.jsonl", "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"t": 0.0, "type": "start", "total": steps * 2}) + "\n")
        for step in range(1, steps + 1):
            loss = 0.1 + 0.1 * math.exp(-step / steps) + 0.01 * math.sin(step)
            event = {"t": float(step), "type": "step", "step": step, "total": steps * 2, "epoch": 1}
            event.update(loss=round(loss, 6), lr=1e-4, it_s=3.2, eta_s=100.0)
            handle.write(json.dumps(event) + "\n")


def append_steps(run_dir: Path, first: int, count: int) -> None:
    with open(run_dir / "events.jsonl", "a", encoding="utf-8") as handle:
        for step in range(first, first + count):
            handle.write(json.dumps({"t": 1.0, "type": "step", "step": step, "loss": 0.1, "lr": 1e-4}) + "\n")


def bench_poll(steps: int, polls: int) -> tuple[float, float]:
    from kiln.engine.runs.events import read_events
    from kiln.engine.runs.feed import RunFeed, RunHistory

    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder)
        write_events(run_dir, steps)
        feed = RunFeed(run_dir)
        feed.poll()
        naive, kiln = [], []
        step = steps + 1
        for _ in range(polls):
            append_steps(run_dir, step, 5)
            step += 5
            started = time.perf_counter()
            history = RunHistory()
            history.add(read_events(run_dir))
            naive.append(time.perf_counter() - started)
            started = time.perf_counter()
            feed.poll()
            kiln.append(time.perf_counter() - started)
            assert feed.history.steps == history.steps
        return statistics.median(naive), statistics.median(kiln)


def bench_chart(steps: int, rounds: int = 5) -> tuple[float, float]:
    from kiln.tui.widgets.loss_chart import downsampled
    from textual_plotext.plot import Plot

    xs = list(range(1, steps + 1))
    ys = [0.1 + 0.1 * math.exp(-x / steps) + 0.01 * math.sin(x) for x in xs]

    def build(points_x: list[int], points_y: list[float]) -> float:
        plot = Plot()
        plot.plotsize(70, 20)
        started = time.perf_counter()
        plot.plot(points_x, points_y, marker="braille")
        plot.build()
        return time.perf_counter() - started

    full = statistics.median(build(xs, ys) for _ in range(rounds))
    small_x, small_y = downsampled(xs, ys)
    small = statistics.median(build(small_x, small_y) for _ in range(rounds))
    return full, small


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--polls", type=int, default=200)
    args = parser.parse_args()
    naive, kiln = bench_poll(args.steps, args.polls)
    print(f"poll after 5 new steps on a {args.steps}-step run:")
    print(f"  re-read everything {naive * 1e3:.1f} ms, follower {kiln * 1e3:.3f} ms, {naive / kiln:.0f}x")
    full, small = bench_chart(args.steps)
    print(
        f"chart build of {args.steps} points: {full * 1e3:.1f} ms; downsampled: {small * 1e3:.2f} ms, "
        f"{full / small:.0f}x"
    )


if __name__ == "__main__":
    main()
