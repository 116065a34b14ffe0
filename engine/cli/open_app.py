"""``kiln [PATH]``: open the workbench on a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.common import KilnArgumentParser, load_dataset


def build_parser() -> argparse.ArgumentParser:
    """Parser for ``kiln [PATH]``."""
    parser = KilnArgumentParser(prog="kiln", description="Open Kiln's workbench on a dataset.")
    parser.add_argument("path", nargs="?", type=Path, default=Path("."), help="dataset folder")
    return parser


def run(args: argparse.Namespace) -> int:
    """Until the workbench lands, print the DSB report of the dataset."""
    from engine.analysis.dsb import Target
    from engine.analysis.report import dsb_report
    from engine.analysis.tones import DEFAULT_METHOD
    from engine.cli.dsb import print_report
    from engine.dataset.store import Store

    dataset = load_dataset(args.path)
    with Store(dataset.root) as store:
        print_report(dsb_report(dataset, store, DEFAULT_METHOD, False, Target()))
    return 0
