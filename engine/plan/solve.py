"""What a plan leaves open, solved: the steps of a run, or the repeats or epochs for a target.

``kiln calc`` and the plan screen both ask "given these numbers, what is the run?", in one
of three modes: count the steps (repeats and epochs known), solve the repeats that reach a
target step count (epochs known), or solve the epochs (repeats known). One function answers
for both, so the CLI and the screen never disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kiln.engine.errors import UsageError
from kiln.engine.plan.steps import BucketKey, epochs_for_target, repeats_for_target

SOLVE_MODES: tuple[str, ...] = ("steps", "repeats", "epochs")


@dataclass(frozen=True)
class Solution:
    """A plan with nothing left open.

    Attributes:
        mode: What was solved: ``steps``, ``repeats`` or ``epochs``.
        repeats: The repeats every image trains with; None when the folders' own repeats
            differ.
        epochs: The epochs.
        bucket_items: Training samples per bucket per epoch, repeats included.
        reg_items: Regularisation samples per bucket per epoch (Kohya's balancing; empty
            without reg images).
    """

    mode: str
    repeats: int | None
    epochs: int
    bucket_items: dict[BucketKey, int]
    reg_items: dict[BucketKey, int] = field(default_factory=dict)

    def all_items(self) -> dict[BucketKey, int]:
        """Training and reg samples per bucket: what each epoch batches, for
        :func:`kiln.engine.plan.steps.plan_steps`."""
        merged = dict(self.bucket_items)
        for key, count in self.reg_items.items():
            merged[key] = merged.get(key, 0) + count
        return merged


def solve_plan(
    mode: str,
    bucket_images: Mapping[BucketKey, int],
    *,
    repeats: int | None = None,
    epochs: int | None = None,
    target_steps: int | None = None,
    batch: int = 1,
    grad_accumulation: int = 1,
    processes: int = 1,
    folder_items: Mapping[BucketKey, int] | None = None,
    folder_repeats: int | None = None,
    reg: Callable[[int], Mapping[BucketKey, int]] | None = None,
) -> Solution:
    """Fill in what ``mode`` leaves open.

    Why: users plan forwards (repeats and epochs -> steps) and backwards from a step budget
    (the guide's "10 images, 3500 steps, 10 epochs: 35 repeats"); both must count as Kohya
    does.

    Args:
        mode: ``steps`` (needs epochs, and repeats or the folders'), ``repeats`` (needs a
            target and epochs; every image gets the solved repeats) or ``epochs`` (needs a
            target, and repeats or the folders').
        bucket_images: Images per bucket, without repeats.
        repeats: Repeats for every image; None to use the folders' (``folder_items``).
        epochs: Epochs (ignored when solving them).
        target_steps: The step count to reach (solving repeats or epochs).
        batch, grad_accumulation, processes: As for :func:`kiln.engine.plan.steps.plan_steps`.
        folder_items: Samples per bucket with each folder's own repeats (a dataset's
            :meth:`~kiln.engine.plan.loads.DatasetLoad.bucket_items`), None without a dataset.
        folder_repeats: The repeats all folders share, None when they differ.
        reg: ``reg(training samples per epoch)`` -> reg samples per bucket (Kohya's balancing,
            :meth:`kiln.engine.plan.reg.RegSet.bucket_items`); None without reg images.

    Raises:
        UsageError: an unknown mode, or a number the mode needs is missing or bad.
    """
    if mode not in SOLVE_MODES:
        raise UsageError(f"cannot solve for {mode!r}; solve for one of {', '.join(SOLVE_MODES)}")
    if mode == "repeats":
        if target_steps is None or epochs is None:
            raise UsageError("solving for repeats needs a target step count and the epochs")
        solved = repeats_for_target(
            target_steps, bucket_images, batch, epochs, grad_accumulation, processes, reg=reg
        )
        solved_items = _times(bucket_images, solved)
        return Solution(mode, solved, epochs, solved_items, _reg_items(reg, solved_items))
    if repeats is not None:
        items: dict[BucketKey, int] = _times(bucket_images, repeats)
        used: int | None = repeats
    elif folder_items is not None:
        items, used = dict(folder_items), folder_repeats
    else:
        raise UsageError("no repeats: give the repeats, or a dataset whose folder names carry them")
    reg_items = _reg_items(reg, items)
    if mode == "steps":
        if epochs is None:
            raise UsageError("counting steps needs the epochs")
        return Solution(mode, used, epochs, items, reg_items)
    if target_steps is None:
        raise UsageError("solving for epochs needs a target step count")
    solution = Solution(mode, used, 1, items, reg_items)
    solved = epochs_for_target(target_steps, solution.all_items(), batch, grad_accumulation, processes)
    return Solution(mode, used, solved, items, reg_items)


def _reg_items(
    reg: Callable[[int], Mapping[BucketKey, int]] | None, items: Mapping[BucketKey, int]
) -> dict[BucketKey, int]:
    return {} if reg is None else dict(reg(sum(items.values())))


def _times(bucket_images: Mapping[BucketKey, int], repeats: int) -> dict[BucketKey, int]:
    return {key: count * repeats for key, count in bucket_images.items()}
