"""``kiln runs``: the training runs in a folder, newest first, with their state and progress."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

from kiln.cli.common import add_example, console, print_json

STATE_STYLES = {
    "running": "bold green",
    "stale": "bold yellow",
    "done": "green",
    "failed": "bold red",
    "cancelled": "yellow",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln runs`` to the parser."""
    parser = subparsers.add_parser(
        "runs",
        help="list training runs: state, step, epoch, loss",
        description="List the runs in a runs folder (default: ./runs, else the current folder), newest "
        "first, with the runs of the sweep folders in it (as sweep-.../RUN). A run whose process is "
        "gone without a final event shows as stale: `kiln resume` continues it from its last save.",
    )
    parser.add_argument(
        "--runs", type=Path, metavar="DIR", help="the runs folder (output.dir or <dataset>/runs)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_example(parser, "kiln runs", "kiln runs --runs datasets/kilnpot/runs --json")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kiln runs``."""
    from kiln.engine.runs.folders import default_runs_dir, list_runs_and_sweeps

    folder = args.runs.expanduser() if args.runs else default_runs_dir()
    if args.runs and not folder.is_dir():
        from kiln.engine.errors import UsageError

        what = "is not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"--runs {args.runs}: {what}; give the runs folder (output.dir or <dataset>/runs)")
    listed = list_runs_and_sweeps(folder)
    if not listed and (folder / "runs").is_dir():  # a dataset folder: its runs are in runs/
        folder = folder / "runs"
        listed = list_runs_and_sweeps(folder)
    runs = [info for info, _ in listed]
    if args.json:
        print_json(
            {
                "runs_dir": str(folder.resolve()),
                "runs": [{**run_json(info), "sweep": sweep} for info, sweep in listed],
            }
        )
        return 0
    out = console()
    if not runs:
        out.print(f"no runs in {folder}")
        return 0
    from kiln.engine.runs.readout import family_text, memory_cell
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("RUN", "STATE", "MODEL", "STEP", "EPOCH", "LOSS", "IT/S", "PEAK", "STARTED"):
        table.add_column(
            column,
            justify="right" if column in ("STEP", "EPOCH", "LOSS", "IT/S", "PEAK") else "left",
            # A narrow terminal folds a run's name over lines rather than cut it: it is typed back.
            overflow="fold" if column == "RUN" else "ellipsis",
        )
    for info, sweep in listed:
        state = info.state + (" (read-only)" if info.readonly else "")
        table.add_row(
            f"{sweep}/{info.run_dir.name}" if sweep else info.run_dir.name,
            f"[{STATE_STYLES.get(info.state, '')}]{state}[/]",
            family_text(info.family, info.network),
            f"{info.step}/{info.total}" if info.total else str(info.step),
            f"{info.epoch}/{info.epochs}" if info.epochs else "-",
            f"{info.loss:.4f}" if info.loss is not None else "-",
            f"{info.it_s:.2f}" if info.it_s else "-",
            memory_cell(info.peak_mb),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(info.started)) if info.started else "-",
        )
    out.print(table)
    for info in runs:
        if info.error and info.state in ("failed", "stale"):
            out.print(f"[dim]{info.run_dir.name}: {info.error}[/]")
    return 0


def run_json(info) -> dict:
    """A RunInfo as JSON values (the run folder as a string)."""
    data = asdict(info)
    data["run_dir"] = str(info.run_dir)
    return data
