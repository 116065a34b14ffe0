"""Kohya's fused backward pass: each weight is stepped the moment its gradient is complete.

A full fine-tune's gradients are as big as the model (3.4 GB for an SD 1.5 U-Net in fp32,
10 GB for SDXL's). Stepping the optimizer inside backward, one parameter at a time, and
dropping that gradient at once means only a few gradients are ever alive together, which
is what lets an SDXL fine-tune fit a 24 GB card (sd-scripts' ``--fused_backward_pass``).

The price is what needs every gradient at once: clipping by the global norm, gradient
accumulation across batches, fp16's loss scaler (it unscales all gradients before it can
decide to skip a step) and several processes (DDP reduces gradients after the hooks have
already stepped). The config refuses the first three and the trainer the last.

Each parameter gets its own optimizer of the run's class with its group's settings, so any
optimizer whose update is per-tensor (AdamW, Adafactor) gives exactly the unfused result.
The run's optimizer stays as the one the LR schedule drives and the metadata names: each
hook copies its group's current learning rate before stepping.
"""

from __future__ import annotations

from typing import Any

import torch
from kiln.engine.errors import RunError


class FusedBackward:
    """One optimizer per parameter, stepped from a post-accumulate-grad hook."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self._steppers: list[tuple[torch.nn.Parameter, torch.optim.Optimizer, dict[str, Any]]] = []
        for group in optimizer.param_groups:
            settings = {key: value for key, value in group.items() if key != "params"}
            for param in group["params"]:
                kind: Any = type(optimizer)  # AdamW, Adafactor, AdamW8bit: all take groups alone
                stepper = kind([{**settings, "params": [param]}])
                self._steppers.append((param, stepper, group))
        for param, stepper, group in self._steppers:
            param.register_post_accumulate_grad_hook(self._hook(stepper, group))

    @staticmethod
    def _hook(stepper: torch.optim.Optimizer, group: dict[str, Any]) -> Any:
        def step(param: torch.Tensor) -> None:
            stepper.param_groups[0]["lr"] = group["lr"]
            stepper.step()
            param.grad = None

        return step

    def state_dict(self) -> dict[str, Any]:
        """Every parameter's optimizer state, in parameter order (what resume saves)."""
        return {"fused": [stepper.state_dict() for _, stepper, _ in self._steppers]}

    def load_state_dict(self, data: dict[str, Any]) -> None:
        states = data.get("fused")
        if states is None or len(states) != len(self._steppers):
            raise RunError("the resume state was saved without train.fused_backward (or for another model)")
        for (_, stepper, _), state in zip(self._steppers, states, strict=True):
            stepper.load_state_dict(state)
