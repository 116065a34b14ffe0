"""The plan form's reader: text to numbers with one message per bad field, never an exception."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kiln.engine.errors import UsageError
from kiln.engine.plan.loads import BucketLoad, ConceptLoad, DatasetLoad
from kiln.tui.plan_form import (
    DEFAULTS,
    PlanInputs,
    evaluate,
    rate,
    required_fields,
    resolution,
    text_encoder_rate,
    whole_number,
)

# 3 images at 640x384 and 1 at 512x512 (repeats 3 and 1): 10 samples in two buckets.
LOAD = DatasetLoad(
    buckets=(BucketLoad((512, 512), 1, 1), BucketLoad((640, 384), 3, 9)),
    concepts=(ConceptLoad("1_dog", 1, 1), ConceptLoad("3_cat", 3, 3)),
    skipped=("loose.png",),
    unreadable=(),
)


@pytest.mark.parametrize(
    "text, expected",
    [("4", 4), (" 12 ", 12), ("+3", 3), ("", None)],
)
def test_whole_numbers(text: str, expected: int | None) -> None:
    assert whole_number(text, required=False) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "type a whole number"),
        ("0", "too small"),
        ("-2", "too small"),
        ("1.5", "not a whole number"),
        ("1_000", "not a whole number"),
        ("１２", "not a whole number"),
        ("10000000000", "too large"),
    ],
)
def test_bad_whole_numbers_say_why(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        whole_number(text)


def test_rates_ratios_and_resolutions() -> None:
    assert rate("1e-4") == 1e-4 and rate(".5") == 0.5 and rate("") is None
    for bad in ("nan", "inf", "-1e-4", "1e-4x", "1_0"):
        with pytest.raises(UsageError):
            rate(bad)
    assert text_encoder_rate("1/5", 1e-4) == pytest.approx(2e-5)
    assert text_encoder_rate("2e-5", None) == 2e-5
    with pytest.raises(UsageError, match="needs the U-Net LR"):
        text_encoder_rate("1/5", None)
    assert (
        resolution("512") == 512
        and resolution("512x768") == (512, 768)
        and resolution("640×384") == (640, 384)
    )
    for bad in ("", "big", "512x", "0", "1x2x3"):
        with pytest.raises(UsageError):
            resolution(bad)


def test_which_fields_are_needed_depends_on_source_and_solve() -> None:
    assert required_fields(PlanInputs(DEFAULTS, source="typed")) == {
        "images",
        "repeats",
        "batch",
        "epochs",
        "grad_accumulation",
        "gpus",
    }
    assert required_fields(PlanInputs(DEFAULTS, source="dataset", solve="repeats")) == {
        "target",
        "batch",
        "epochs",
        "grad_accumulation",
        "gpus",
    }
    assert "epochs" not in required_fields(PlanInputs(DEFAULTS, source="typed", solve="epochs"))


def test_dataset_source_counts_per_bucket_with_folder_repeats_and_notices() -> None:
    outcome = evaluate(PlanInputs({**DEFAULTS, "batch": "4"}), LOAD)
    assert outcome.plan.batches_per_epoch == 4 and outcome.plan.items_per_epoch == 10
    assert outcome.solution.repeats is None and outcome.images == 4
    assert outcome.warnings[0].id == "kohya-skips"
    overridden = evaluate(PlanInputs({**DEFAULTS, "repeats": "2"}), LOAD)
    assert overridden.plan.items_per_epoch == 8 and overridden.solution.repeats == 2
    waiting = evaluate(PlanInputs(DEFAULTS), None)
    assert waiting.plan is None and "reading" in waiting.problem


def test_dsb_verdict_and_bf16_reach_the_advice() -> None:
    inputs = PlanInputs({**DEFAULTS, "repeats": "30", "epochs": "10"}, precision="bf16")
    ids = {advice.id for advice in evaluate(inputs, LOAD, "mediocre", lambda: False).warnings}
    assert {"dsb-not-optimal", "bf16-unsupported"} <= ids
    typed = PlanInputs({**DEFAULTS, "images": "10", "repeats": "15"}, source="typed")
    # A typed plan has no dataset to judge; fp16 (the form's default) brings only its note.
    assert [advice.id for advice in evaluate(typed, None, "mediocre").warnings] == ["fp16-loss-scaling"]


@pytest.mark.parametrize(
    ("subject", "precision", "expected"),
    [
        (None, "bf16", []),  # not chosen: no precision advice
        ("outfit", "fp16", []),
        ("outfit", "bf16", ["precision-for-subject"]),
        ("character", "bf16", []),
        ("character", "fp32", ["precision-for-subject"]),
    ],
)
def test_the_subject_reaches_the_precision_advice(subject, precision, expected) -> None:
    inputs = PlanInputs(
        {**DEFAULTS, "images": "10", "repeats": "10"}, source="typed", precision=precision, subject=subject
    )
    outcome = evaluate(inputs, None, bf16_supported=lambda: True)
    assert [advice.id for advice in outcome.warnings if not advice.note] == expected


def test_the_steps_advice_counts_the_forms_images_and_batch() -> None:
    inputs = PlanInputs(
        {**DEFAULTS, "images": "10", "repeats": "35", "batch": "4", "epochs": "9"}, source="typed"
    )
    (low,) = [advice for advice in evaluate(inputs).warnings if advice.id == "steps-per-epoch-low"]
    assert low.message.endswith("40 repeats make about 100 steps per epoch (1000 in 10 epochs)")


FIELD_TEXT = st.one_of(
    st.sampled_from(["", "0", "1", "4", "-1", "35", "1e-4", "1/5", "512", "512x768", "x", "99999999999"]),
    st.text(max_size=8),
)


@settings(max_examples=100, deadline=None)
@given(
    texts=st.fixed_dictionaries({key: FIELD_TEXT for key in DEFAULTS}),
    source=st.sampled_from(["dataset", "typed"]),
    solve=st.sampled_from(["steps", "repeats", "epochs"]),
    no_upscale=st.booleans(),
    run=st.sampled_from(["test", "final"]),
    training=st.sampled_from(["lora", "full"]),
)
def test_anything_typed_gives_a_plan_or_messages_never_an_exception(
    texts, source, solve, no_upscale, run, training
) -> None:
    inputs = PlanInputs(texts, source, solve, no_upscale, "fp16", training, run)
    outcome = evaluate(inputs, LOAD)
    assert outcome.ok or outcome.errors or outcome.problem
    if outcome.ok:
        assert outcome.plan.total_steps >= outcome.plan.plain_total_steps
        assert not outcome.errors
