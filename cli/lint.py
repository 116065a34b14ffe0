"""``kiln lint``: find what in the captions works against the guide's method."""

from __future__ import annotations

import argparse
from pathlib import Path

from kiln.cli.common import add_example, console, load_dataset, print_json
from rich.markup import escape


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln lint`` to the parser."""
    parser = subparsers.add_parser(
        "lint",
        help="check captions: missing, empty, orphaned, trigger, commas, token window, duplicates",
        description="Check the captions of included images (--all for every image): images without "
        "captions, captions without images, empty captions, a missing trigger word, commas inside a "
        "BLIP-style initial prompt, captions over CLIP's 75-token window, duplicate tags and tags in "
        "every caption of a concept. Exits 1 when it finds anything.",
    )
    parser.add_argument("path", type=Path, help="dataset folder (Kohya train_data_dir)")
    parser.add_argument(
        "--trigger", help="trigger word every caption must hold (default: inferred per concept when clear)"
    )
    parser.add_argument("--all", action="store_true", help="lint excluded images too")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument("--caption-extension", default=".txt", help="caption sidecar extension")
    add_example(parser, "kiln lint sample_data", "kiln lint data --trigger RFKTRCYBR --json")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kiln lint``."""
    from kiln.engine.caption.lint import lint_dataset
    from kiln.engine.dataset.store import Store

    dataset = load_dataset(args.path, args.caption_extension)
    with Store(dataset.root) as store:
        report = lint_dataset(dataset, store, trigger=args.trigger, include_excluded=args.all)
    if args.json:
        print_json(report.to_json())
        return 1 if report.findings else 0
    out = console()
    out.soft_wrap = True  # long captions and paths stay on one line, for copying and grep
    for finding in report.findings:
        colour = "red" if finding.severity == "error" else "yellow"
        out.print(
            f"[{colour}]{finding.rule}[/] {escape(finding.file)}: {escape(finding.message)}\n"
            f"    fix: {escape(finding.fix)}"
        )
    for concept, trigger in sorted(report.triggers.items()):
        if trigger is None:
            out.print(f"trigger for {escape(concept)}: none found (pass --trigger to check it)")
        elif trigger.source == "inferred":
            out.print(
                f"trigger for {escape(concept)}: '{escape(trigger.word)}' (inferred from "
                f"{trigger.support} of {trigger.captions} captions)"
            )
    if report.tokens_available:
        out.print(f"longest caption: {report.max_tokens or 0} of 75 CLIP tokens")
    else:
        out.print(f"[yellow]{escape(report.tokens_message or '')}[/]")
    counts = report.counts()
    summary = ", ".join(f"{count} {rule}" for rule, count in counts.items())
    out.print(
        f"{len(report.findings)} finding(s) in {report.images} image(s)" + (f": {summary}" if summary else "")
    )
    return 1 if report.findings else 0
