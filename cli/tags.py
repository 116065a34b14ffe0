"""``kiln tags``: batch tag operations over captions, each one undo step, with a dry-run diff."""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path

from kiln.cli.common import add_example, console, load_dataset, positive_int, print_json
from rich.markup import escape

ACTIONS = ("add", "remove", "replace", "front", "dedupe", "sort", "stats", "undo", "history")


def _position(text: str) -> str | int:
    if text in ("first", "last"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use first, last or an index such as 1 or -2") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kiln tags`` and its actions to the parser."""
    parser = subparsers.add_parser(
        "tags",
        help="add, remove, replace, reorder and count caption tags (undoable)",
        description="Batch tag operations on the captions of included images (--all for every image; "
        "--concept, --match and --with-tag narrow it). Each operation is one undo step kept in "
        ".kiln/kiln.db; --dry-run shows the diff and writes nothing.",
    )
    parser.add_argument("path", type=Path, help="dataset folder (Kohya train_data_dir)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    actions.required = True

    scope = argparse.ArgumentParser(add_help=False)
    group = scope.add_argument_group("which captions")
    group.add_argument("--all", action="store_true", help="excluded images too")
    group.add_argument("--concept", action="append", default=[], help="only this concept (repeatable)")
    group.add_argument("--match", help="only images whose relative path matches this glob")
    group.add_argument("--with-tag", help="only captions holding this tag")
    group.add_argument("--caption-extension", default=".txt", help="caption sidecar extension")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON for scripts")
    edit = argparse.ArgumentParser(add_help=False, parents=[scope, output])
    edit.add_argument("--dry-run", action="store_true", help="show the diff, write nothing")

    add = actions.add_parser("add", parents=[edit], help="add tags where missing")
    add.add_argument("tags", nargs="+", help="tags to add")
    add.add_argument(
        "--position", type=_position, default="last", help="first, last (default) or an index (0 = first)"
    )
    remove = actions.add_parser("remove", parents=[edit], help="remove tags")
    remove.add_argument("tags", nargs="+", help="tags to remove (regexes with --regex)")
    remove.add_argument("--regex", action="store_true", help="tags are regexes matching a whole tag")
    replace = actions.add_parser("replace", parents=[edit], help="replace a tag, inside sentences too")
    replace.add_argument("old", help="tag or phrase to replace (a regex with --regex)")
    replace.add_argument("new", help="replacement ('' removes)")
    replace.add_argument("--regex", action="store_true", help="OLD is a regex applied inside every piece")
    front = actions.add_parser("front", parents=[edit], help="move tags to the front")
    front.add_argument("tags", nargs="+", help="tags to move, in this order")
    actions.add_parser("dedupe", parents=[edit], help="drop repeated tags within each caption")
    actions.add_parser("sort", parents=[edit], help="order tags by how many captions hold them")
    stats = actions.add_parser("stats", parents=[scope, output], help="tag frequencies, per concept too")
    stats.add_argument("--top", type=positive_int, default=30, help="tags to list (30)")
    undo = actions.add_parser("undo", parents=[output], help="undo the last batch operation")
    undo.add_argument("--dry-run", action="store_true", help="show what would be restored")
    undo.add_argument("--force", action="store_true", help="undo even if some captions changed since")
    actions.add_parser("history", parents=[output], help="list the undo steps, newest first")
    add_example(
        parser,
        "kiln tags data add kilnstyle --position first --concept kilnstyle",
        "kiln tags data replace 'grey cat' 'black cat' --dry-run",
        "kiln tags data remove 'simple background' 'white background'",
        "kiln tags data remove '.*_background' --regex",
        "kiln tags data stats --top 20 --json",
        "kiln tags data undo",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kiln tags``."""
    from kiln.engine.dataset.store import Store

    if args.action in ("undo", "history"):
        from kiln.engine.dataset.scan import scan_dataset

        dataset = scan_dataset(args.path)
        with Store(dataset.root) as store:
            return _undo(args, store) if args.action == "undo" else _history(args, store)

    dataset = load_dataset(args.path, args.caption_extension)
    edits = args.action != "stats" and not args.dry_run
    with Store(dataset.root) as store:
        if edits:
            store.require_persistent(f"kiln tags {args.action}")
        return _edit_or_stats(args, dataset, store, edits)


def _edit_or_stats(args: argparse.Namespace, dataset, store, edits: bool) -> int:
    from kiln.engine.caption import tags
    from kiln.engine.dataset.lock import caption_lock

    # An edit reads, plans and writes under the dataset's caption lock: a second `kiln tags`
    # started meanwhile waits, then plans on the captions this one wrote.
    with caption_lock(dataset.root) if edits else nullcontext():
        records = tags.select_records(
            dataset,
            store,
            include_excluded=args.all,
            concepts=args.concept,
            path_glob=args.match,
            with_tag=args.with_tag,
        )
        if args.action == "stats":
            return _stats(args, tags.tag_stats(records))
        edit = _edit(args, records)
        plan = tags.plan_edit(records, edit)
        result = None if args.dry_run else tags.apply_plan(plan, dataset.root, store)
    failed = [] if result is None else result.failed
    if args.json:
        print_json(
            {
                "operation": plan.description,
                "dry_run": args.dry_run,
                "considered": plan.considered,
                "changes": [
                    {
                        "image": change.image,
                        "caption": change.caption_path.relative_to(dataset.root).as_posix(),
                        "before": change.before,
                        "after": change.after,
                    }
                    for change in plan.changes
                ],
                "skipped": [{"image": image, "reason": reason} for image, reason in plan.skipped],
                "failed": [{"image": image, "reason": reason} for image, reason in failed],
                "undo_step": None if result is None else result.step,
            }
        )
    else:
        _print_plan(plan, dataset.root, result, args.dry_run)
    return 1 if failed else 0


def _edit(args: argparse.Namespace, records: list):
    from kiln.engine.caption import tags

    if args.action == "add":
        return tags.add_edit(args.tags, args.position)
    if args.action == "remove":
        return tags.remove_edit(args.tags, regex=args.regex)
    if args.action == "replace":
        return tags.replace_edit(args.old, args.new, regex=args.regex)
    if args.action == "front":
        return tags.front_edit(args.tags)
    if args.action == "dedupe":
        return tags.dedupe_edit()
    return tags.sort_edit(tags.frequencies(records))


def _print_plan(plan, root: Path, result, dry_run: bool) -> None:
    out = _console()
    if dry_run:
        for change in plan.changes:
            out.print(f"[bold]{escape(change.caption_path.relative_to(root).as_posix())}[/]")
            before = "(no caption)" if change.before is None else change.before.rstrip("\n")
            out.print(f"[red]- {escape(before)}[/]")
            out.print(f"[green]+ {escape(change.after.rstrip())}[/]")
    for image, reason in plan.skipped:
        out.print(f"[yellow]skipped:[/] {escape(image)}: {escape(reason)}")
    if dry_run:
        out.print(
            f"{plan.description}: {len(plan.changes)} of {plan.considered} caption(s) would change "
            "(dry run, nothing written)"
        )
        return
    for image, reason in result.failed:
        out.print(f"[red]failed:[/] {escape(image)}: {escape(reason)}")
    line = f"{plan.description}: {len(result.written)} of {plan.considered} caption(s) changed"
    if result.step is not None:
        line += f"; undo with: kiln tags {root} undo"
    out.print(line)


def _stats(args: argparse.Namespace, stats) -> int:
    if args.json:
        print_json(stats.to_json(args.top))
        return 0
    from rich.table import Table

    out = _console()
    table = Table(title=f"tags in {stats.captions} caption(s)")
    table.add_column("tag")
    table.add_column("captions", justify="right")
    table.add_column("share", justify="right")
    concepts = sorted(stats.per_concept)
    for concept in concepts:
        table.add_column(concept, justify="right")
    for name, count in stats.most_common(args.top):
        key = " ".join(name.split()).lower()
        per = [str(stats.per_concept[concept][1][key]) for concept in concepts]
        table.add_row(escape(name), str(count), f"{100 * count / max(1, stats.captions):.0f}%", *per)
    out.print(table)
    return 0


def _undo(args: argparse.Namespace, store) -> int:
    from kiln.engine.caption.undo import History

    result = History(store).undo(force=args.force, dry_run=args.dry_run)
    if args.json:
        print_json(
            {
                "step": {"id": result.step.id, "description": result.step.description},
                "dry_run": result.dry_run,
                "restored": result.restored,
                "unchanged": result.unchanged,
                "conflicts": result.conflicts,
            }
        )
        return 0
    out = _console()
    verb = "would restore" if result.dry_run else "restored"
    out.print(f"undo '{escape(result.step.description)}': {verb} {len(result.restored)} caption(s)")
    for path in result.restored:
        out.print(f"  {escape(path)}")
    for path in result.conflicts:
        out.print(f"[yellow]  changed since, left as is:[/] {escape(path)}")
    return 0


def _history(args: argparse.Namespace, store) -> int:
    from kiln.engine.caption.undo import History

    steps = History(store).steps()
    if args.json:
        print_json(
            [
                {"id": step.id, "created": step.created, "description": step.description, "files": step.files}
                for step in steps
            ]
        )
        return 0
    out = _console()
    if not steps:
        out.print("no caption edits recorded")
    for step in steps:
        when = datetime.fromtimestamp(step.created).strftime("%Y-%m-%d %H:%M:%S")
        out.print(f"{step.id:>4}  {when}  {escape(step.description)}  ({step.files} caption(s))")
    return 0


def _console():
    out = console()
    out.soft_wrap = True  # long captions and paths stay on one line, for copying and grep
    return out
