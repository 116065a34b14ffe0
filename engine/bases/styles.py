"""Which caption style a base understands: the user's note, the guide's five bases, a hint.

The guide captions per base: "RFKTR's Darkdream ... uses exclusively BLIP", "NeverEnding
Dream ... whether you use BLIP or WD14", "Anything V5/Ink ... WD14 captioning gives better
results", "Kotosmix ... uses WD14 tagging but BLIP also works quite well"; it says nothing of
ReV Animated's. Those are the defaults, matched by name; the user's own note, stored in the
catalog, always wins.

The measured hint compares how far the base's text encoder moved on booru-tag words against
natural-language caption words (both against the reference of its family): an encoder
fine-tuned on anime tags moves on tags. It is a hint, shown with its figures, not a verdict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

BLIP, WD14, EITHER = "blip", "wd14", "either"
STYLES = (BLIP, WD14, EITHER)
STYLE_TITLES = {BLIP: "BLIP sentences", WD14: "WD14 tags", EITHER: "either"}

# (pattern on the lower-cased title or file name, style, the guide's words)
GUIDE_BASES: tuple[tuple[str, str, str], ...] = (
    (r"dark\s*_?-?dream", BLIP, "the guide: Darkdream uses exclusively BLIP"),
    (r"never\s*_?-?ending\s*_?-?dream|\bned\b", EITHER, "the guide: NeverEnding Dream takes BLIP or WD14"),
    (r"anything\s*_?-?(v?5|ink)", WD14, "the guide: WD14 captioning gives better results on Anything V5/Ink"),
    (r"kotos?\s*_?-?mix", WD14, "the guide: Kotosmix uses WD14 tagging, BLIP also works quite well"),
)

# Probe words: single CLIP tokens typical of each style's captions (words that are not a
# single token in a checkpoint's tokenizer are skipped by the probe).
TAG_WORDS: tuple[str, ...] = (
    "1girl", "solo", "blush", "bangs", "ahoge", "twintails", "ponytail", "braid", "sidelocks",
    "thighhighs", "skirt", "choker", "ribbon", "hairband", "serafuku", "kimono", "bikini",
    "cleavage", "navel", "fang", "chibi", "monochrome", "greyscale", "highres", "absurdres",
    "blonde", "heterochromia", "smile", "open", "hair", "eyes", "bow", "gloves", "earrings",
    "jewelry", "frills", "maid", "tail", "horns", "halo",
)  # fmt: skip
SENTENCE_WORDS: tuple[str, ...] = (
    "photo", "picture", "painting", "drawing", "standing", "sitting", "holding", "wearing",
    "looking", "walking", "front", "next", "table", "room", "street", "building", "woman",
    "man", "person", "people", "background", "close", "view", "large", "small", "tree",
    "water", "sky", "car", "dog", "field", "city", "night", "window", "road", "house",
    "chair", "flowers", "mountain", "beach",
)  # fmt: skip
# The tag-word drift must exceed the sentence-word drift by this factor (or the reverse) for a
# hint; below it the hint is "either". Provisional, like TEC's reading bands.
HINT_RATIO = 1.5


def guide_style(name: str) -> tuple[str, str] | None:
    """The guide's style for a base whose title or file name matches one it names, with the
    guide's words; None for any other base."""
    lowered = name.lower()
    for pattern, style, words in GUIDE_BASES:
        if re.search(pattern, lowered):
            return style, words
    return None


@dataclass(frozen=True)
class StyleHint:
    """How far the encoder moved on each kind of caption word (mean 1 - cosine, x 100).

    Attributes:
        tag_drift: Over the tag words that are single tokens.
        sentence_drift: Over the sentence words that are single tokens.
        style: ``wd14`` when tags moved ``HINT_RATIO`` times more, ``blip`` when sentence words
            did, else ``either``.
    """

    tag_drift: float
    sentence_drift: float
    style: str

    def to_json(self) -> dict[str, float | str]:
        return {"tag_drift": self.tag_drift, "sentence_drift": self.sentence_drift, "style": self.style}


def style_hint(
    words: Sequence[str],
    distances: Sequence[float],
    tags: Sequence[str] = TAG_WORDS,
    sentences: Sequence[str] = SENTENCE_WORDS,
) -> StyleHint | None:
    """The hint from a TEC report's per-word distances over (at least) both word lists;
    None when either list has no word in the report."""
    by_word = dict(zip(words, distances, strict=True))
    tag = [by_word[word] for word in tags if word in by_word]
    sentence = [by_word[word] for word in sentences if word in by_word]
    if not tag or not sentence:
        return None
    tag_drift = 100.0 * math.fsum(tag) / len(tag)
    sentence_drift = 100.0 * math.fsum(sentence) / len(sentence)
    if tag_drift > HINT_RATIO * sentence_drift:
        style = WD14
    elif sentence_drift > HINT_RATIO * tag_drift:
        style = BLIP
    else:
        style = EITHER
    return StyleHint(round(tag_drift, 4), round(sentence_drift, 4), style)
