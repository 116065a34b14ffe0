"""Learning-rate schedules as a pure function of the step, so a resumed run gets the same LR."""

from __future__ import annotations

import math


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """The multiplier on the base LR for optimizer step ``step`` (0-based) of ``total``.

    ``constant`` and ``constant_with_warmup`` hold 1 after the warmup; ``linear`` decays to
    0 at ``total``; ``cosine`` follows half a cosine to 0. Warmup ramps linearly from
    1/warmup to 1 over the first ``warmup`` steps.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind in ("constant", "constant_with_warmup"):
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span))
    if kind == "linear":
        return 1.0 - progress
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown LR schedule {kind!r}")
