"""Caption lint: what in a dataset's captions works against the guide's method.

Rules (each finding carries a stable id ``rule:file[:detail]``, the file and a fix):

* ``missing-caption``: an image without a caption file.
* ``orphan-caption``: a caption file without an image.
* ``empty-caption``: a caption file with no text.
* ``not-utf8``: a caption that is not valid UTF-8 (the trainer may misread it).
* ``missing-trigger``: a caption without the trigger word (given, or inferred per concept
  as the tag that starts or ends most of its captions).
* ``comma-in-prompt``: a BLIP-style caption whose initial prompt holds commas (the guide:
  keep the sentence before the trigger whole).
* ``over-token-window``: a caption longer than CLIP's 75-token window.
* ``duplicate-tag``: the same tag twice in one caption.
* ``tag-everywhere``: a tag in every caption of a concept (it teaches nothing the trigger
  does not absorb anyway).
"""

from __future__ import annotations

import os
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from kiln.engine.caption.clip_tokens import WINDOW, ClipTokenizer, try_load_tokenizer
from kiln.engine.caption.tagtext import is_sentence, join_tags, split_tags, tag_key
from kiln.engine.caption.triggers import Trigger, holds_trigger, infer_trigger
from kiln.engine.dataset.captions import read_caption
from kiln.engine.dataset.scan import EXCLUDED_FOLDER, RUNS_FOLDER, Dataset, ImageRecord, is_image_name
from kiln.engine.dataset.selection import excluded_paths
from kiln.engine.dataset.store import Store

RULES: dict[str, str] = {
    "missing-caption": "error",
    "orphan-caption": "warning",
    "empty-caption": "error",
    "not-utf8": "error",
    "missing-trigger": "error",
    "comma-in-prompt": "warning",
    "over-token-window": "warning",
    "duplicate-tag": "warning",
    "tag-everywhere": "warning",
}

MIN_CAPTIONS_FOR_EVERYWHERE = 3


