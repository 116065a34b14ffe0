"""Sample images during training: Kohya's prompt syntax, fixed seeds, ``samples/eNNN/``.

A prompt line is ``text --n negative --w 512 --h 512 --d seed --s steps --l cfg``. Without
``--d`` a prompt gets the run's seed plus its index, so every epoch renders the same noise
and epochs compare side by side with the epoch-0 baseline.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.engine.errors import ConfigError

DEFAULT_STEPS = 30
# A CPU renders a 512 px step in seconds: few steps keep a sample round short.
CPU_STEPS = 8
DEFAULT_CFG = 7.5
_OPTION = re.compile(r"\s--([a-z]+)\s*")


@dataclass(frozen=True)
class SamplePrompt:
    """One sample to render."""

    prompt: str
    negative: str
    width: int
    height: int
    seed: int
    steps: int
    cfg: float


def parse_prompt(
    line: str, index: int, default_size: int, base_seed: int, default_steps: int = DEFAULT_STEPS
) -> SamplePrompt:
    """Read one Kohya prompt line.

    Raises:
        ConfigError: An unknown option or a bad number (named, with the prompt's index).
    """
    parts = _OPTION.split(" " + line.strip())
    prompt = parts[0].strip()
    values: dict[str, str | int | float] = {
        "n": "",
        "w": default_size,
        "h": default_size,
        "d": base_seed + index,
        "s": default_steps,
        "l": DEFAULT_CFG,
    }
    for option, raw in zip(parts[1::2], parts[2::2], strict=False):
        raw = raw.strip()
        if option not in values:
            raise ConfigError(
                f"sample.prompts[{index}]: unknown option --{option}; use --n --w --h --d --s --l"
            )
        if option == "n":
            values["n"] = raw
            continue
        try:
            values[option] = float(raw) if option == "l" else int(raw)
        except ValueError:
            raise ConfigError(f"sample.prompts[{index}]: --{option} {raw!r} is not a number") from None
    width, height = (max(64, int(values[key]) - int(values[key]) % 8) for key in ("w", "h"))
    if int(values["s"]) < 1:
        raise ConfigError(f"sample.prompts[{index}]: --s must be at least 1")
    return SamplePrompt(
        prompt=prompt,
        negative=str(values["n"]),
        width=width,
        height=height,
        seed=int(values["d"]),
        steps=int(values["s"]),
        cfg=float(values["l"]),
    )


def sample_scheduler(name: str, config: dict):
    """The sampler a user picked, built from the model's scheduler config."""
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
    )

    classes = {
        "ddim": DDIMScheduler,
        "euler": EulerDiscreteScheduler,
        "euler_a": EulerAncestralDiscreteScheduler,
        "dpmsolver++": DPMSolverMultistepScheduler,
    }
    return classes[name].from_config(config)


def render_samples(
    pipe: Any,
    prompts: list[SamplePrompt],
    folder: Path,
    scheduler,
    clip_skip: int = 1,
    on_image: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Render ``prompts`` with the pipeline as it is (LoRA active) into ``folder/NN.png``.

    ``pipe`` is a diffusers text-to-image pipeline; typed ``Any`` because diffusers registers
    its parts (``scheduler``, ``unet``...) at run time, where no type checker sees them.

    The caller provides autocast for mixed precision; generators live on the CPU so the
    same seed gives the same noise on any device. ``on_image(k, n)`` is called before the
    k-th of n images (1-based), for a "sampling k/n" progress.
    """
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    original = pipe.scheduler
    pipe.scheduler = scheduler
    paths = []
    try:
        for index, sample in enumerate(prompts):
            if on_image is not None:
                on_image(index + 1, len(prompts))
            generator = torch.Generator("cpu").manual_seed(sample.seed)
            with torch.no_grad():
                image = pipe(
                    prompt=sample.prompt,
                    negative_prompt=sample.negative or None,
                    width=sample.width,
                    height=sample.height,
                    num_inference_steps=sample.steps,
                    guidance_scale=sample.cfg,
                    generator=generator,
                    clip_skip=clip_skip - 1 if clip_skip > 1 else None,
                ).images[0]
            path = folder / f"{index:02d}.png"
            tmp = path.with_name(f".{path.name}.tmp")
            image.save(tmp, format="PNG")
            tmp.replace(path)
            paths.append(path)
    finally:
        pipe.scheduler = original
    return paths
