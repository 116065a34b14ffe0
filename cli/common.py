"""Helpers every command shares: argument types, the console, JSON output, errors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

from kiln.engine.dataset.scan import Dataset, scan_dataset
from kiln.engine.errors import DatasetError
from rich.console import Console

EXIT_FAILURE = 1
EXIT_USAGE = 2
# A run cancelled (Ctrl+C, SIGTERM, `kiln cancel`): the shell's code for SIGINT.
EXIT_CANCELLED = 130
EXIT_CODES_HELP = """\
exit codes:
  0    the run finished (or started in the background with --detach)
  1    the run failed, or the base model or dataset cannot be used
  2    refused before a run folder was made: a bad option, key or value, or a run this
       machine cannot hold (fp16 on a CPU, not enough memory)
  130  the run was cancelled (Ctrl+C, SIGTERM, kiln cancel); it saved a LoRA and resume state"""


def run_exit_code(state: str) -> int:
    """The exit code for a run that ended in ``state``: done 0, cancelled 130, else 1."""
    return {"done": 0, "cancelled": EXIT_CANCELLED}.get(state, EXIT_FAILURE)


class KilnArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``kiln dsb: error: ...`` and exit 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def console(stderr: bool = False) -> Console:
    """A Rich console; plain when output is piped."""
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def fail(message: str) -> None:
    """Print one error line on stderr."""
    sys.stderr.write(f"kiln: error: {message}\n")


def print_json(data: object) -> None:
    """Print JSON for scripts (stable key order as built, no colour)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be above 0")
    return value


def load_dataset(path: Path, caption_extension: str = ".txt") -> Dataset:
    """Scan ``path`` and insist it holds images (the CLI's commands need some)."""
    dataset = scan_dataset(path, caption_extension)
    if not dataset.images:
        raise DatasetError(
            f"{path}: no images found; Kiln expects Kohya layout, e.g. {path}/10_name/001.png "
            "(png, jpg, jpeg, webp, bmp, gif)"
        )
    return dataset


def add_example(parser: argparse.ArgumentParser, *examples: str) -> None:
    """Append examples to a command's ``--help``."""
    text = "\n".join(f"  {example}" for example in examples)
    parser.epilog = f"example:\n{text}"
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
