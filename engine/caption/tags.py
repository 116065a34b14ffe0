"""Batch tag operations over captions: add, remove, replace, front, dedupe, sort, stats.

An operation is planned first (:func:`plan_edit` returns every caption it would change, the
``--dry-run`` diff and the TUI's preview) and then applied as one undo step
(:func:`apply_plan`). Captions are read as comma-separated pieces; a caption whose pieces
an operation leaves as they were is not rewritten, so its spacing stays as the user wrote it.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kiln.engine.caption.tagtext import is_sentence, join_tags, split_tags, tag_key, word_pattern
from kiln.engine.caption.undo import FileChange, History, current_bytes, relative
from kiln.engine.dataset.captions import CaptionError, read_caption, read_only_reason, write_caption
from kiln.engine.dataset.lock import caption_lock
from kiln.engine.dataset.scan import Dataset, ImageRecord
from kiln.engine.dataset.selection import excluded_paths
from kiln.engine.dataset.store import Store
from kiln.engine.errors import UsageError

Edit = Callable[[list[str]], list[str]]


@dataclass(frozen=True)
class TagEdit:
    """An operation on one caption's pieces, with the words that describe it in history."""

    description: str
    apply: Edit
    creates: bool = False
    """Whether it applies to images without a caption file too (only ``add`` does)."""


@dataclass(frozen=True)
class CaptionChange:
    """One caption an operation would change.

    Attributes:
        image: The image, relative to the dataset root.
        caption_path: The caption sidecar.
        before: The caption text now (None when there is no file).
        after: The caption text after the operation.
    """

    image: str
    caption_path: Path
    before: str | None
    after: str


@dataclass
class TagPlan:
    """What an operation would do: the changes, and the captions it must leave alone."""

    description: str
    changes: list[CaptionChange] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    considered: int = 0


@dataclass
class ApplyResult:
    """What :func:`apply_plan` wrote."""

    step: int | None
    written: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


# --- selection -------------------------------------------------------------------------


def select_records(
    dataset: Dataset,
    store: Store,
    *,
    include_excluded: bool = False,
    concepts: Sequence[str] = (),
    path_glob: str | None = None,
    with_tag: str | None = None,
) -> list[ImageRecord]:
    """The images an operation applies to: included ones (or all), optionally filtered.

    Args:
        dataset: The scanned dataset.
        store: Its store (for the selection).
        include_excluded: Take excluded images too.
        concepts: Keep only these concepts (by name or folder).
        path_glob: Keep only images whose relative path matches (``*`` crosses folders).
        with_tag: Keep only images whose caption holds this tag.
    """
    records = list(dataset.images)
    if not include_excluded:
        excluded = excluded_paths(store)
        records = [record for record in records if record.rel_path not in excluded]
    if concepts:
        wanted = set(concepts)
        records = [record for record in records if record.concept in wanted or record.folder in wanted]
    if path_glob:
        records = [record for record in records if fnmatch.fnmatchcase(record.rel_path, path_glob)]
    if with_tag:
        key = tag_key(with_tag)
        records = [
            record
            for record in records
            if any(tag_key(piece) == key for piece in split_tags(read_caption(record.caption_path).text))
        ]
    return records


# --- operations ------------------------------------------------------------------------


def _clean(tags: Iterable[str]) -> list[str]:
    cleaned = [piece for tag in tags for piece in split_tags(tag)]
    if not cleaned:
        raise UsageError("no tag given (tags are separated by commas)")
    return cleaned


def add_edit(tags: Sequence[str], position: str | int = "last") -> TagEdit:
    """Add ``tags`` where missing, at ``first``, ``last`` or a 0-based index (negative from the end).

    A tag the caption holds already stays where it is.
    """
    new = _clean(tags)

    def apply(pieces: list[str]) -> list[str]:
        have = {tag_key(piece) for piece in pieces}
        missing = [tag for tag in dict.fromkeys(new) if tag_key(tag) not in have]
        if not missing:
            return pieces
        if position == "first":
            at = 0
        elif position == "last":
            at = len(pieces)
        else:
            index = int(position)
            at = index if index >= 0 else len(pieces) + 1 + index
            at = min(max(at, 0), len(pieces))
        return [*pieces[:at], *missing, *pieces[at:]]

    return TagEdit(f"add {', '.join(new)} ({position})", apply, creates=True)


