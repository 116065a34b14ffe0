"""``kiln calc``: steps, repeats or epochs counted as Kohya counts them, with the guide's advice."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.cli.common import add_example, console, load_dataset, positive_int, print_json
from kiln.engine.errors import DatasetError, UsageError
from kiln.engine.plan.advisor import SUBJECTS

if TYPE_CHECKING:
    from kiln.engine.plan.buckets import BucketSpec
    from kiln.engine.plan.evaluate import PlanRequest
    from kiln.engine.plan.loads import DatasetLoad
    from kiln.engine.plan.reg import RegSet
    from kiln.engine.plan.steps import BucketKey

# The guide's minimum, used when --epochs is not given and not solved for.
DEFAULT_EPOCHS = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln calc`` to the parser."""
    parser = subparsers.add_parser(
        "calc",
        help="count steps per epoch and in total as Kohya does (aspect buckets included)",
        description="Count a run's steps as Kohya's trainer does: batches are rounded up per aspect "
        "bucket, then divided by gradient accumulation and GPUs. Give a dataset PATH to use its "
        "included images, folder repeats and buckets, or --images for a bare calculation. With "
        "--target-steps, solve for repeats (when --epochs is given) or for epochs.",
    )
    parser.add_argument("path", type=Path, nargs="?", help="dataset folder (Kohya train_data_dir)")
    parser.add_argument("--images", type=positive_int, help="image count, without a dataset")
    parser.add_argument(
        "--reg",
        type=Path,
        metavar="REG_DIR",
        help="regularisation images (Kohya's reg_data_dir, N_class/ folders), with a dataset PATH",
    )
    parser.add_argument(
        "--repeats", type=positive_int, help="repeats per image (with PATH: instead of the folder names')"
    )
    parser.add_argument("--batch", type=positive_int, default=1, help="batch size (default 1)")
    parser.add_argument("--epochs", type=positive_int, help="epochs (default 10, the guide's minimum)")
    parser.add_argument("--target-steps", type=positive_int, help="solve for repeats or epochs to reach this")
    parser.add_argument("--grad-accumulation", type=positive_int, default=1, help="accumulation steps")
    parser.add_argument("--gpus", type=positive_int, default=1, help="training processes (default 1)")
    parser.add_argument(
        "--family",
        choices=("sd15", "sdxl"),
        default="sd15",
        help="base model family: sets the default resolution (512 / 1024) and the advice",
    )
    parser.add_argument(
        "--resolution", type=resolution, default=None, help="512 or WIDTHxHEIGHT (default: the family's)"
    )
    parser.add_argument("--min-bucket", type=positive_int, default=256, help="min_bucket_reso (default 256)")
    parser.add_argument(
        "--max-bucket", type=positive_int, default=1024, help="max_bucket_reso (default 1024)"
    )
    parser.add_argument("--bucket-step", type=positive_int, default=64, help="bucket_reso_steps (default 64)")
    parser.add_argument("--no-upscale", action="store_true", help="Kohya's bucket_no_upscale")
    parser.add_argument("--run", choices=("test", "final"), help="judge as a test or a final run")
    parser.add_argument("--training", choices=("lora", "full"), default="lora", help="LoRA or full fine-tune")
    parser.add_argument("--unet-lr", type=non_negative_float, help="U-Net learning rate (for advice)")
    parser.add_argument("--te-lr", type=non_negative_float, help="text-encoder learning rate (for advice)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), help="mixed precision (for advice)")
    parser.add_argument(
        "--subject",
        choices=SUBJECTS,
        help="what the LoRA learns: the guide trains outfits, hairstyles, colour themes and artist "
        "styles in fp16, the rest in bf16 (for advice)",
    )
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="the run checkpoints gradients (for advice)"
    )
    parser.add_argument(
        "--gpu-memory",
        type=non_negative_float,
        metavar="GIB",
        help="the training GPU's memory (memory advice; default: this machine's GPU)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_example(
        parser,
        "kiln calc --images 10 --repeats 35 --batch 4 --epochs 9",
        "kiln calc --images 10 --target-steps 3500 --epochs 10     # -> 35 repeats",
        "kiln calc sample_data --batch 2 --epochs 10 --resolution 512 --json",
        "kiln calc sample_data --family sdxl --gpu-memory 16 --gradient-checkpointing",
        "kiln calc sample_data --subject outfit --precision bf16   # the guide trains outfits in fp16",
        "kiln calc datasets/cat --reg datasets/cat-reg          # class images, balanced as Kohya does",
    )
    parser.set_defaults(func=run)


