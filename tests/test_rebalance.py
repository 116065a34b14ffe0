"""The rebalance solver: exact, checked against brute force, fast on large sets."""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import pytest
from kiln.engine.analysis.dsb import Target, to_units, verdict_of_sum
from kiln.engine.analysis.rebalance import Candidate, rebalance


def test_guide_example_drops_images_2_and_5() -> None:
    candidates = [Candidate(f"{i}.png", w) for i, w in enumerate([30, 5, 40, 55, 15], start=1)]
    result = rebalance(candidates)
    assert result.exclude == ("2.png", "5.png")
    assert result.white == pytest.approx(41.6667, abs=1e-4)
    assert result.black == pytest.approx(58.3333, abs=1e-4)
    assert result.verdict == "optimal"
    assert result.exact


def test_already_optimal_needs_no_exclusion() -> None:
    result = rebalance([Candidate("a", 58.0), Candidate("b", 62.0), Candidate("c", 60.0)])
    assert result.exclude == ()
    assert result.white == pytest.approx(60.0)


def test_never_leaves_fewer_than_min_images() -> None:
    candidates = [Candidate("a", 60.0), Candidate("b", 5.0), Candidate("c", 5.0), Candidate("d", 5.0)]
    assert rebalance(candidates, min_images=3) is None
    assert rebalance(candidates, min_images=1).exclude == ("b", "c", "d")


def test_unreachable_band_is_none() -> None:
    assert rebalance([Candidate(str(i), 2.0) for i in range(10)]) is None
    assert rebalance([]) is None


def test_prefers_dropping_flagged_images_when_choices_tie() -> None:
    candidates = [
        Candidate("a", 10.0),
        Candidate("b", 10.0, flagged=True),
        Candidate("c", 40.0),
        Candidate("d", 45.0),
        Candidate("e", 50.0),
    ]
    assert rebalance(candidates).exclude == ("b",)


def test_ties_without_flags_go_by_path() -> None:
    candidates = [
        Candidate("z", 10.0),
        Candidate("y", 10.0),
        Candidate("c", 40.0),
        Candidate("d", 45.0),
        Candidate("e", 50.0),
    ]
    assert rebalance(candidates).exclude == ("y",)


def brute_force(candidates: list[Candidate], target: Target, min_images: int):
    """Every subset by size: the definition, written the slow obvious way."""
    n = len(candidates)
    # Keeping the set as it is is always allowed; dropping must leave min_images.
    for k in range(0, max(n - min_images, 0) + 1):
        best = None
        for excluded in itertools.combinations(range(n), k):
            kept = [candidates[i] for i in range(n) if i not in excluded]
            total = sum(to_units(c.white) for c in kept)
            dominant_sum = max(total, 100 * 10**6 * len(kept) - total)
            if verdict_of_sum(dominant_sum, len(kept), target) != "optimal":
                continue
            mean = Fraction(total, len(kept) * 10**6)
            distance = abs(max(mean, 100 - mean) - Fraction(to_units(target.center), 10**6))
            dropped = [candidates[i] for i in excluded]
            key = (distance, -sum(c.flagged for c in dropped), sorted(c.rel_path for c in dropped))
            if best is None or key < best:
                best = key
        if best is not None:
            return tuple(best[2])
    return None


@pytest.mark.parametrize("seed", range(60))
def test_matches_brute_force_on_small_random_sets(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 10)
    integer_shares = seed % 2 == 0  # integers make ties common, floats make them rare
    candidates = [
        Candidate(
            f"{rng.choice('abc')}/{i:02d}.png",
            float(rng.randint(0, 100)) if integer_shares else rng.uniform(0, 100),
            flagged=rng.random() < 0.3,
        )
        for i in range(n)
    ]
    target = Target(rng.choice([60.0, 60.0, 58.0]), rng.choice([5.0, 5.0, 3.0]))
    min_images = rng.choice([1, 2, 3])
    expected = brute_force(candidates, target, min_images)
    result = rebalance(candidates, target, min_images)
    assert (result.exclude if result else None) == expected


@pytest.mark.parametrize("low, high", [(0, 100), (20, 80), (60, 100), (40, 60)])
def test_large_sets_are_solved_exactly(low: float, high: float) -> None:
    rng = random.Random(7)
    candidates = [Candidate(f"{i:05d}.png", rng.uniform(low, high)) for i in range(5000)]
    result = rebalance(candidates)
    assert result is not None and result.exact
    assert result.verdict == "optimal"
    kept = [c.white for c in candidates if c.rel_path not in set(result.exclude)]
    assert len(kept) >= 3
    assert (
        verdict_of_sum(
            max(sum(map(to_units, kept)), 10**8 * len(kept) - sum(map(to_units, kept))), len(kept), Target()
        )
        == "optimal"
    )
