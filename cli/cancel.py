"""``kiln cancel``: stop a run after its current step, saving a LoRA and its resume state."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kiln.cli.common import add_example, console, positive_float
from kiln.engine.errors import RunError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln cancel`` to the parser."""
    parser = subparsers.add_parser(
        "cancel",
        help="stop a run after its current step (it saves a LoRA and its resume state)",
        description="Ask a running run to stop after its current step; it saves a LoRA and the "
        "resume state and ends with a `cancelled` event (`kiln resume` continues it). Cancel again "
        "within 5 s to stop at once (the last complete save is kept).",
    )
    parser.add_argument("run", metavar="RUN", help="run folder, or its name in the runs folder")
    parser.add_argument("--runs", type=Path, metavar="DIR", help="the runs folder to find RUN in")
    parser.add_argument("--wait", action="store_true", help="wait until the run has stopped")
    parser.add_argument(
        "--timeout", type=positive_float, default=600.0, help="seconds --wait waits at most (default 600)"
    )
    add_example(
        parser, "kiln cancel 20260301-091500-kilnpot", "kiln cancel runs/20260301-091500-kilnpot --wait"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kiln cancel``."""
    from kiln.engine.runs.folders import cancel_run, read_run, resolve_run

    run_dir = resolve_run(args.run, args.runs)
    cancel_run(run_dir)
    out = console(stderr=True)
    if not args.wait:
        out.print(f"cancel requested: {run_dir.name} stops after its current step and saves")
        return 0
    deadline = time.monotonic() + args.timeout
    while (info := read_run(run_dir)).state == "running":
        if time.monotonic() > deadline:
            raise RunError(
                f"{run_dir.name} still runs after {args.timeout:g} s; `kiln cancel` again stops it at once"
            )
        time.sleep(0.5)
    out.print(f"{run_dir.name}: {info.state} at step {info.step}/{info.total}")
    return 0
