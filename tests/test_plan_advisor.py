"""The guide's rules as warnings: each id fires exactly past its limit, with the guide's reason."""

from __future__ import annotations

import sys
import types

import pytest
from kiln.engine.errors import UsageError
from kiln.engine.plan import advisor
from kiln.engine.plan.advisor import (
    NOTES,
    PRECISION_REASONS,
    RULES,
    SUBJECTS,
    PlanFacts,
    advise,
    cuda_bf16_supported,
    cuda_compute_capability,
    cuda_memory_gib,
)


def never_probed() -> bool:
    raise AssertionError("bf16 support probed although bf16 was not asked for")


def ids(facts: PlanFacts, probe=never_probed) -> list[str]:
    return [advice.id for advice in advise(facts, bf16_supported=probe)]


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (PlanFacts(batch=4), []),
        (PlanFacts(batch=5), ["batch-above-4"]),
        (PlanFacts(batch=2, run="final"), []),
        (PlanFacts(batch=3, run="final"), ["batch-above-2-final"]),
        (PlanFacts(batch=3, run="test"), []),
        (PlanFacts(batch=6, run="final"), ["batch-above-4", "batch-above-2-final"]),
        (PlanFacts(epochs=10), []),
        (PlanFacts(epochs=9), ["epochs-below-10"]),
        (PlanFacts(steps_per_epoch=100), []),
        (PlanFacts(steps_per_epoch=200), []),
        (PlanFacts(steps_per_epoch=99), ["steps-per-epoch-low"]),
        (PlanFacts(steps_per_epoch=201), ["steps-per-epoch-high"]),
        (PlanFacts(unet_lr=1e-4), []),
        (PlanFacts(unet_lr=5e-4), []),
        (PlanFacts(unet_lr=6e-4), ["unet-lr-lora"]),
        (PlanFacts(unet_lr=5e-5), ["unet-lr-lora"]),
        (PlanFacts(unet_lr=2e-6, training="full"), []),
        (PlanFacts(unet_lr=1e-4, training="full"), ["unet-lr-full-finetune"]),
        (PlanFacts(unet_lr=1e-4, text_encoder_lr=2.5e-5), []),
        (PlanFacts(unet_lr=1e-4, text_encoder_lr=1e-4 / 6), []),
        (PlanFacts(unet_lr=1e-4, text_encoder_lr=1.66e-5), []),  # a sixth, rounded
        (PlanFacts(unet_lr=1e-4, text_encoder_lr=5e-5), ["text-encoder-lr-ratio"]),
        (PlanFacts(unet_lr=1e-4, text_encoder_lr=1e-5), ["text-encoder-lr-ratio"]),
        (PlanFacts(unet_lr=1e-4, text_encoder_lr=0.0), []),  # frozen text encoder: nothing to corrupt
        (PlanFacts(total_steps=500, run="test"), []),
        (PlanFacts(total_steps=1000, run="test"), []),
        (PlanFacts(total_steps=1001, run="test"), ["test-run-steps"]),
        (PlanFacts(total_steps=499, run="test"), ["test-run-steps"]),
        (PlanFacts(total_steps=3500, run="final"), []),
        (PlanFacts(dsb_verdict="optimal"), []),
        (PlanFacts(dsb_verdict="mediocre"), ["dsb-not-optimal"]),
        (PlanFacts(dsb_verdict="generic"), ["dsb-not-optimal"]),
        (PlanFacts(precision="fp16"), ["fp16-loss-scaling"]),
        (PlanFacts(precision="fp32"), []),
        (PlanFacts(family="sdxl", gpu_memory_gib=24), []),
        (PlanFacts(family="sdxl", gpu_memory_gib=16, gradient_checkpointing=True), []),
        (PlanFacts(family="sdxl", gpu_memory_gib=16), ["sdxl-memory"]),
        (
            PlanFacts(family="sdxl", gpu_memory_gib=16, gradient_checkpointing=True, text_encoder_lr=2e-5),
            ["sdxl-memory"],
        ),
        (PlanFacts(family="sdxl"), []),  # no GPU known: nothing to judge
        (PlanFacts(family="sd15", gpu_memory_gib=8), []),
        (PlanFacts(family="sd15", gpu_memory_gib=8, memory_need_gib=7.9), []),
        (PlanFacts(family="sd15", gpu_memory_gib=8, memory_need_gib=8.1), ["gpu-memory"]),
        (PlanFacts(family="sd15", memory_need_gib=80), []),  # no GPU known
        # SDXL's own advice says it first, with the settings that fix it.
        (PlanFacts(family="sdxl", gpu_memory_gib=16, memory_need_gib=20), ["sdxl-memory"]),
        (
            PlanFacts(family="sdxl", gpu_memory_gib=16, gradient_checkpointing=True, memory_need_gib=20),
            ["gpu-memory"],
        ),
        (PlanFacts(), []),
    ],
)
def test_each_rule_fires_past_its_limit_only(facts: PlanFacts, expected: list[str]) -> None:
    assert ids(facts) == expected


