"""The weight average across a resume on another device than the one the state was read onto."""

from __future__ import annotations

import torch
from kiln.engine.train.ema import WeightAverage


def test_a_loaded_average_moves_to_the_weights_device_and_steps() -> None:
    """A resume reads its state onto the CPU; on a GPU the weights are elsewhere. The meta
    device stands in for CUDA: before the fix the next step failed ("Tensor on device meta is
    not on the expected device cpu")."""
    saved = WeightAverage([torch.nn.Parameter(torch.ones(3))], 0.9).state_dict()
    weights = [torch.nn.Parameter(torch.ones(3, device="meta"))]
    average = WeightAverage(weights, 0.9)
    average.load_state_dict(saved)
    assert [shadow.device.type for shadow in average.ema.shadow_params] == ["meta"]
    average.step()
    assert average.ema.optimization_step == saved["optimization_step"] + 1
