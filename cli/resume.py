"""``kiln resume``: continue a cancelled, failed or killed run from its last complete save."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kiln.cli.common import add_example, console


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln resume`` to the parser."""
    parser = subparsers.add_parser(
        "resume",
        help="continue a cancelled, failed or killed run from its last save",
        description="Continue a run from its newest complete save in state/: the same total steps and "
        "LR schedule, the data order going on where it stopped (mid-epoch too); events append to "
        "the same events.jsonl after a `resumed` event. A run with an edited config.toml is refused "
        "(the changed keys are named) unless --force.",
    )
    parser.add_argument("run", metavar="RUN", help="run folder, or its name in the runs folder")
    parser.add_argument("--runs", type=Path, metavar="DIR", help="the runs folder to find RUN in")
    parser.add_argument("--detach", action="store_true", help="continue in the background and return")
    parser.add_argument("--force", action="store_true", help="resume although the config or dataset changed")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_example(
        parser,
        "kiln resume 20260301-091500-kilnpot",
        "kiln resume runs/20260301-091500-kilnpot --detach",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kiln resume``."""
    from kiln.cli.train import train_foreground
    from kiln.engine.runs.folders import check_resumable, read_launch, resolve_run, resume_run

    run_dir = resolve_run(args.run, args.runs)
    save = check_resumable(run_dir, force=args.force)
    launch = read_launch(run_dir)
    gpus, cpu = int(launch.get("gpus", 1)), bool(launch.get("cpu", False))
    if args.detach:
        resume_run(run_dir, detach=True, force=args.force)
        if not args.quiet:
            console(stderr=True).print(f"resuming {run_dir.name} from {save.name} in the background")
        sys.stdout.write(f"{run_dir}\n")
        return 0
    return train_foreground(run_dir, quiet=args.quiet, cpu=cpu, gpus=gpus, resume=True, force=args.force)
