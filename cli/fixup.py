"""``kiln fixup``: repair what ``kiln quality`` flags, into a new dataset or in place with the
originals kept (and ``--undo``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kiln.cli.common import add_example, console, load_dataset, positive_int, print_json
from kiln.engine.errors import UsageError
from rich.markup import escape
from rich.table import Table


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln fixup`` to the parser."""
    parser = subparsers.add_parser(
        "fixup",
        help="fix flagged images (upscale, EXIF rotation, transparency, levels) without losing originals",
        description="Repair what kiln quality flags: upscale images that bucketing would enlarge "
        "(to exactly their bucket's size, with a super-resolution model or Lanczos), bake EXIF "
        "rotations, flatten transparency, stretch levels. Without a kind flag every kind is "
        "fixed. The result goes to a new dataset beside the source (captions, selection and a "
        "fixup.json with every operation); --in-place keeps each original in "
        "DATASET/.kiln/originals/ instead, and --undo puts them back. Fixed images are "
        "written as PNG under the same name.",
    )
    parser.add_argument("path", type=Path, help="dataset folder (Kohya train_data_dir)")
    kinds = parser.add_argument_group("what to fix (default: all four)")
    kinds.add_argument("--small", action="store_true", help="upscale images bucketing would enlarge")
    kinds.add_argument("--rotated", action="store_true", help="bake EXIF rotations into the pixels")
    kinds.add_argument("--transparent", action="store_true", help="flatten transparency onto --background")
    kinds.add_argument("--levels", action="store_true", help="auto levels on blown or crushed images")
    parser.add_argument(
        "--model",
        type=Path,
        help="super-resolution model (.safetensors: ESRGAN, SwinIR, ...); default Lanczos",
    )
    parser.add_argument("--allow-pickle", action="store_true", help="accept a .pth model (it can run code)")
    parser.add_argument("--scale", type=float, help="upscale small images by N instead of to their bucket")
    parser.add_argument(
        "--crop",
        action="append",
        default=[],
        metavar="IMAGE=L,T,R,B",
        help="crop an image (path inside the dataset) to a box in pixels; repeatable",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, help="new dataset folder (default DATASET-fixed beside it)")
    where.add_argument("--in-place", action="store_true", help="fix in the dataset, originals kept")
    where.add_argument("--undo", action="store_true", help="put back the originals of in-place fix-ups")
    parser.add_argument("--dry-run", action="store_true", help="list what would be done; write nothing")
    parser.add_argument(
        "--resolution", type=positive_int, default=512, help="training resolution (default 512)"
    )
    parser.add_argument("--background", default="white", help="flatten colour: white, black, grey, #rrggbb")
    parser.add_argument("--clip", type=float, default=0.5, help="levels: percent clipped at each end (0.5)")
    parser.add_argument("--gamma", type=float, help="levels: mid-tone gamma (default 0.8 blown, 1.25 dark)")
    parser.add_argument("--tile", type=int, default=256, metavar="PX", help="model tile side (0: whole)")
    parser.add_argument("--caption-extension", default=".txt", help="caption sidecar extension")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_example(
        parser,
        "kiln fixup sample_data --dry-run",
        "kiln fixup data --small --model ~/models/4x-UltraSharp.safetensors --out data-4x",
        "kiln fixup data --rotated --transparent --in-place   # then: kiln fixup data --undo",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kiln fixup``: check every input first, then fix, then show the DSB before and after."""
    from kiln.engine.analysis.quality import QualityThresholds
    from kiln.engine.analysis.quality_report import quality_report
    from kiln.engine.dataset.store import Store
    from kiln.engine.fixup.ops import parse_colour
    from kiln.engine.fixup.plan import KINDS, FixupOptions, plan_fixes
    from kiln.engine.fixup.upscaler import load_upscaler
    from kiln.engine.fixup.write import applied_operations, check_out
    from kiln.engine.plan.buckets import BucketSpec

    dataset = load_dataset(args.path, args.caption_extension)
    if args.undo:
        return _undo(dataset.root, args.json)
    chosen = frozenset(kind for kind in KINDS if getattr(args, kind)) or frozenset(KINDS)
    parse_colour(args.background)
    if not 0 <= args.clip < 50:
        raise UsageError(f"--clip {args.clip:g}: a percentage from 0 to under 50")
    if args.gamma is not None and not 0.1 <= args.gamma <= 10:
        raise UsageError(f"--gamma {args.gamma:g}: from 0.1 to 10 (1 = unchanged)")
    if args.tile < 0 or 0 < args.tile < 32:
        raise UsageError(f"--tile {args.tile}: 0 (whole image) or at least 32 pixels")
    if args.out is not None:
        check_out(args.out, dataset.root)
    crops = dict(_crop(text) for text in args.crop)
    if args.model is not None and "small" not in chosen:
        raise UsageError("--model upscales small images; add --small or leave the kind flags out")
    upscaler = load_upscaler(args.model, args.allow_pickle, tile=args.tile) if args.model else None
    resolution = args.resolution
    options = FixupOptions(
        kinds=chosen,
        spec=BucketSpec(resolution),  # Kohya's bucket defaults, as kiln calc and the plan section
        scale=args.scale,
        method=upscaler.name if upscaler else "lanczos",
        background=args.background,
        clip=args.clip,
        gamma=args.gamma,
    )
    with Store(dataset.root) as store:
        report = quality_report(dataset, store, thresholds=QualityThresholds(resolution=resolution))
        fixes, problems = plan_fixes(report, options, applied_operations(dataset.root), crops)
        if args.dry_run or not fixes:
            return _show_plan(dataset.root, fixes, problems, args)
        before = _dsb(dataset, store)
        out = None if args.in_place else (args.out or _default_out(dataset.root))
        outcome = _apply(dataset, store, fixes, out, upscaler, args.json)
    after_root = outcome.root
    after_dataset = load_dataset(after_root, args.caption_extension)
    with Store(after_root) as after_store:
        after = _dsb(after_dataset, after_store)
        after_report = quality_report(
            after_dataset, after_store, thresholds=QualityThresholds(resolution=resolution)
        )
    flags_after = {row.record.rel_path: row.quality.flag_ids for row in after_report.rows}
    _show_outcome(outcome, problems, before, after, flags_after, args.json)
    return 0


def _crop(text: str) -> tuple[str, tuple[int, int, int, int]]:
    """``10_x/a.png=0,0,512,640`` as a path and a box."""
    path, _, box = text.rpartition("=")
    parts = box.split(",")
    if not path or len(parts) != 4 or not all(part.strip().isdigit() for part in parts):
        raise UsageError(f"--crop {text}: write IMAGE=LEFT,TOP,RIGHT,BOTTOM, e.g. 10_cat/a.png=0,0,512,640")
    left, top, right, bottom = (int(part) for part in parts)
    return path.strip().replace("\\", "/"), (left, top, right, bottom)


def _default_out(root: Path) -> Path:
    from kiln.engine.fixup.write import default_out

    return default_out(root)


def _apply(dataset: Any, store: Any, fixes: list, out: Path | None, upscaler: Any, quiet: bool) -> Any:
    from kiln.engine.fixup.write import write_in_place, write_new_dataset

    def progress(done: int, total: int, rel_path: str) -> None:
        if not quiet and sys.stderr.isatty():
            sys.stderr.write(f"\r{done}/{total} {rel_path[:60]:<60}")
            sys.stderr.flush()

    if out is None:
        outcome = write_in_place(dataset, store, fixes, upscaler, progress)
    else:
        outcome = write_new_dataset(dataset, store, fixes, out, upscaler, progress)
    if not quiet and sys.stderr.isatty():
        sys.stderr.write("\r" + " " * 70 + "\r")
    return outcome


def _dsb(dataset: Any, store: Any) -> Any:
    from kiln.engine.analysis.report import dsb_report
    from kiln.engine.analysis.tones import DEFAULT_METHOD

    return dsb_report(dataset, store, DEFAULT_METHOD)


def _summary_json(report: Any) -> dict[str, Any]:
    summary = report.summary
    return {
        "white": summary.white,
        "verdict": summary.verdict,
        "images": summary.images,
        "label": summary.label(),
    }


def _show_plan(root: Path, fixes: list, problems: list[str], args: argparse.Namespace) -> int:
    if args.json:
        print_json(
            {
                "root": str(root),
                "dry_run": True,
                "fixes": [fix.to_json() for fix in fixes],
                "skipped": problems,
            }
        )
        return 0
    out = console()
    if not fixes:
        out.print(f"Nothing to fix in {escape(str(root))} for the chosen kinds.")
    else:
        table = Table(title=f"{root}  (would fix {len(fixes)} image(s); nothing written)")
        for column in ("image", "size", "operations", "why"):
            table.add_column(column, overflow="fold")
        for fix in fixes:
            table.add_row(
                escape(fix.rel_path),
                f"{fix.size[0]}x{fix.size[1]} -> {fix.result_size[0]}x{fix.result_size[1]}",
                escape("; ".join(op.describe() for op in fix.operations)),
                escape("; ".join(fix.reasons)),
            )
        out.print(table)
    for line in problems:
        out.print(f"[yellow]skipped:[/] {escape(line)}")
    return 0


def _show_outcome(
    outcome: Any, problems: list[str], before: Any, after: Any, flags_after: dict, as_json: bool
) -> None:
    skipped = problems + outcome.skipped
    white_before = {row.record.rel_path: _rounded(row.analysis.white) for row in before.rows}
    white_after = {row.record.rel_path: _rounded(row.analysis.white) for row in after.rows}
    if as_json:
        print_json(
            {
                "root": str(outcome.root),
                "in_place": outcome.in_place,
                "fixed": [
                    {
                        **image.to_json(),
                        "white_before": white_before.get(image.source),
                        "white_after": white_after.get(image.output),
                        "flags_after": flags_after.get(image.output, []),
                    }
                    for image in outcome.fixed
                ],
                "copied": outcome.copied,
                "skipped": skipped,
                "dsb": {"before": _summary_json(before), "after": _summary_json(after)},
            }
        )
        return
    out = console()
    where = "in place (originals in .kiln/originals; kiln fixup --undo)" if outcome.in_place else "to"
    table = Table(title=f"Fixed {len(outcome.fixed)} image(s) {where} {outcome.root}")
    for column in ("image", "size", "operations", "W%", "flags left"):
        table.add_column(column, overflow="fold")
    for image in outcome.fixed:
        table.add_row(
            escape(image.output),
            f"{image.size[0]}x{image.size[1]} -> {image.result_size[0]}x{image.result_size[1]}",
            escape("; ".join(op.describe() for op in image.operations)),
            f"{_share(white_before.get(image.source))} -> {_share(white_after.get(image.output))}",
            escape(", ".join(flags_after.get(image.output, [])) or "none"),
        )
    out.print(table)
    out.print(f"DSB before: {escape(before.summary.label())}   after: {escape(after.summary.label())}")
    for line in skipped:
        out.print(f"[yellow]skipped:[/] {escape(line)}")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _share(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def _undo(root: Path, as_json: bool) -> int:
    from kiln.engine.dataset.store import Store
    from kiln.engine.fixup.write import undo_in_place

    with Store(root) as store:
        restored = undo_in_place(root, store)
    if as_json:
        print_json({"root": str(root), "restored": restored})
    else:
        console().print(f"Restored {len(restored)} original(s) in {escape(str(root))}")
    return 0
