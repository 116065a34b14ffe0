"""train.fused_backward (Kohya's --fused_backward_pass) on a full fine-tune: the same weights
as the unfused run, never the whole model's gradients in memory at once, resume, and a one-line
refusal of each setting it cannot honour."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from kiln.engine.errors import ConfigError
from kiln.engine.models.sd15 import load
from kiln.engine.runs.control import controlled_trainer
from kiln.engine.runs.layout import create_run_dir
from kiln.engine.train.fused_backward import FusedBackward

from tests.train.helpers import assert_resume_matches, step_losses

FULL = {"type": "full"}


def run_full(make_config, name: str, fused: bool, **train: Any):
    config = make_config(
        network=FULL,
        train={"max_steps": 3, "unet_lr": 1e-3, "max_grad_norm": 0, "fused_backward": fused, **train},
        output={"name": name},
    )
    run_dir = create_run_dir(config)
    trainer = controlled_trainer(config, run_dir)
    result = trainer.run()
    assert result.state == "done", result.error
    unet = trainer.accelerator.unwrap_model(trainer.models.unet_train)
    return {name: param.detach().clone() for name, param in unet.named_parameters()}, step_losses(run_dir)


@pytest.mark.parametrize("optimizer", ["adafactor", "adamw"])
def test_fused_steps_give_the_unfused_runs_weights(make_config, tiny_model, optimizer: str) -> None:
    plain, plain_losses = run_full(make_config, "plain", False, optimizer=optimizer)
    fused, fused_losses = run_full(make_config, "fused", True, optimizer=optimizer)
    assert list(fused_losses.values()) == pytest.approx(list(plain_losses.values()), rel=1e-5)
    for name, weight in plain.items():
        assert torch.allclose(fused[name], weight, atol=1e-6, rtol=1e-5), name
    base = load(tiny_model).unet
    moved = sum(not torch.equal(base.get_parameter(name), weight) for name, weight in fused.items())
    assert moved == len(fused)  # the fused run trained every weight, not none


def test_only_a_few_gradients_are_alive_at_once(make_config, monkeypatch: pytest.MonkeyPatch) -> None:
    """Count the gradients held while each hook runs: the unfused step holds all of them."""
    peaks: list[int] = []
    weights: list[int] = []

    class Counting(FusedBackward):
        def __init__(self, optimizer: torch.optim.Optimizer) -> None:
            super().__init__(optimizer)
            self.params = [param for param, _, _ in self._steppers]
            weights.append(len(self.params))

        def _hook(self, stepper, group):  # type: ignore[override]
            step = super()._hook(stepper, group)

            def counted(param: torch.Tensor) -> None:
                peaks.append(sum(p.grad is not None for p in self.params))
                step(param)

            return counted

    monkeypatch.setattr("kiln.engine.train.loop.FusedBackward", Counting)
    run_full(make_config, "counted", True, optimizer="adafactor")
    total = weights[0]
    assert len(peaks) >= 3 * total  # every weight stepped on every step
    assert max(peaks) <= 2 < total


def test_a_cancelled_fused_run_resumes_to_the_uninterrupted_losses(make_config) -> None:
    def config(name: str):
        return make_config(
            network=FULL,
            train={"max_steps": 4, "unet_lr": 1e-4, "max_grad_norm": 0, "fused_backward": True},
            output={"name": name},
        )

    assert_resume_matches(config, steps=4)


@pytest.mark.parametrize(
    ("tables", "says"),
    [
        ({"train": {"max_grad_norm": 0}}, r'set network\.type = "full"'),
        ({"network": FULL, "train": {"max_grad_norm": 0, "grad_accumulation": 2}}, r"grad_accumulation = 2"),
        ({"network": FULL}, r"train\.max_grad_norm = 0 \(it is 1\)"),
        ({"network": FULL, "train": {"max_grad_norm": 0, "precision": "fp16"}}, r'"bf16" or "fp32"'),
    ],
)
def test_what_it_cannot_do_is_refused_in_one_line(make_config, tables: dict, says: str) -> None:
    tables.setdefault("train", {})["fused_backward"] = True
    with pytest.raises(ConfigError, match=r"^test: train\.fused_backward: .*" + says) as caught:
        make_config(**tables)
    assert "\n" not in str(caught.value)
