"""Exact CLIP token counts, offline: a byte-level BPE over the SD 1.5 tokenizer Kiln ships.

Stable Diffusion reads captions through CLIP's tokenizer and sees 75 tokens at a time (77
with the start and end markers); SDXL's two encoders use the same BPE. Counting words or
characters misjudges that window, so Kiln tokenizes for real, with the ``vocab.json`` and
``merges.txt`` of SD 1.5's tokenizer that ship inside Kiln (``engine/models/configs/sd15/
tokenizer/``, the files offline model loading uses too). Nothing is installed or downloaded.

The algorithm follows CLIP's published tokenizer: clean the text (ftfy when installed,
Unicode NFC, whitespace), lower-case it, split it into words, map each word's UTF-8
bytes to printable characters, mark the word's end with ``</w>``, then merge the adjacent
pair with the lowest merge rank until no ranked pair remains.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from kiln.engine.errors import KilnError

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"

WINDOW = 75
"""Tokens SD sees in one chunk, not counting the start and end markers."""

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
# CLIP uses 48,894 merges (its vocabulary is 49,408 entries: 256 bytes, 256 bytes with
# </w>, the merges, and the two markers).
_MERGE_COUNT = 49152 - 256 - 2
_VOCAB_SIZE = 49408
_WORD_PATTERN = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"


class TokenizerUnavailable(KilnError):
    """The shipped tokenizer files are missing or damaged; token counts cannot be exact."""


def tokenizer_dir() -> Path:
    """The folder of the SD 1.5 tokenizer Kiln ships (``vocab.json``, ``merges.txt``)."""
    return Path(str(resources.files("kiln.engine.models") / "configs" / "sd15" / "tokenizer"))


def bytes_to_unicode() -> dict[int, str]:
    """A reversible map from the 256 byte values to printable characters.

    Printable Latin-1 bytes map to themselves; the others (controls, space, soft hyphen)
    are moved to code points from 256 up, so that no BPE symbol is whitespace.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping: dict[int, str] = {byte: chr(byte) for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + shifted)
            shifted += 1
    return mapping


def clean_text(text: str) -> str:
    """Normalise a caption the way the trainer's tokenizer does before splitting it into words.

    Kohya and diffusers tokenize with transformers' ``CLIPTokenizer``, which (unlike
    OpenAI's reference code) does not unescape HTML entities: ``&amp;`` reaches the text
    encoder as five characters, so it is counted as such here.
    """
    try:
        import ftfy  # optional: repairs mojibake as CLIP's own tokenizer does

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = unicodedata.normalize("NFC", text)
    return re.sub(r"\s+", " ", text).strip().lower()


@dataclass(frozen=True)
class TokenCount:
    """One caption's length in CLIP tokens.

    Attributes:
        tokens: Tokens without the start and end markers.
        window: The window the caption is judged against (75).
    """

    tokens: int
    window: int = WINDOW

    @property
    def over(self) -> bool:
        """Whether the caption is longer than one window (SD 1.x drops or chunks the rest)."""
        return self.tokens > self.window


class ClipTokenizer:
    """CLIP's byte-level BPE tokenizer, built from a tokenizer folder (``vocab.json``, ``merges.txt``)."""

    def __init__(self, path: Path) -> None:
        import regex  # a dependency of transformers; needed for \\p{L} classes

        self.encoder: dict[str, int] = _read_vocab(path / VOCAB_FILE)
        merges = _read_merges(path / MERGES_FILE)
        self.byte_encoder = bytes_to_unicode()
        self.ranks: dict[tuple[str, str], int] = {pair: rank for rank, pair in enumerate(merges)}
        self.start_id = self.encoder[START_TOKEN]
        self.end_id = self.encoder[END_TOKEN]
        self.path = path
        self._words = regex.compile(_WORD_PATTERN, regex.IGNORECASE)
        self._cache: dict[str, tuple[str, ...]] = {START_TOKEN: (START_TOKEN,), END_TOKEN: (END_TOKEN,)}

    def bpe(self, word: str) -> tuple[str, ...]:
        """Split one word (already byte-mapped) into vocabulary symbols."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            best_rank, best_at = None, -1
            for index in range(len(parts) - 1):
                rank = self.ranks.get((parts[index], parts[index + 1]))
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best_at = rank, index
            if best_rank is None:
                break
            first, second = parts[best_at], parts[best_at + 1]
            # Merge every occurrence of the best pair in one pass, left to right.
            merged: list[str] = []
            index = 0
            while index < len(parts):
                if index < len(parts) - 1 and parts[index] == first and parts[index + 1] == second:
                    merged.append(first + second)
                    index += 2
                else:
                    merged.append(parts[index])
                    index += 1
            parts = merged
        result = tuple(parts)
        if len(self._cache) < 100_000:
            self._cache[word] = result
        return result

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without the start and end markers."""
        ids: list[int] = []
        for word in self._words.findall(clean_text(text)):
            mapped = "".join(self.byte_encoder[byte] for byte in word.encode("utf-8"))
            ids.extend(self.encoder[symbol] for symbol in self.bpe(mapped))
        return ids

    def ids(self, text: str) -> list[int]:
        """Token ids as the text encoder receives them: start marker, tokens, end marker."""
        return [self.start_id, *self.encode(text), self.end_id]

    def count(self, text: str) -> TokenCount:
        """How many of the 75 window tokens ``text`` takes."""
        return TokenCount(tokens=len(self.encode(text)))

    def counts(self, texts: Iterable[str]) -> list[TokenCount]:
        """Token counts of many captions."""
        return [self.count(text) for text in texts]


def _damaged(path: Path, why: str) -> TokenizerUnavailable:
    return TokenizerUnavailable(f"{path}: {why}; reinstall Kiln (pip install --force-reinstall lora-kiln)")


def _read_vocab(path: Path) -> dict[str, int]:
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _damaged(path, f"cannot read CLIP's vocabulary ({exc})") from exc
    if not isinstance(vocab, dict) or len(vocab) != _VOCAB_SIZE or START_TOKEN not in vocab:
        raise _damaged(path, f"not CLIP's vocabulary (expected {_VOCAB_SIZE} entries)")
    return {str(token): int(index) for token, index in vocab.items()}


def _read_merges(path: Path) -> list[tuple[str, str]]:
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise _damaged(path, f"cannot read CLIP's merges ({exc})") from exc
    # The first line is a version header; CLIP keeps the next _MERGE_COUNT merges.
    pairs = [line.split() for line in lines[1 : _MERGE_COUNT + 1]]
    if len(pairs) != _MERGE_COUNT or any(len(pair) != 2 for pair in pairs):
        raise _damaged(path, f"not CLIP's BPE merges (expected {_MERGE_COUNT} merge lines)")
    return [(first, second) for first, second in pairs]


@lru_cache(maxsize=4)
def _tokenizer_at(path: Path) -> ClipTokenizer:
    return ClipTokenizer(path)


def load_tokenizer(path: Path | None = None) -> ClipTokenizer:
    """The CLIP tokenizer of ``path`` (default: the one Kiln ships), built once per process.

    Raises:
        TokenizerUnavailable: The tokenizer files are missing or damaged; the message names
            the file and the fix.
    """
    return _tokenizer_at(path or tokenizer_dir())


def try_load_tokenizer() -> tuple[ClipTokenizer | None, str | None]:
    """The tokenizer, or None and the one-line reason it is unavailable (for lint and the TUI)."""
    try:
        return load_tokenizer(), None
    except TokenizerUnavailable as exc:
        return None, str(exc)
