"""Caption sidecars: read them without losing bytes, write them atomically.

A caption that is not valid UTF-8 is shown with replacement characters and flagged
``lossy``; callers must only write it back when the user actually changed it.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from kiln.engine.errors import KilnError
from kiln.engine.fsutil import atomic_write_text


class CaptionError(KilnError):
    """A caption file cannot be read or written; the message names the file and the fix."""


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
    """Read a caption sidecar; a missing file is an empty caption, never an error.

    Raises:
        CaptionError: The file exists but cannot be read (permissions, I/O error).
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return Caption(text="", exists=False)
    except IsADirectoryError:
        return Caption(text="", exists=False)
    except OSError as exc:
        raise CaptionError(
            f"{path}: cannot read the caption ({exc.strerror or exc}); fix its permissions (chmod u+r)"
        ) from exc
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return Caption(text=raw.decode("utf-8"), exists=True)
    except UnicodeDecodeError:
        return Caption(text=raw.decode("utf-8", errors="replace"), exists=True, lossy=True)


def read_only_reason(path: Path) -> str | None:
    """Why a caption must not be rewritten, or None: the user made it read-only, or it is a folder.

    An atomic rename would replace a read-only file without asking, so the mode bits are
    checked by hand (as root, ``os.access`` says every file is writable).
    """
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return None
    if stat.S_ISDIR(mode):
        return f"{Path(path).name} is a folder, not a caption file; rename or remove it"
    if not mode & 0o222:
        return f"{Path(path).name} is read-only; left as is (chmod u+w {Path(path).name} to edit it)"
    return None


def write_caption(path: Path, text: str) -> None:
    """Write a caption atomically as UTF-8 (temp file, fsync, rename).

    Raises:
        CaptionError: The caption is read-only or a folder (see :func:`read_only_reason`), or
            the write failed; the message names the file.
    """
    refusal = read_only_reason(path)
    if refusal is not None:
        raise CaptionError(f"{Path(path).parent}/{refusal}")
    try:
        atomic_write_text(Path(path), text)
    except OSError as exc:
        raise CaptionError(
            f"{path}: cannot write the caption ({exc.strerror or exc}); check the folder's permissions "
            "and free space"
        ) from exc


def caption_preview(text: str, width: int = 60) -> str:
    """One line of a caption for tables: whitespace collapsed, cut with an ellipsis."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: max(0, width - 1)] + "…"
