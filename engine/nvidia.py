"""Whether an NVIDIA GPU is here, asked of the device files instead of torch.

Importing torch to ask CUDA takes seconds; the plan's GPU advice, the pre-run check and the
new-run form ask often and, on a machine without an NVIDIA driver, the answer is already in
``/dev`` and ``/proc``. Only when these say yes is torch worth importing.
"""

from __future__ import annotations

from pathlib import Path


def nvidia_gpu_visible() -> bool:
    """Whether this machine shows an NVIDIA GPU, without importing torch (device files only)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return Path("/dev/nvidia0").exists() or (gpus.is_dir() and any(gpus.iterdir()))