def _matcher(patterns: Sequence[str], regex: bool) -> Callable[[str], bool]:
    if regex:
        compiled = [_compile(pattern) for pattern in patterns]
        return lambda piece: any(pattern.fullmatch(piece) for pattern in compiled)
    keys = {tag_key(tag) for tag in _clean(patterns)}
    return lambda piece: tag_key(piece) in keys


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"regex {pattern!r}: {exc}") from None


def remove_edit(tags: Sequence[str], regex: bool = False) -> TagEdit:
    """Remove pieces equal to ``tags`` (case and spacing ignored) or, with ``regex``, fully matching."""
    if regex and not tags:
        raise UsageError("no pattern given")
    matches = _matcher(tags, regex)
    return TagEdit(
        f"remove {', '.join(tags)}{' (regex)' if regex else ''}",
        lambda pieces: [piece for piece in pieces if not matches(piece)],
    )


def replace_edit(old: str, new: str, regex: bool = False) -> TagEdit:
    """Replace a tag, also inside BLIP sentences.

    Exact: a piece equal to ``old`` becomes ``new``; inside a sentence piece, ``old`` is
    replaced where it stands as whole words ("grey cat" in "a grey cat on a sofa"), but not
    inside other tags ("cat" stays in "cat ears"). Regex: ``re.sub`` on every piece.
    An empty ``new`` removes what matched.
    """
    if regex:
        pattern = _compile(old)

        def apply_regex(pieces: list[str]) -> list[str]:
            try:
                replaced = [pattern.sub(new, piece) for piece in pieces]
            except re.error as exc:
                raise UsageError(f"replacement {new!r}: {exc}") from None
            return split_tags(join_tags(replaced))

        return TagEdit(f"replace /{old}/ -> {new!r}", apply_regex)
    if not tag_key(old):
        raise UsageError("nothing to replace: the old tag is empty")
    key = tag_key(old)
    inside = word_pattern(old)
    replacement = " ".join(new.split())

    def apply(pieces: list[str]) -> list[str]:
        out: list[str] = []
        for piece in pieces:
            if tag_key(piece) == key:
                out.append(replacement)
            elif is_sentence(piece):
                out.append(inside.sub(lambda _match: replacement, piece))
            else:
                out.append(piece)
        return split_tags(join_tags(out))

    return TagEdit(f"replace {old!r} -> {new!r}", apply)


def front_edit(tags: Sequence[str]) -> TagEdit:
    """Move ``tags`` (those present, in the given order) to the front."""
    order = [tag_key(tag) for tag in _clean(tags)]

    def apply(pieces: list[str]) -> list[str]:
        front: list[str] = []
        rest = list(pieces)
        for key in order:
            found = [piece for piece in rest if tag_key(piece) == key]
            front.extend(found)
            rest = [piece for piece in rest if tag_key(piece) != key]
        return front + rest

    return TagEdit(f"move {', '.join(tags)} to the front", apply)


def dedupe_edit() -> TagEdit:
    """Keep the first of pieces that are the same tag (case and spacing ignored)."""

    def apply(pieces: list[str]) -> list[str]:
        seen: set[str] = set()
        out = []
        for piece in pieces:
            if tag_key(piece) not in seen:
                seen.add(tag_key(piece))
                out.append(piece)
        return out

    return TagEdit("dedupe", apply)


def sort_edit(frequencies: Counter[str]) -> TagEdit:
    """Order each caption's pieces by how many captions hold them (most first, ties keep order)."""

    def apply(pieces: list[str]) -> list[str]:
        return sorted(pieces, key=lambda piece: -frequencies[tag_key(piece)])

    return TagEdit("sort by frequency", apply)


# --- planning and applying ---------------------------------------------------------------


def plan_edit(records: Iterable[ImageRecord], edit: TagEdit) -> TagPlan:
    """Every caption ``edit`` would change, without writing anything.

    Captions that are not valid UTF-8 are skipped (rewriting them would lose bytes), and so
    are images without a caption unless the operation creates captions (``add``).
    """
    plan = TagPlan(description=edit.description)
    for record in records:
        plan.considered += 1
        caption = read_caption(record.caption_path)
        if caption.lossy:
            plan.skipped.append(
                (record.rel_path, f"{record.caption_path.name} is not valid UTF-8; re-save it as UTF-8")
            )
            continue
        if not caption.exists and not edit.creates:
            continue
        read_only = read_only_reason(record.caption_path)
        if read_only is not None:
            plan.skipped.append((record.rel_path, read_only))
            continue
        pieces = split_tags(caption.text)
        after = edit.apply(list(pieces))
        if after == pieces:
            continue
        # Keep a final line break the user's editor wrote; some tools expect one.
        ending = "\n" if caption.text.endswith("\n") else ""
        plan.changes.append(
            CaptionChange(
                image=record.rel_path,
                caption_path=record.caption_path,
                before=caption.text if caption.exists else None,
                after=join_tags(after) + ending,
            )
        )
    return plan


