"""``kiln [PATH]``: open the workbench on a dataset."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from kiln.cli.common import KilnArgumentParser, add_example
from kiln.engine.analysis.tones import DEFAULT_METHOD, METHODS
from kiln.engine.dataset.scan import scan_dataset
from kiln.tui.image_modes import IMAGE_MODES


def build_parser() -> argparse.ArgumentParser:
    """Parser for ``kiln [PATH]``."""
    from kiln import themes

    parser = KilnArgumentParser(
        prog="kiln",
        description="Open Kiln's workbench on a dataset (Kohya layout: PATH/10_name/*.png). "
        "Other commands: kiln --help.",
    )
    parser.add_argument("path", nargs="?", type=Path, default=Path("."), help="dataset folder (default: .)")
    parser.add_argument(
        "--images",
        choices=IMAGE_MODES,
        default=os.environ.get("KILN_IMAGES", "auto"),
        help="image previews: auto-detect, force a protocol, or none (default: auto)",
    )
    parser.add_argument(
        "--theme", choices=themes.theme_names(), default=themes.DEFAULT_THEME, help="colour theme"
    )
    parser.add_argument("--poll", action="store_true", help="poll for file changes (NFS, some FUSE mounts)")
    parser.add_argument(
        "--no-watch", action="store_true", help="do not follow changes made by other programs"
    )
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD, help="desaturation method")
    parser.add_argument("--caption-extension", default=".txt", help="caption sidecar extension")
    parser.add_argument(
        "--runs",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="also list the runs in DIR in the runs section (repeatable; the dataset's runs/ always)",
    )
    add_example(
        parser,
        "kiln sample_data",
        "kiln ~/datasets/cat --images halfcell --theme kiln-light",
        "kiln ~/datasets/cat --runs /scratch/runs",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Open the TUI (imported here: the CLI's other commands never load Textual)."""
    scan_dataset(args.path, args.caption_extension)  # a missing folder is a one-line error, not a traceback
    if args.images != "none":
        # textual-image probes the terminal when imported: it must happen before App.run().
        from kiln.tui.widgets.image_preview import image_widget_class

        image_widget_class(args.images)
    from kiln.tui.app import KilnApp

    app = KilnApp(
        args.path,
        images=args.images,
        theme_name=args.theme,
        watch=not args.no_watch,
        poll=args.poll,
        method=args.method,
        caption_extension=args.caption_extension,
        runs=args.runs,
    )
    app.run()
    return 0