def test_bf16_is_probed_only_when_asked_and_warns_only_on_a_no() -> None:
    calls: list[int] = []

    def probe(answer):
        def run() -> bool | None:
            calls.append(1)
            return answer

        return run

    assert ids(PlanFacts(precision="bf16"), probe(False)) == ["bf16-unsupported"]
    assert ids(PlanFacts(precision="bf16"), probe(True)) == []
    assert ids(PlanFacts(precision="bf16"), probe(None)) == []  # no GPU here: cannot tell
    assert len(calls) == 3


def test_messages_carry_the_figure_and_the_guides_reason() -> None:
    advice = advise(PlanFacts(batch=8, epochs=3, unet_lr=1e-4, text_encoder_lr=5e-5))
    by_id = {item.id: item.message for item in advice}
    assert by_id["batch-above-4"].startswith("batch 8: ") and RULES["batch-above-4"] in by_id["batch-above-4"]
    assert by_id["epochs-below-10"].startswith("3 epoch(s): ")
    assert "1/2 of the U-Net LR" in by_id["text-encoder-lr-ratio"] and "TEC" in by_id["text-encoder-lr-ratio"]
    assert advice[0].to_json() == {"id": "batch-above-4", "message": by_id["batch-above-4"]}


def test_every_rule_id_is_reachable_and_one_line() -> None:
    everything = PlanFacts(
        batch=8,
        epochs=1,
        steps_per_epoch=5,
        total_steps=5,
        run="test",
        unet_lr=1.0,
        text_encoder_lr=1.0,
        precision="bf16",
        dsb_verdict="fair",
        family="sdxl",
        gpu_memory_gib=12,
        subject="outfit",
    )
    reached = set(ids(everything, lambda: False))
    reached |= set(ids(PlanFacts(batch=3, run="final", steps_per_epoch=500, unet_lr=1.0, training="full")))
    reached |= set(ids(PlanFacts(precision="fp16", subject="character"), lambda: True))
    reached |= set(ids(PlanFacts(subject="outfit")))
    reached |= set(ids(PlanFacts(gpu_memory_gib=4, memory_need_gib=5)))
    assert reached == set(RULES)
    assert all("\n" not in reason for reason in RULES.values())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"run": "quick"},
        {"training": "dreambooth"},
        {"precision": "fp8"},
        {"family": "sd3"},
        {"unet_lr": -1e-4},
        {"text_encoder_lr": float("nan")},
        {"subject": "hero"},
        {"subject": "Outfit"},
        {"images": 0},
        {"gpus": 0},
        {"grad_accumulation": 1.5},
    ],
)
def test_unknown_kinds_and_negative_rates_are_refused(kwargs) -> None:
    with pytest.raises(UsageError) as raised:
        PlanFacts(**kwargs)
    assert "\n" not in str(raised.value)


def test_a_bad_subject_is_refused_in_one_line_naming_the_choices() -> None:
    with pytest.raises(UsageError) as raised:
        PlanFacts(subject="hero")
    assert str(raised.value) == (
        "subject 'hero' is unknown; use one of character, outfit, hairstyle, colour-theme, "
        "artist-style, object, concept, other"
    )


