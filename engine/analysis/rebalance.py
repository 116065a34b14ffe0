"""The rebalance solver: which images to exclude so the DSB lands in the optimal band.

Its answer is defined, not heuristic (DESIGN.md "Rebalance"):

1. the fewest exclusions that make the verdict optimal, never keeping fewer than
   ``min_images`` images;
2. among those, the result closest to the target centre (dominant share nearest 60);
3. then the one that drops the most images with quality flags;
4. then the lexicographically smallest sorted list of paths, so it is deterministic.

It is an exact branch and bound over *how many* images to drop from each group of equal
shares (equal images are interchangeable except for rules 3 and 4, which fix their order),
pruned by the smallest and largest sums the remaining picks can still reach. Shares are
integers in millionths of a percent, so band edges and ties are decided exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby

from kiln.engine.analysis.dsb import UNITS, Target, to_units, verdict_of_sum

DEFAULT_MIN_IMAGES = 3
DEFAULT_NODE_BUDGET = 3_000_000


@dataclass(frozen=True)
class Candidate:
    """An included, measured image the solver may drop."""

    rel_path: str
    white: float
    flagged: bool = False


@dataclass(frozen=True)
class Rebalance:
    """A suggestion: exclude these images to reach the optimal band.

    Attributes:
        exclude: Relative paths to exclude, sorted; empty when the set is already optimal.
        white: The white share after the exclusions.
        black: ``100 - white``.
        verdict: Always ``optimal``.
        exact: False only when the search budget ran out (a pathological set); the answer
            is then the best found, still in the band.
    """

    exclude: tuple[str, ...]
    white: float
    black: float
    verdict: str
    exact: bool = True


@dataclass(frozen=True)
class _Band:
    low: int  # smallest excluded sum in the band
    high: int  # largest excluded sum in the band
    target: int  # excluded sum that puts the dominant share on the centre

    def distance(self, low: int, high: int) -> int | None:
        """Least distance to ``target`` from sums in ``[low, high]`` inside the band."""
        low, high = max(low, self.low), min(high, self.high)
        if low > high:
            return None
        if self.target < low:
            return low - self.target
        if self.target > high:
            return self.target - high
        return 0


def rebalance(
    candidates: Sequence[Candidate],
    target: Target = Target(),
    min_images: int = DEFAULT_MIN_IMAGES,
    node_budget: int = DEFAULT_NODE_BUDGET,
) -> Rebalance | None:
    """Solve the rebalance for ``candidates`` (the included, measured images).

    Returns:
        The suggestion, or None when no set of at least ``min_images`` images is optimal.
    """
    if not candidates:
        return None
    solver = _Solver(candidates, target, max(1, min_images), node_budget)
    return solver.solve()


class _Solver:
    def __init__(self, candidates: Sequence[Candidate], target: Target, min_images: int, budget: int) -> None:
        self.target = target
        self.min_images = min_images
        self.budget = budget
        self.nodes = 0
        self.exhausted = False
        # Within a group of equal shares, drop flagged images first, then by path.
        ordered = sorted(candidates, key=lambda c: (to_units(c.white), not c.flagged, c.rel_path))
        self.groups: list[tuple[int, list[Candidate]]] = [
            (value, list(members)) for value, members in groupby(ordered, key=lambda c: to_units(c.white))
        ]
        self.values = [to_units(c.white) for c in ordered]
        self.n = len(ordered)
        self.total = sum(self.values)
        self.prefix = [0]
        for value in self.values:
            self.prefix.append(self.prefix[-1] + value)
        self.starts = []
        position = 0
        for _, members in self.groups:
            self.starts.append(position)
            position += len(members)

    def solve(self) -> Rebalance | None:
        n = self.n
        if verdict_of_sum(max(self.total, 100 * UNITS * n - self.total), n, self.target) == "optimal":
            white = self.total / n / UNITS
            return Rebalance((), white, 100.0 - white, "optimal", True)
        for k in range(1, n - self.min_images + 1):
            best = self._search(k)
            if best is not None:
                exclude, excluded_sum = best
                kept = n - k
                white = (self.total - excluded_sum) / kept / UNITS
                return Rebalance(tuple(sorted(exclude)), white, 100.0 - white, "optimal", not self.exhausted)
        return None

    def _bands(self, kept: int) -> list[_Band]:
        """The excluded sums that leave an optimal mean over ``kept`` images."""
        low_u, high_u, center_u = (
            to_units(x) for x in (self.target.low, self.target.high, self.target.center)
        )
        hundred = 100 * UNITS
        bands = []
        # White dominant: mean >= 50 and low <= mean < high.
        r_low, r_high = max(low_u, hundred // 2) * kept, high_u * kept - 1
        if r_low <= r_high:
            bands.append(_Band(self.total - r_high, self.total - r_low, self.total - center_u * kept))
        # Black dominant: mean < 50 and low <= 100 - mean < high.
        r_low, r_high = (hundred - high_u) * kept + 1, min((hundred - low_u) * kept, hundred // 2 * kept - 1)
        if r_low <= r_high:
            bands.append(
                _Band(self.total - r_high, self.total - r_low, self.total - (hundred - center_u) * kept)
            )
        return bands

    def _reach(self, group: int, remaining: int) -> tuple[int, int] | None:
        """Smallest and largest sums of ``remaining`` picks from groups ``group`` onwards."""
        start = self.starts[group] if group < len(self.groups) else self.n
        if self.n - start < remaining:
            return None
        low = self.prefix[start + remaining] - self.prefix[start]
        high = self.prefix[self.n] - self.prefix[self.n - remaining]
        return low, high

    def _search(self, k: int) -> tuple[list[str], int] | None:
        bands = self._bands(self.n - k)
        if not bands:
            return None
        best_key: tuple | None = None
        best: tuple[list[str], int] | None = None
        counts = [0] * len(self.groups)

        def bound(group: int, remaining: int, partial: int) -> int | None:
            reach = self._reach(group, remaining)
            if reach is None:
                return None
            distances = [
                d
                for band in bands
                if (d := band.distance(partial + reach[0], partial + reach[1])) is not None
            ]
            return min(distances) if distances else None

        def children(group: int, remaining: int, partial: int) -> Iterator[tuple[int, int, int]]:
            value, members = self.groups[group]
            options = []
            for take in range(min(len(members), remaining) + 1):
                left, total = remaining - take, partial + take * value
                if left == 0:
                    lower = min(
                        (abs(total - b.target) for b in bands if b.low <= total <= b.high), default=None
                    )
                else:
                    lower = bound(group + 1, left, total) if group + 1 < len(self.groups) else None
                if lower is not None:
                    options.append((lower, -take, left, total))
            # Best-first: the child whose reachable sums come nearest the centre goes first, so
            # the first leaf is usually the answer and the bound prunes the rest.
            options.sort()
            for _, negative_take, left, total in options:
                yield -negative_take, left, total

        root_bound = bound(0, k, 0)
        if root_bound is None:
            return None
        stack: list[tuple[int, Iterator[tuple[int, int, int]]]] = [(0, children(0, k, 0))]
        while stack:
            group, options = stack[-1]
            step = next(options, None)
            if step is None:
                stack.pop()
                counts[group] = 0
                continue
            self.nodes += 1
            if self.nodes > self.budget:
                self.exhausted = True
                break
            take, remaining, partial = step
            counts[group] = take
            if remaining == 0:
                distance = min(
                    (abs(partial - band.target) for band in bands if band.low <= partial <= band.high),
                    default=None,
                )
                if distance is None:
                    continue
                if best_key is not None and distance > best_key[0]:
                    continue
                chosen = [c for g in range(group + 1) for c in self.groups[g][1][: counts[g]]]
                key = (distance, -sum(c.flagged for c in chosen), sorted(c.rel_path for c in chosen))
                if best_key is None or key < best_key:
                    best_key = key
                    best = ([c.rel_path for c in chosen], partial)
                continue
            next_group = group + 1
            lower = bound(next_group, remaining, partial)
            if lower is None or (best_key is not None and lower > best_key[0]):
                continue
            stack.append((next_group, children(next_group, remaining, partial)))
        return best
