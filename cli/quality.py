"""``kiln quality``: each image's quality figures and flags, and the near-duplicate groups."""

from __future__ import annotations

import argparse
from pathlib import Path

from kiln.cli.common import add_example, console, load_dataset, positive_int, print_json
from kiln.engine.analysis.quality import QualityThresholds
from kiln.engine.analysis.quality_report import QualityReport, quality_report
from kiln.engine.dataset.store import Store
from kiln.engine.errors import UsageError
from kiln.engine.textsafe import shown_name
from rich.markup import escape
from rich.table import Table


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln quality`` to the parser."""
    parser = subparsers.add_parser(
        "quality",
        help="flag blurry, badly exposed, rotated, small and duplicate images",
        description="Measure each image's sharpness, exposure, information, transparency, EXIF "
        "rotation, aspect and resolution, flag the problems and group near-duplicates "
        "(perceptual hashes, mirrored copies included). Shares the analysis cache with kiln dsb.",
    )
    parser.add_argument("path", type=Path, help="dataset folder (Kohya train_data_dir)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument("--exact", action="store_true", help="decode at full resolution (slower)")
    parser.add_argument(
        "--resolution", type=positive_int, default=512, help="training resolution (default 512)"
    )
    parser.add_argument(
        "--distance",
        type=int,
        default=8,
        metavar="BITS",
        help="largest perceptual-hash distance for near-duplicates (default 8)",
    )
    parser.add_argument("--caption-extension", default=".txt", help="caption sidecar extension")
    add_example(parser, "kiln quality sample_data", "kiln quality sample_data --json --resolution 768")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kiln quality``."""
    if not 0 <= args.distance <= 64:
        raise UsageError(f"--distance {args.distance}: a 64-bit hash distance lies in 0..64")
    thresholds = QualityThresholds(resolution=args.resolution, duplicate_distance=args.distance)
    dataset = load_dataset(args.path, args.caption_extension)
    with Store(dataset.root) as store:
        report = quality_report(dataset, store, args.exact, thresholds)
    if args.json:
        print_json(report.to_json())
    else:
        print_report(report)
    return 0


def print_report(report: QualityReport) -> None:
    """The human-readable report: a table of figures and flags, the duplicate groups, the reasons."""
    out = console()
    table = Table(title=f"{report.root}  (quality at {report.thresholds.resolution})")
    for column, justify in (
        ("path", "left"),
        ("size", "right"),
        ("sharp (#)", "right"),
        ("clip d/b%", "right"),
        ("bits", "right"),
        ("flags", "left"),
    ):
        # Paths and flags fold onto more lines rather than lose their ends to an ellipsis.
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in report.rows:
        m = row.analysis.metrics
        if row.analysis.error:
            table.add_row(
                escape(shown_name(row.record.rel_path)),
                *("", "", "", ""),
                escape(row.analysis.error),
                style="dim",
            )
            continue
        rank = row.quality.sharpness_rank
        table.add_row(
            escape(shown_name(row.record.rel_path)),
            f"{m.get('width', '?')}x{m.get('height', '?')}",
            _number(m.get("sharpness"), "{:.0f}") + ("" if rank is None else f" (#{rank})"),
            _number(m.get("clipped_dark"), "{:.1f}") + "/" + _number(m.get("clipped_bright"), "{:.1f}"),
            _number(m.get("entropy"), "{:.2f}"),
            " ".join(row.quality.flag_ids),
            style=None if row.included else "dim",
        )
    out.print(table)
    for warning in report.warnings:
        out.print(f"[yellow]warning:[/] {escape(warning)}")
    groups = report.judgement.duplicates
    out.print(f"Near-duplicates: {len(groups)} group(s)" if groups else "Near-duplicates: none")
    for group in groups:
        out.print("  - " + "  =  ".join(escape(path) for path in group))
    flagged = [row for row in report.rows if row.quality.flags]
    out.print(f"Flagged: {len(flagged)} of {len(report.rows)} image(s)")
    for row in flagged:
        for flag in row.quality.flags:
            name = escape(shown_name(row.record.rel_path))
            out.print(f"  {name}: [bold]{flag.id}[/] {escape(flag.reason)}")


def _number(value: object, pattern: str) -> str:
    return pattern.format(value) if isinstance(value, (int, float)) else ""
