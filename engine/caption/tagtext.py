"""Captions as comma-separated tag lists: split, join, compare, and tell sentences from tags.

Kohya and the WebUIs read a caption as one string; by convention its pieces are separated
by commas. A BLIP-style caption is a sentence (the *initial prompt*) followed by keywords;
a WD14-style caption is a list of short tags. Both are handled as a list of pieces here.
"""

from __future__ import annotations

import re

SEPARATOR = ", "

# Words a BLIP sentence starts with, and that no booru tag starts with.
_SENTENCE_STARTS = frozenset(
    {
        "a", "an", "the", "there", "this", "these", "that", "those", "two", "three", "four",
        "five", "several", "some", "one", "arafed", "araffe", "arafly",
    }
)  # fmt: skip


def split_tags(text: str) -> list[str]:
    """The caption's pieces, whitespace-trimmed, empty pieces dropped (line breaks act as spaces)."""
    return [piece for piece in (" ".join(part.split()) for part in text.split(",")) if piece]


def join_tags(tags: list[str]) -> str:
    """The caption text for ``tags``, in the common ``a, b, c`` form."""
    return SEPARATOR.join(tags)


def tag_key(tag: str) -> str:
    """The form two tags are compared in: CLIP lower-cases text and ignores extra spaces."""
    return " ".join(tag.split()).lower()


def has_tag(tags: list[str], tag: str) -> bool:
    """Whether ``tag`` is among ``tags`` (compared by :func:`tag_key`)."""
    key = tag_key(tag)
    return any(tag_key(piece) == key for piece in tags)


def is_sentence(piece: str) -> bool:
    """Whether a piece reads as a BLIP-style sentence rather than a tag.

    Booru tags are short and never start with an article; BLIP starts its captions with
    one ("a woman ...", "there is ...", its quirk "arafed ...") and writes whole phrases.
    """
    words = piece.split()
    if len(words) >= 5:
        return True
    return len(words) >= 2 and words[0].lower() in _SENTENCE_STARTS


def word_pattern(phrase: str) -> re.Pattern[str]:
    """A case-insensitive pattern matching ``phrase`` as whole words (spaces flexible)."""
    body = r"\s+".join(re.escape(word) for word in phrase.split())
    return re.compile(rf"(?<![\w]){body}(?![\w])", re.IGNORECASE)
