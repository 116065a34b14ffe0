"""The DSB, its verdict bands and the incremental accumulator."""

from __future__ import annotations

import pytest
from kiln.engine.analysis.dsb import DsbAccumulator, Target, dominant, summarise, verdict


@pytest.mark.parametrize(
    ("dominant_share", "expected"),
    [
        (50.0, "generic"),
        (54.999, "generic"),
        (55.0, "optimal"),
        (60.0, "optimal"),
        (64.999, "optimal"),
        (65.0, "fair"),
        (70.0, "fair"),
        (70.001, "mediocre"),
        (100.0, "mediocre"),
    ],
)
def test_verdict_bands_are_closed_below_open_above(dominant_share: float, expected: str) -> None:
    assert verdict(dominant_share) == expected


def test_dominant_is_the_larger_share() -> None:
    assert dominant(29.0) == 71.0
    assert dominant(71.0) == 71.0


def test_guide_example_is_29_white_71_black_mediocre() -> None:
    summary = summarise([(w, 1) for w in (30, 5, 40, 55, 15)])
    assert summary.white == pytest.approx(29.0)
    assert summary.black == pytest.approx(71.0)
    assert summary.dominant == pytest.approx(71.0)
    assert summary.verdict == "mediocre"
    assert summary.label() == "29%W | 71%B  mediocre"


def test_black_dominant_sets_use_the_same_bands() -> None:
    assert summarise([(45.0, 1)]).verdict == "optimal"  # 55%B
    assert summarise([(35.0, 1)]).verdict == "fair"  # 65%B
    assert summarise([(35.0001, 1)]).verdict == "optimal"


def test_effective_dsb_weights_by_repeats() -> None:
    summary = summarise([(20.0, 10), (80.0, 1)])
    assert summary.white == pytest.approx(50.0)
    assert summary.effective_white == pytest.approx((200 + 80) / 11)


def test_custom_target_moves_the_band() -> None:
    target = Target(center=62.0, tolerance=2.0)
    assert verdict(59.9, target) == "generic"
    assert verdict(60.0, target) == "optimal"
    assert verdict(64.0, target) == "fair"
    with pytest.raises(ValueError):
        Target(center=40.0)
    with pytest.raises(ValueError):
        Target(tolerance=0.0)


def test_accumulator_add_remove_is_exact_after_many_toggles() -> None:
    values = [12.345678, 98.7, 33.333333, 0.1, 55.55]
    accumulator = DsbAccumulator()
    for value in values:
        accumulator.add(value, 3)
    for _ in range(1000):
        accumulator.remove(98.7, 3)
        accumulator.add(98.7, 3)
    reference = summarise([(v, 3) for v in values])
    assert accumulator.summary() == reference
    accumulator.remove(98.7, 3)
    assert accumulator.summary().white == pytest.approx(sum(values[:1] + values[2:]) / 4)


def test_no_images_gives_no_verdict() -> None:
    summary = DsbAccumulator().summary()
    assert summary.white is None and summary.verdict is None and summary.images == 0
    assert summary.label() == "no measured images"
