"""Kiln's side of ``bench.train_gpu --sd-scripts``: one training run in a process of its own.

Started by ``bench.train_gpu`` under :mod:`bench.peak_probe` (as sd-scripts is), with a JSON
file holding the config mapping, its overrides and the device. The model is read from the
single-file checkpoint as any run reads it. Prints ``kiln step N/M`` when each step's event
arrives; the parent stamps those lines as they come, as it stamps sd-scripts' progress bar.
Prints ``kiln estimate X MiB`` first: the trainer's memory estimate (its ``start`` event), which
the parent reports beside the measured peak.

Usage:  python -m bench.kiln_side SETTINGS.json
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m bench.kiln_side SETTINGS.json\n")
        return 2
    settings = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from diffusers.utils import logging as diffusers_logging
    from kiln.engine.models.tiny import quiet_library_progress
    from kiln.engine.runs.control import controlled_trainer
    from kiln.engine.runs.layout import create_run_dir
    from kiln.engine.train.config import config_from_mapping

    diffusers_logging.set_verbosity_error()
    quiet_library_progress()
    cpu = settings["device"] == "cpu"  # (TF32 on a GPU: the run's own train.tf32, on by default)
    config = config_from_mapping(settings["mapping"], overrides=settings.get("overrides"))

    def on_event(event: dict) -> None:
        if event["type"] == "step":
            print(f"kiln step {event['step']}/{event['total']}", flush=True)
        elif event["type"] == "start" and event.get("memory_estimate"):
            # The trainer's own estimate of its peak, set beside the peak the probe measures.
            print(f"kiln estimate {event['memory_estimate']['total_mb']} MiB", flush=True)

    result = controlled_trainer(config, create_run_dir(config), listeners=[on_event], cpu=cpu).run()
    if result.state != "done":
        sys.stderr.write(f"bench.kiln_side: Kiln's run {result.state}: {result.error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
