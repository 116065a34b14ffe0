"""Peak memory of a training process: GPU memory on CUDA, resident memory on a CPU.

Users size runs (batch, resolution, rank, gradient checkpointing) by what the card holds, so
each step event carries the peak so far and ``status.json`` keeps the latest: the runs table,
the run view and ``kiln watch`` show it without asking the process anything. Reading it costs
no host-device synchronisation: CUDA's allocator keeps the peak as a host-side counter, and
on a CPU it is one read of ``/proc/self/status``.
"""

from __future__ import annotations

import functools
import resource
import sys
from typing import Any

MIB = 2**20

# The run's peak so far (bytes, by "cuda" / "cpu"): the largest reading since the run began,
# counters reset or not. The memory probe resets them to measure its own steps after the run
# loaded its models and cached its latents, which can be the run's peak (an SDXL VAE encoding
# at 1024 px); and Linux raises ``VmHWM`` only when pages are unmapped, so after malloc_trim's
# madvise a reading can be a little below an earlier one. Folding every reading in here keeps
# the step events' peak whole-run and never falling.
_run_peaks: dict[str, int] = {}


def peak_memory(device: Any) -> dict[str, Any]:
    """``{"peak_mb": MiB, "memory": "vram" | "ram"}`` for the process training on ``device``:
    the run's peak so far (see ``_run_peaks``).

    On CUDA the peak of memory allocated by tensors on that device (what PyTorch's
    ``max_memory_allocated`` reports; the driver's own share, a few hundred MiB, is not in it).
    On a CPU the peak resident set of the whole process, the interpreter and libraries included.
    """
    kind, reading = _counter_peak(device)
    peak = _fold(kind, reading)
    if kind == "cpu":
        # Called once per step: the step's freed activations go back to the system, so the
        # next step starts from what training holds instead of growing into a fragmented heap.
        _release_freed_memory()
    return {"peak_mb": round(peak / MIB, 1), "memory": "vram" if kind == "cuda" else "ram"}


def begin_run_peak(device: Any) -> None:
    """Count the process's peak memory from here: a run's start, before it loads anything (a
    process that trains several runs, as the tests do, reports each its own)."""
    _run_peaks.clear()
    meter = PeakMeter(device)
    if meter.available:
        meter.reset()


def run_peak_bytes() -> dict[str, int]:
    """The run's peak as last folded in, for readers of the counters outside Kiln (the
    benchmarks' peak probe: after a reset the counters alone understate it)."""
    return dict(_run_peaks)


def _counter_peak(device: Any) -> tuple[str, int]:
    """What the counters say now: ``("cuda", allocator peak)`` or ``("cpu", peak RSS)``."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        return "cuda", int(torch.cuda.max_memory_allocated(device))
    return "cpu", peak_rss_bytes()


def _fold(kind: str, reading: int) -> int:
    _run_peaks[kind] = max(_run_peaks.get(kind, 0), reading)
    return _run_peaks[kind]


def peak_rss_bytes() -> int:
    """The process's peak resident set size in bytes: Linux's ``VmHWM``, else ``ru_maxrss``.

    Not ``ru_maxrss`` on Linux: it carries a parent's peak over ``exec``, so a trainer started
    by a large process would report the parent's size (and it ignores the reset
    :class:`PeakMeter` makes). ``ru_maxrss`` is in KiB on Linux, bytes on macOS.
    """
    peak = _linux_rss("VmHWM")
    if peak is not None:
        return peak
    rusage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rusage) if sys.platform == "darwin" else int(rusage) * 1024


class PeakMeter:
    """The peak memory of a stretch of work, above what was in use when it began.

    On CUDA: the caching allocator's counters (``reset_peak_memory_stats``, then
    ``max_memory_allocated`` minus ``memory_allocated`` at the start). On a Linux CPU: the
    kernel's resident high-water mark, reset by writing 5 to ``/proc/self/clear_refs`` and read
    back as ``VmHWM`` (the process's peak RSS from then on, so a later ``peak_memory`` reading
    covers training rather than the model's loading). Elsewhere nothing can be measured and
    :attr:`available` is False.
    """

    def __init__(self, device: Any) -> None:
        self.cuda = getattr(device, "type", str(device)) == "cuda"
        self.device = device
        self.available = self.cuda or _linux_rss("VmRSS") is not None
        self._start = 0

    def start(self) -> None:
        """Begin a stretch: the peak is counted from what is in use now (the process's peak so
        far is kept for :func:`peak_memory`)."""
        _fold(*_counter_peak(self.device))  # what the reset below would hide
        self.reset()
        if self.cuda:
            import torch

            self._start = torch.cuda.memory_allocated(self.device)
            return
        self._start = _linux_rss("VmRSS") or 0

    def reset(self) -> None:
        """Restart the counters: the allocator's peak, or the kernel's high-water mark."""
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _release_freed_memory()
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            self.available = False

    def peak_above_start(self) -> int:
        """Bytes of the stretch's peak above its start."""
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
            return max(0, torch.cuda.max_memory_allocated(self.device) - self._start)
        return max(0, (_linux_rss("VmHWM") or 0) - self._start)

    def in_use(self) -> int:
        """Bytes in use now: tensors on the GPU, or the process's resident set on a CPU."""
        if self.cuda:
            import torch

            return int(torch.cuda.memory_allocated(self.device))
        _release_freed_memory()
        return _linux_rss("VmRSS") or 0


def _release_freed_memory() -> None:
    """Hand memory the C allocator keeps after frees back to the system (glibc's
    ``malloc_trim``), so the resident set is what is in use and a new allocation raises it
    instead of silently reusing freed pages the high-water mark already counted."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, looked up once (None without glibc)."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _linux_rss(field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of this process in bytes, from ``/proc/self/status``; None off Linux."""
    return proc_kib("/proc/self/status", field)


def proc_kib(path: str, field: str) -> int | None:
    """A ``Field:  N kB`` line of a Linux ``/proc`` file (``/proc/meminfo``'s ``MemTotal``,
    ``/proc/self/status``'s ``VmHWM``) in bytes; None when there is no such file or field."""
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None