def apply_plan(plan: TagPlan, root: Path, store: Store) -> ApplyResult:
    """Write a plan's captions atomically, as one undo step.

    A caption edited on disk since the plan was made is not overwritten: it is reported as
    failed, and the step only holds what was written. Checking, recording the undo step and
    writing all happen under the dataset's caption lock, so a concurrent edit (another
    ``kiln tags``, the TUI, captioning) waits instead of being overwritten.

    Raises:
        KilnError: The undo step cannot be recorded (Kiln's state is not writable); nothing
            is written.
    """
    result = ApplyResult(step=None)
    if not plan.changes:
        return result
    store.require_persistent(plan.description)
    with caption_lock(root):
        _apply_locked(plan, root, store, result)
    return result


def _apply_locked(plan: TagPlan, root: Path, store: Store, result: ApplyResult) -> None:
    history = History(store)
    current: list[tuple[CaptionChange, bytes | None]] = []
    for change in plan.changes:
        try:
            raw = current_bytes(change.caption_path)
            now = read_caption(change.caption_path)
        except (CaptionError, OSError) as exc:
            result.failed.append((change.image, str(exc)))
            continue
        if (now.text if now.exists else None) != change.before:
            result.failed.append((change.image, "changed on disk since the preview; run the operation again"))
            continue
        current.append((change, raw))
    if not current:
        return
    result.step = history.begin(plan.description)
    history.record(
        result.step,
        [
            FileChange(relative(root, change.caption_path), raw, change.after.encode("utf-8"))
            for change, raw in current
        ],
    )
    for change, _ in current:
        try:
            write_caption(change.caption_path, change.after)
        except CaptionError as exc:
            result.failed.append((change.image, str(exc)))
            continue
        result.written.append(change.image)


# --- stats -----------------------------------------------------------------------------


@dataclass
class TagStats:
    """How many captions hold each tag, over the dataset and per concept.

    Attributes:
        captions: Captions read (images with a caption file).
        counts: Tag key -> captions holding it.
        names: Tag key -> the spelling seen most often.
        per_concept: Concept -> (captions in it, tag key -> captions holding it).
    """

    captions: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    names: dict[str, str] = field(default_factory=dict)
    per_concept: dict[str, tuple[int, Counter[str]]] = field(default_factory=dict)

    def most_common(self, limit: int | None = None) -> list[tuple[str, int]]:
        """``(tag, captions)`` most frequent first, ties by name."""
        ranked = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        return [(self.names[key], count) for key, count in ranked[:limit]]

    def to_json(self, limit: int | None = None) -> dict:
        """The stats as ``kiln tags stats --json`` prints them."""

        def ranked(counter: Counter[str]) -> list[dict]:
            items = sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:limit]
            return [{"tag": self.names[key], "count": count} for key, count in items]

        return {
            "captions": self.captions,
            "tags": ranked(self.counts),
            "concepts": {
                concept: {"captions": total, "tags": ranked(counter)}
                for concept, (total, counter) in sorted(self.per_concept.items())
            },
        }


def tag_stats(records: Iterable[ImageRecord]) -> TagStats:
    """Tag frequencies (each tag counted once per caption), overall and per concept."""
    stats = TagStats()
    spellings: dict[str, Counter[str]] = {}
    for record in records:
        caption = read_caption(record.caption_path)
        if not caption.exists:
            continue
        stats.captions += 1
        total, counter = stats.per_concept.get(record.concept, (0, Counter()))
        keys = set()
        for piece in split_tags(caption.text):
            key = tag_key(piece)
            spellings.setdefault(key, Counter())[piece] += 1
            keys.add(key)
        stats.counts.update(keys)
        counter.update(keys)
        stats.per_concept[record.concept] = (total + 1, counter)
    stats.names = {key: counter.most_common(1)[0][0] for key, counter in spellings.items()}
    return stats


def frequencies(records: Iterable[ImageRecord]) -> Counter[str]:
    """Tag key -> captions holding it, for :func:`sort_edit`."""
    return tag_stats(records).counts
