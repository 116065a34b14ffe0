"""``kiln dsb``: the dataset's white/black balance, verdict and rebalance suggestion."""

from __future__ import annotations

import argparse
from pathlib import Path

from kiln.cli.common import add_example, console, load_dataset, positive_float, positive_int, print_json
from kiln.engine.analysis.dsb import Target
from kiln.engine.analysis.report import DsbReport, dsb_report
from kiln.engine.analysis.tones import DEFAULT_METHOD, METHODS
from kiln.engine.dataset.store import Store
from kiln.engine.errors import UsageError
from kiln.engine.textsafe import shown_name
from rich.table import Table


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln dsb`` to the parser."""
    parser = subparsers.add_parser(
        "dsb",
        help="measure each image's white/black share and the dataset's DSB",
        description="Measure each image's white/black share (desaturate, posterize to 4 tones) "
        "and the dataset's DSB: the mean white share, judged against the target band.",
    )
    parser.add_argument("path", type=Path, help="dataset folder (Kohya train_data_dir)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD, help="desaturation method")
    parser.add_argument("--exact", action="store_true", help="measure at full resolution (slower)")
    parser.add_argument("--target", type=positive_float, default=60.0, help="band centre (default 60)")
    parser.add_argument("--tolerance", type=positive_float, default=5.0, help="band half-width (default 5)")
    parser.add_argument("--min-images", type=positive_int, default=3, help="never suggest keeping fewer")
    parser.add_argument("--caption-extension", default=".txt", help="caption sidecar extension")
    add_example(parser, "kiln dsb sample_data", "kiln dsb sample_data --json --method lightness")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kiln dsb``."""
    try:
        target = Target(args.target, args.tolerance)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    dataset = load_dataset(args.path, args.caption_extension)
    with Store(dataset.root) as store:
        report = dsb_report(dataset, store, args.method, args.exact, target, args.min_images)
    if args.json:
        print_json(report.to_json())
    else:
        print_report(report)
    return 0


def print_report(report: DsbReport) -> None:
    """The human-readable report: a table, the DSB line and the suggestion."""
    out = console()
    table = Table(title=f"{report.root}  ({report.method}{', exact' if report.exact else ''})")
    for column, justify in (
        ("path", "left"),
        ("concept", "left"),
        ("repeats", "right"),
        ("W%", "right"),
        ("B%", "right"),
        ("status", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in report.rows:
        analysis = row.analysis
        status = analysis.error or (
            ("included" if row.included else "excluded") if row.record.trained else "skipped by Kohya"
        )
        table.add_row(
            shown_name(row.record.rel_path),
            row.record.concept,
            str(row.record.repeats),
            "" if analysis.white is None else f"{analysis.white:.1f}",
            "" if analysis.black is None else f"{analysis.black:.1f}",
            status,
            style=None if row.counted else "dim",
        )
    out.print(table)
    for warning in report.warnings:
        out.print(f"[yellow]warning:[/] {warning}")
    summary = report.summary
    target = report.target
    out.print(
        f"DSB {summary.label()}   (effective {_pct(summary.effective_white)}%W with repeats; "
        f"{summary.images} image(s); target {target.center:g} ± {target.tolerance:g})"
    )
    suggestion = report.rebalance
    if suggestion is None:
        out.print("Rebalance: no selection of enough images reaches the optimal band.")
    elif not suggestion.exclude:
        out.print("Rebalance: nothing to drop, the DSB is already in the optimal band.")
    else:
        out.print(
            f"Rebalance: exclude {len(suggestion.exclude)} image(s) -> "
            f"{suggestion.white:.2f}%W | {suggestion.black:.2f}%B  {suggestion.verdict}"
        )
        for path in suggestion.exclude:
            out.print(f"  - {path}")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{round(value)}"