def resolution(text: str) -> int | tuple[int, int]:
    """argparse type: ``512`` or ``512x768`` (width x height)."""
    parts = text.lower().split("x")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a resolution; use 512 or 512x768") from None
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a resolution; use 512 or 512x768")
    return values[0] if len(values) == 1 else (values[0], values[1])


def non_negative_float(text: str) -> float:
    """argparse type: a number of at least 0 (learning rates)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number, at least 0")
    return value


def run(args: argparse.Namespace) -> int:
    """Run ``kiln calc``."""
    from kiln.engine.models.family import family_named
    from kiln.engine.plan.buckets import BucketSpec
    from kiln.engine.plan.evaluate import evaluate_plan

    if (args.path is None) == (args.images is None):
        raise UsageError("give a dataset PATH or --images N (not both)")
    family = family_named(args.family)
    if args.resolution is None:
        args.resolution = family.resolution
    if args.bucket_step % family.bucket_step_multiple:
        raise UsageError(
            f"--bucket-step {args.bucket_step}: {family.title} needs a multiple of "
            f"{family.bucket_step_multiple} (Kohya refuses others); use 64"
        )
    if args.target_steps is not None and args.epochs is not None and args.repeats is not None:
        raise UsageError(
            "with --target-steps give --epochs (to solve repeats) or --repeats (to solve epochs), not both"
        )
    if args.reg is not None and args.path is None:
        raise UsageError("--reg counts class images beside a dataset: give the dataset PATH too")
    result: dict = {"root": None, "family": args.family, "bucketing": None, "reg": None}
    reg = None
    notices: list[dict[str, str]] = []
    dsb_verdict = None
    load = None
    bucket_images: dict[BucketKey, int]
    if args.path is None:
        bucket_images = {None: args.images}
    else:
        spec = BucketSpec(
            args.resolution, args.min_bucket, args.max_bucket, args.bucket_step, args.no_upscale
        )
        load, dsb_verdict, notices = _dataset(args.path, spec, args.repeats)
        bucket_images = {size: count for size, count in load.bucket_images().items()}
        result["root"] = str(args.path)
        result["bucketing"] = {
            "resolution": list(spec.target_size),
            "min": spec.min_bucket,
            "max": spec.max_bucket,
            "step": spec.step,
            "no_upscale": spec.no_upscale,
        }
        result["concepts"] = [
            {"folder": concept.folder, "repeats": concept.repeats, "images": concept.images}
            for concept in load.concepts
        ]
        if args.reg is not None:
            from kiln.engine.plan.reg import reg_set

            reg = reg_set(load_dataset(args.reg), spec)
            if not reg.images:
                raise DatasetError(
                    f"{args.reg}: no class image Kohya would use; put them in a folder such as 1_cat/"
                )

    evaluation = evaluate_plan(_request(args, bucket_images, load, dsb_verdict, reg))
    solution, plan = evaluation.solution, evaluation.plan
    if reg is not None:
        used = reg.repeats_for(sum(solution.bucket_items.values()))
        result["reg"] = {
            "root": str(args.reg),
            "images": len(reg.images),
            "used_images": len(used),
            "items": sum(used.values()),
            "folder_items": reg.items,
            "concepts": [
                {"folder": concept.folder, "repeats": concept.repeats, "images": concept.images}
                for concept in reg.concepts
            ],
        }
    result.update(
        {
            "mode": solution.mode,
            "images": evaluation.images,
            "repeats": solution.repeats,
            "batch": args.batch,
            "epochs": solution.epochs,
            "grad_accumulation": args.grad_accumulation,
            "gpus": args.gpus,
            "target_steps": args.target_steps,
            "items_per_epoch": plan.items_per_epoch,
            "batches_per_epoch": plan.batches_per_epoch,
            "steps_per_epoch": plan.steps_per_epoch,
            "total_steps": plan.total_steps,
            "plain_steps_per_epoch": plan.plain_steps_per_epoch,
            "plain_total_steps": plan.plain_total_steps,
            "buckets": [
                {
                    "resolution": None if bucket.resolution is None else list(bucket.resolution),
                    "images": bucket_images.get(bucket.resolution, 0),
                    "items": bucket.items,
                    "reg_items": solution.reg_items.get(bucket.resolution, 0),
                    "batches": bucket.batches,
                }
                for bucket in plan.buckets
            ],
            "dsb_verdict": dsb_verdict,
            "warnings": notices + [advice.to_json() for advice in evaluation.advice if not advice.note],
            "info": [advice.to_json() for advice in evaluation.advice if advice.note],
        }
    )
    if args.json:
        print_json(result)
    else:
        _print_summary(result, evaluation.notes)
    return 0


def _dataset(
    path: Path, spec: BucketSpec, repeats: int | None
) -> tuple[DatasetLoad, str | None, list[dict[str, str]]]:
    """The dataset's load, its cached DSB verdict, and notices about what is not counted."""
    from kiln.engine.analysis.cache import load_cached
    from kiln.engine.analysis.dsb import summarise
    from kiln.engine.analysis.tones import DEFAULT_METHOD
    from kiln.engine.dataset.selection import included_records
    from kiln.engine.dataset.store import Store
    from kiln.engine.plan.loads import dataset_load, load_notices

    dataset = load_dataset(path)
    with Store(dataset.root) as store:
        load = dataset_load(dataset, store, spec, repeats)
        included = included_records(dataset.images, store)
        cached = load_cached(store, included, DEFAULT_METHOD, False)
    notices = [notice.to_json() for notice in load_notices(load)]
    if load.images == 0:
        raise DatasetError(
            f"{path}: no included image that Kohya would train; include some, or put them in "
            "a folder such as 10_name/"
        )
    verdict = None
    if all(record.rel_path in cached for record in included):
        summary = summarise(
            (white, record.repeats)
            for record in included
            if cached[record.rel_path].ok and (white := cached[record.rel_path].white) is not None
        )
        verdict = summary.verdict
    return load, verdict, notices


