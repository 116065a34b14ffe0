"""``kiln extract``: a Kohya LoRA from the difference of a fine-tune and its base (SVD)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from kiln.cli.common import add_example, console, positive_int, print_json
from kiln.engine.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln extract`` to the parser."""
    parser = subparsers.add_parser(
        "extract",
        help="make a LoRA from a fine-tune and its base (SVD), to share a fine-tune as a LoRA",
        description="Factor the weight difference of every layer a Kohya LoRA adapts into a LoRA of "
        "--rank by truncated SVD, as Kohya's extract_lora_from_models.py does (alpha = rank, values "
        "clamped at the 99th percentile). Text encoders that did not move (less than --min-diff "
        "anywhere) are left out. Both checkpoints: diffusers folders or .safetensors files of one family.",
    )
    parser.add_argument("finetuned", type=Path, help="the fine-tuned checkpoint")
    parser.add_argument("--base", type=Path, required=True, help="the checkpoint it was fine-tuned from")
    parser.add_argument("--rank", type=positive_int, required=True, help="LoRA rank (Kohya network_dim)")
    parser.add_argument("--conv-rank", type=int, default=0, help="rank for 3x3 convs (LoCon); 0 = none")
    parser.add_argument("--output", type=Path, required=True, help="the LoRA file to write (.safetensors)")
    parser.add_argument("--min-diff", type=float, default=0.01, help="text encoders moved less are left out")
    parser.add_argument(
        "--precision", choices=("fp16", "bf16", "fp32"), default="fp16", help="file dtype (default fp16)"
    )
    parser.add_argument(
        "--allow-pickle", action="store_true", help="accept .ckpt/.pt checkpoints (can run code)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_example(
        parser,
        "kiln extract models/pot-ft.safetensors --base models/sd15.safetensors --rank 32 \\\n"
        "    --output pot-lora.safetensors",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kiln extract``."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if args.output.suffix.lower() != ".safetensors":
        raise UsageError(f"--output {args.output}: write a .safetensors file")
    if args.conv_rank < 0:
        raise UsageError("--conv-rank: 0 (none) or a positive rank")
    from kiln.engine.train.extract import extract_lora, extraction_metadata
    from kiln.engine.train.lora_io import DTYPES, write_lora

    extracted = extract_lora(
        args.finetuned, args.base, args.rank, args.conv_rank, args.allow_pickle, args.min_diff
    )
    dtype = DTYPES[args.precision]
    tensors = {
        key: value if key.endswith(".alpha") else value.to(dtype) for key, value in extracted.tensors.items()
    }
    metadata = extraction_metadata(extracted, args.finetuned, args.base, args.rank, args.conv_rank)
    path = write_lora(args.output.expanduser(), tensors, metadata)
    result = {
        "path": str(path),
        "family": extracted.family.name,
        "rank": args.rank,
        "unet_layers": extracted.unet_layers,
        "text_encoder_layers": extracted.text_encoder_layers,
        "text_encoders_skipped": list(extracted.text_encoders_skipped),
    }
    if args.json:
        print_json(result)
    else:
        skipped = (
            f"; text encoders left out (unchanged): {', '.join(extracted.text_encoders_skipped)}"
            if extracted.text_encoders_skipped
            else ""
        )
        console().print(
            f"wrote {path}: {extracted.family.title} LoRA rank {args.rank}, {extracted.unet_layers} U-Net "
            f"and {extracted.text_encoder_layers} text-encoder layers{skipped}"
        )
    return 0
