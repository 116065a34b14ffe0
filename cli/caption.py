"""``kiln caption``: caption a dataset's images with a local BLIP or WD14 model."""

from __future__ import annotations

import argparse
from pathlib import Path

from kiln.cli.common import add_example, console, load_dataset, positive_int, print_json
from rich.markup import escape

_UNIT_FLOAT_HELP = "a number from 0 to 1"


def unit_float(text: str) -> float:
    """argparse type: a score threshold in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not {_UNIT_FLOAT_HELP}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer of at least 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln caption`` to the parser."""
    parser = subparsers.add_parser(
        "caption",
        help="write captions with a local BLIP (sentences) or WD14 (tags) model",
        description="Caption the dataset's images with a local model folder (nothing is downloaded). "
        "BLIP writes a sentence, WD14 booru tags; the trigger word goes last after a BLIP sentence "
        "and first among WD14 tags. By default only included images without a caption are done.",
    )
    parser.add_argument("path", type=Path, help="dataset folder (Kohya train_data_dir)")
    parser.add_argument("--style", choices=("blip", "wd14"), required=True, help="captioner kind")
    parser.add_argument("--model", type=Path, required=True, help="local model folder")
    parser.add_argument("--trigger", default="", help="trigger word added to every caption")
    parser.add_argument(
        "--trigger-position", choices=("first", "last"), help="default: first for wd14, last for blip"
    )
    parser.add_argument(
        "--mode",
        choices=("skip", "overwrite", "append"),
        default="skip",
        help="images that already have a caption: skip them (default), overwrite, or append new pieces",
    )
    parser.add_argument("--all", action="store_true", help="caption excluded images too")
    parser.add_argument("--batch", type=positive_int, help="images per inference (wd14 8, blip 4)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary for scripts")
    parser.add_argument("--caption-extension", default=".txt", help="caption sidecar extension")
    wd14 = parser.add_argument_group("wd14")
    wd14.add_argument("--threshold", type=unit_float, default=0.35, help="general tag threshold (0.35)")
    wd14.add_argument(
        "--character-threshold", type=unit_float, default=0.85, help="character tag threshold (0.85)"
    )
    wd14.add_argument("--rating", action="store_true", help="put the most likely rating tag first")
    wd14.add_argument("--undesired", default="", help="comma-separated tags never to write")
    wd14.add_argument("--keep-underscores", action="store_true", help="write long_hair, not long hair")
    wd14.add_argument("--escape-parentheses", action="store_true", help="write \\( \\) for the WebUIs")
    blip = parser.add_argument_group("blip")
    blip.add_argument("--beams", type=positive_int, default=3, help="beam-search width (3)")
    blip.add_argument("--min-new-tokens", type=non_negative_int, default=5, help="fewest new tokens (5)")
    blip.add_argument("--max-new-tokens", type=positive_int, default=50, help="most new tokens (50)")
    blip.add_argument("--prefix", default="", help="conditional prompt, stripped from the caption")
    blip.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where BLIP runs")
    blip.add_argument("--allow-pickle", action="store_true", help="also load .bin weights (trusted files)")
    add_example(
        parser,
        "kiln caption data --style blip --model models/blip-large --trigger RFKTRCYBR",
        "kiln caption data --style wd14 --model models/wd-v1-4-vit-tagger-v2 --trigger kilnstyle "
        "--mode overwrite --threshold 0.4 --batch 16",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kiln caption``."""
    from kiln.engine.caption.autocaption import (
        FAILED,
        SKIPPED,
        UNCHANGED,
        WRITTEN,
        CaptionOptions,
        IdleCaptioner,
        any_needs_caption,
        caption_images,
        default_trigger_position,
        load_captioner,
    )
    from kiln.engine.caption.model_folders import check_model_folder
    from kiln.engine.dataset.selection import included_records
    from kiln.engine.dataset.store import Store
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    options = CaptionOptions(
        mode=args.mode,
        trigger=args.trigger,
        trigger_position=args.trigger_position or default_trigger_position(args.style),
    )
    settings = _settings(args)
    dataset = load_dataset(args.path, args.caption_extension)
    err = console(stderr=True)
    with Store(dataset.root) as store:
        records = list(dataset.images) if args.all else included_records(dataset.images, store)
        if any_needs_caption(records, args.mode):
            with err.status(f"loading {args.style} model from {args.model} ..."):
                captioner = load_captioner(args.style, args.model, settings)
        else:
            # Nothing to caption: no time spent loading a model, but a wrong folder is still an error.
            check_model_folder(args.style, args.model, args.allow_pickle)
            captioner = IdleCaptioner(args.style)
        try:
            progress = Progress(
                TextColumn("captioning"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[last]}"),
                console=err,
            )
            with progress:
                task = progress.add_task("caption", total=len(records), last="")

                def on_outcome(outcome) -> None:
                    progress.advance(task)
                    progress.update(task, last=outcome.rel_path)
                    if outcome.error:
                        line = escape(f"{outcome.rel_path}: {outcome.error}")
                        label = "[red]failed:[/]" if outcome.status == FAILED else "[yellow]skipped:[/]"
                        progress.console.print(f"{label} {line}", soft_wrap=True)

                result = caption_images(
                    records, captioner, options, root=dataset.root, store=store, on_outcome=on_outcome
                )
        finally:
            captioner.close()
    counts = {status: result.count(status) for status in (WRITTEN, UNCHANGED, SKIPPED, FAILED)}
    order = {record.rel_path: index for index, record in enumerate(records)}
    if args.json:
        print_json(
            {
                "root": str(dataset.root),
                "style": args.style,
                "mode": args.mode,
                "counts": counts,
                "undo_step": result.step,
                "images": [
                    {"path": o.rel_path, "status": o.status, "caption": o.text, "error": o.error}
                    for o in sorted(result.outcomes, key=lambda o: order[o.rel_path])
                ],
            }
        )
    else:
        out = console()
        out.soft_wrap = True
        out.print(
            f"{counts[WRITTEN]} written, {counts[UNCHANGED]} unchanged, {counts[SKIPPED]} skipped "
            f"(already captioned), {counts[FAILED]} failed"
            + (f"; undo with: kiln tags {dataset.root} undo" if result.step is not None else "")
        )
    return 1 if counts[FAILED] else 0


def _settings(args: argparse.Namespace) -> object:
    if args.style == "wd14":
        from kiln.engine.caption.settings import Wd14Settings

        return Wd14Settings(
            general_threshold=args.threshold,
            character_threshold=args.character_threshold,
            rating=args.rating,
            remove_underscores=not args.keep_underscores,
            escape_parentheses=args.escape_parentheses,
            undesired=tuple(tag.strip() for tag in args.undesired.split(",") if tag.strip()),
            batch_size=args.batch or 8,
        )
    from kiln.engine.caption.settings import BlipSettings

    return BlipSettings(
        beams=args.beams,
        min_new_tokens=args.min_new_tokens,
        max_new_tokens=args.max_new_tokens,
        prefix=args.prefix,
        batch_size=args.batch or 4,
        device=args.device,
        allow_pickle=args.allow_pickle,
    )
