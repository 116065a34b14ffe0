"""The guide's rules as warnings: each id fires exactly past its limit, with the guide's reason."""

from __future__ import annotations

import sys
import types

import pytest
from kiln.engine.errors import UsageError
from kiln.engine.plan.advisor import RULES, PlanFacts, advise, cuda_bf16_supported


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
        (PlanFacts(precision="fp16"), []),
        (PlanFacts(family="sdxl", gpu_memory_gib=24), []),
        (PlanFacts(family="sdxl", gpu_memory_gib=16, gradient_checkpointing=True), []),
        (PlanFacts(family="sdxl", gpu_memory_gib=16), ["sdxl-memory"]),
        (
            PlanFacts(family="sdxl", gpu_memory_gib=16, gradient_checkpointing=True, text_encoder_lr=2e-5),
            ["sdxl-memory"],
        ),
        (PlanFacts(family="sdxl"), []),  # no GPU known: nothing to judge
        (PlanFacts(family="sd15", gpu_memory_gib=8), []),
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
    )
    reached = set(ids(everything, lambda: False))
    reached |= set(ids(PlanFacts(batch=3, run="final", steps_per_epoch=500, unet_lr=1.0, training="full")))
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
    ],
)
def test_unknown_kinds_and_negative_rates_are_refused(kwargs) -> None:
    with pytest.raises(UsageError):
        PlanFacts(**kwargs)


@pytest.mark.parametrize(
    ("available", "bf16", "expected"), [(False, False, None), (True, False, False), (True, True, True)]
)
def test_cuda_probe_reads_torch_lazily(monkeypatch, available: bool, bf16: bool, expected) -> None:
    # A stand-in torch keeps the test fast and covers GPUs this machine does not have.
    cuda = types.SimpleNamespace(is_available=lambda: available, is_bf16_supported=lambda: bf16)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    assert cuda_bf16_supported() is expected


def test_cuda_probe_without_torch_cannot_tell(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    assert cuda_bf16_supported() is None
