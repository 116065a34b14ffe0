"""The base chosen for a dataset ("use as base"), and whether its captions suit that base.

Kept in the dataset's store (``.kiln/kiln.db``, ``meta`` table) beside the plan form and the
caption choices: the new-run form starts from this checkpoint, the plan from its family, the
Captions section from its caption style. Deleting ``.kiln/`` forgets it and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from kiln.engine.bases.styles import BLIP, STYLE_TITLES, WD14
from kiln.engine.caption.tagtext import is_sentence, split_tags
from kiln.engine.dataset.store import Store

META_KEY = "bases.chosen"
# A dataset "is captioned" in a style when at least this share of its captions are.
MAJORITY = 0.6


@dataclass(frozen=True)
class ChosenBase:
    """The checkpoint chosen as the base: its path, family (``sd15``/``sdxl``) and the caption
    style it understands (``blip``, ``wd14``, ``either``, or None when unknown)."""

    path: str
    family: str
    style: str | None = None


def save_chosen_base(store: Store, chosen: ChosenBase) -> None:
    store.set_meta(META_KEY, json.dumps(asdict(chosen)))


def load_chosen_base(store: Store) -> ChosenBase | None:
    """The chosen base, or None (none chosen, or a value another version wrote)."""
    value = store.get_meta(META_KEY)
    if value is None:
        return None
    try:
        raw = json.loads(value)
        return ChosenBase(str(raw["path"]), str(raw["family"]), raw.get("style"))
    except (ValueError, KeyError, TypeError):
        return None


def captions_style(texts: Iterable[str]) -> tuple[str | None, int, int]:
    """The style a dataset is captioned in: ``blip`` when most non-empty captions open with a
    sentence, ``wd14`` when most are tag lists, None when neither holds ``MAJORITY``; with the
    counts of sentence and tag captions."""
    sentences = tags = 0
    for text in texts:
        pieces = split_tags(text)
        if not pieces:
            continue
        if any(is_sentence(piece) for piece in pieces[:2]):
            sentences += 1
        else:
            tags += 1
    total = sentences + tags
    if total and sentences / total >= MAJORITY:
        return BLIP, sentences, tags
    if total and tags / total >= MAJORITY:
        return WD14, sentences, tags
    return None, sentences, tags


def style_mismatch(base_style: str | None, texts: Iterable[str]) -> str | None:
    """One line when a sizeable share (over ``1 - MAJORITY``) of the dataset's captions are in
    the other style than the base understands; None otherwise."""
    if base_style not in (BLIP, WD14):
        return None
    _, sentences, tags = captions_style(texts)
    other, count = (WD14, tags) if base_style == BLIP else (BLIP, sentences)
    total = sentences + tags
    if not total or count / total <= 1 - MAJORITY:
        return None
    return (
        f"this base understands {STYLE_TITLES[base_style]}, but {count} of the dataset's {total} "
        f"captions are {STYLE_TITLES[other]}: recaption them in the Captions section, or choose a "
        f"base for {STYLE_TITLES[other]}"
    )