def _request(
    args: argparse.Namespace,
    bucket_images: dict,
    load: DatasetLoad | None,
    dsb_verdict: str | None,
    reg: RegSet | None = None,
) -> PlanRequest:
    """The plan the arguments describe, solving whatever they leave open: steps, repeats or epochs."""
    from kiln.engine.plan.evaluate import PlanRequest, load_counts

    if args.target_steps is not None and args.epochs is not None:
        mode = "repeats"
    elif args.target_steps is not None:
        mode = "epochs"
        if args.repeats is None and load is None:
            raise UsageError(
                "with --target-steps give --epochs E (to solve repeats) or --repeats R (to solve epochs)"
            )
    else:
        mode = "steps"
        if args.repeats is None and load is None:
            raise UsageError("give --repeats R, or --target-steps S with --epochs E to solve for repeats")
    counts = None if load is None else load_counts(load)
    return PlanRequest(
        mode=mode,
        bucket_images=bucket_images,
        batch=args.batch,
        grad_accumulation=args.grad_accumulation,
        gpus=args.gpus,
        repeats=args.repeats,
        epochs=DEFAULT_EPOCHS if mode == "steps" and args.epochs is None else args.epochs,
        target_steps=args.target_steps,
        folder_items=None if counts is None else counts.folder_items,
        folder_repeats=None if counts is None else counts.folder_repeats,
        run=args.run,
        training=args.training,
        unet_lr=args.unet_lr,
        text_encoder_lr=args.te_lr,
        precision=args.precision,
        dsb_verdict=dsb_verdict,
        family=args.family,
        gpu_memory_gib=args.gpu_memory,
        gradient_checkpointing=args.gradient_checkpointing,
        subject=args.subject,
        reg=reg,
    )


