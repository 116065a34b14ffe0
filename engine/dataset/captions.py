"""Caption sidecars: read them without losing bytes, write them atomically.

A caption that is not valid UTF-8 is shown with replacement characters and flagged
``lossy``; callers must only write it back when the user actually changed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiln.engine.fsutil import atomic_write_text


@dataclass(frozen=True)
class Caption:
    """A caption as read from disk.

    Attributes:
        text: The decoded text (invalid bytes replaced by U+FFFD).
        exists: Whether the sidecar file exists.
        lossy: True when the file was not valid UTF-8, so ``text`` is not byte-identical.
    """

    text: str
    exists: bool
    lossy: bool = False


def read_caption(path: Path) -> Caption:
    """Read a caption sidecar; a missing file is an empty caption, never an error."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return Caption(text="", exists=False)
    except IsADirectoryError:
        return Caption(text="", exists=False)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return Caption(text=raw.decode("utf-8"), exists=True)
    except UnicodeDecodeError:
        return Caption(text=raw.decode("utf-8", errors="replace"), exists=True, lossy=True)


def write_caption(path: Path, text: str) -> None:
    """Write a caption atomically as UTF-8 (temp file, fsync, rename)."""
    atomic_write_text(Path(path), text)


def caption_preview(text: str, width: int = 60) -> str:
    """One line of a caption for tables: whitespace collapsed, cut with an ellipsis."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: max(0, width - 1)] + "…"
