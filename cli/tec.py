"""``kiln tec``: text-encoder corruption of a checkpoint, of a LoRA, or of each epoch of a run."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.cli.common import add_example, console, positive_int, print_json
from kiln.engine.errors import UsageError
from rich.markup import escape
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from kiln.engine.tec.measures import TecReport
    from kiln.engine.tec.meter import EpochTec


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln tec`` to the parser."""
    parser = subparsers.add_parser(
        "tec",
        help="measure text-encoder corruption (TEC) of a checkpoint or a LoRA",
        description="Measure how far a text encoder drifted from a reference. Each probe word is\n"
        "encoded by both; Kiln reports the TEC score (mean 1 - cosine, x100), the confusion rate\n"
        "(words now nearest another word: 'cat -> dog'), the most drifted words and the per-layer\n"
        "weight distance. Only the text encoders are loaded, offline.",
    )
    parser.add_argument(
        "candidate", type=Path, nargs="?", help="checkpoint to measure (diffusers folder or .safetensors)"
    )
    parser.add_argument(
        "--reference",
        type=Path,
        metavar="REF",
        help="checkpoint to compare with (vanilla SD 1.5 in practice)",
    )
    parser.add_argument("--lora", type=Path, metavar="FILE", help="measure the TEC this LoRA adds to --base")
    parser.add_argument("--run", type=Path, help="measure every saved LoRA of a run folder (per epoch)")
    parser.add_argument(
        "--base",
        type=Path,
        metavar="MODEL",
        help="base model of --lora (for --run: default model.base of its config)",
    )
    parser.add_argument("--scale", type=float, default=None, help="LoRA weight to merge at (default 1.0)")
    words = parser.add_mutually_exclusive_group()
    words.add_argument(
        "--words", type=Path, metavar="FILE", help="probe words, one a line (default: ~2,000 built in)"
    )
    words.add_argument(
        "--full-vocab", action="store_true", help="probe every token of the vocabulary (slow on a CPU)"
    )
    parser.add_argument(
        "--top",
        type=_top,
        default=20,
        metavar="N",
        help="words to list as drifted/confused (0 = all; default 20)",
    )
    parser.add_argument(
        "--position", choices=("word", "eos"), default="word", help="state compared (default: word)"
    )
    parser.add_argument(
        "--batch", type=positive_int, default=512, metavar="N", help="words per forward pass (default 512)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument(
        "--allow-pickle", action="store_true", help="accept .ckpt/.pt/.bin weights (can run code)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_example(
        parser,
        "kiln tec models/dreamy.safetensors --reference models/v1-5-pruned-emaonly.safetensors",
        "kiln tec models/dreamy --reference models/sd15 --json --top 50",
        "kiln tec --lora runs/20261126-101500-pot/lora/pot-e004.safetensors --base models/sd15 --scale 0.8",
        "kiln tec --run runs/20261126-101500-pot",
    )
    parser.set_defaults(func=run)


