"""Steps, repeats and epochs counted the way Kohya's trainer counts them.

Kohya fills each aspect bucket with every image ``repeats`` times and cuts each bucket into
batches separately, so a bucket's last batch may be short: batches per epoch are
``sum(ceil(items_in_bucket / batch))``. Optimizer steps per epoch are
``ceil(batches / grad_accumulation / processes)`` and the run takes ``epochs`` times that.
The guide's plain formula ``((images * repeats) / batch) * epochs`` ignores both roundings
and undercounts; Kiln reports it next to the real count so the difference can be explained.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kiln.engine.errors import UsageError

# A bucket's (width, height); None stands for "one bucket, resolution unknown" (no dataset).
BucketKey = tuple[int, int] | None


@dataclass(frozen=True)
class BucketBatches:
    """One bucket's share of an epoch.

    Attributes:
        resolution: The bucket's ``(width, height)``, None without a dataset.
        items: Samples in the bucket per epoch (images times their repeats).
        batches: ``ceil(items / batch)``: the last batch of a bucket may be short.
    """

    resolution: BucketKey
    items: int
    batches: int


@dataclass(frozen=True)
class StepPlan:
    """How long a run is, as Kohya counts it.

    Attributes:
        batch: ``train_batch_size``.
        epochs: ``max_train_epochs``.
        grad_accumulation: ``gradient_accumulation_steps``.
        processes: Training processes (GPUs).
        buckets: Per-bucket items and batches, sorted by resolution.
        items_per_epoch: Samples seen per epoch, repeats included.
        batches_per_epoch: Sum of the buckets' batches.
        steps_per_epoch: Optimizer steps per epoch (what Kohya's progress bar counts).
        total_steps: ``epochs * steps_per_epoch`` (Kohya's ``max_train_steps``).
        plain_total_steps: The guide's bucket-free formula, not rounded:
            ``items_per_epoch / (batch * grad_accumulation * processes) * epochs``; with
            one process and no accumulation that is ``((images * repeats) / batch) * epochs``.
    """

    batch: int
    epochs: int
    grad_accumulation: int
    processes: int
    buckets: tuple[BucketBatches, ...]
    items_per_epoch: int
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    plain_total_steps: float

    @property
    def plain_steps_per_epoch(self) -> float:
        """The plain formula's steps per epoch (a fraction when the batch does not divide)."""
        return self.plain_total_steps / self.epochs

    @property
    def short_batches(self) -> int:
        """Buckets whose last batch is not full: each costs a batch the plain formula splits."""
        return sum(1 for bucket in self.buckets if bucket.items % self.batch)


def plan_steps(
    bucket_items: Mapping[BucketKey, int] | Mapping[tuple[int, int], int],
    batch: int,
    epochs: int,
    grad_accumulation: int = 1,
    processes: int = 1,
) -> StepPlan:
    """Count batches and optimizer steps from the samples in each bucket.

    Why: this is the number Kohya trains for, which sets the learning-rate schedule, the
    sample and save cadence, and how long the run takes.

    Args:
        bucket_items: Samples per bucket per epoch, repeats included (``images * repeats``
            summed over the bucket's images). Use ``{None: n}`` without a dataset.
        batch: Batch size.
        epochs: Epochs.
        grad_accumulation: Gradient accumulation steps.
        processes: Training processes (GPUs).

    Raises:
        UsageError: a count below 1, negative items, or no items at all.
    """
    _require_counts(batch=batch, epochs=epochs, grad_accumulation=grad_accumulation, processes=processes)
    for key, items in bucket_items.items():
        if isinstance(items, bool) or not isinstance(items, int) or items < 0:
            raise UsageError(f"bucket {_label(key)} holds {items!r} items; give a whole number, at least 0")
    filled = sorted(
        ((key, items) for key, items in bucket_items.items() if items > 0),
        key=lambda pair: _sort_key(pair[0]),
    )
    if not filled:
        raise UsageError("nothing to train: every bucket is empty; add images or repeats")
    buckets = tuple(BucketBatches(key, items, _ceil_div(items, batch)) for key, items in filled)
    items_per_epoch = sum(bucket.items for bucket in buckets)
    batches_per_epoch = sum(bucket.batches for bucket in buckets)
    # Kohya: ceil(len(dataloader) / num_processes / gradient_accumulation_steps).
    steps_per_epoch = _ceil_div(batches_per_epoch, grad_accumulation * processes)
    return StepPlan(
        batch=batch,
        epochs=epochs,
        grad_accumulation=grad_accumulation,
        processes=processes,
        buckets=buckets,
        items_per_epoch=items_per_epoch,
        batches_per_epoch=batches_per_epoch,
        steps_per_epoch=steps_per_epoch,
        total_steps=epochs * steps_per_epoch,
        plain_total_steps=items_per_epoch / (batch * grad_accumulation * processes) * epochs,
    )


def plain_total_steps(images: int, repeats: int, batch: int, epochs: int) -> float:
    """The guide's formula ``((images * repeats) / batch) * epochs``, unrounded.

    Why: it is what users and other calculators quote; Kiln shows it beside Kohya's count.
    """
    _require_counts(images=images, repeats=repeats, batch=batch, epochs=epochs)
    return images * repeats / batch * epochs


def repeats_for_target(
    target_steps: int,
    bucket_images: Mapping[BucketKey, int],
    batch: int,
    epochs: int,
    grad_accumulation: int = 1,
    processes: int = 1,
    reg: Callable[[int], Mapping[BucketKey, int]] | None = None,
) -> int:
    """The fewest repeats (the same for every image) whose run reaches ``target_steps``.

    Why: the guide plans backwards from a step budget ("10 images, 3500 steps, 10 epochs:
    35 repeats"); counting as Kohya does, rounding included, gives the honest answer.

    Args:
        target_steps: Optimizer steps the run should reach at least.
        bucket_images: Images per bucket (without repeats); ``{None: images}`` without a
            dataset.
        batch, epochs, grad_accumulation, processes: As for :func:`plan_steps`.
        reg: ``reg(training samples)`` -> reg samples per bucket, which Kohya adds to every
            epoch (they grow with the repeats, so the count stays monotone); None without.
    """
    _require_counts(target_steps=target_steps)

    def total(repeats: int) -> int:
        items = {key: images * repeats for key, images in bucket_images.items()}
        if reg is not None:
            for key, count in reg(sum(items.values())).items():
                items[key] = items.get(key, 0) + count
        return plan_steps(items, batch, epochs, grad_accumulation, processes).total_steps

    # Kohya's count is never below the plain formula, so this many repeats always suffice
    # (reg samples only add steps).
    images = sum(bucket_images.values())
    if images < 1:
        raise UsageError("nothing to train: no images; add images before planning repeats")
    low, high = 1, max(1, _ceil_div(target_steps * batch * grad_accumulation * processes, epochs * images))
    while low < high:  # total() never decreases as repeats grow
        middle = (low + high) // 2
        if total(middle) >= target_steps:
            high = middle
        else:
            low = middle + 1
    return low


def epochs_for_target(
    target_steps: int,
    bucket_items: Mapping[BucketKey, int],
    batch: int,
    grad_accumulation: int = 1,
    processes: int = 1,
) -> int:
    """The fewest epochs whose run reaches ``target_steps``, with the repeats already set.

    Why: when the folder names fix the repeats, the epoch count is what is left to choose.
    """
    _require_counts(target_steps=target_steps)
    per_epoch = plan_steps(bucket_items, batch, 1, grad_accumulation, processes).steps_per_epoch
    return _ceil_div(target_steps, per_epoch)


def require_batch_fits(items: int, batch: int) -> None:
    """Refuse a batch larger than the samples of one epoch (every batch would be short).

    Raises:
        UsageError: ``batch > items``.
    """
    if batch > items:
        raise UsageError(
            f"batch {batch} is larger than the {items} sample(s) of an epoch (images x repeats); "
            f"use a batch of at most {items}"
        )


def _require_counts(**counts: object) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name.replace('_', ' ')} {value!r} must be a whole number, at least 1")


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _sort_key(key: BucketKey) -> tuple[int, int]:
    return (-1, -1) if key is None else key


def _label(key: BucketKey) -> str:
    return "(all images)" if key is None else f"{key[0]}x{key[1]}"


def rounding_notes(plan: StepPlan) -> list[str]:
    """Why Kohya's count differs from the plain formula, one sentence each.

    Why: users check the arithmetic by hand and must see where the extra steps come from.
    """
    notes: list[str] = []
    plain = plan.plain_total_steps
    extra = plan.total_steps - plain
    if extra == 0:
        return ["Kohya's count equals the plain formula: every batch is full."]
    short = [bucket for bucket in plan.buckets if bucket.items % plan.batch]
    if len(plan.buckets) == 1 and plan.buckets[0].resolution is None and short:
        items = plan.items_per_epoch
        notes.append(
            f"Kohya rounds an epoch's batches up: {items} samples = {items // plan.batch} batches of "
            f"{plan.batch} + a short one of {items % plan.batch}, which still costs a whole step."
        )
    elif short:
        named = ", ".join(
            f"{_label(bucket.resolution)} ({bucket.items} = {bucket.items // plan.batch} x {plan.batch}"
            f" + {bucket.items % plan.batch})"
            for bucket in short[:4]
        )
        more = f" and {len(short) - 4} more" if len(short) > 4 else ""
        notes.append(
            f"Kohya batches each aspect bucket separately and rounds up: {len(short)} of "
            f"{len(plan.buckets)} bucket(s) end on a short batch that still costs a whole step: "
            f"{named}{more}."
        )
    divisor = plan.grad_accumulation * plan.processes
    if divisor > 1 and plan.batches_per_epoch % divisor:
        notes.append(
            f"{plan.batches_per_epoch} batches per epoch over {plan.grad_accumulation} accumulation "
            f"step(s) x {plan.processes} GPU(s) rounds up to {plan.steps_per_epoch} steps."
        )
    notes.append(
        f"So each epoch takes {plan.steps_per_epoch} steps, not {_figure(plan.plain_steps_per_epoch)}: "
        f"{plan.total_steps} in all, {_figure(extra)} more than the plain formula's {_figure(plain)}."
    )
    return notes


def _figure(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")
