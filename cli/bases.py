"""``kiln bases``: the user's checkpoints side by side, ranked by text-encoder corruption."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kiln.cli.common import add_example, console, print_json
from kiln.engine.errors import UsageError
from rich.markup import escape
from rich.table import Table

STYLE_CHOICES = ("blip", "wd14", "either")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln bases`` to the parser."""
    parser = subparsers.add_parser(
        "bases",
        help="catalogue your checkpoints, ranked by text-encoder corruption (TEC)",
        description="Find every checkpoint in the folders (.safetensors files and diffusers folders, "
        "SD 1.x and SDXL), identify it, measure its TEC against the reference of its family and rank "
        "them, with the caption style each base understands. Results are kept by file hash in "
        "$XDG_DATA_HOME/kiln/bases.json: a second look reads no weights. Only text encoders load.",
    )
    parser.add_argument("folders", type=Path, nargs="*", metavar="DIR", help="folders holding checkpoints")
    parser.add_argument("--reference", type=Path, metavar="SD15", help="vanilla SD 1.5 (for SD 1.x bases)")
    parser.add_argument("--reference-xl", type=Path, metavar="SDXL", help="SDXL base 1.0 (for SDXL bases)")
    parser.add_argument(
        "--set-style",
        nargs=2,
        metavar=("FILE", "STYLE"),
        help="note the caption style a checkpoint understands: blip, wd14 or either",
    )
    parser.add_argument("--words", type=Path, metavar="FILE", help="TEC probe words (default: built in)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--catalog", type=Path, help="catalog file (default $XDG_DATA_HOME/kiln/bases.json)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_example(
        parser,
        "kiln bases ~/models --reference ~/models/v1-5-pruned-emaonly.safetensors",
        "kiln bases ~/models ~/more --reference sd15.safetensors --reference-xl sdxl_base.safetensors --json",
        "kiln bases --set-style ~/models/myMix_v2.safetensors wd14",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kiln bases``."""
    from kiln.engine.bases.catalog import Catalog, scan_bases

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    catalog = Catalog.load(args.catalog)
    if args.set_style:
        path, style = Path(args.set_style[0]), args.set_style[1]
        if style not in STYLE_CHOICES:
            raise UsageError(f"--set-style {style}: use one of {', '.join(STYLE_CHOICES)}")
        sha = catalog.set_style(path, style)
        catalog.save()
        if args.json:
            print_json({"path": str(path), "sha256": sha, "style": style})
        else:
            console().print(f"{escape(str(path))}: caption style {style} noted ({sha[:10].upper()})")
        if not args.folders:
            return 0
    if not args.folders:
        raise UsageError(
            "give the folders that hold your checkpoints, e.g. kiln bases ~/models --reference SD15"
        )
    references = {
        family: path for family, path in (("sd15", args.reference), ("sdxl", args.reference_xl)) if path
    }
    if not references:
        raise UsageError(
            "give --reference (vanilla SD 1.5) and/or --reference-xl (SDXL base) to measure against"
        )
    for path in references.values():
        if not path.expanduser().exists():
            raise UsageError(f"{path}: no such reference checkpoint; give vanilla SD 1.5 / SDXL base 1.0")
    options = _probe_options(args)
    quiet = args.json or not sys.stderr.isatty()

    def progress(line: str) -> None:
        if not quiet:
            sys.stderr.write(f"\r{line[:78]:<78}")
            sys.stderr.flush()

    entries, notes = scan_bases(args.folders, references, catalog, options, progress=progress)
    if not quiet:
        sys.stderr.write("\r" + " " * 78 + "\r")
    if args.json:
        from kiln.engine.bases.catalog import VERDICT_NOTE

        print_json(
            {
                "bases": [entry.to_json() for entry in entries],
                "notes": notes,
                "catalog": str(catalog.path),
                "thresholds": VERDICT_NOTE,
            }
        )
        return 0
    _print(entries, notes)
    return 0


def _probe_options(args: argparse.Namespace):
    from kiln.engine.tec.meter import ProbeOptions
    from kiln.engine.tec.vocab import read_words

    if args.words is None:
        return ProbeOptions(device=args.device)
    return ProbeOptions(words=tuple(read_words(args.words)), words_source=str(args.words), device=args.device)


def _print(entries: list, notes: list[str]) -> None:
    from kiln.engine.bases.catalog import VERDICT_NOTE

    out = console()
    if not entries:
        out.print("No checkpoints found in those folders.")
    for family in ("sd15", "sdxl"):
        rows = [entry for entry in entries if entry.checkpoint.family == family]
        if not rows:
            continue
        table = Table(title=f"{'SD 1.x' if family == 'sd15' else 'SDXL'} bases, least TEC first")
        for column, justify in (
            ("#", "right"),
            ("base", "left"),
            ("pred", "left"),
            ("AutoV2", "left"),
            ("TEC", "right"),
            ("confused", "right"),
            ("top confused", "left"),
            ("captions", "left"),
            ("hint tag/sent", "left"),
            ("verdict", "left"),
        ):
            table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for rank, entry in enumerate(rows, start=1):
            m = entry.measurement
            style = f"{entry.style} ({entry.style_source})" if entry.style else "?"
            hint = (
                f"{m.hint.style} {m.hint.tag_drift:.2f}/{m.hint.sentence_drift:.2f}" if m and m.hint else ""
            )
            table.add_row(
                str(rank),
                escape(entry.checkpoint.title),
                entry.checkpoint.prediction,
                entry.autov2,
                f"{m.score:.3f}" if m else "",
                f"{m.confused}/{m.words}" if m else "",
                escape(", ".join(f"{word}->{nearest}" for word, nearest in m.top_confused[:3])) if m else "",
                style,
                hint,
                m.verdict if m else escape(entry.error or "not measured"),
            )
        out.print(table)
    out.print(f"[dim]Verdicts: {escape(VERDICT_NOTE)}. The caption hint is a hint.[/]")
    for note in notes:
        out.print(f"[yellow]skipped:[/] {escape(note)}")