@pytest.mark.parametrize(
    ("available", "capability", "expected"),
    [
        (False, (8, 6), None),  # no CUDA GPU: cannot tell
        (True, (7, 5), False),  # Turing (T4, RTX 20xx): torch would emulate bf16, slowly
        (True, (6, 1), False),  # Pascal
        (True, (8, 0), True),  # Ampere A100
        (True, (9, 0), True),  # Hopper
    ],
)
def test_cuda_probe_reads_the_compute_capability_lazily(
    monkeypatch, available: bool, capability, expected
) -> None:
    # A stand-in torch keeps the test fast and covers GPUs this machine does not have. It says
    # bf16 is supported everywhere, as recent torch does for emulated bf16: the probe must not ask it.
    cuda = types.SimpleNamespace(
        is_available=lambda: available,
        get_device_capability=lambda device=0: capability,
        is_bf16_supported=lambda: True,
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setattr(advisor, "nvidia_gpu_visible", lambda: True)
    assert cuda_compute_capability() == (capability if available else None)
    assert cuda_bf16_supported() is expected


def test_cuda_probe_without_torch_cannot_tell(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    monkeypatch.setattr(advisor, "nvidia_gpu_visible", lambda: True)
    assert cuda_compute_capability() is None
    assert cuda_bf16_supported() is None


def test_cuda_probes_do_not_import_torch_without_nvidia_device_files(monkeypatch) -> None:
    """Every plan asks for the GPU's memory: on a machine without an NVIDIA GPU that must not
    cost a torch import (seconds for `kiln calc`)."""
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace())  # any use would raise
    monkeypatch.setattr(advisor, "nvidia_gpu_visible", lambda: False)
    assert cuda_memory_gib() is None
    assert cuda_compute_capability() is None


def test_bf16_probe_takes_an_injected_capability() -> None:
    assert cuda_bf16_supported(lambda: (8, 9)) is True
    assert cuda_bf16_supported(lambda: (7, 0)) is False
    assert cuda_bf16_supported(lambda: None) is None


FP16_SUBJECTS = {"outfit", "hairstyle", "colour-theme", "artist-style"}


def _expected_precision_ids(subject: str, precision: str | None, gpu: bool | None) -> list[str]:
    """The guide's table, written out independently of the advisor's code."""
    wanted = "fp16" if subject in FP16_SUBJECTS else "bf16"
    expected = []
    if precision == "bf16" and gpu is False:
        expected.append("bf16-unsupported")
    fp16_is_best_here = wanted == "bf16" and gpu is False and precision == "fp16"
    if precision != wanted and not fp16_is_best_here:
        expected.append("precision-suggestion" if precision is None else "precision-for-subject")
    if precision == "fp16":
        expected.append("fp16-loss-scaling")
    # Notes (information) come after the warnings.
    return sorted(expected, key=lambda rule: rule in NOTES)


@pytest.mark.parametrize("gpu", [True, False, None], ids=["bf16-gpu", "pre-ampere-gpu", "no-gpu"])
@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32", None])
@pytest.mark.parametrize("subject", SUBJECTS)
def test_precision_advice_for_every_subject_precision_and_gpu(subject: str, precision, gpu) -> None:
    advice = advise(PlanFacts(precision=precision, subject=subject), bf16_supported=lambda: gpu)
    assert [item.id for item in advice] == _expected_precision_ids(subject, precision, gpu)
    by_id = {item.id: item for item in advice}
    said = by_id.get("precision-for-subject") or by_id.get("precision-suggestion")
    if said is None:
        return
    wanted = "fp16" if subject in FP16_SUBJECTS else "bf16"
    assert said.note is (precision is None)
    assert said.message.startswith(f"{precision or 'no precision chosen'} for ")
    if wanted == "bf16" and gpu is False:
        assert said.message.endswith("this GPU lacks bf16 (compute capability below 8.0): use fp16")
    else:
        assert said.message.endswith(f"use {wanted}: {PRECISION_REASONS[wanted]}")


def test_precision_messages_quote_the_guides_reasons() -> None:
    outfit = advise(PlanFacts(precision="bf16", subject="outfit"), bf16_supported=lambda: True)[0]
    assert outfit.id == "precision-for-subject" and outfit.message.startswith("bf16 for an outfit: ")
    assert "limited dynamic range picks up much less extra information you do not want" in outfit.message
    character = advise(PlanFacts(precision="fp32", subject="character"), bf16_supported=lambda: True)[0]
    assert "more precise in whatever it picks up" in character.message
    assert "fewer steps to the same point" in character.message
    assert "not more memory" in character.message and "compute capability 8.0+" in character.message
    assert "style without the subjects the artist draws" in PRECISION_REASONS["fp16"]


def test_precision_without_a_subject_and_the_bf16_probe_is_asked_once() -> None:
    assert ids(PlanFacts(precision="fp32")) == []  # no subject: no probe, no advice
    calls: list[int] = []
    ids(PlanFacts(precision="bf16", subject="character"), lambda: calls.append(1) or False)
    ids(PlanFacts(precision="fp32", subject="concept"), lambda: calls.append(1) or False)
    assert calls == [1, 1]
    assert ids(PlanFacts(precision="fp16", subject="outfit")) == ["fp16-loss-scaling"]  # never probed


def test_fp16_note_says_how_kiln_keeps_small_gradients() -> None:
    (note,) = advise(PlanFacts(precision="fp16"))
    assert note.note and note.id == "fp16-loss-scaling"
    assert "GradScaler" in note.message and "fp32" in note.message and "underflow" in note.message
    assert not any(item.note for item in advise(PlanFacts(batch=9, epochs=2)))


def message(facts: PlanFacts, rule: str) -> str:
    return next(item.message for item in advise(facts) if item.id == rule)


def test_one_epoch_of_500_becomes_5_epochs_of_100_with_the_repeats_for_it() -> None:
    # 10 images x 50 repeats at batch 1: one epoch of 500 steps.
    facts = PlanFacts(batch=1, epochs=1, steps_per_epoch=500, total_steps=500, images=10)
    assert message(facts, "steps-per-epoch-high").endswith(
        "lower repeats and raise epochs: for the same 500 steps the guide would train 5 epochs, "
        "where 10 repeats make about 100 steps per epoch (500 in all)"
    )
    # 3 epochs of 350 at batch 2 with 2 accumulation steps: 1050 steps -> 10 epochs of 105.
    facts = PlanFacts(
        batch=2, epochs=3, steps_per_epoch=350, total_steps=1050, images=20, grad_accumulation=2
    )
    assert message(facts, "steps-per-epoch-high").endswith(
        "for the same 1050 steps the guide would train 10 epochs, where 21 repeats make about 105 "
        "steps per epoch (1050 in all)"
    )


def test_epochs_suggestion_without_the_image_count_or_when_repeats_cannot_shrink() -> None:
    bare = PlanFacts(epochs=1, steps_per_epoch=500, total_steps=500)
    assert message(bare, "steps-per-epoch-high").endswith(
        "for the same 500 steps the guide would train 5 epochs of about 100 steps "
        "(lower the repeats to match)"
    )
    big = PlanFacts(batch=1, epochs=1, steps_per_epoch=500, total_steps=500, images=500)
    assert message(big, "steps-per-epoch-high").endswith(
        "but even 1 repeat of 500 images makes 500 steps per epoch"
    )
    # Only steps per epoch known: the guide's reason alone, as before.
    assert message(PlanFacts(steps_per_epoch=250), "steps-per-epoch-high") == (
        f"250 steps per epoch: {RULES['steps-per-epoch-high']}"
    )


def test_too_few_steps_per_epoch_raise_the_repeats_keeping_at_least_10_epochs() -> None:
    # The guide's batch-4 check: 10 images x 35 repeats, 9 epochs of 88 steps.
    guide = PlanFacts(batch=4, epochs=9, steps_per_epoch=88, total_steps=792, images=10)
    assert message(guide, "steps-per-epoch-low").endswith(
        "raise repeats so each epoch is worth a checkpoint: 40 repeats make about 100 steps per epoch "
        "(1000 in 10 epochs)"
    )
    # Enough steps for 10 full epochs: the same total, re-split into fewer, fuller epochs.
    many = PlanFacts(batch=1, epochs=40, steps_per_epoch=50, total_steps=2000, images=10)
    assert message(many, "steps-per-epoch-low").endswith(
        "for the same 2000 steps the guide would train 20 epochs, where 10 repeats make about 100 steps "
        "per epoch (2000 in all)"
    )
    assert message(PlanFacts(epochs=10, steps_per_epoch=50, total_steps=500), "steps-per-epoch-low").endswith(
        ": aim for 10 epochs of 100 steps (1000 in all)"
    )
