"""Which GPU each sweep job trains on: one device per running job, a queue for the rest.

The guide's 10-20 test trainings are independent, so on a box with several GPUs they should
run side by side, each on its own card. A job is pinned by starting it with
``CUDA_VISIBLE_DEVICES`` set to one device: inside, that card is ``cuda:0``, so the training
code needs no device argument. Jobs never share a device unless the user asks for it
(``share=True``): two trainings on one card each run at about half speed and risk running out
of memory, so sharing is worth it only for runs far smaller than the card.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from kiln.engine.errors import ConfigError

VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
# A device as CUDA_VISIBLE_DEVICES names it: an index, or a UUID (``GPU-...``/``MIG-...``).
_DEVICE = re.compile(r"^(\d+|(GPU|MIG)-[0-9A-Za-z-]+)$")


def parse_gpus(text: str) -> tuple[str, ...]:
    """``"0,2,3"`` as a tuple of device names, in order, each once.

    Raises:
        ConfigError: An empty list, a name that is not an index or a GPU UUID, or a repeat.
    """
    names = [part.strip() for part in text.split(",")]
    if not any(names):
        raise ConfigError("--gpus: give device numbers, e.g. --gpus 0,2,3")
    seen: list[str] = []
    for name in names:
        if not _DEVICE.match(name):
            raise ConfigError(f"--gpus: {name!r} is not a GPU number or UUID (e.g. --gpus 0,2,3)")
        if name in seen:
            raise ConfigError(f"--gpus: GPU {name} is named twice")
        seen.append(name)
    return tuple(seen)


def visible_gpus(env: Mapping[str, str] | None = None, count: int | None = None) -> tuple[str, ...]:
    """The GPUs this process may hand out: ``CUDA_VISIBLE_DEVICES`` when set, else every device
    CUDA reports (``count`` stands in for that in tests; torch is imported only to ask).

    Names from ``CUDA_VISIBLE_DEVICES`` are kept as written (indices or UUIDs), because a job's
    own ``CUDA_VISIBLE_DEVICES`` is read by the same driver. An empty value or ``-1`` hides
    every GPU: the sweep then runs on the CPU without pinning.
    """
    env = os.environ if env is None else env
    value = env.get(VISIBLE_ENV)
    if value is not None:
        names = []
        for part in value.split(","):
            part = part.strip()
            if not part or part.startswith("-"):
                break  # CUDA stops reading the list at the first invalid entry
            names.append(part)
        return tuple(names)
    if count is None:
        count = _cuda_device_count()
    return tuple(str(index) for index in range(count))


def _cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class GpuPool:
    """Free and busy devices of a sweep.

    ``take`` hands out a free device (or, when sharing, the least busy one); ``release`` gives
    it back when its job ends, fails or fails to start. ``claim`` re-books the device of a job
    already running when a queue is resumed.
    """

    def __init__(self, devices: Sequence[str], share: bool = False) -> None:
        self.devices = tuple(devices)
        self.share = share
        self._jobs: dict[str, int] = {device: 0 for device in self.devices}

    def __bool__(self) -> bool:
        return bool(self.devices)

    def capacity(self, parallel: int) -> int:
        """How many jobs may run at once: ``parallel``, capped by the devices unless sharing."""
        return parallel if self.share or not self.devices else min(parallel, len(self.devices))

    def take(self) -> str | None:
        """A device for a new job, or None when every device is busy (and not sharing)."""
        if not self.devices:
            return None
        device = min(self.devices, key=lambda name: self._jobs[name])  # first of the least busy
        if self._jobs[device] and not self.share:
            return None
        self._jobs[device] += 1
        return device

    def claim(self, device: str | None) -> None:
        """Book ``device`` for a job that is already running (a resumed queue); None is ignored."""
        if device in self._jobs:
            self._jobs[device] += 1

    def release(self, device: str | None) -> None:
        """Give a job's device back (None and unknown names are ignored)."""
        if device in self._jobs and self._jobs[device] > 0:
            self._jobs[device] -= 1

    def busy(self) -> dict[str, int]:
        """Jobs per device."""
        return dict(self._jobs)


def job_env(device: str | None) -> dict[str, str]:
    """The environment additions that pin a job to ``device`` (nothing when None)."""
    return {} if device is None else {VISIBLE_ENV: device}


def choose_gpus(
    requested: str | None, parallel: int, visible: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The devices a sweep hands out, as the jobs' ``CUDA_VISIBLE_DEVICES`` must name them.

    Without ``--gpus`` a parallel sweep uses every visible GPU and a one-at-a-time sweep pins
    nothing (its run sees what the shell sees, as ``kiln train`` does). ``--gpus 0,2`` counts
    among the visible GPUs, as CUDA does: under ``CUDA_VISIBLE_DEVICES=4,5,6`` it means 4 and 6.
    ``visible`` defaults to :func:`visible_gpus`, asked only when there is something to pin
    (a one-at-a-time sweep never imports torch here).

    Raises:
        ConfigError: ``--gpus`` on a machine with no visible GPU, or a number past the last.
    """
    if requested is None and parallel <= 1:
        return ()
    if visible is None:
        visible = visible_gpus()
    if requested is None:
        return tuple(visible)
    names = parse_gpus(requested)
    if not visible:
        raise ConfigError(
            "--gpus: no GPU is visible here (no CUDA device, or CUDA_VISIBLE_DEVICES hides them); "
            "leave --gpus out to train on the CPU"
        )
    chosen = []
    for name in names:
        if not name.isdigit():
            chosen.append(name)  # a UUID names one card whatever the numbering
        elif int(name) < len(visible):
            chosen.append(visible[int(name)])
        else:
            raise ConfigError(
                f"--gpus: there is no GPU {name} here ({len(visible)} visible: "
                f"{', '.join(str(i) for i in range(len(visible)))})"
            )
    return tuple(chosen)
