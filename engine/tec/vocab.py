"""The probe vocabulary: the words whose meaning the TEC meter checks, each one token long."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.engine.errors import UsageError

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

WORD_FINAL = "</w>"
BUILTIN = "built-in"
FULL_VOCAB = "full vocabulary"


@dataclass(frozen=True)
class ProbeSet:
    """The words to probe and their token ids, one token each.

    Attributes:
        words: The words (for the full vocabulary: tokens, word-final ones bare, word-starting
            pieces with a trailing ``-``, so ``cat`` and ``cat-`` stay apart).
        token_ids: Each word's single token id.
        source: ``built-in``, the ``--words`` file, or ``full vocabulary``.
        skipped: Words left out because the tokenizer splits them or already has their token.
    """

    words: tuple[str, ...]
    token_ids: tuple[int, ...]
    source: str
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.words)


def read_words(path: Path | str) -> list[str]:
    """Words from a file: one a line, blank lines and ``#`` comments ignored.

    Raises:
        UsageError: The file is missing or unreadable.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such words file; give one word a line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the words file ({exc})") from None
    return _words(text)


def builtin_words() -> list[str]:
    """Kiln's list of about 2,000 common concept words (package data ``engine/tec/words.txt``)."""
    return _words(resources.files("kiln.engine.tec").joinpath("words.txt").read_text(encoding="utf-8"))


def _words(text: str) -> list[str]:
    words = []
    for line in text.splitlines():
        word = line.split("#", 1)[0].strip()
        if word:
            words.append(word)
    return words


def probe_set(
    tokenizer: CLIPTokenizer, words: Sequence[str] | None = None, source: str = BUILTIN
) -> ProbeSet:
    """The words that ``tokenizer`` encodes as exactly one token, in order, each token once.

    Only one-token words can be compared as ``[BOS, word, EOS]`` without choosing among
    sub-word pieces; with a small tokenizer few words qualify, so the meter works on whatever
    does.

    Args:
        tokenizer: The (shared) tokenizer of both encoders.
        words: The candidate words; None for the built-in list.
        source: What to call the list in reports.

    Raises:
        UsageError: Fewer than two words are a single token (nothing to compare).
    """
    wanted = builtin_words() if words is None else list(words)
    encoded = tokenizer(wanted, add_special_tokens=False)["input_ids"] if wanted else []
    special = _special_ids(tokenizer)
    kept_words: list[str] = []
    kept_ids: list[int] = []
    seen: set[int] = set()
    for word, ids in zip(wanted, encoded, strict=True):
        if len(ids) != 1 or ids[0] in seen or ids[0] in special:
            continue
        seen.add(ids[0])
        kept_words.append(word)
        kept_ids.append(ids[0])
    if len(kept_words) < 2:
        raise UsageError(
            f"only {len(kept_words)} of the {len(wanted)} {source} probe words encode to a single token with "
            "this tokenizer; pass --words FILE with words it keeps whole, or --full-vocab"
        )
    return ProbeSet(tuple(kept_words), tuple(kept_ids), source, len(wanted) - len(kept_words))


def full_vocab_probe_set(tokenizer: CLIPTokenizer) -> ProbeSet:
    """Every token of the vocabulary except the special ones, labelled readably."""
    special = _special_ids(tokenizer)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    words, ids = [], []
    for token, index in vocab:
        if index in special:
            continue
        words.append(token[: -len(WORD_FINAL)] if token.endswith(WORD_FINAL) else token + "-")
        ids.append(index)
    return ProbeSet(tuple(words), tuple(ids), FULL_VOCAB)


def _special_ids(tokenizer: CLIPTokenizer) -> set[int]:
    return {
        index
        for index in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
        if index is not None
    }
