"""The plan form read as the user types: text fields to numbers, then the run they describe.

No Textual here: the plan screen hands over the fields' text and the dataset's load, and
gets back either a plan or a message per bad field, so nothing a user types can raise.
The counting itself is the engine's (``kiln.engine.plan``); this only reads and routes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kiln.engine.errors import UsageError
from kiln.engine.plan.advisor import SUBJECTS, Advice
from kiln.engine.plan.buckets import BucketSpec
from kiln.engine.plan.evaluate import BatchTooLarge, PlanRequest, evaluate_plan, load_counts
from kiln.engine.plan.loads import DatasetLoad, load_notices
from kiln.engine.plan.reg import RegSet
from kiln.engine.plan.solve import Solution
from kiln.engine.plan.steps import BucketKey, StepPlan

SOURCES: tuple[str, ...] = ("dataset", "typed")
# The form's whole-number fields, in form order, and their defaults.
COUNT_FIELDS: tuple[str, ...] = (
    "target",
    "images",
    "repeats",
    "batch",
    "epochs",
    "grad_accumulation",
    "gpus",
)
DEFAULTS: dict[str, str] = {
    "target": "",
    "images": "",
    "repeats": "",
    "batch": "1",
    "epochs": "10",
    "grad_accumulation": "1",
    "gpus": "1",
    "resolution": "512",
    "unet_lr": "1e-4",
    "te_lr": "1/5",
    "reg": "",
}
# The subject row's choices: "not chosen" (no precision advice) first, then the advisor's subjects.
SUBJECT_LABELS: dict[str, str] = {"colour-theme": "colour theme", "artist-style": "artist's style"}
SUBJECT_OPTIONS: list[tuple[str, str]] = [("not chosen", "")] + [
    (SUBJECT_LABELS.get(subject, subject), subject) for subject in SUBJECTS
]
# The resolution each family trains at: the form's default, switched with the family while the
# field still holds the other family's default.
FAMILY_RESOLUTIONS: dict[str, str] = {"sd15": "512", "sdxl": "1024"}
_WHOLE = re.compile(r"^[+-]?[0-9]+$")
_NUMBER = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?$", re.IGNORECASE)
_RATIO = re.compile(r"^1\s*/\s*([0-9]+(\.[0-9]*)?)$")
# Beyond this a count is a typo, and the arithmetic would only slow the form down.
MAX_COUNT = 10**9


@dataclass(frozen=True)
class PlanInputs:
    """Everything the form holds.

    Attributes:
        texts: The text fields as typed, keyed as in :data:`DEFAULTS`.
        source: ``dataset`` (images and repeats from the included images and folder
            names) or ``typed``.
        solve: ``steps``, ``repeats`` or ``epochs`` (see :func:`kiln.engine.plan.solve.solve_plan`).
        no_upscale: Kohya's ``bucket_no_upscale``.
        precision: ``fp32``, ``fp16`` or ``bf16``.
        training: ``lora`` or ``full``.
        run: ``test`` or ``final``.
        family: The base model's family, ``sd15`` or ``sdxl``.
        gradient_checkpointing: Whether the run will checkpoint gradients (SDXL's memory advice).
        subject: What the LoRA learns (the guide picks fp16 or bf16 by it); None: not chosen.
    """

    texts: Mapping[str, str]
    source: str = "dataset"
    solve: str = "steps"
    no_upscale: bool = False
    precision: str = "fp16"
    training: str = "lora"
    run: str = "final"
    family: str = "sd15"
    gradient_checkpointing: bool = False
    subject: str | None = None


@dataclass(frozen=True)
class PlanOutcome:
    """What the form describes, or why it describes nothing yet.

    Attributes:
        errors: A message per bad field, keyed like :attr:`PlanInputs.texts`.
        problem: Why there is no plan when no single field is to blame (or the dataset is
            still being read); None when there is a plan or a field error says why.
        solution: What was solved, with the samples per bucket.
        plan: The step count.
        images: Images counted.
        spec: The bucket settings typed (None when the resolution is bad).
        text_encoder_lr: The text-encoder LR the TE field gives (a ratio resolved).
        notes: Why Kohya's count differs from the plain formula.
        warnings: Load notices and the guide's advice.
    """

    errors: dict[str, str] = field(default_factory=dict)
    problem: str | None = None
    solution: Solution | None = None
    plan: StepPlan | None = None
    images: int | None = None
    spec: BucketSpec | None = None
    text_encoder_lr: float | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[Advice] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether there is a plan to show."""
        return self.plan is not None


def whole_number(text: str, required: bool = True) -> int | None:
    """A count typed in the form: a whole number from 1 up; None when blank and optional.

    Raises:
        UsageError: blank (when required), not a whole number, below 1, or absurdly large.
    """
    text = text.strip()
    if not text:
        if required:
            raise UsageError("type a whole number, at least 1")
        return None
    if not _WHOLE.match(text):
        raise UsageError(f"{text!r} is not a whole number; type e.g. 4")
    value = int(text)
    if value < 1:
        raise UsageError(f"{value} is too small: type at least 1")
    if value > MAX_COUNT:
        raise UsageError(f"{value} is too large: type at most {MAX_COUNT:,}")
    return value


def rate(text: str) -> float | None:
    """A learning rate (``1e-4``, ``0.0001``); None when blank (not judged).

    Raises:
        UsageError: not a finite number of at least 0.
    """
    text = text.strip()
    if not text:
        return None
    if not _NUMBER.match(text):
        raise UsageError(f"{text!r} is not a number; type e.g. 1e-4")
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{text} must be a number, at least 0")
    return value


def text_encoder_rate(text: str, unet_lr: float | None) -> float | None:
    """The text-encoder LR: a rate, or ``1/N`` of the U-Net LR (the guide thinks in ratios).

    Raises:
        UsageError: neither form, or a ratio without a U-Net LR.
    """
    match = _RATIO.match(text.strip())
    if match is None:
        return rate(text)
    divisor = float(match.group(1))
    if divisor <= 0:
        raise UsageError(f"{text.strip()!r}: the divisor must be above 0; type e.g. 1/5")
    if unet_lr is None:
        raise UsageError("a ratio needs the U-Net LR; type one, or give the rate itself (2e-5)")
    return unet_lr / divisor


def resolution(text: str) -> int | tuple[int, int]:
    """``512`` or ``512x768`` (width x height).

    Raises:
        UsageError: anything else.
    """
    parts = text.strip().lower().replace("×", "x").split("x")
    if not 1 <= len(parts) <= 2 or not all(_WHOLE.match(part.strip()) for part in parts):
        raise UsageError(f"{text.strip()!r} is not a resolution; type 512 or 512x768")
    values = [int(part) for part in parts]
    if min(values) < 1:
        raise UsageError("a resolution is at least 1 pixel; type 512 or 512x768")
    return values[0] if len(values) == 1 else (values[0], values[1])


def bucket_spec(inputs: PlanInputs) -> BucketSpec:
    """The bucket settings the form gives (Kohya's defaults for what it does not ask).

    Raises:
        UsageError: a bad resolution.
    """
    return BucketSpec(
        resolution(inputs.texts.get("resolution", DEFAULTS["resolution"])), no_upscale=inputs.no_upscale
    )


def required_fields(inputs: PlanInputs) -> set[str]:
    """Which count fields the form uses, given the source and what is solved."""
    needed = {"batch", "grad_accumulation", "gpus"}
    if inputs.source == "typed":
        needed.add("images")
    if inputs.solve != "epochs":
        needed.add("epochs")
    if inputs.solve != "steps":
        needed.add("target")
    if inputs.source == "typed" and inputs.solve != "repeats":
        needed.add("repeats")
    return needed


def _given(counts: Mapping[str, int | None], name: str) -> int:
    """A required count, parsed with ``required=True`` (so never blank once errors are empty)."""
    value = counts.get(name)
    if value is None:
        raise UsageError(f"{name}: type a whole number from 1 up")
    return value


def used_fields(inputs: PlanInputs) -> set[str]:
    """Fields the form reads (required ones, plus the optional repeats override)."""
    used = required_fields(inputs)
    if inputs.source == "dataset" and inputs.solve != "repeats":
        used.add("repeats")
    return used


def evaluate(
    inputs: PlanInputs,
    load: DatasetLoad | None = None,
    dsb_verdict: str | None = None,
    bf16_supported: Callable[[], bool | None] = lambda: None,
    gpu_memory: Callable[[], float | None] = lambda: None,
    reg: RegSet | None = None,
) -> PlanOutcome:
    """Read the form and count the run it describes; never raises for anything typed.

    Why: results update on every keystroke, and half-typed values are the normal state of
    a form: each bad field gets its own message and the rest stays usable.

    Args:
        inputs: The form.
        load: The dataset's load for ``inputs.spec`` (dataset source); None while it is read.
        dsb_verdict: The dataset's DSB verdict for the advice (None: unknown or typed).
        bf16_supported: The bf16 probe, called only when bf16 is chosen or recommended.
        gpu_memory: The GPU-memory probe (GiB); None: not known (yet).
        reg: The reg folder's class images (dataset source only), balanced and counted as Kohya does.
    """
    texts = {**DEFAULTS, **inputs.texts}
    errors: dict[str, str] = {}
    counts: dict[str, int | None] = {}
    used = used_fields(inputs)
    required = required_fields(inputs)
    for name in COUNT_FIELDS:
        if name not in used:
            continue
        try:
            counts[name] = whole_number(texts[name], required=name in required)
        except UsageError as exc:
            errors[name] = str(exc)
    spec = None
    try:
        spec = bucket_spec(inputs)
    except UsageError as exc:
        errors["resolution"] = str(exc)
    unet_lr = te_lr = None
    try:
        unet_lr = rate(texts["unet_lr"])
    except UsageError as exc:
        errors["unet_lr"] = str(exc)
    try:
        te_lr = text_encoder_rate(texts["te_lr"], unet_lr)
    except UsageError as exc:
        if "unet_lr" not in errors:
            errors["te_lr"] = str(exc)
    if errors:
        return PlanOutcome(errors=errors, spec=spec, text_encoder_lr=te_lr)

    notices: list[Advice] = []
    bucket_images: dict[BucketKey, int]
    if inputs.source == "typed":
        bucket_images = {None: _given(counts, "images")}
        folder_items = folder_repeats = None
    else:
        if load is None:
            return PlanOutcome(problem="reading the dataset's image sizes…", spec=spec, text_encoder_lr=te_lr)
        notices = load_notices(load)
        if load.images == 0:
            return PlanOutcome(
                problem="no included image that Kohya would train: include some on the dataset screen, "
                "put them in a folder such as 10_name/, or type the counts (ctrl+t)",
                spec=spec,
                text_encoder_lr=te_lr,
                warnings=notices,
            )
        found = load_counts(load)
        bucket_images, folder_items, folder_repeats = (
            found.bucket_images,
            found.folder_items,
            found.folder_repeats,
        )
    request = PlanRequest(
        mode=inputs.solve,
        bucket_images=bucket_images,
        batch=_given(counts, "batch"),
        grad_accumulation=_given(counts, "grad_accumulation"),
        gpus=_given(counts, "gpus"),
        repeats=counts.get("repeats"),
        epochs=counts.get("epochs"),
        target_steps=counts.get("target"),
        folder_items=folder_items,
        folder_repeats=folder_repeats,
        run=inputs.run,
        training=inputs.training,
        unet_lr=unet_lr,
        text_encoder_lr=te_lr,
        precision=inputs.precision,
        dsb_verdict=dsb_verdict if inputs.source == "dataset" else None,
        family=inputs.family,
        gradient_checkpointing=inputs.gradient_checkpointing,
        subject=inputs.subject,
        reg=reg if inputs.source == "dataset" else None,
    )
    try:
        result = evaluate_plan(request, bf16_supported, gpu_memory)
    except BatchTooLarge as exc:
        return PlanOutcome(errors={"batch": str(exc)}, spec=spec, text_encoder_lr=te_lr, warnings=notices)
    except UsageError as exc:
        return PlanOutcome(problem=str(exc), spec=spec, text_encoder_lr=te_lr, warnings=notices)
    return PlanOutcome(
        solution=result.solution,
        plan=result.plan,
        images=result.images,
        spec=spec,
        text_encoder_lr=te_lr,
        notes=result.notes,
        warnings=notices + result.advice,
    )
