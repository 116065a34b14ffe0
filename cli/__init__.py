"""The ``kiln`` command: ``kiln [PATH]`` opens the workbench, ``kiln <command>`` runs a tool.

Each command lives in its own module under ``kiln.cli`` and exposes ``register(subparsers)``;
this module only dispatches. Command modules import nothing heavy at module level, so
``kiln --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from kiln.cli.common import EXIT_FAILURE, EXIT_USAGE, KilnArgumentParser, fail
from kiln.engine import __version__
from kiln.engine.errors import KilnError, UsageError

# Command name -> module under engine.cli; the order is the order of ``kiln --help``.
COMMANDS: dict[str, str] = {
    "dsb": "dsb",
    "quality": "quality",
    "tiles": "tiles",
    "fixup": "fixup",
    "caption": "caption",
    "tags": "tags",
    "lint": "lint",
    "calc": "calc",
    "tec": "tec",
    "bases": "bases",
    "train": "train",
    "runs": "runs",
    "watch": "watch",
    "cancel": "cancel",
    "resume": "resume",
    "sweep": "sweep",
    "extract": "extract",
    "tiny-model": "tiny_model",
}

_DESCRIPTION = """\
Kiln: curate, caption, plan and train Stable Diffusion LoRAs from the terminal.

  kiln [PATH]              open the workbench on a dataset (default: the current folder)
  kiln COMMAND --help      help and an example for one command
"""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command registered from its module, or just the command ``only``.

    ``kiln dsb ...`` builds only its own command: importing the other fifteen command
    modules (and what they import) would cost every run a tenth of a second or more.
    """
    parser = KilnArgumentParser(
        prog="kiln",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kiln {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=KilnArgumentParser)
    for name, module in COMMANDS.items():
        if only is None or name == only:
            import_module(f"kiln.cli.{module}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kiln`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help", "--version")):
            args = build_parser(only=argv[0] if argv[0] in COMMANDS else None).parse_args(argv)
            return int(args.func(args) or 0)
        from kiln.cli import open_app

        args = open_app.build_parser().parse_args(argv)
        return int(open_app.run(args) or 0)
    except UsageError as exc:
        fail(str(exc))
        return EXIT_USAGE
    except KilnError as exc:
        fail(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        fail("interrupted")
        return 130
    except BrokenPipeError:
        # `kiln dsb --json | head` closes the pipe early: not an error worth a traceback.
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
