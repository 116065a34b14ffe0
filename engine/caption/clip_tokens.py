"""Exact CLIP token counts, offline: a byte-level BPE over OpenAI's own vocabulary file.

Stable Diffusion 1.x reads captions through CLIP's tokenizer and sees 75 tokens at a time
(77 with the start and end markers). Counting words or characters misjudges that window,
so Kiln tokenizes for real. The vocabulary (``bpe_simple_vocab_16e6.txt.gz``, the merges
OpenAI published with CLIP) ships inside the PyPI packages ``clip-anytorch`` and
``open-clip-torch``. Kiln finds the file through the installed packages' metadata without
importing them (both import torchvision, which we must not require), or through the
``KILN_CLIP_VOCAB`` environment variable. Nothing is downloaded.

The algorithm follows CLIP's published tokenizer: clean the text (ftfy when installed,
Unicode NFC, whitespace), lower-case it, split it into words, map each word's UTF-8
bytes to printable characters, mark the word's end with ``</w>``, then merge the adjacent
pair with the lowest merge rank until no ranked pair remains.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import os
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from kiln.engine.errors import KilnError

VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_ENV = "KILN_CLIP_VOCAB"
# Distribution name -> top-level package that holds the vocabulary file.
VOCAB_PACKAGES: tuple[tuple[str, str], ...] = (("clip-anytorch", "clip"), ("open_clip_torch", "open_clip"))
INSTALL_HINT = "pip install --no-deps clip-anytorch"

WINDOW = 75
"""Tokens SD 1.x sees in one chunk, not counting the start and end markers."""

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
# CLIP uses the first 48,894 merges of the file (its vocabulary is 49,408 entries:
# 256 bytes, 256 bytes with </w>, the merges, and the two markers).
_MERGE_COUNT = 49152 - 256 - 2
_WORD_PATTERN = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"


class TokenizerUnavailable(KilnError):
    """The CLIP vocabulary file is not installed; token counts cannot be exact."""


def vocab_path() -> Path | None:
    """Where the CLIP vocabulary lies on this machine, or None when it is not installed.

    Looks at ``$KILN_CLIP_VOCAB``, then the installed files of ``clip-anytorch`` and
    ``open-clip-torch`` (from their metadata), then their package folders; never imports them.
    """
    override = os.environ.get(VOCAB_ENV)
    if override:
        path = Path(override).expanduser()
        return path if path.is_file() else None
    for distribution, package in VOCAB_PACKAGES:
        found = _vocab_from_metadata(distribution) or _vocab_from_spec(package)
        if found is not None:
            return found
    return None


def _vocab_from_metadata(distribution: str) -> Path | None:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or []:
        if entry.name == VOCAB_NAME:
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    return None


def _vocab_from_spec(package: str) -> Path | None:
    # find_spec on a top-level name locates the package without executing it.
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / VOCAB_NAME
        if path.is_file():
            return path
    return None


def unavailable_message() -> str:
    """The one line shown wherever a token count cannot be given."""
    return (
        f"CLIP token counts unavailable: {VOCAB_NAME} not found; install it with "
        f"`{INSTALL_HINT}` (or point {VOCAB_ENV} at the file)"
    )


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
    """CLIP's byte-level BPE tokenizer, built from the vocabulary file."""

    def __init__(self, path: Path) -> None:
        import regex  # a dependency of transformers; needed for \\p{L} classes

        merges = _read_merges(path)
        self.byte_encoder = bytes_to_unicode()
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [symbol + "</w>" for symbol in symbols]
        vocab += ["".join(pair) for pair in merges]
        vocab += [START_TOKEN, END_TOKEN]
        self.encoder: dict[str, int] = {token: index for index, token in enumerate(vocab)}
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


def _read_merges(path: Path) -> list[tuple[str, str]]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise TokenizerUnavailable(
            f"{path}: cannot read the CLIP vocabulary ({exc}); reinstall it with `{INSTALL_HINT}`"
        ) from exc
    # The first line is a version header; CLIP keeps the next _MERGE_COUNT merges.
    merges = [tuple(line.split()) for line in lines[1 : _MERGE_COUNT + 1]]
    if len(merges) != _MERGE_COUNT or any(len(pair) != 2 for pair in merges):
        raise TokenizerUnavailable(
            f"{path}: not CLIP's BPE vocabulary (expected {_MERGE_COUNT} merge lines); "
            f"reinstall it with `{INSTALL_HINT}`"
        )
    return merges  # type: ignore[return-value]


@lru_cache(maxsize=4)
def _tokenizer_at(path: Path) -> ClipTokenizer:
    return ClipTokenizer(path)


def load_tokenizer() -> ClipTokenizer:
    """The CLIP tokenizer (built once per process; about 0.3 s).

    Raises:
        TokenizerUnavailable: The vocabulary is not installed or is damaged; the message
            says how to install it.
    """
    path = vocab_path()
    if path is None:
        raise TokenizerUnavailable(unavailable_message())
    return _tokenizer_at(path)


def try_load_tokenizer() -> tuple[ClipTokenizer | None, str | None]:
    """The tokenizer, or None and the one-line reason it is unavailable (for lint and the TUI)."""
    try:
        return load_tokenizer(), None
    except TokenizerUnavailable as exc:
        return None, str(exc)
