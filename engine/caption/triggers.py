"""Trigger words: the made-up word a concept's captions share, given by the user or inferred.

Lint checks every caption for its concept's trigger, and appending to captions keeps a
trailing trigger last (keep-tokens and the guide put it first or last; tags added later must
not push it into the middle).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from kiln.engine.caption.tagtext import is_sentence, tag_key, word_pattern

MIN_CAPTIONS_TO_INFER = 2


@dataclass(frozen=True)
class Trigger:
    """The trigger word a concept's captions are checked for, and where it came from."""

    word: str
    source: str  # "given" or "inferred"
    support: int = 0
    captions: int = 0


def infer_trigger(captions: list[list[str]], concept: str) -> Trigger | None:
    """The concept's trigger when its captions show one clearly, else None.

    A tag is a candidate when it starts or ends more than half of the concept's captions (at
    least two). The concept's own name wins when it qualifies; then the most common
    candidate, where a single word beats a phrase of several (triggers are made-up words
    such as ``kilnpot``; a tagger's tags such as ``simple background`` that end every caption
    because they were appended to all of them are not); a tie left after that is no answer,
    and ``--trigger`` decides.
    """
    if len(captions) < MIN_CAPTIONS_TO_INFER:
        return None
    support: Counter[str] = Counter()
    spelling: dict[str, str] = {}
    for pieces in captions:
        ends = {tag_key(pieces[0]): pieces[0], tag_key(pieces[-1]): pieces[-1]} if pieces else {}
        for key, piece in ends.items():
            support[key] += 1
            spelling.setdefault(key, piece)
    qualified = [(key, count) for key, count in support.items() if count * 2 > len(captions) and count >= 2]
    if not qualified:
        return None
    name_key = tag_key(concept)
    for key, count in qualified:
        if key == name_key:
            return Trigger(spelling[key], "inferred", count, len(captions))

    def rank(item: tuple[str, int]) -> tuple[int, bool]:
        key, count = item
        return count, len(key.split()) == 1

    qualified.sort(key=rank, reverse=True)
    if len(qualified) > 1 and rank(qualified[0]) == rank(qualified[1]):
        return None  # two tags as likely: no telling which is the trigger
    key, count = qualified[0]
    return Trigger(spelling[key], "inferred", count, len(captions))


def holds_trigger(pieces: list[str], trigger: str) -> bool:
    """Whether a caption holds the trigger, as a piece of its own or as words inside a sentence."""
    key = tag_key(trigger)
    pattern = word_pattern(trigger)
    return any(tag_key(piece) == key or (is_sentence(piece) and pattern.search(piece)) for piece in pieces)
