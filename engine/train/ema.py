"""An exponential moving average of a full fine-tune's weights (diffusers' ``EMAModel``).

The average is updated after every optimizer step and is what each epoch's checkpoint file
holds (the live weights keep training and render the samples); it travels in the resume state,
so a resumed run averages on as an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


class WeightAverage:
    """The EMA of ``params`` with ``decay`` (diffusers' EMAModel, its warm-up off)."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float) -> None:
        from diffusers.training_utils import EMAModel

        self.params = params
        self.ema = EMAModel(params, decay=decay)

    def step(self) -> None:
        """Fold the current weights in (after an optimizer step)."""
        self.ema.step(self.params)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in place of the live ones, for the duration (a save)."""
        self.ema.store(self.params)
        self.ema.copy_to(self.params)
        try:
            yield
        finally:
            self.ema.restore(self.params)

    def state_dict(self) -> dict[str, Any]:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a saved average onto the weights' device: the resume state is read onto the CPU,
        and EMAModel keeps what it loads where it lies, so on a GPU the next step would mix
        devices."""
        self.ema.load_state_dict(state)
        self.ema.to(device=self.params[0].device)


def weight_average(params: list[torch.nn.Parameter], decay: float) -> WeightAverage | None:
    """An EMA of ``params`` when ``decay`` is set, else None."""
    return WeightAverage(params, decay) if decay else None


def with_average(average: WeightAverage | None, save: Callable[[], Any]) -> Any:
    """Run ``save`` with the averaged weights applied (or as they are, without an EMA)."""
    if average is None:
        return save()
    with average.applied():
        return save()