@dataclass(frozen=True)
class Finding:
    """One problem: a stable id, the rule, the file (relative to the root), what and how to fix."""

    id: str
    rule: str
    file: str
    message: str
    fix: str

    @property
    def severity(self) -> str:
        """``error`` (training will go wrong) or ``warning`` (training will be worse)."""
        return RULES[self.rule]

    def to_json(self) -> dict:
        """The finding as ``kiln lint --json`` prints it."""
        return {
            "id": self.id,
            "rule": self.rule,
            "severity": self.severity,
            "file": self.file,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass
class LintReport:
    """Everything ``kiln lint`` found.

    Attributes:
        root: The dataset root.
        images: Images linted.
        findings: Sorted by file, then rule.
        triggers: Concept -> its trigger (None when none was given or could be inferred).
        tokens_available: Whether exact CLIP token counts were possible.
        tokens_message: Why not, as one line, when they were not.
        max_tokens: The longest caption's token count (None when unavailable or no captions).
    """

    root: Path
    images: int = 0
    findings: list[Finding] = field(default_factory=list)
    triggers: dict[str, Trigger | None] = field(default_factory=dict)
    tokens_available: bool = False
    tokens_message: str | None = None
    max_tokens: int | None = None

    def counts(self) -> dict[str, int]:
        """Findings per rule (rules with none left out)."""
        return dict(sorted(Counter(finding.rule for finding in self.findings).items()))

    def to_json(self) -> dict:
        """The report as ``kiln lint --json`` prints it."""
        return {
            "root": str(self.root),
            "images": self.images,
            "triggers": {
                concept: None
                if trigger is None
                else {
                    "word": trigger.word,
                    "source": trigger.source,
                    "support": trigger.support,
                    "captions": trigger.captions,
                }
                for concept, trigger in sorted(self.triggers.items())
            },
            "tokens": {
                "available": self.tokens_available,
                "message": self.tokens_message,
                "window": WINDOW,
                "max": self.max_tokens,
            },
            "counts": self.counts(),
            "findings": [finding.to_json() for finding in self.findings],
        }


def initial_prompt(pieces: list[str], trigger: str | None) -> list[str]:
    """The pieces of a BLIP-style caption's initial prompt (empty for a tag list).

    The caption reads as BLIP style when its first piece (after a leading trigger) is a
    sentence. The prompt runs up to the trigger; without a known trigger, up to the
    trailing one-word keywords (``..., RFKTRCYBR``).
    """
    key = tag_key(trigger) if trigger else None
    body = pieces[1:] if key and pieces and tag_key(pieces[0]) == key else list(pieces)
    if not body or not is_sentence(body[0]):
        return []
    if key:
        for index, piece in enumerate(body):
            if tag_key(piece) == key:
                return body[:index]
        return body
    end = len(body)
    while end > 1 and len(body[end - 1].split()) == 1:
        end -= 1
    return body[:end]


def lint_dataset(
    dataset: Dataset,
    store: Store,
    *,
    trigger: str | None = None,
    include_excluded: bool = False,
    tokenizer: ClipTokenizer | None = None,
    tokens_message: str | None = None,
) -> LintReport:
    """Check the dataset's captions against every rule.

    Args:
        dataset: The scanned dataset.
        store: Its store (for the selection).
        trigger: The trigger word every caption must hold; None infers one per concept.
        include_excluded: Lint excluded images too (by default only what trains).
        tokenizer: The CLIP tokenizer; None loads it, and when it is not installed the
            report says token counts are unavailable instead of guessing.
        tokens_message: The reason given with an explicitly missing tokenizer.
    """
    if tokenizer is None and tokens_message is None:
        tokenizer, tokens_message = try_load_tokenizer()
    report = LintReport(
        root=dataset.root, tokens_available=tokenizer is not None, tokens_message=tokens_message
    )
    records = list(dataset.images)
    if not include_excluded:
        excluded = excluded_paths(store)
        records = [record for record in records if record.rel_path not in excluded]
    report.images = len(records)
    findings = report.findings
    findings.extend(orphan_captions(dataset))

    texts: dict[str, list[str]] = {}
    by_concept: dict[str, list[ImageRecord]] = {}
    for record in records:
        caption_file = _rel(dataset, record.caption_path)
        caption = read_caption(record.caption_path)
        if not caption.exists:
            findings.append(
                Finding(
                    f"missing-caption:{record.rel_path}",
                    "missing-caption",
                    record.rel_path,
                    "image has no caption",
                    f"write {caption_file} (e.g. kiln caption {_q(dataset.root)} --style blip --model DIR)",
                )
            )
            continue
        if caption.lossy:
            findings.append(
                Finding(
                    f"not-utf8:{caption_file}",
                    "not-utf8",
                    caption_file,
                    "caption is not valid UTF-8",
                    "re-save it as UTF-8",
                )
            )
        pieces = split_tags(caption.text)
        if not pieces:
            findings.append(
                Finding(
                    f"empty-caption:{caption_file}",
                    "empty-caption",
                    caption_file,
                    "caption is empty",
                    "describe the image, then add the trigger word",
                )
            )
            continue
        texts[record.rel_path] = pieces
        by_concept.setdefault(record.concept, []).append(record)
        findings.extend(_duplicates(dataset, caption_file, pieces))
        if tokenizer is not None:
            count = tokenizer.count(caption.text).tokens
            report.max_tokens = max(report.max_tokens or 0, count)
            if count > WINDOW:
                findings.append(
                    Finding(
                        f"over-token-window:{caption_file}",
                        "over-token-window",
                        caption_file,
                        f"{count} CLIP tokens, over the {WINDOW}-token window",
                        f"cut {count - WINDOW} token(s), or train with Kohya's max_token_length=150 or 225",
                    )
                )

    for concept in sorted({record.concept for record in records}):
        members = by_concept.get(concept, [])
        captions = [texts[record.rel_path] for record in members]
        chosen = Trigger(" ".join(trigger.split()), "given") if trigger else infer_trigger(captions, concept)
        report.triggers[concept] = chosen
        word = chosen.word if chosen else None
        position = _usual_position(captions, word) if word else "last"
        for record in members:
            pieces = texts[record.rel_path]
            caption_file = _rel(dataset, record.caption_path)
            if chosen is not None and not holds_trigger(pieces, chosen.word):
                how = (
                    "given with --trigger"
                    if chosen.source == "given"
                    else f"inferred: it starts or ends {chosen.support} of {chosen.captions} captions"
                )
                findings.append(
                    Finding(
                        f"missing-trigger:{caption_file}",
                        "missing-trigger",
                        caption_file,
                        f"caption lacks the trigger '{chosen.word}' ({how})",
                        f"kiln tags {_q(dataset.root)} add {_q(chosen.word)} --position {position} "
                        f"--concept {_q(concept)}",
                    )
                )
            prompt = initial_prompt(pieces, word)
            if len(prompt) > 1:
                findings.append(
                    Finding(
                        f"comma-in-prompt:{caption_file}",
                        "comma-in-prompt",
                        caption_file,
                        f"the initial prompt has {len(prompt) - 1} comma(s): '{join_tags(prompt)}'",
                        f"write it as one phrase: '{join_tags(_rebuild(pieces, prompt))}'",
                    )
                )
        findings.extend(_everywhere(dataset, concept, members, captions, word))

    findings.sort(key=lambda finding: (finding.file, finding.rule, finding.id))
    return report


def _usual_position(captions: list[list[str]], trigger: str) -> str:
    """Where the concept's captions put the trigger: ``first`` when more start than end with it."""
    key = tag_key(trigger)
    first = sum(1 for pieces in captions if pieces and tag_key(pieces[0]) == key)
    last = sum(1 for pieces in captions if pieces and tag_key(pieces[-1]) == key)
    return "first" if first > last else "last"


def _rebuild(pieces: list[str], prompt: list[str]) -> list[str]:
    """The caption with its initial prompt (a run of its pieces) written as one piece."""
    start = next(index for index in range(len(pieces)) if pieces[index : index + len(prompt)] == prompt)
    return [*pieces[:start], " ".join(prompt), *pieces[start + len(prompt) :]]


def _duplicates(dataset: Dataset, caption_file: str, pieces: list[str]) -> list[Finding]:
    counts = Counter(tag_key(piece) for piece in pieces)
    return [
        Finding(
            f"duplicate-tag:{caption_file}:{key}",
            "duplicate-tag",
            caption_file,
            f"'{key}' appears {count} times",
            f"kiln tags {_q(dataset.root)} dedupe --match {_q(caption_file.rsplit('.', 1)[0] + '.*')}",
        )
        for key, count in sorted(counts.items())
        if count > 1
    ]


def _everywhere(
    dataset: Dataset, concept: str, members: list[ImageRecord], captions: list[list[str]], trigger: str | None
) -> list[Finding]:
    if len(captions) < MIN_CAPTIONS_FOR_EVERYWHERE:
        return []
    shared = set.intersection(*({tag_key(piece) for piece in pieces} for pieces in captions))
    if trigger:
        shared.discard(tag_key(trigger))
    folder = members[0].folder or "."
    return [
        Finding(
            f"tag-everywhere:{folder}:{key}",
            "tag-everywhere",
            folder,
            f"'{key}' is in all {len(captions)} captions of {concept}: it teaches nothing the trigger "
            "does not absorb anyway",
            f"kiln tags {_q(dataset.root)} remove {_q(key)} --concept {_q(concept)}",
        )
        for key in sorted(shared)
    ]


def orphan_captions(dataset: Dataset) -> list[Finding]:
    """Caption files whose image is gone, in the root (when it holds images) and concept folders."""
    root = dataset.root
    folders: list[Path] = []
    if any(not record.folder for record in dataset.images):
        folders.append(root)
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError:
        entries = []
    for entry in entries:
        name = entry.name
        if name.startswith(".") or name in {EXCLUDED_FOLDER, RUNS_FOLDER, "__pycache__"}:
            continue
        try:
            if entry.is_dir():
                folders.append(Path(entry.path))
        except OSError:
            continue
    findings = []
    extension = dataset.caption_extension
    for folder in folders:
        try:
            names = sorted(entry.name for entry in os.scandir(folder) if entry.is_file())
        except OSError:
            continue
        stems = {Path(name).stem for name in names if is_image_name(name)}
        for name in names:
            if name.startswith(".") or not name.endswith(extension):
                continue
            if name[: -len(extension)] in stems:
                continue
            caption_file = _rel(dataset, folder / name)
            findings.append(
                Finding(
                    f"orphan-caption:{caption_file}",
                    "orphan-caption",
                    caption_file,
                    "caption has no image beside it",
                    "restore its image, or delete the caption if the image is gone for good",
                )
            )
    return findings


def _rel(dataset: Dataset, path: Path) -> str:
    return Path(path).relative_to(dataset.root).as_posix()


def _q(value: object) -> str:
    return shlex.quote(str(value))
