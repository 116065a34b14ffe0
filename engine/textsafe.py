"""File names as a table shows them: control characters escaped, so a name holding a newline
or an escape sequence takes one line and cannot move the cursor or forge another row."""

from __future__ import annotations

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shown_name(text: str) -> str:
    """``text`` with each control character written as an escape (``\\n``, ``\\x1b``...)."""
    if text.isprintable():
        return text
    return "".join(
        _ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 32 or ord(char) == 127 else char)
        if not char.isprintable()
        else char
        for char in text
    )
