"""The guide's training rules as warnings: each with a stable id and the guide's reason.

Pure functions over a typed input, so the CLI, the plan screen and the trainer's pre-flight
check give the same advice. The one fact that needs the hardware (bf16 support) is probed
only when bf16 is asked for or recommended, through an injectable function; torch is
imported lazily. A few items are notes (:attr:`Advice.note`): information that asks
nothing of the user, kept apart from the warnings.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from kiln.engine.errors import UsageError
from kiln.engine.nvidia import nvidia_gpu_visible
from kiln.engine.plan.steps import BucketKey, plan_steps, repeats_for_target

RUN_KINDS: tuple[str, ...] = ("test", "final")
TRAINING_KINDS: tuple[str, ...] = ("lora", "full")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
FAMILIES: tuple[str, ...] = ("sd15", "sdxl")
# What a LoRA is trained on, as far as the guide's choice of precision goes.
SUBJECTS: tuple[str, ...] = (
    "character",
    "outfit",
    "hairstyle",
    "colour-theme",
    "artist-style",
    "object",
    "concept",
    "other",
)
# The guide: fp16 "gives significantly better results" for these; bf16 "in almost all of the
# cases" is more precise, so it is the pick for every other subject.
FP16_SUBJECTS = frozenset({"outfit", "hairstyle", "colour-theme", "artist-style"})
# A subject in a sentence: "fp32 for an outfit".
_SUBJECT_WORDS = {
    "character": "a character",
    "outfit": "an outfit",
    "hairstyle": "a hairstyle",
    "colour-theme": "a colour theme",
    "artist-style": "an artist's style",
    "object": "an object",
    "concept": "a concept",
    "other": "this subject",
}
# bf16 runs natively from compute capability 8.0 (NVIDIA Ampere); older GPUs only emulate it.
BF16_MIN_CAPABILITY = (8, 0)
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

_BY_SUBJECT = "the guide picks fp16 or bf16 by what is trained"

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
    "bf16-unsupported": "bf16 needs a recent GPU architecture (compute capability 8.0+, NVIDIA Ampere or "
    "later), not more memory; this GPU lacks bf16 (compute capability below 8.0): use fp16",
    "precision-for-subject": _BY_SUBJECT,
    "precision-suggestion": _BY_SUBJECT,
    "dsb-not-optimal": "the guide trains on datasets whose dominant tone share is 60 ± 5%; rebalance "
    "the dataset first (kiln dsb)",
    "sdxl-memory": "an SDXL LoRA fits a GPU under 24 GB only with gradient checkpointing and cached "
    "text-encoder outputs: set train.gradient_checkpointing = true and network.train_text_encoder = false",
    "gpu-memory": "Kiln's estimate of the run's peak (weights, LoRA with gradients and optimizer state, "
    "activations measured per latent pixel) is more than the GPU holds: set "
    "train.gradient_checkpointing = true, lower the batch or the resolution, or use adamw8bit",
    "fp16-loss-scaling": "Kiln trains fp16 as mixed precision: the trained weights stay fp32 (master "
    "weights) and accelerate's GradScaler scales the loss, so small gradients do not underflow fp16's "
    "narrow range",
}
# Ids that are notes: information, not a rule the plan breaks.
NOTES = frozenset({"precision-suggestion", "fp16-loss-scaling"})
# Why the guide picks each precision, in its words (quoted after "use fp16: " / "use bf16: ").
PRECISION_REASONS = {
    "fp16": "it gives significantly better results for outfits, hairstyles, colour themes and copying "
    "an artist's style without the subjects the artist draws, as its limited dynamic range picks up much "
    "less extra information you do not want trained in",
    "bf16": "in almost all other cases it is more precise in whatever it picks up and often needs far "
    "fewer steps to the same point; it needs a recent GPU architecture (compute capability 8.0+), not "
    "more memory (the same 16 bits)",
}


@dataclass(frozen=True)
class Advice:
    """One warning: ``id`` is stable (scripts and tests key on it), ``message`` is for people.

    ``note`` marks information that asks nothing of the user (``fp16-loss-scaling``, a
    precision suggestion); the CLI and the plan screen show notes apart from warnings.
    """

    id: str
    message: str
    note: bool = False

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
        subject: What the LoRA learns (one of :data:`SUBJECTS`); the guide picks the
            precision by it. None: not chosen, no precision advice.
        images: Training images per epoch before repeats (all concept folders together);
            with the batch, the steps-per-epoch advice names the repeats that fix it.
        grad_accumulation: Gradient accumulation steps (divide the batches into steps).
        gpus: Training processes (divide them too).
        memory_need_gib: The run's estimated peak memory (:mod:`kiln.engine.plan.memory`);
            warned about when it is more than ``gpu_memory_gib``.
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
    subject: str | None = None
    images: int | None = None
    grad_accumulation: int = 1
    gpus: int = 1
    memory_need_gib: float | None = None

    def __post_init__(self) -> None:
        if self.run is not None and self.run not in RUN_KINDS:
            raise UsageError(f"run kind {self.run!r} is unknown; use one of {', '.join(RUN_KINDS)}")
        if self.training not in TRAINING_KINDS:
            raise UsageError(f"training {self.training!r} is unknown; use one of {', '.join(TRAINING_KINDS)}")
        if self.family not in FAMILIES:
            raise UsageError(f"model family {self.family!r} is unknown; use one of {', '.join(FAMILIES)}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise UsageError(f"precision {self.precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
        if self.subject is not None and self.subject not in SUBJECTS:
            raise UsageError(f"subject {self.subject!r} is unknown; use one of {', '.join(SUBJECTS)}")
        for name in ("images", "grad_accumulation", "gpus"):
            count = getattr(self, name)
            if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
                raise UsageError(f"{name.replace('_', ' ')} {count!r} must be a whole number, at least 1")
        for name in ("unet_lr", "text_encoder_lr"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise UsageError(f"{name.replace('_', ' ')} {value!r} must be a number, at least 0")


def cuda_compute_capability() -> tuple[int, int] | None:
    """The first CUDA GPU's compute capability, ``(8, 0)`` for Ampere; None without a CUDA GPU
    (or without torch). Imports torch when the device files show an NVIDIA GPU, so it is called
    only when bf16 matters."""
    if not nvidia_gpu_visible():
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return int(major), int(minor)


def cuda_bf16_supported(
    capability: Callable[[], tuple[int, int] | None] = cuda_compute_capability,
) -> bool | None:
    """Whether the first CUDA GPU does bf16 natively; None when there is no CUDA GPU (or no torch).

    Why the compute capability and not ``torch.cuda.is_bf16_supported()``: recent torch says
    True on GPUs below 8.0 that only emulate bf16 (far slower), which is not what the guide
    means by a GPU that supports it.

    Args:
        capability: The compute-capability probe (tests stand in GPUs with and without bf16).
    """
    found = capability()
    if found is None:
        return None
    return found >= BF16_MIN_CAPABILITY


def guide_precision(subject: str) -> str:
    """The precision the guide trains ``subject`` in: fp16 for outfits, hairstyles, colour themes
    and an artist's style, bf16 for everything else."""
    return "fp16" if subject in FP16_SUBJECTS else "bf16"