def _top(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 (all) or more")
    return value


def run(args: argparse.Namespace) -> int:
    """Run ``kiln tec``."""
    mode = _mode(args)
    # transformers announces missing optional packages (torchvision) at import; not news here.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from kiln.engine.runs.tec_series import run_tec_series
    from kiln.engine.tec.meter import ProbeOptions, checkpoint_tec_report, lora_tec_report
    from kiln.engine.tec.vocab import read_words

    words = tuple(read_words(args.words)) if args.words else None
    options = ProbeOptions(
        words=words,
        words_source=str(args.words) if args.words else "built-in",
        full_vocab=args.full_vocab,
        position=args.position,
        batch_size=args.batch,
        device=args.device,
    )
    top = args.top or None
    scale = 1.0 if args.scale is None else args.scale
    with _progress(enabled=not args.json) as progress:
        if mode == "checkpoint":
            report = checkpoint_tec_report(
                args.candidate, args.reference, options, args.allow_pickle, progress
            )
        elif mode == "lora":
            report = lora_tec_report(args.lora, args.base, scale, options, args.allow_pickle, progress)
        else:
            series = run_tec_series(
                args.run, args.base, scale, options, True if args.allow_pickle else None, progress
            )
    if mode == "run":
        if args.json:
            print_json(
                {
                    "run": str(args.run),
                    "scale": scale,
                    "epochs": [entry.to_json(top) for entry in series],
                }
            )
        else:
            print_series(args.run, series)
        return 0
    if args.json:
        print_json(report.to_json(top))
    else:
        print_report(report, top)
    return 0


def _mode(args: argparse.Namespace) -> str:
    """Which of the three measurements the arguments ask for; bad combinations are usage errors."""
    given = [
        name
        for name, value in (("CANDIDATE", args.candidate), ("--lora", args.lora), ("--run", args.run))
        if value
    ]
    if len(given) != 1:
        raise UsageError(
            "give one of CANDIDATE --reference REF, --lora FILE --base MODEL, or --run RUN"
            + (f" (got {' and '.join(given)})" if given else "")
        )
    if args.candidate:
        if not args.reference:
            raise UsageError(
                "CANDIDATE needs --reference REF (the checkpoint to compare with, e.g. vanilla SD 1.5)"
            )
        if args.base or args.scale is not None:
            raise UsageError(
                f"{'--base' if args.base else '--scale'} goes with --lora or --run; "
                "compare two checkpoints with --reference"
            )
        return "checkpoint"
    if args.reference:
        raise UsageError("--reference goes with CANDIDATE; a LoRA is compared with its --base")
    if args.lora:
        if not args.base:
            raise UsageError("--lora needs --base MODEL (the model the LoRA was trained on)")
        return "lora"
    return "run"


class _Progress:
    """A Rich progress bar on stderr that follows the meter's ``(stage, done, total)`` calls."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console(stderr=True),
            transient=True,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _Progress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(f"encoding {stage}", total=total)
        self.bar.update(self.tasks[stage], completed=done)


def _progress(enabled: bool) -> Any:
    if enabled and sys.stderr.isatty():
        return _Progress()
    return nullcontext(None)


def print_report(report: TecReport, top: int | None) -> None:
    """The human-readable report: headline, drifted words, confusions, layers, reading."""
    from kiln.engine.tec.reading import THRESHOLDS_NOTE

    out = console()
    out.print(f"candidate  {escape(report.candidate)}")
    out.print(f"reference  {escape(report.reference)}")
    out.print(f"probe      {len(report.words):,} {escape(report.probe)} words, {report.position} position")
    confused = report.confused()
    nearest_of = {pair.word: pair.nearest for pair in confused}
    table = Table(title=f"Most drifted words (top {top})" if top else "Drifted words")
    table.add_column("word")
    table.add_column("cosine", justify="right")
    table.add_column("1 - cos", justify="right")
    table.add_column("now nearest")
    for word, cosine in report.drifted(top):
        # Words are data, not markup: the full vocabulary holds "[", "[/" and the like.
        table.add_row(Text(word), f"{cosine:.4f}", f"{1 - cosine:.4f}", Text(nearest_of.get(word, "")))
    out.print(table)
    if confused:
        shown = confused if top is None else confused[:top]
        out.print(
            f"Confused ({len(confused)}): "
            + ", ".join(f"{escape(c.word)} -> {escape(c.nearest)}" for c in shown)
            + (" ..." if len(shown) < len(confused) else "")
        )
    else:
        out.print("Confused: none (every word is still nearest its own reference meaning)")
    # A model with several text encoders (SDXL) gets a layer table and a score line per encoder.
    for label, part in report.parts or (("", report),):
        if part.layers:
            title = f"Weight distance, {label} (relative L2)" if label else "Weight distance (relative L2)"
            layers = Table(title=title)
            for layer in part.layers:
                layers.add_column(
                    layer.name.replace("layer ", "L").replace(" embedding", " emb"), justify="right"
                )
            layers.add_row(*(f"{layer.relative_l2:.3g}" for layer in part.layers))
            out.print(layers)
    for label, part in report.parts:
        out.print(
            f"{escape(label)}: TEC score {part.score:.3f}, confusion {100 * part.confusion_rate:.2f}% "
            f"({len(part.confused_indices)} words): {part.reading}"
        )
    if report.position_ids is not None:
        colour = "red" if report.position_ids.broken else "green"
        out.print(f"[{colour}]{report.position_ids.describe()}[/]")
    for note in report.notes:
        out.print(f"[yellow]note:[/] {escape(note)}")
    both = "Combined: " if report.parts else ""
    out.print(
        f"{both}TEC score {report.score:.3f}, confusion {100 * report.confusion_rate:.2f}% "
        f"({len(report.confused_indices)} of {len(report.words):,} words): [bold]{report.reading}[/]"
    )
    out.print(f"[dim]({THRESHOLDS_NOTE})[/]")


def print_series(run_dir: Path, series: list[EpochTec]) -> None:
    """The per-epoch table of ``kiln tec --run``."""
    from kiln.engine.tec.reading import THRESHOLDS_NOTE

    out = console()
    table = Table(title=escape(f"TEC added per epoch: {run_dir}"))
    for column, justify in (
        ("epoch", "right"),
        ("file", "left"),
        ("TE", "left"),
        ("score", "right"),
        ("confusion", "right"),
        ("reading", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for entry in series:
        report = entry.report
        table.add_row(
            "-" if entry.epoch is None else str(entry.epoch),
            Text(entry.path.name),
            "yes" if entry.text_encoder else "no (U-Net only)",
            f"{report.score:.3f}",
            f"{100 * report.confusion_rate:.2f}%",
            report.reading,
        )
    out.print(table)
    out.print(f"({THRESHOLDS_NOTE})")
