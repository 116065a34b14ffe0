"""``kiln sweep``: run a grid of short test trainings, and compare them."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kiln.cli.common import add_example, console, positive_int, print_json
from kiln.engine.errors import UsageError

# A foreground sweep prints a running run's step at most this often.
PROGRESS_EVERY_S = 5.0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln sweep`` to the parser."""
    parser = subparsers.add_parser(
        "sweep",
        help="run a grid of short test trainings and compare them",
        description="Run the test trainings of a sweep file (a base config and a [grid] or [[runs]] "
        "of overrides, each a short run of max_steps) one after another, or N at a time (each on a GPU "
        "of its own when there are GPUs), sharing the dataset's latent cache. Prints the sweep "
        "folder first. --report compares a sweep's runs: settings, final and minimum smoothed loss, "
        "time, cook hint, and a contact sheet of their samples per prompt.",
    )
    parser.add_argument(
        "sweep", type=Path, nargs="?", help="sweep file (TOML), or with --report a sweep folder"
    )
    parser.add_argument("--detach", action="store_true", help="run the queue in the background and return")
    parser.add_argument(
        "--parallel", type=positive_int, default=1, metavar="N", help="runs at a time (default: 1)"
    )
    parser.add_argument(
        "--gpus",
        metavar="LIST",
        help="GPUs to give the runs, one each, e.g. 0,2,3 (default with --parallel: every visible GPU)",
    )
    parser.add_argument(
        "--share-gpus", action="store_true", help="let --parallel runs share GPUs (default: one run per GPU)"
    )
    parser.add_argument("--dry-run", action="store_true", help="check the sweep file and list its runs")
    parser.add_argument("--report", action="store_true", help="compare the runs of a sweep folder")
    parser.add_argument(
        "--resume", action="store_true", help="continue a sweep folder's queue (runs still queued)"
    )
    parser.add_argument("--json", action="store_true", help="with --report or --dry-run: JSON for scripts")
    parser.add_argument("--no-cook", action="store_true", help="with --report: skip the cook hints")
    parser.add_argument(
        "--tec", action="store_true", help="with --report: measure text-encoder drift (needs kiln.engine.tec)"
    )
    parser.add_argument("--no-sheet", action="store_true", help="with --report: no contact sheet")
    parser.add_argument("--queue", action="store_true", help=argparse.SUPPRESS)
    add_example(
        parser,
        "kiln sweep lr.toml                           # one run after another, in the foreground",
        "kiln sweep lr.toml --detach --parallel 2     # in the background, two at a time",
        "kiln sweep lr.toml --parallel 3 --gpus 0,2,3 # each run on its own GPU",
        "kiln sweep lr.toml --dry-run",
        "kiln sweep --report data/runs/sweep-20260301-140500-lr",
        "kiln sweep --report data/runs/sweep-20260301-140500-lr --json",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kiln sweep``."""
    if args.sweep is None:
        raise UsageError("give a SWEEP.toml file, or --report SWEEP_DIR (see kiln sweep --help)")
    if args.report:
        return report(args)
    from kiln.engine.runs.gpus import choose_gpus

    # Checked first (a bad --gpus is one line, and no sweep folder); a dry run starts nothing.
    gpus = () if args.dry_run else choose_gpus(args.gpus, args.parallel)
    if args.queue:
        return run_queue_here(args.sweep, args.parallel, quiet=True, gpus=gpus, share=args.share_gpus)
    if args.resume:
        from kiln.engine.runs.sweep import read_sweep_record

        read_sweep_record(args.sweep)  # a folder that is not a sweep is one line, here
        sweep_dir = args.sweep.expanduser().resolve()
    else:
        from kiln.engine.runs.sweep import create_sweep, load_sweep

        plan = load_sweep(args.sweep)
        err = console(stderr=True)
        for warning in plan.warnings:
            err.print(f"[yellow]warning:[/] {warning}")
        if args.dry_run:
            return dry_run(plan, args.json)
        sweep_dir = create_sweep(plan)
    sys.stdout.write(f"{sweep_dir}\n")
    sys.stdout.flush()
    if gpus and not args.share_gpus and args.parallel > len(gpus):
        console(stderr=True).print(
            f"{len(gpus)} GPU(s) for --parallel {args.parallel}: {len(gpus)} run at a time, one per GPU "
            "(--share-gpus to put several on one)"
        )
    if args.detach:
        pid = start_queue_process(sweep_dir, args)
        console(stderr=True).print(
            f"queue running in the background (pid {pid}); log: {sweep_dir / 'sweep.log'}; "
            f"compare with: kiln sweep --report {sweep_dir}"
        )
        return 0
    return run_queue_here(sweep_dir, args.parallel, quiet=False, gpus=gpus, share=args.share_gpus)


def dry_run(plan: Any, as_json: bool) -> int:
    """List the runs a sweep file describes."""
    if as_json:
        print_json(
            {
                "base": str(plan.base_path),
                "name": plan.name,
                "max_steps": plan.max_steps,
                "runs": [
                    {"overrides": entry, "max_steps": config.train.max_steps}
                    for entry, config in zip(plan.entries, plan.configs, strict=True)
                ],
                "warnings": list(plan.warnings),
            }
        )
        return 0
    out = console()
    out.print(f"{len(plan.entries)} run(s) from {plan.base_path}:")
    for index, (entry, config) in enumerate(zip(plan.entries, plan.configs, strict=True), start=1):
        settings = "  ".join(f"{key}={value}" for key, value in entry.items())
        out.print(f"  {index:>2}. {settings}  ({config.train.max_steps or 'all'} steps)", markup=False)
    return 0


def run_queue_here(
    sweep_dir: Path, parallel: int, quiet: bool, gpus: tuple[str, ...] = (), share: bool = False
) -> int:
    """Run the queue in this process; Ctrl+C (or SIGTERM) cancels the runs in flight."""
    from kiln.engine.runs.sweep import run_path, run_queue

    stop = {"asked": False}

    def ask_stop(signum: int, frame: object) -> None:
        stop["asked"] = True

    previous = {sig: signal.signal(sig, ask_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    err = console(stderr=True)
    seen: dict[int, str] = {}
    latest: dict[str, Any] = {}
    shown: dict[int, tuple[int, float]] = {}

    def on_change(record: dict[str, Any]) -> None:
        latest["record"] = record
        if quiet:
            return
        total = len(record["runs"])
        for entry in record["runs"]:
            index, state = entry["index"], entry.get("state", "")
            if seen.get(index) == state or state == "queued":
                continue
            seen[index] = state
            path = run_path(sweep_dir, entry)
            where = f" {path}" if path is not None and state == "starting" else ""
            if entry.get("gpu") is not None and state == "starting":
                where += f" on GPU {entry['gpu']}"
            reason = f": {entry['error']}" if entry.get("error") else ""
            err.print(
                f"run {index}/{total} {state}{where}{reason}", markup=False, highlight=False, soft_wrap=True
            )

    def show_progress() -> None:
        """Each poll: a line per running run whose step moved, at most every PROGRESS_EVERY_S."""
        record = latest.get("record")
        if quiet or record is None:
            return
        from kiln.engine.runs.folders import read_run

        now = time.monotonic()
        total = len(record["runs"])
        for entry in record["runs"]:
            if entry.get("state") not in ("starting", "running"):
                continue
            path = run_path(sweep_dir, entry)
            if path is None:
                continue
            index = entry["index"]
            try:
                info = read_run(path)
            except Exception:
                continue
            last_step, last_time = shown.get(index, (-1, 0.0))
            if info.step == last_step or now - last_time < PROGRESS_EVERY_S or not info.total:
                continue
            shown[index] = (info.step, now)
            loss = f"  loss {info.loss:.4f}" if info.loss is not None else ""
            sampling = f"  sampling {info.sampling}" if info.sampling else ""
            err.print(
                f"run {index}/{total} step {info.step}/{info.total}  epoch {info.epoch}/{info.epochs}"
                f"{loss}{sampling}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    def should_stop() -> bool:
        show_progress()  # called once per queue poll: the job's step line, at most every 5 s
        return bool(stop["asked"])

    try:
        record = run_queue(
            sweep_dir,
            parallel=parallel,
            gpus=gpus,
            share_gpus=share,
            should_stop=should_stop,
            on_change=on_change,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not quiet:
        from kiln.engine.runs.sweep_report import sweep_report

        print_report(sweep_report(sweep_dir), sheet=True)
    return 0 if all(entry.get("state") == "done" for entry in record["runs"]) else 1


def start_queue_process(sweep_dir: Path, args: argparse.Namespace) -> int:
    """Start ``kiln sweep --queue`` in its own session, logging to ``sweep.log``; its pid.

    It gets the same ``--parallel``, ``--gpus`` and ``--share-gpus`` and the same environment,
    so it picks the same devices."""
    extra = ["--gpus", args.gpus] if args.gpus is not None else []
    extra += ["--share-gpus"] if args.share_gpus else []
    env = dict(os.environ)
    log = open(sweep_dir / "sweep.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kiln.cli",
                "sweep",
                str(sweep_dir),
                "--queue",
                "--parallel",
                str(args.parallel),
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=str(sweep_dir),
        )
    finally:
        log.close()
    return process.pid


def report(args: argparse.Namespace) -> int:
    """``kiln sweep --report SWEEP_DIR``."""
    from kiln.engine.runs.sweep_report import contact_sheet, sweep_report

    result = sweep_report(args.sweep, cook=not args.no_cook, tec=args.tec)
    err = console(stderr=True)
    for row in result.rows:
        if args.tec and row.tec_note and row.run_dir is not None:
            err.print(f"run {row.index}: no TEC figure: {row.tec_note}", markup=False, highlight=False)
    sheet = None if args.no_sheet else contact_sheet(result)
    if args.json:
        data = result.to_json()
        data["contact_sheet"] = str(sheet) if sheet else None
        print_json(data)
        return 0
    print_report(result, sheet=False)
    if sheet is not None:
        console().print(f"contact sheet: {sheet}", markup=False, highlight=False, soft_wrap=True)
    return 0


def print_report(result: Any, sheet: bool) -> None:
    """The comparison table, then each run's folder (and the contact sheet when asked)."""
    from kiln.engine.runs.readout import duration, loss_text
    from rich.markup import escape
    from rich.table import Table

    out = console()
    keys = result.keys()
    table = Table(title=f"sweep {result.name}", title_justify="left", box=None, pad_edge=False)
    table.add_column("#", justify="right")
    for key in keys:
        table.add_column(key.rpartition(".")[2], justify="right")
    with_gpu = result.pinned
    for name in ("state", *(("gpu",) if with_gpu else ()), "steps", "final", "min", "val", "time"):
        table.add_column(name, justify="left" if name == "state" else "right")
    with_tec = result.with_tec
    if with_tec:
        table.add_column("tec", justify="right")
    table.add_column("cook")
    best = min((row.final_loss for row in result.rows if row.final_loss is not None), default=None)
    for row in result.rows:
        final = loss_text(row.final_loss)
        cells = [
            str(row.index),
            *(_value(row.overrides.get(key)) for key in keys),
            row.state,
            *((row.gpu or "-",) if with_gpu else ()),
            str(row.steps),
            f"[bold]{final}[/]" if row.final_loss is not None and row.final_loss == best else final,
            loss_text(row.min_loss),
            loss_text(row.validation_loss),
            duration(row.seconds),
        ]
        if with_tec:
            cells.append("-" if row.tec is None else f"{row.tec:.4f}")
        cells.append(escape(row.cook or "-"))
        table.add_row(*cells)
    out.print(table)
    for row in result.rows:
        if row.run_dir is not None:
            out.print(f"  #{row.index} {row.run_dir}", markup=False, highlight=False, soft_wrap=True)
    if sheet:
        from kiln.engine.runs.sweep_report import contact_sheet

        path = contact_sheet(result)
        if path is not None:
            out.print(f"contact sheet: {path}", markup=False, highlight=False, soft_wrap=True)


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