def advise(facts: PlanFacts, bf16_supported: Callable[[], bool | None] = cuda_bf16_supported) -> list[Advice]:
    """The guide's warnings for a plan, in a fixed order, notes last.

    Why: the guide's rules of thumb are easy to forget while tuning numbers; each warning
    says which rule and why, so the user decides knowingly.

    Args:
        facts: The plan.
        bf16_supported: Probe called (once) only when bf16 is chosen, or recommended for the
            subject instead of the chosen precision; returns None when it cannot tell (no GPU
            here), which gives no warning.
    """
    found: list[Advice] = []
    bf16_ok = functools.cache(bf16_supported)

    def warn(rule: str, what: str, more: str = "") -> None:
        found.append(Advice(rule, f"{what}: {RULES[rule]}{more}", note=rule in NOTES))

    if facts.batch is not None and facts.batch > MAX_BATCH:
        warn("batch-above-4", f"batch {facts.batch}")
    if facts.run == "final" and facts.batch is not None and facts.batch > MAX_FINAL_BATCH:
        warn("batch-above-2-final", f"batch {facts.batch} for a final run")
    if facts.epochs is not None and facts.epochs < MIN_EPOCHS:
        warn("epochs-below-10", f"{facts.epochs} epoch(s)")
    if facts.steps_per_epoch is not None:
        low, high = STEPS_PER_EPOCH
        if facts.steps_per_epoch < low:
            warn("steps-per-epoch-low", f"{facts.steps_per_epoch} steps per epoch", _fuller_epochs(facts))
        elif facts.steps_per_epoch > high:
            warn("steps-per-epoch-high", f"{facts.steps_per_epoch} steps per epoch", _more_epochs(facts))
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
    if facts.precision == "bf16" and bf16_ok() is False:
        warn("bf16-unsupported", "bf16 on this GPU")
    if facts.subject is not None:
        _advise_precision(facts.subject, facts.precision, bf16_ok, warn)
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
    if (
        facts.memory_need_gib is not None
        and facts.gpu_memory_gib is not None
        and facts.memory_need_gib > facts.gpu_memory_gib
        and not any(advice.id == "sdxl-memory" for advice in found)
    ):
        need, gpu = facts.memory_need_gib, facts.gpu_memory_gib
        warn("gpu-memory", f"an estimated {need:.1f} GiB at its peak on a {gpu:.0f} GB GPU")
    if facts.precision == "fp16":
        warn("fp16-loss-scaling", "fp16")
    return sorted(found, key=lambda advice: advice.note)


