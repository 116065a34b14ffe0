"""``kiln tiny-model``: write a tiny SD 1.5- or SDXL-shaped pipeline (for tests and the demo)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from kiln.cli.common import add_example, console, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln tiny-model`` to the parser."""
    parser = subparsers.add_parser(
        "tiny-model",
        help="write a tiny SD 1.5- or SDXL-shaped model (tests, demo)",
        description="Write a tiny pipeline with the family's block types and LoRA module names, random "
        "weights from a fixed seed, and offline tokenizers: a diffusers folder, or with "
        "--single-file one .safetensors in the original key layout (LDM for SD 1.5, SGM for SDXL: "
        "two text encoders, size/crop conditioning).",
    )
    parser.add_argument("out", type=Path, help="output folder (or .safetensors file with --single-file)")
    parser.add_argument("--single-file", action="store_true", help="write one .safetensors checkpoint")
    parser.add_argument(
        "--family", choices=("sd15", "sdxl"), default="sd15", help="model family (default sd15)"
    )
    parser.add_argument("--seed", type=int, default=None, help="weight seed (default: Kiln's fixed seed)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_example(
        parser,
        "kiln tiny-model /tmp/tiny-sd15",
        "kiln tiny-model /tmp/tiny.safetensors --single-file",
        "kiln tiny-model /tmp/tiny-sdxl --family sdxl",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kiln tiny-model``."""
    # transformers announces missing optional packages (torchvision) at import; not news here.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from kiln.engine.models.tiny import TINY_SEED, write_tiny_model
    from kiln.engine.models.tiny_sdxl import write_tiny_sdxl_model

    writer = write_tiny_sdxl_model if args.family == "sdxl" else write_tiny_model
    path = writer(args.out, single_file=args.single_file, seed=TINY_SEED if args.seed is None else args.seed)
    size = (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else path.stat().st_size
    )
    if args.json:
        print_json({"path": str(path), "family": args.family, "single_file": args.single_file, "bytes": size})
    else:
        console().print(f"wrote {path} ({size / 1e6:.1f} MB)")
    return 0
