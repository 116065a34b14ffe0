"""One plan, counted once: solve what is left open, count the steps, check the batch, and ask
the guide for advice. ``kiln calc`` and the TUI's plan section both call :func:`evaluate_plan`;
each only reads its own inputs (arguments, a form) and shows the result its own way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kiln.engine.errors import UsageError
from kiln.engine.plan.advisor import Advice, PlanFacts, advise, cuda_bf16_supported, cuda_memory_gib
from kiln.engine.plan.loads import DatasetLoad
from kiln.engine.plan.memory import FULL_SIZE, GIB, RunShape, estimate_memory
from kiln.engine.plan.reg import RegSet
from kiln.engine.plan.solve import Solution, solve_plan
from kiln.engine.plan.steps import BucketKey, StepPlan, plan_steps, require_batch_fits, rounding_notes


class BatchTooLarge(UsageError):
    """The batch is larger than the samples of one epoch (a form blames the batch field)."""


@dataclass(frozen=True)
class PlanRequest:
    """What a plan is counted from.

    Attributes:
        mode: What to solve: ``steps``, ``repeats`` or ``epochs`` (see :func:`solve_plan`).
        bucket_images: Images per aspect bucket (``{None: n}`` without bucketing).
        batch: The batch size.
        grad_accumulation: Gradient accumulation steps.
        gpus: Training processes.
        repeats: Repeats for every image; None for the folders' own.
        epochs: The epochs (unless solved for).
        target_steps: The step budget (when repeats or epochs are solved for).
        folder_items: Samples per bucket with the folders' own repeats (a dataset's load).
        folder_repeats: The repeats all folders share, or None when they differ.
        run: ``test`` or ``final`` (for the advice), or None.
        training: ``lora`` or ``full``.
        unet_lr: The U-Net learning rate (for the advice), or None.
        text_encoder_lr: The text-encoder learning rate (for the advice), or None.
        precision: ``fp32``, ``fp16`` or ``bf16`` (for the advice), or None.
        dsb_verdict: The dataset's DSB verdict (for the advice), or None.
        family: The base model's family (``sd15``, ``sdxl``; for the advice).
        gpu_memory_gib: The GPU's memory (for the memory advice); None: probe this machine.
        gradient_checkpointing: Whether the run checkpoints gradients (for the advice).
        subject: What the LoRA learns (:data:`~kiln.engine.plan.advisor.SUBJECTS`), for the
            guide's precision by subject; None: not chosen.
        reg: Regularisation images (Kohya's ``reg_data_dir``), balanced to the training
            samples and counted in every epoch; None without.
        rank: The LoRA rank (for the memory estimate).
    """

    mode: str
    bucket_images: Mapping[BucketKey, int]
    batch: int
    grad_accumulation: int = 1
    gpus: int = 1
    repeats: int | None = None
    epochs: int | None = None
    target_steps: int | None = None
    folder_items: Mapping[BucketKey, int] | None = None
    folder_repeats: int | None = None
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
    reg: RegSet | None = None
    rank: int = 32


@dataclass(frozen=True)
class LoadCounts:
    """A dataset's load as a plan counts it.

    Attributes:
        bucket_images: Images per bucket.
        folder_items: Samples per bucket with the folders' own repeats.
        folder_repeats: The repeats all concept folders share, or None when they differ.
    """

    bucket_images: dict[BucketKey, int]
    folder_items: dict[BucketKey, int]
    folder_repeats: int | None


def load_counts(load: DatasetLoad) -> LoadCounts:
    """What :class:`PlanRequest` needs from a dataset's load."""
    shared = {concept.repeats for concept in load.concepts}
    return LoadCounts(
        bucket_images={size: count for size, count in load.bucket_images().items()},
        folder_items={size: count for size, count in load.bucket_items().items()},
        folder_repeats=shared.pop() if len(shared) == 1 else None,
    )


@dataclass(frozen=True)
class PlanEvaluation:
    """A counted plan.

    Attributes:
        solution: What was solved, with the samples per bucket.
        plan: The step count.
        images: Images counted.
        facts: What the advice was asked about.
        advice: The guide's warnings, in their fixed order.
        notes: Why Kohya's count differs from the plain formula, one sentence each.
    """

    solution: Solution
    plan: StepPlan
    images: int
    facts: PlanFacts
    advice: list[Advice]
    notes: list[str]


def evaluate_plan(
    request: PlanRequest,
    bf16_supported: Callable[[], bool | None] = cuda_bf16_supported,
    gpu_memory: Callable[[], float | None] = cuda_memory_gib,
) -> PlanEvaluation:
    """Solve, count, check and advise.

    Args:
        request: The counts and settings.
        bf16_supported: The bf16 probe, called only when bf16 is chosen or recommended.
        gpu_memory: The GPU-memory probe, called only when the request does not say.

    Raises:
        BatchTooLarge: the batch is larger than one epoch's samples.
        UsageError: nothing can be solved from these counts.
    """
    solution = solve_plan(
        request.mode,
        request.bucket_images,
        repeats=request.repeats,
        epochs=request.epochs,
        target_steps=request.target_steps,
        batch=request.batch,
        grad_accumulation=request.grad_accumulation,
        processes=request.gpus,
        folder_items=request.folder_items,
        folder_repeats=request.folder_repeats,
        reg=None if request.reg is None else request.reg.bucket_items,
    )
    plan = plan_steps(
        solution.all_items(), request.batch, solution.epochs, request.grad_accumulation, request.gpus
    )
    try:
        require_batch_fits(plan.items_per_epoch, request.batch)
    except UsageError as exc:
        raise BatchTooLarge(str(exc)) from None
    facts = PlanFacts(
        batch=request.batch,
        epochs=solution.epochs,
        steps_per_epoch=plan.steps_per_epoch,
        total_steps=plan.total_steps,
        run=request.run,
        training=request.training,
        unet_lr=request.unet_lr,
        text_encoder_lr=request.text_encoder_lr,
        precision=request.precision,
        dsb_verdict=request.dsb_verdict,
        family=request.family,
        gpu_memory_gib=request.gpu_memory_gib if request.gpu_memory_gib is not None else gpu_memory(),
        gradient_checkpointing=request.gradient_checkpointing,
        subject=request.subject,
        # Reg images grow with the repeats (Kohya balances them), so the whole-dataset repeats
        # suggestion would be off by about half: it is left out with them.
        images=None if request.reg is not None else sum(request.bucket_images.values()),
        grad_accumulation=request.grad_accumulation,
        gpus=request.gpus,
        memory_need_gib=memory_need(request),
    )
    return PlanEvaluation(
        solution=solution,
        plan=plan,
        images=sum(request.bucket_images.values()),
        facts=facts,
        advice=advise(facts, bf16_supported),
        notes=rounding_notes(plan),
    )


def memory_need(request: PlanRequest) -> float:
    """The run's estimated peak in GiB (:mod:`kiln.engine.plan.memory`) on the family's
    full-size model, at its largest bucket (the family's resolution without buckets); the
    text encoders train when a text-encoder LR is given."""
    sizes = [key for key in request.bucket_images if key is not None]
    resolution = 1024 if request.family == "sdxl" else 512
    pixels = max((width * height for width, height in sizes), default=resolution**2)
    run = RunShape(
        family=request.family,
        batch=request.batch,
        pixels=pixels,
        precision=request.precision or "bf16",
        checkpointing=request.gradient_checkpointing,
        rank=request.rank,
        train_text_encoder=bool(request.text_encoder_lr),
        full=request.training == "full",
    )
    return estimate_memory(FULL_SIZE[request.family], run).total / GIB
