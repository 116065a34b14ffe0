"""``kiln train``: train a LoRA from a TOML config in the foreground, or the built-in demo."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from engine.cli.common import add_example, console
from engine.errors import KilnError, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln train`` to the parser."""
    parser = subparsers.add_parser(
        "train",
        help="train a LoRA from a config file (or --demo)",
        description="Train an SD 1.5 LoRA in the foreground with a progress bar. The run folder "
        "(runs/<time>-<name>/) gets config.toml, events.jsonl, status.json, train.log, samples/ "
        "and lora/. Ctrl+C stops after the current step and saves a LoRA.",
    )
    parser.add_argument("config", type=Path, nargs="?", help="TOML config (see --print-config)")
    parser.add_argument(
        "--demo", action="store_true", help="train the tiny model on sample_data/ (~1 min on a CPU)"
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
        "--quiet", action="store_true", help="no progress bar; print the run folder at the end"
    )
    add_example(
        parser,
        "kiln train --print-config > run.toml",
        "kiln train run.toml",
        "kiln train run.toml --set train.unet_lr=3e-4 --set train.max_steps=800",
        "kiln train --demo",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kiln train``."""
    # transformers announces missing optional packages (torchvision) at import; not news here.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from engine.train.config import TrainConfig, load_config, parse_override, require_paths, resolved_toml

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

        from engine.train.demo import demo_config

        # The tiny model's ops are so small that threads cost more than they give.
        torch.set_num_threads(1)
        output = Path(overrides.pop("output.dir", Path.cwd() / "runs"))
        config = demo_config(output, overrides)
    else:
        config = load_config(args.config, overrides)
        require_paths(config, str(args.config))
    return train(config, quiet=args.quiet, cpu=args.cpu)


def train(config, quiet: bool = False, cpu: bool = False) -> int:
    """Check inputs, make the run folder, train with a progress bar; 1 when the run failed."""
    from engine.train.data import training_set
    from engine.train.loop import Trainer
    from engine.train.model import model_source
    from engine.train.rundir import create_run_dir

    # Fail on a bad path before a run folder exists for it.
    model_source(config.model.base, config.model.allow_pickle)
    training_set(config.dataset)
    run_dir = create_run_dir(config)
    out = console(stderr=True)
    progress = _Progress(out, enabled=not quiet and out.is_terminal)
    trainer = Trainer(config, run_dir, listeners=[progress.on_event], cpu=cpu)
    previous = signal.getsignal(signal.SIGINT)

    def stop(signum: int, frame: object) -> None:
        # First Ctrl+C: finish the step, save, end with `cancelled`; a second one interrupts.
        trainer.request_stop()
        out.print("[yellow]stopping after the current step (Ctrl+C again to abort)[/]")
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, stop)
    try:
        with progress:
            result = trainer.run()
    finally:
        signal.signal(signal.SIGINT, previous)
    sys.stdout.write(f"{result.run_dir}\n")
    if result.state == "failed":
        raise KilnError(f"training failed: {result.error} (see {result.run_dir / 'train.log'})")
    if result.lora is not None and not quiet:
        out.print(f"{result.state}: {result.lora}")
    return 0


class _Progress:
    """A Rich progress bar fed by the trainer's events."""

    def __init__(self, out, enabled: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
        self.task = None

    def __enter__(self) -> _Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def on_event(self, event: dict) -> None:
        kind = event["type"]
        if kind == "start":
            self.task = self.progress.add_task(
                event.get("name", "train"), total=event["total"], epoch=event["epoch"], loss="-", it_s="-"
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
