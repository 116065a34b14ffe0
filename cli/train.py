"""``kiln train``: train a LoRA from a TOML config (foreground, detached, on N GPUs), or the demo."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from kiln.cli.common import EXIT_CODES_HELP, add_example, console, positive_int, run_exit_code
from kiln.engine.errors import KilnError, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln train`` to the parser."""
    parser = subparsers.add_parser(
        "train",
        help="train a LoRA from a config file (or --demo)",
        description="Train an SD 1.5 or SDXL LoRA (the family is read from the base model) in the "
        "foreground with a progress bar, or --detach it "
        "from the terminal. The run folder (runs/<time>-<name>/) gets config.toml, events.jsonl, "
        "status.json, train.log, samples/, lora/ and state/ (resume). Ctrl+C, SIGTERM or `kiln "
        "cancel` stop after the current step and save a LoRA and the resume state; a second one "
        "within 5 s stops at once. The run folder is the last line on stdout.",
    )
    parser.add_argument("config", type=Path, nargs="?", help="TOML config (see --print-config)")
    parser.add_argument(
        "--demo", action="store_true", help="train the tiny model on sample_data/ (~1 min on a CPU)"
    )
    parser.add_argument(
        "--family",
        choices=("sd15", "sdxl"),
        default="sd15",
        help="with --demo: the tiny model's family (default sd15)",
    )
    parser.add_argument("--print-config", action="store_true", help="print the full default config and exit")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.max_steps=800 (repeatable)",
    )
    parser.add_argument(
        "--allow-pickle", action="store_true", help="accept .ckpt/.pt base models (can run code)"
    )
    parser.add_argument("--output", type=Path, help="folder for the run folder (default: output.dir)")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    parser.add_argument(
        "--detach",
        action="store_true",
        help="train in the background (survives the terminal and SSH); print the run folder and return",
    )
    parser.add_argument(
        "--gpus",
        type=positive_int,
        default=1,
        metavar="N",
        help="train on N GPUs with accelerate (with --cpu: N CPU processes)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar; print the run folder at the end"
    )
    add_example(
        parser,
        "kiln train --print-config > run.toml",
        "kiln train run.toml",
        "kiln train run.toml --set train.unet_lr=3e-4 --set train.max_steps=800",
        "kiln train run.toml --detach          # then: kiln runs, kiln watch RUN, kiln cancel RUN",
        "kiln train run.toml --gpus 2 --detach",
        "kiln train --demo",
        "kiln train --demo --family sdxl",
    )
    parser.epilog = f"{parser.epilog}\n\n{EXIT_CODES_HELP}"
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kiln train``."""
    # transformers announces missing optional packages (torchvision) at import; not news here.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from kiln.engine.train.config import (
        TrainConfig,
        load_config,
        parse_override,
        require_paths,
        resolved_toml,
    )

    if args.print_config:
        sys.stdout.write(resolved_toml(TrainConfig(), comments=True))
        return 0
    overrides: dict[str, Any] = dict(parse_override(text) for text in args.overrides)
    if args.allow_pickle:
        overrides["model.allow_pickle"] = True
    if args.output is not None:
        overrides["output.dir"] = str(args.output.expanduser().resolve())
    if args.demo == (args.config is not None):
        raise UsageError("give a CONFIG file or --demo (see kiln train --help)")
    if args.demo:
        import torch
        from kiln.engine.train.demo import demo_config

        # The tiny model's ops are so small that threads cost more than they give.
        torch.set_num_threads(1)
        output = Path(overrides.pop("output.dir", Path.cwd() / "runs"))
        config = demo_config(output, overrides, family=args.family)
    else:
        config = load_config(args.config, overrides, overrides_source="--set")
        require_paths(config, str(args.config))
    return train(config, quiet=args.quiet, cpu=args.cpu, detach=args.detach, gpus=args.gpus)


def train(config, quiet: bool = False, cpu: bool = False, detach: bool = False, gpus: int = 1) -> int:
    """Check inputs, make the run folder, then train here, detached, or on N processes."""
    from kiln.engine.runs import runner

    # A bad path or GPU count fails before a run folder exists for it.
    def warn(text: str) -> None:
        sys.stderr.write(f"kiln: warning: {text}\n")

    run_dir = runner.new_run_dir(config, gpus=gpus, cpu=cpu, warn=warn)
    if detach:
        process = runner.spawn(run_dir, gpus=gpus, cpu=cpu)
        if not quiet:
            # Plain writes: Rich would wrap the paths, and these lines are meant to be copied.
            sys.stderr.write(
                f"training in the background (pid {process.pid}); output in {run_dir / 'train.log'}\n"
                f"  kiln runs --runs {run_dir.parent}\n  kiln cancel {run_dir}\n"
            )
        sys.stdout.write(f"{run_dir}\n")
        return 0
    return train_foreground(run_dir, quiet=quiet, cpu=cpu, gpus=gpus)


def train_foreground(
    run_dir: Path,
    quiet: bool = False,
    cpu: bool = False,
    gpus: int = 1,
    resume: bool = False,
    force: bool = False,
) -> int:
    """Train (or resume) a run folder with a progress bar until it ends; the run folder is the
    last line on stdout. Returns 0 when done, 130 when cancelled; a failed run raises (exit 1)."""
    from kiln.engine.runs import runner
    from kiln.engine.runs.folders import read_run

    out = console(stderr=True)
    progress = _Progress(out, enabled=not quiet and out.is_terminal)

    def say(message: str) -> None:
        out.print(f"[yellow]{message}[/]")

    with progress:
        if gpus > 1:
            offset = runner.events_size(run_dir)
            process = runner.spawn(run_dir, resume=resume, force=force, gpus=gpus, cpu=cpu)
            runner.follow(run_dir, process, listeners=[progress.on_event], on_message=say, offset=offset)
        else:
            runner.train_here(
                run_dir, resume=resume, force=force, cpu=cpu, listeners=[progress.on_event], on_message=say
            )
    info = read_run(run_dir)
    sys.stdout.write(f"{run_dir}\n")
    if info.state not in ("done", "cancelled"):
        raise KilnError(f"training {info.state}: {info.error} (see {run_dir / 'train.log'})")
    if not quiet:
        out.print(f"{info.state} at step {info.step}/{info.total}: {run_dir / 'lora'}")
    return run_exit_code(info.state)


class _Progress:
    """A Rich progress bar fed by the trainer's events."""

    def __init__(self, out, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskID,
            TextColumn,
            TimeRemainingColumn,
        )

        self.out = out
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}  loss {task.fields[loss]}  {task.fields[it_s]} it/s"),
            TimeRemainingColumn(),
            console=out,
            disable=not enabled,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> _Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def on_event(self, event: dict) -> None:
        kind = event["type"]
        if kind in ("start", "resumed"):
            if self.enabled and "family" in event:
                from kiln.engine.runs.readout import family_text

                self.progress.console.print(
                    f"{kind}: {family_text(event['family'])} model {event.get('model', '')}, "
                    f"{event.get('images', '?')} images, {event['total']} steps on {event.get('device', '?')}"
                )
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(
                event.get("name", "train"),
                total=event["total"],
                completed=event.get("step", 0),
                epoch=event["epoch"],
                loss="-",
                it_s="-",
            )
        elif kind == "step" and self.task is not None:
            self.progress.update(
                self.task,
                completed=event["step"],
                epoch=event["epoch"],
                loss=f"{event['loss']:.4f}",
                it_s=f"{event['it_s']:.2f}" if event.get("it_s") else "-",
            )
        elif kind in ("warning", "failed"):
            self.out.print(f"[yellow]{kind}:[/] {event.get('message') or event.get('error')}")
        elif kind in ("checkpoint", "sample") and self.enabled:
            what = event.get("path") or f"{len(event.get('files', []))} sample(s) for epoch {event['epoch']}"
            self.progress.console.print(f"{kind}: {what}")
