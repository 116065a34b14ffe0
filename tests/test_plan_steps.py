"""Kohya's step count: per-bucket rounding, accumulation and GPUs, reverse modes, explanations."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kiln.engine.errors import UsageError
from kiln.engine.plan.steps import (
    epochs_for_target,
    plain_total_steps,
    plan_steps,
    repeats_for_target,
    require_batch_fits,
    rounding_notes,
)

bucket_counts = st.dictionaries(
    st.tuples(st.integers(4, 16).map(lambda n: n * 64), st.integers(4, 16).map(lambda n: n * 64)),
    st.integers(1, 400),
    min_size=1,
    max_size=8,
)
counts = st.integers(1, 8)


def test_guide_batch_4_check_counts_792_not_787_5() -> None:
    plan = plan_steps({None: 10 * 35}, batch=4, epochs=9)
    assert (plan.batches_per_epoch, plan.steps_per_epoch, plan.total_steps) == (88, 88, 792)
    assert plan.plain_total_steps == 787.5 == plain_total_steps(10, 35, 4, 9)
    assert plan.plain_steps_per_epoch == 87.5


def test_buckets_round_up_separately() -> None:
    # 5 + 5 samples at batch 4: 2 + 2 batches, where one bucket of 10 would need 3.
    plan = plan_steps({(640, 384): 5, (384, 640): 5}, batch=4, epochs=10)
    assert [bucket.batches for bucket in plan.buckets] == [2, 2]
    assert (plan.steps_per_epoch, plan.total_steps, plan.plain_total_steps) == (4, 40, 25.0)
    assert plan.short_batches == 2
    assert plan_steps({None: 10}, batch=4, epochs=10).total_steps == 30


def test_accumulation_and_gpus_divide_batches_rounding_up() -> None:
    plan = plan_steps({(512, 512): 61, (640, 384): 30}, batch=2, epochs=10, grad_accumulation=3, processes=2)
    assert plan.batches_per_epoch == 31 + 15
    assert plan.steps_per_epoch == math.ceil(46 / 6) == 8
    assert plan.total_steps == 80


def test_buckets_are_sorted_and_empty_ones_dropped() -> None:
    plan = plan_steps({(640, 384): 3, (384, 640): 0, (448, 576): 2}, batch=1, epochs=1)
    assert [bucket.resolution for bucket in plan.buckets] == [(448, 576), (640, 384)]


@given(bucket_counts, counts, st.integers(1, 50), st.integers(1, 4), st.integers(1, 4))
@settings(max_examples=300, deadline=None)
def test_bucket_count_is_never_below_the_plain_formula(buckets, batch, epochs, accumulation, gpus) -> None:
    plan = plan_steps(buckets, batch, epochs, accumulation, gpus)
    assert plan.total_steps >= plan.plain_total_steps
    # ...nor below one big bucket of the same samples: splitting only adds short batches.
    single = plan_steps({None: sum(buckets.values())}, batch, epochs, accumulation, gpus)
    assert plan.total_steps >= single.total_steps
    # Each bucket adds less than one batch, and the division by accumulation x GPUs less than one step.
    divisor = accumulation * gpus
    bound = len(buckets) * (batch - 1) / (batch * divisor) + (divisor - 1) / divisor
    assert plan.steps_per_epoch - plan.plain_steps_per_epoch <= bound + 1e-9


@given(bucket_counts, counts, st.integers(1, 50), st.integers(1, 4), st.integers(1, 4))
@settings(max_examples=300, deadline=None)
def test_counts_agree_exactly_when_no_batch_or_step_is_partial(
    buckets, batch, epochs, accumulation, gpus
) -> None:
    plan = plan_steps(buckets, batch, epochs, accumulation, gpus)
    whole = all(items % batch == 0 for items in buckets.values())
    whole = whole and plan.batches_per_epoch % (accumulation * gpus) == 0
    assert (plan.total_steps == plan.plain_total_steps) == whole


@given(st.integers(1, 2000), counts, st.integers(1, 50))
@settings(max_examples=300, deadline=None)
def test_one_bucket_equals_the_plain_formula_iff_the_batch_divides(items, batch, epochs) -> None:
    plan = plan_steps({(512, 512): items}, batch, epochs)
    assert (plan.total_steps == plan.plain_total_steps) == (items % batch == 0)
    assert plan.total_steps == epochs * math.ceil(items / batch)


def test_guide_reverse_mode_gives_35_repeats_at_10_epochs_and_39_at_9() -> None:
    assert repeats_for_target(3500, {None: 10}, batch=1, epochs=10) == 35
    assert repeats_for_target(3500, {None: 10}, batch=1, epochs=9) == 39  # the guide's 350 / 9
    assert epochs_for_target(3500, {None: 350}, batch=1) == 10
    assert epochs_for_target(3500, {None: 350}, batch=4) == 40  # 88 steps per epoch


@given(bucket_counts, st.integers(1, 5000), counts, st.integers(1, 30), st.integers(1, 3))
@settings(max_examples=150, deadline=None)
def test_reverse_modes_give_the_fewest_that_reach_the_target(
    images, target, batch, epochs, accumulation
) -> None:
    repeats = repeats_for_target(target, images, batch, epochs, accumulation)

    def total(r: int) -> int:
        return plan_steps({k: v * r for k, v in images.items()}, batch, epochs, accumulation).total_steps

    assert total(repeats) >= target
    assert repeats == 1 or total(repeats - 1) < target
    found = epochs_for_target(target, images, batch, accumulation)
    per_epoch = plan_steps(images, batch, 1, accumulation).steps_per_epoch
    assert found * per_epoch >= target and (found - 1) * per_epoch < target


@pytest.mark.parametrize(
    "call",
    [
        lambda: plan_steps({None: 10}, 0, 1),
        lambda: plan_steps({None: 10}, 1, -1),
        lambda: plan_steps({None: 10}, 1, 1, grad_accumulation=0),
        lambda: plan_steps({None: 10}, 1.5, 1),
        lambda: plan_steps({None: -1}, 1, 1),
        lambda: plan_steps({None: 0}, 1, 1),
        lambda: plan_steps({}, 1, 1),
        lambda: repeats_for_target(0, {None: 10}, 1, 1),
        lambda: repeats_for_target(10, {None: 0}, 1, 1),
        lambda: epochs_for_target(-5, {None: 10}, 1),
        lambda: require_batch_fits(3, 4),
    ],
)
def test_bad_numbers_are_usage_errors(call) -> None:
    with pytest.raises(UsageError):
        call()


def test_rounding_notes_explain_where_the_extra_steps_come_from() -> None:
    notes = rounding_notes(plan_steps({None: 350}, 4, 9))
    assert "350 samples = 87 batches of 4 + a short one of 2" in notes[0]
    assert "88 steps, not 87.5: 792 in all, 4.5 more than the plain formula's 787.5" in notes[-1]
    notes = rounding_notes(plan_steps({(448, 576): 61, (576, 448): 30}, 2, 10))
    assert "1 of 2 bucket(s)" in notes[0] and "448x576 (61 = 30 x 2 + 1)" in notes[0]
    notes = rounding_notes(plan_steps({(512, 512): 8}, 2, 10, grad_accumulation=3))
    assert "4 batches per epoch over 3 accumulation step(s) x 1 GPU(s) rounds up to 2 steps" in notes[0]
    assert rounding_notes(plan_steps({(512, 512): 8}, 2, 10)) == [
        "Kohya's count equals the plain formula: every batch is full."
    ]
