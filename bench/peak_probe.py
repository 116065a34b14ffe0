"""Run a Python script (or ``-m module``) as ``__main__`` and write its process's peak memory at exit.

``bench.train_gpu`` runs both sides of its sd-scripts comparison through this wrapper, so the
two are measured the same way, each in a fresh process of its own:

- CUDA: ``torch.cuda.max_memory_allocated()``, the caching allocator's peak since the process
  started (weights, activations, gradients, optimizer state; not the CUDA context, nor blocks
  cached but free). The figure the in-process loops of ``bench.train_gpu`` report.
- CPU: the process's peak resident set size, Linux's ``VmHWM`` (``/proc/self/status``): the
  whole run's high-water mark, so the moment the checkpoint is read and the models are built
  counts as much as the training steps. Not ``getrusage().ru_maxrss``: Linux carries the
  parent's peak over an ``exec``, so a child started by a big bench process reports the
  parent's size. Elsewhere ``ru_maxrss`` is the fallback.

It runs under whichever interpreter runs the script (sd-scripts' own virtual environment too),
so it imports nothing but the standard library, and torch only if the script already did.

Usage:  python peak_probe.py REPORT.json SCRIPT.py [ARGS...]
        python peak_probe.py REPORT.json -m MODULE [ARGS...]
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path


def peak_rss(status: Path = Path("/proc/self/status")) -> int | None:
    """This process's peak resident set size in bytes (``VmHWM``; ``ru_maxrss`` without /proc)."""
    try:
        for line in status.read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                value, unit = line.split()[1:3]
                return int(value) * {"kB": 1024, "mB": 2**20}.get(unit, 1)
    except (OSError, ValueError):
        pass
    try:
        import resource
    except ImportError:  # neither Linux nor macOS
        return None
    # ru_maxrss is in kilobytes on Linux, in bytes on macOS.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def peak_figures() -> dict[str, int | None]:
    """This process's peak resident set size and, when it used CUDA, its allocator's peak (bytes)."""
    rss = peak_rss()
    cuda = None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = max(torch.cuda.max_memory_allocated(index) for index in range(torch.cuda.device_count()))
    # Kiln's memory probe resets the counters after loading; its run's peak covers that too.
    kiln_memory = sys.modules.get("kiln.engine.train.memory")
    if kiln_memory is not None:
        run = kiln_memory.run_peak_bytes()
        rss = max(rss or 0, run.get("cpu", 0)) or None
        cuda = max(cuda or 0, run.get("cuda", 0)) or None
    return {"rss_peak_bytes": rss, "cuda_peak_bytes": cuda}


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def main(argv: list[str]) -> int:
    if len(argv) < 2 or (argv[1] == "-m" and len(argv) < 3):
        sys.stderr.write("usage: peak_probe.py REPORT.json (SCRIPT.py | -m MODULE) [ARGS...]\n")
        return 2
    report = Path(argv[0])
    status = 1
    try:
        if argv[1] == "-m":
            module, rest = argv[2], argv[3:]
            sys.argv = [module, *rest]
            sys.path.insert(0, os.getcwd())  # as `python -m` does
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            script, rest = Path(argv[1]).resolve(), argv[2:]
            sys.argv = [str(script), *rest]
            sys.path[0] = str(script.parent)  # as `python SCRIPT.py` does: its folder imports first
            runpy.run_path(str(script), run_name="__main__")
        status = 0
    except SystemExit as stop:
        status = _exit_status(stop.code)
    finally:
        figures = {**peak_figures(), "status": status}
        report.write_text(json.dumps(figures), encoding="utf-8")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
