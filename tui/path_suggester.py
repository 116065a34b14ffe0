"""Path completion for inputs that take a file or folder: the rest of the first matching name.

Typing a model path over SSH is where a user slips; the input shows the completion dimmed and
the right arrow (or end) accepts it, one path level at a time, as a shell's autosuggestion does.
"""

from __future__ import annotations

import os
from pathlib import Path

from textual.suggester import Suggester

# Folders with more entries than this are not worth scanning on every keystroke.
MAX_ENTRIES = 2000


class PathSuggester(Suggester):
    """Suggest the first (sorted) file or folder whose name continues what was typed.

    Hidden entries are offered only once the typed name starts with a dot. Folders get a
    trailing ``/`` so the next level can be completed straight away.
    """

    def __init__(self) -> None:
        # The file system changes under us: never cache.
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        """The typed value completed to the first matching entry, or None."""
        return path_completion(value)


def path_completion(value: str) -> str | None:
    """``value`` completed to the first entry of its folder whose name starts with its last part."""
    if not value or value.endswith(("/.", "/..")) or value in (".", "..", "~"):
        return None
    if "/" in value:
        folder_text, _, stem = value.rpartition("/")
        folder = Path(os.path.expanduser(folder_text or "/"))
    else:
        folder, stem = Path("."), value
    try:
        with os.scandir(folder) as entries:
            names = []
            for count, entry in enumerate(entries):
                if count >= MAX_ENTRIES:
                    return None
                if entry.name.startswith(stem) and (stem.startswith(".") or not entry.name.startswith(".")):
                    names.append((entry.name, entry.is_dir()))
    except OSError:
        return None
    for name, is_dir in sorted(names):
        if name == stem and not is_dir:
            continue
        rest = name[len(stem) :] + ("/" if is_dir else "")
        if rest:
            return value + rest
    return None
