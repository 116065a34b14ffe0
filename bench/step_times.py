"""Seconds per training step from the moments each step was reported (the benchmarks' clock).

A trainer reports its steps as they finish: a progress-bar line, an event. The moments those
reports arrive (``time.perf_counter()`` stamps, by step count) give the steps' times, with
two things to allow for:

- Reports that come in bursts: Kiln on a GPU reads its losses back every N steps and then
  sends N step events at once; only the last report of a burst marks when its steps were
  done. A report that the next one follows within a tenth of the run's mean step time is
  taken as part of a burst and dropped.
- Counts never reported (a progress bar that skipped a redraw): an interval spanning k
  counts gives each of its k steps an equal share.

The figure is the median of the per-step times after a warm-up, so that a slow step (the
first at a new shape, a save) does not move it.
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from kiln.engine.errors import RunError

# A report is part of a burst when the next follows within this share of the mean step time.
BURST_SHARE = 0.1


@dataclass(frozen=True)
class StepTimes:
    """What a run's output says about its steps.

    Attributes:
        stamps: ``perf_counter()`` when each step count was first reported, by count (1-based).
        total: The step total the reports showed.
        reported_it_s: The last rate the trainer itself printed (tqdm's mean), if any.
    """

    stamps: dict[int, float]
    total: int | None = None
    reported_it_s: float | None = None


def split_stamped(chunks: Iterable[tuple[float, bytes]]) -> Iterator[tuple[float, str]]:
    """The lines of a stream read in chunks, each with the stamp of the chunk that brought its
    last byte.

    tqdm redraws its bar as ``\\r`` + the line, logs end with ``\\n``: either ends a line. A bar
    line is ended only by the next redraw's ``\\r``, which may come a step later, so a line is
    stamped when its text was complete, not when its end arrived. A partial last line comes
    out at the end.
    """
    pending = b""
    pending_stamp = 0.0
    for stamp, chunk in chunks:
        first, *rest = re.split(rb"[\r\n]", chunk)
        if first:
            pending, pending_stamp = pending + first, stamp
        for piece in rest:  # each piece follows a line end: the pending line is complete
            if pending.strip():
                yield pending_stamp, pending.decode("utf-8", errors="replace")
            pending, pending_stamp = piece, stamp
    if pending.strip():
        yield pending_stamp, pending.decode("utf-8", errors="replace")


def step_times(
    lines: Iterable[tuple[float, str]], parse: Callable[[str], tuple[int, int, float | None] | None]
) -> StepTimes:
    """The first stamp of each step count among stamped lines.

    ``parse(line)``: ``(count, total, rate in it/s or None)`` of a line that reports a step, None
    for any other line.
    """
    stamps: dict[int, float] = {}
    total: int | None = None
    rate: float | None = None
    for stamp, line in lines:
        found = parse(line)
        if found is None:
            continue
        step, total, it_s = found
        rate = it_s if it_s is not None else rate
        if step > 0:
            stamps.setdefault(step, stamp)
    return StepTimes(stamps, total, rate)


def burst_ends(stamps: dict[int, float]) -> list[tuple[int, float]]:
    """The reports that mark when their steps were done: each count with its stamp, in order,
    less those the next report follows within :data:`BURST_SHARE` of the mean step time."""
    points = sorted(stamps.items())
    if len(points) < 2:
        return points
    (first, start), (last, end) = points[0], points[-1]
    mean = (end - start) / (last - first)
    if mean <= 0:  # every report at once: one burst
        return points[-1:]
    kept = [
        (count, stamp)
        for (count, stamp), (later, next_stamp) in itertools.pairwise(points)
        if next_stamp - stamp >= BURST_SHARE * mean * (later - count)
    ]
    return [*kept, points[-1]]


def median_step(stamps: dict[int, float], warmup: int) -> tuple[float, int]:
    """(median seconds per step, steps timed) over the steps after the first ``warmup``.

    Timing starts at the first report (burst end) at or after step ``warmup``; step ``n``
    lasts from the report before it to the report that covers it, shared evenly among the
    steps that interval spans.

    Raises:
        RunError: Fewer than two steps could be timed.
    """
    points = [(count, stamp) for count, stamp in burst_ends(stamps) if count >= warmup]
    durations: list[float] = []
    for (count, stamp), (later, next_stamp) in itertools.pairwise(points):
        span = later - count
        durations += [(next_stamp - stamp) / span] * span
    if len(durations) < 2:
        raise RunError(
            f"only {len(durations)} steps could be timed ({len(stamps)} reported); raise --steps, "
            "or read the run's log"
        )
    return statistics.median(durations), len(durations)