def _print_summary(result: dict, notes: list[str]) -> None:
    """The readable summary: inputs, concept and bucket tables, counts, why they differ, advice."""
    from kiln.engine.plan.repeats import renamed_folder
    from rich.markup import escape
    from rich.table import Table

    out = console()
    if result["mode"] in ("repeats", "epochs"):
        out.print(f"[bold]{result[result['mode']]} {result['mode']}[/] reach {result['target_steps']} steps")
    where = f"{escape(result['root'])}: " if result["root"] else ""
    repeats = "their folder repeats" if result["repeats"] is None else f"{result['repeats']} repeats"
    out.print(
        f"{where}{result['images']} image(s) x {repeats} = "
        f"{result['items_per_epoch'] - (result['reg']['items'] if result['reg'] else 0)} samples per epoch; "
        f"batch {result['batch']}, {result['epochs']} epochs, grad accumulation "
        f"{result['grad_accumulation']}, {result['gpus']} GPU(s)"
    )
    if result.get("concepts"):
        concepts = Table(title="concept folders")
        for column in ("folder", "repeats", "images", "samples"):
            concepts.add_column(column, justify="left" if column == "folder" else "right")
        renames = []
        for concept in result["concepts"]:
            used = result["repeats"] or concept["repeats"]
            concepts.add_row(
                escape(concept["folder"]), str(used), str(concept["images"]), str(used * concept["images"])
            )
            if used != concept["repeats"]:
                renames.append(f"{concept['folder']} -> {renamed_folder(concept['folder'], used)}")
        out.print(concepts)
        if renames:
            out.print(escape(f"Kohya reads repeats from folder names; to apply, rename {', '.join(renames)}"))
    if result["reg"] is not None:
        reg = result["reg"]
        out.print(
            f"+ {reg['items']} reg samples per epoch from {reg['used_images']} of {reg['images']} "
            f"class image(s) "
            f"in {escape(reg['root'])} (Kohya repeats them to match the training samples"
            + (
                f"; {reg['images'] - reg['used_images']} not used"
                if reg["used_images"] < reg["images"]
                else ""
            )
            + ")"
        )
    if result["bucketing"] is not None:
        width, height = result["bucketing"]["resolution"]
        upscale = " (no upscale)" if result["bucketing"]["no_upscale"] else ""
        buckets = Table(title=f"aspect buckets at {width}x{height}{upscale}")
        with_reg = result["reg"] is not None
        columns = ("bucket", "images", "samples", *(("of them reg",) if with_reg else ()), "batches")
        for column in columns:
            buckets.add_column(column, justify="left" if column == "bucket" else "right")
        for bucket in result["buckets"]:
            buckets.add_row(
                "x".join(map(str, bucket["resolution"])),
                str(bucket["images"]),
                str(bucket["items"]),
                *((str(bucket["reg_items"]),) if with_reg else ()),
                str(bucket["batches"]),
            )
        out.print(buckets)
    divided = result["grad_accumulation"] * result["gpus"] > 1
    out.print(
        f"Steps per epoch [bold]{result['steps_per_epoch']}[/]  ({result['batches_per_epoch']} batches"
        + (
            f" / {result['grad_accumulation']} accumulation / {result['gpus']} GPU(s), rounded up)"
            if divided
            else ")"
        )
    )
    total = result["total_steps"]
    out.print(f"Total steps     [bold]{total}[/]  ({result['epochs']} x {result['steps_per_epoch']})")
    out.print(
        f"Plain formula   {result['plain_total_steps']:g}  (({result['items_per_epoch']} / {result['batch']})"
        f" x {result['epochs']}{' / accumulation / GPUs' if divided else ''})"
    )
    for note in notes:
        out.print(escape(note))
    if result["dsb_verdict"] is None and result["root"]:
        out.print(
            f"DSB: not measured yet (run kiln dsb {escape(result['root'])} to include it in the advice)"
        )
    for warning in result["warnings"]:
        out.print(f"[yellow]warning[/] {escape(warning['id'])}: {escape(warning['message'])}")
    for info in result["info"]:
        out.print(f"[dim]note[/] {escape(info['id'])}: {escape(info['message'])}")
