"""``kiln watch RUN``: a compact live view of one run, sized for a small tmux pane."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from kiln.cli.common import add_example, console, positive_float, print_json, run_exit_code

# status.json's fields, in the order --json prints them.
STATUS_FIELDS = (
    "state",
    "name",
    "run_dir",
    "step",
    "total",
    "epoch",
    "epochs",
    "loss",
    "it_s",
    "eta_s",
    "peak_mb",
    "memory",
    "pid",
    "started",
    "updated",
    "error",
    "readonly",
)
# Before calling a run dead, look again after this long.
STALE_RECHECK_S = 1.0
STATE_STYLES = {
    "running": "bold green",
    "starting": "bold cyan",
    "done": "bold blue",
    "failed": "bold red",
    "cancelled": "bold yellow",
    "stale": "bold magenta",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln watch`` to the parser."""
    parser = subparsers.add_parser(
        "watch",
        help="follow a run live in a small pane (progress, loss sparkline, ETA)",
        description="Follow one training run: progress, loss sparkline, ETA and the latest event, "
        "redrawn in place; fits a 40x8 tmux pane. Exits when the run ends, with the run's own code: 0 "
        "when it is done, 130 when it was cancelled, 1 when it failed or its process died (stale). "
        "Ctrl+C stops watching, never the run.",
    )
    parser.add_argument("run", help="run folder, or a run's name or id under the runs folder")
    parser.add_argument("--runs", type=Path, help="runs folder to look RUN up in (default: ./runs)")
    parser.add_argument("--once", action="store_true", help="print the current status once and exit 0")
    parser.add_argument(
        "--json", action="store_true", help="with --once: status.json's fields plus last_event"
    )
    parser.add_argument(
        "--interval", type=positive_float, default=0.5, help="seconds between redraws (default: 0.5)"
    )
    add_example(
        parser,
        "kiln watch runs/20260301-140500-pot",
        "kiln watch pot --runs ~/data/cat/runs",
        "kiln watch runs/20260301-140500-pot --once --json",
        "tmux split-window -l 8 'kiln watch runs/20260301-140500-pot'",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kiln watch``."""
    from kiln.engine.errors import UsageError
    from kiln.engine.runs.events import LIVE_STATES
    from kiln.engine.runs.feed import RunFeed
    from kiln.engine.runs.folders import read_run, resolve_run

    if args.json and not args.once:
        raise UsageError("--json goes with --once (kiln watch RUN --once --json)")
    run_dir = resolve_run(args.run, args.runs)
    feed = RunFeed(run_dir)
    feed.poll()
    info = read_run(run_dir)
    if args.once:
        if args.json:
            print_json(status_json(info, feed.history.last))
        else:
            out = console()
            out.print(watch_view(info, feed.history, out.width))
        return 0
    from rich.live import Live

    out = console()
    with Live(watch_view(info, feed.history, out.width), console=out, auto_refresh=False) as live:
        while info.state in LIVE_STATES:
            time.sleep(args.interval)
            feed.poll()
            info = read_run(run_dir)
            if info.state == "stale":  # a dead process is confirmed by a second look, never one read
                time.sleep(STALE_RECHECK_S)
                info = read_run(run_dir)
            live.update(watch_view(info, feed.history, out.width), refresh=True)
    return run_exit_code(info.state)


def status_json(info: Any, last_event: dict | None) -> dict[str, Any]:
    """status.json's fields as the run stands now (from ``read_run``), plus ``last_event``."""
    data: dict[str, Any] = {}
    for name in STATUS_FIELDS:
        value = getattr(info, name, None)
        data[name] = str(value) if isinstance(value, Path) else value
    data["last_event"] = last_event
    return data


def watch_view(info: Any, history: Any, width: int) -> Any:
    """The view: a header, a progress bar, loss and sparkline, rate and ETA, the latest event.

    Five lines, each cut to ``width``, so a 40x8 pane shows it whole.
    """
    from kiln.engine.runs.feed import current_progress
    from kiln.engine.runs.readout import (
        duration,
        event_text,
        loss_text,
        lr_text,
        memory_text,
        progress_text,
        rate_text,
        sparkline,
    )
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    width = max(20, width)
    state = info.state
    now = current_progress(info, history, state in ("running", "starting"))
    # State first: in a narrow pane the name is what gets cut, never the state.
    header = Text(no_wrap=True, overflow="ellipsis")
    header.append(state, style=STATE_STYLES.get(state, "bold"))
    if getattr(info, "sampling", None) and state == "running":
        header.append(f" sampling {info.sampling}", style="bold cyan")
    if info.epochs:
        header.append(f" e{now.epoch}/{info.epochs}")
    if info.readonly:
        header.append(" read-only", style="dim")
    header.append(" ")
    header.append(info.name or Path(info.run_dir).name, style="bold")
    counts = progress_text(now.step, now.total)
    bar = Table.grid(expand=True)
    bar.add_column(ratio=1)
    bar.add_column(no_wrap=True, justify="right")
    bar.add_row(
        ProgressBar(total=max(1, now.total), completed=min(now.step, max(1, now.total))),
        f" {counts}",
    )
    smoothed = history.smoothed_losses()
    loss = Text(no_wrap=True, overflow="ellipsis")
    loss.append("loss ")
    loss.append(loss_text(smoothed[-1] if smoothed else info.loss), style="bold")
    spark_width = width - loss.cell_len - 1
    if smoothed and spark_width > 4:
        loss.append(" ")
        loss.append(sparkline(smoothed, spark_width), style="cyan")
    figures = Text(no_wrap=True, overflow="ellipsis")
    figures.append(rate_text(now.it_s) if state in ("running", "starting") else "-")
    figures.append("  ETA ")
    figures.append(duration(now.eta_s) if state in ("running", "starting") else "-", style="bold")
    if history.lr is not None:
        figures.append(f"  lr {lr_text(history.lr)}")
    if info.peak_mb is not None:
        figures.append(f"  {memory_text(info.peak_mb, info.memory, info.estimate_mb)}")
    if history.validation:
        figures.append(f"  val {loss_text(history.validation[-1][2])}")
    last = Text(event_text(history.last), style="dim", no_wrap=True, overflow="ellipsis")
    if state == "failed" and info.error:
        last = Text(f"failed: {info.error}", style="red", no_wrap=True, overflow="ellipsis")
    elif state == "stale":
        last = Text(
            "stale: its process is gone (kiln resume RUN)", style="magenta", no_wrap=True, overflow="ellipsis"
        )
    return Group(header, bar, loss, figures, last)
