"""The guide's training rules as warnings: each with a stable id and the guide's reason.

Pure functions over a typed input, so the CLI, the plan screen and the trainer's pre-flight
check give the same advice. The one fact that needs the hardware (bf16 support) is probed
only when bf16 is asked for, through an injectable function; torch is imported lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kiln.engine.errors import UsageError

RUN_KINDS: tuple[str, ...] = ("test", "final")
TRAINING_KINDS: tuple[str, ...] = ("lora", "full")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
FAMILIES: tuple[str, ...] = ("sd15", "sdxl")
# Below this much GPU memory an SDXL LoRA needs gradient checkpointing and cached text-encoder
# outputs (Kohya's and OneTrainer's guidance; measured by bench.train_gpu --family sdxl).
SDXL_COMFORT_GIB = 24

MAX_BATCH = 4
MAX_FINAL_BATCH = 2
MIN_EPOCHS = 10
STEPS_PER_EPOCH = (100, 200)
TEST_RUN_STEPS = (500, 1000)
UNET_LR = {"lora": (1e-4, 5e-4), "full": (1e-6, 3e-6)}
TEXT_ENCODER_SHARE = (1 / 6, 1 / 4)
# Leeway for rounded figures: 1e-4 / 6 typed as 1.66e-5 is still "a sixth".
_RATIO_LEEWAY = 0.005

# Stable id -> the guide's reasoning, in one line. Ids never change once published.
RULES: dict[str, str] = {
    "batch-above-4": "the guide never trains above batch 4: larger batches change what is learned, "
    "not only the speed",
    "batch-above-2-final": "the guide uses batch 1 or 2 for final trainings; batch 4 gives noticeably "
    "different results, keep it for tests",
    "epochs-below-10": "the guide uses at least 10 epochs: more epochs of fewer steps train better "
    "(5 x 100 steps beats 1 x 500)",
    "steps-per-epoch-low": "the guide keeps about 100-200 steps per epoch; raise repeats so each epoch "
    "is worth a checkpoint",
    "steps-per-epoch-high": "the guide keeps about 100-200 steps per epoch and adds epochs instead; "
    "lower repeats and raise epochs",
    "unet-lr-lora": "the guide starts LoRAs at a U-Net LR of 1e-4..5e-4: higher overcooks (noise, harsh "
    "contrast), lower undercooks (smudged detail)",
    "unet-lr-full-finetune": "the guide starts full fine-tunes at a U-Net LR of 1e-6..3e-6: higher "
    "overcooks, lower undercooks",
    "text-encoder-lr-ratio": "the guide sets the text-encoder LR to 1/6..1/4 of the U-Net LR: higher "
    "corrupts the text encoder (TEC), lower captures less detail",
    "test-run-steps": "the guide's test trainings run 500-1000 steps each: enough to compare settings, "
    "cheap enough to run 10-20 of them",
    "bf16-unsupported": "bf16 needs a newer GPU architecture (NVIDIA Ampere or later); this GPU lacks "
    "it, use fp16",
    "dsb-not-optimal": "the guide trains on datasets whose dominant tone share is 60 ± 5%; rebalance "
    "the dataset first (kiln dsb)",
    "sdxl-memory": "an SDXL LoRA fits a GPU under 24 GB only with gradient checkpointing and cached "
    "text-encoder outputs: set train.gradient_checkpointing = true and network.train_text_encoder = false",
}


@dataclass(frozen=True)
class Advice:
    """One warning: ``id`` is stable (scripts and tests key on it), ``message`` is for people."""

    id: str
    message: str

    def to_json(self) -> dict[str, str]:
        """``{"id": ..., "message": ...}`` as ``--json`` output carries it."""
        return {"id": self.id, "message": self.message}


@dataclass(frozen=True)
class PlanFacts:
    """What the advisor judges; leave a field None when it is not known or not chosen.

    Attributes:
        batch: Batch size.
        epochs: Epochs.
        steps_per_epoch: Optimizer steps per epoch, as Kohya counts them.
        total_steps: Optimizer steps of the whole run.
        run: ``"test"`` for a short settings trial, ``"final"`` for the real training.
        training: ``"lora"`` or ``"full"`` (full fine-tune / DreamBooth of the base model).
        unet_lr: U-Net learning rate.
        text_encoder_lr: Text-encoder learning rate; 0 means the text encoder is frozen.
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"`` (mixed precision).
        dsb_verdict: The dataset's DSB verdict (``optimal``, ``fair``, ``mediocre``, ``generic``).
        family: The base model's family (``sd15``, ``sdxl``).
        gpu_memory_gib: The training GPU's memory (None: no GPU here, or not known).
        gradient_checkpointing: Whether gradient checkpointing is on.
    """

    batch: int | None = None
    epochs: int | None = None
    steps_per_epoch: int | None = None
    total_steps: int | None = None
    run: str | None = None
    training: str = "lora"
    unet_lr: float | None = None
    text_encoder_lr: float | None = None
    precision: str | None = None
    dsb_verdict: str | None = None
    family: str = "sd15"
    gpu_memory_gib: float | None = None
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.run is not None and self.run not in RUN_KINDS:
            raise UsageError(f"run kind {self.run!r} is unknown; use one of {', '.join(RUN_KINDS)}")
        if self.training not in TRAINING_KINDS:
            raise UsageError(f"training {self.training!r} is unknown; use one of {', '.join(TRAINING_KINDS)}")
        if self.family not in FAMILIES:
            raise UsageError(f"model family {self.family!r} is unknown; use one of {', '.join(FAMILIES)}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise UsageError(f"precision {self.precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
        for name in ("unet_lr", "text_encoder_lr"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise UsageError(f"{name.replace('_', ' ')} {value!r} must be a number, at least 0")


def cuda_bf16_supported() -> bool | None:
    """Whether the first CUDA GPU does bf16; None when there is no CUDA GPU (or no torch).

    Imports torch, so it is called only when bf16 is asked for.
    """
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return bool(torch.cuda.is_bf16_supported())


def advise(facts: PlanFacts, bf16_supported: Callable[[], bool | None] = cuda_bf16_supported) -> list[Advice]:
    """The guide's warnings for a plan, in a fixed order.

    Why: the guide's rules of thumb are easy to forget while tuning numbers; each warning
    says which rule and why, so the user decides knowingly.

    Args:
        facts: The plan.
        bf16_supported: Probe called only when ``facts.precision == "bf16"``; returns None
            when it cannot tell (no GPU here), which gives no warning.
    """
    found: list[Advice] = []

    def warn(rule: str, what: str) -> None:
        found.append(Advice(rule, f"{what}: {RULES[rule]}"))

    if facts.batch is not None and facts.batch > MAX_BATCH:
        warn("batch-above-4", f"batch {facts.batch}")
    if facts.run == "final" and facts.batch is not None and facts.batch > MAX_FINAL_BATCH:
        warn("batch-above-2-final", f"batch {facts.batch} for a final run")
    if facts.epochs is not None and facts.epochs < MIN_EPOCHS:
        warn("epochs-below-10", f"{facts.epochs} epoch(s)")
    if facts.steps_per_epoch is not None:
        low, high = STEPS_PER_EPOCH
        if facts.steps_per_epoch < low:
            warn("steps-per-epoch-low", f"{facts.steps_per_epoch} steps per epoch")
        elif facts.steps_per_epoch > high:
            warn("steps-per-epoch-high", f"{facts.steps_per_epoch} steps per epoch")
    if facts.unet_lr is not None:
        lr_low, lr_high = UNET_LR[facts.training]
        if not lr_low <= facts.unet_lr <= lr_high:
            rule = "unet-lr-lora" if facts.training == "lora" else "unet-lr-full-finetune"
            warn(rule, f"U-Net LR {facts.unet_lr:g}")
    if facts.unet_lr and facts.text_encoder_lr:
        share = facts.text_encoder_lr / facts.unet_lr
        share_low, share_high = TEXT_ENCODER_SHARE
        if not share_low * (1 - _RATIO_LEEWAY) <= share <= share_high * (1 + _RATIO_LEEWAY):
            warn(
                "text-encoder-lr-ratio",
                f"text-encoder LR {facts.text_encoder_lr:g} is 1/{1 / share:.3g} of the U-Net LR "
                f"(1/6..1/4 is {facts.unet_lr * share_low:.3g}..{facts.unet_lr * share_high:.3g})",
            )
    if facts.run == "test" and facts.total_steps is not None:
        low, high = TEST_RUN_STEPS
        if not low <= facts.total_steps <= high:
            warn("test-run-steps", f"a test run of {facts.total_steps} steps")
    if facts.precision == "bf16" and bf16_supported() is False:
        warn("bf16-unsupported", "bf16 on this GPU")
    if facts.dsb_verdict is not None and facts.dsb_verdict != "optimal":
        warn("dsb-not-optimal", f"DSB verdict {facts.dsb_verdict}")
    if (
        facts.family == "sdxl"
        and facts.gpu_memory_gib is not None
        and facts.gpu_memory_gib < SDXL_COMFORT_GIB
    ):
        # A text-encoder LR of 0 (or None: not chosen) leaves the encoders frozen, and their
        # outputs cached; a positive one trains them and keeps them on the GPU.
        frozen = not facts.text_encoder_lr
        if not (facts.gradient_checkpointing and frozen):
            missing = [
                name
                for name, on in (
                    ("gradient checkpointing", facts.gradient_checkpointing),
                    ("cached text", frozen),
                )
                if not on
            ]
            warn(
                "sdxl-memory", f"SDXL on a {facts.gpu_memory_gib:.0f} GB GPU without {' and '.join(missing)}"
            )
    return found


def cuda_memory_gib() -> float | None:
    """The first CUDA GPU's memory in GiB; None without one (or without torch). Imports torch,
    so it is called only when an SDXL plan asks."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 1024**3
