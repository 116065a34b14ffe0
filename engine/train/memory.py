"""Peak memory of a training process: GPU memory on CUDA, resident memory on a CPU.

Users size runs (batch, resolution, rank, gradient checkpointing) by what the card holds, so
each step event carries the peak so far and ``status.json`` keeps the latest: the runs table,
the run view and ``kiln watch`` show it without asking the process anything. Reading it costs
no host-device synchronisation: CUDA's allocator keeps the peak as a host-side counter, and
on a CPU it is one ``getrusage`` call.
"""

from __future__ import annotations

import resource
import sys
from typing import Any

MIB = 2**20


def peak_memory(device: Any) -> dict[str, Any]:
    """``{"peak_mb": MiB, "memory": "vram" | "ram"}`` for the process training on ``device``.

    On CUDA the peak of memory allocated by tensors on that device (what PyTorch's
    ``max_memory_allocated`` reports; the driver's own share, a few hundred MiB, is not in it).
    On a CPU the peak resident set of the whole process, the interpreter and libraries included.
    """
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        return {"peak_mb": round(torch.cuda.max_memory_allocated(device) / MIB, 1), "memory": "vram"}
    return {"peak_mb": round(peak_rss_bytes() / MIB, 1), "memory": "ram"}


def peak_rss_bytes() -> int:
    """The process's peak resident set size in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024