def _advise_precision(
    subject: str,
    precision: str | None,
    bf16_ok: Callable[[], bool | None],
    warn: Callable[[str, str, str], None],
) -> None:
    """The guide's precision for ``subject`` when ``precision`` is not it (a note when none is chosen).

    bf16 recommended on a GPU without it leaves fp16 as the best choice: fp16 chosen then
    gets no warning, anything else is told to use fp16 and why.
    """
    wanted = guide_precision(subject)
    if precision == wanted:
        return
    lacks_bf16 = wanted == "bf16" and bf16_ok() is False
    if lacks_bf16 and precision == "fp16":
        return
    if lacks_bf16:
        advice = (
            "; the guide would use bf16 for it (more precise, often fewer steps), but this GPU lacks "
            "bf16 (compute capability below 8.0): use fp16"
        )
    else:
        advice = f"; use {wanted}: {PRECISION_REASONS[wanted]}"
    words = _SUBJECT_WORDS[subject]
    if precision is None:
        warn("precision-suggestion", f"no precision chosen for {words}", advice)
    else:
        warn("precision-for-subject", f"{precision} for {words}", advice)


def _more_epochs(facts: PlanFacts) -> str:
    """Too many steps per epoch: the same steps as more epochs of about 100 (1 x 500 -> 5 x 100).

    Why: the guide prefers more epochs of fewer steps for the same budget, and each epoch
    is a checkpoint to compare.
    """
    total = _total_steps(facts)
    if total is None:
        return ""
    epochs = total // STEPS_PER_EPOCH[0]
    lead = f": for the same {total} steps the guide would train {epochs} epochs"
    counted = _repeats_for(facts, epochs, total)
    if counted is None:
        return f"{lead} of about {round(total / epochs)} steps (lower the repeats to match)"
    repeats, per_epoch, reached = counted
    if repeats == 1 and per_epoch > STEPS_PER_EPOCH[1]:
        return (
            f"{lead} of about {round(total / epochs)} steps, but even 1 repeat of {facts.images} "
            f"images makes {per_epoch} steps per epoch"
        )
    return f"{lead}, where {_repeats_make(repeats, per_epoch)} ({reached} in all)"


def _fuller_epochs(facts: PlanFacts) -> str:
    """Too few steps per epoch: the repeats that fill each epoch to about 100 steps.

    Re-splitting the same steps into fewer, fuller epochs is suggested only when at least 10
    epochs remain (1000 steps or more): below that it would break the guide's minimum of 10
    epochs, so raising the repeats (and the total) is the guide's way.
    """
    total = _total_steps(facts)
    if total is None or facts.epochs is None:
        return ""
    low = STEPS_PER_EPOCH[0]
    if total // low >= MIN_EPOCHS:
        epochs = total // low
        lead = f": for the same {total} steps the guide would train {epochs} epochs"
        counted = _repeats_for(facts, epochs, total)
        if counted is None:
            return f"{lead} of about {round(total / epochs)} steps (raise the repeats to match)"
        repeats, per_epoch, reached = counted
        return f"{lead}, where {_repeats_make(repeats, per_epoch)} ({reached} in all)"
    epochs = max(facts.epochs, MIN_EPOCHS)
    counted = _repeats_for(facts, epochs, epochs * low)
    if counted is None:
        return f": aim for {epochs} epochs of {low} steps ({epochs * low} in all)"
    repeats, per_epoch, reached = counted
    return f": {_repeats_make(repeats, per_epoch)} ({reached} in {epochs} epochs)"


def _repeats_make(repeats: int, per_epoch: int) -> str:
    return f"{repeats} repeat{'' if repeats == 1 else 's'} make about {per_epoch} steps per epoch"


def _total_steps(facts: PlanFacts) -> int | None:
    if facts.total_steps is not None:
        return facts.total_steps
    if facts.steps_per_epoch is not None and facts.epochs is not None:
        return facts.steps_per_epoch * facts.epochs
    return None


def _repeats_for(facts: PlanFacts, epochs: int, target: int) -> tuple[int, int, int] | None:
    """(repeats, steps per epoch, total steps) of the fewest repeats whose ``epochs`` reach
    ``target``; None without the image count and batch.

    A whole-dataset approximation: all images count as one bucket, so the short last batch
    of each aspect bucket (a step each at most) is left out; hence "about" in the advice.
    """
    if facts.images is None or facts.batch is None or facts.batch < 1 or epochs < 1:
        return None
    images: dict[BucketKey, int] = {None: facts.images}
    repeats = repeats_for_target(target, images, facts.batch, epochs, facts.grad_accumulation, facts.gpus)
    items: dict[BucketKey, int] = {None: facts.images * repeats}
    plan = plan_steps(items, facts.batch, epochs, facts.grad_accumulation, facts.gpus)
    return repeats, plan.steps_per_epoch, plan.total_steps


def cuda_memory_gib() -> float | None:
    """The first CUDA GPU's memory in GiB; None without one (or without torch). Imports torch
    only when the device files show an NVIDIA GPU: every plan asks (the memory advice)."""
    if not nvidia_gpu_visible():
        return None
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 1024**3
