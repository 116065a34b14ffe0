"""``kiln tiles``: the style precision method, cutting large images into scored tiles."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kiln.cli.common import add_example, console, positive_int, print_json
from kiln.engine.errors import UsageError
from rich.markup import escape
from rich.table import Table


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln tiles`` to the parser."""
    parser = subparsers.add_parser(
        "tiles",
        help="cut large images into a grid of tiles for style training (precision method)",
        description="Cut each image into a ROWSxCOLS grid of tiles named <stem>_r<row>c<col>.png "
        "(numbered from 1), write a caption beside each, and score every tile's information "
        "(blur, exposure, entropy) against its siblings. Low-information tiles are listed; "
        "--drop-low-info leaves them out. Source images are only read.",
    )
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="large source image(s)")
    parser.add_argument("--grid", default="4x4", help="ROWSxCOLS (default 4x4, the guide's 16 sectors)")
    parser.add_argument(
        "--out", type=Path, required=True, help="concept folder to write, e.g. DATASET/10_style"
    )
    parser.add_argument(
        "--overlap", type=int, default=0, metavar="PX", help="pixels neighbouring tiles share"
    )
    parser.add_argument("--caption", help="caption for every tile (default: the folder's concept name)")
    parser.add_argument("--caption-extension", default=".txt", help="caption sidecar extension")
    parser.add_argument("--drop-low-info", action="store_true", help="do not write low-information tiles")
    parser.add_argument("--force", action="store_true", help="replace tiles of these images already in --out")
    parser.add_argument(
        "--resolution", type=positive_int, default=512, help="training resolution, for the size warning"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_example(
        parser,
        "kiln tiles painting.png --grid 4x4 --out style/10_giger --caption 'giger style'",
        "kiln tiles a.jpg b.jpg --grid 3x3 --overlap 64 --out style/10_giger --drop-low-info --json",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kiln tiles``: check everything, then write all the tiles or none."""
    from kiln.engine.tiles import Grid, check_output, load_source, plan_tiles, stale_tiles, write_tiles

    grid = Grid.parse(args.grid)
    if args.overlap < 0:
        raise UsageError(f"--overlap {args.overlap}: give 0 or more pixels")
    stems = [path.stem for path in args.images]
    # Refuse a full output folder before decoding anything large.
    warnings = check_output(args.out, stems, args.force, args.images)
    sources = {}
    plans = []
    for path in args.images:
        source = load_source(path)
        sources[source.path] = source
        plan = plan_tiles(source, grid, args.overlap, args.resolution)
        plans.append(plan)
        warnings.extend(plan.warnings)
    tiles = [tile for plan in plans for tile in plan.tiles]
    kept = [tile for tile in tiles if not (args.drop_low_info and tile.low_information)]
    written = write_tiles(sources, kept, args.out, args.caption, args.caption_extension, args.force)
    stale = stale_tiles(args.out, stems, written)
    if stale:
        warnings.append(
            f"{len(stale)} older tile(s) of these images remain in {args.out} (e.g. {stale[0].name}); "
            "remove them if they came from another grid"
        )
    kept_names = {tile.name for tile in kept}
    if args.json:
        print_json(
            {
                "out": str(args.out),
                "tiles": [
                    {
                        "file": str(args.out / tile.name),
                        "source": str(tile.source),
                        "row": tile.row,
                        "col": tile.col,
                        "box": list(tile.box),
                        "score": tile.score,
                        "flags": [flag.id for flag in tile.flags],
                        "reasons": [flag.reason for flag in tile.flags],
                        "kept": tile.name in kept_names,
                    }
                    for tile in tiles
                ],
                "warnings": warnings,
            }
        )
        for warning in warnings:
            sys.stderr.write(f"kiln: warning: {warning}\n")
        return 0
    out = console()
    table = Table(title=f"{args.out}  (grid {grid}, overlap {args.overlap} px)")
    for column, justify in (
        ("tile", "left"),
        ("size", "right"),
        ("score", "right"),
        ("flags", "left"),
        ("written", "left"),
    ):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for tile in tiles:
        table.add_row(
            escape(tile.name),
            f"{tile.size[0]}x{tile.size[1]}",
            f"{tile.score:.3f}",
            escape("; ".join(f"{flag.id}: {flag.reason}" for flag in tile.flags)),
            "yes" if tile.name in kept_names else "no",
            style=None if tile.name in kept_names else "dim",
        )
    out.print(table)
    low = sum(tile.low_information for tile in tiles)
    note = ""
    if low:
        note = " (left out)" if args.drop_low_info else " (--drop-low-info would leave them out)"
    out.print(
        f"Wrote {len(written)} tile(s) with captions to {escape(str(args.out))}; "
        f"{low} low-information tile(s){note}"
    )
    for warning in warnings:
        out.print(f"[yellow]warning:[/] {escape(warning)}")
    return 0
