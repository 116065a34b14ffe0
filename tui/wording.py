"""Small wording helpers shared by the sections, so one thing reads the same everywhere."""

from __future__ import annotations


def quoted(text: str) -> str:
    """``text`` in single quotes as typed: a Windows path keeps single backslashes (``repr``
    would double them, and the user would not recognise what they typed)."""
    return f"'{text}'"


def percent(part: float, whole: float) -> int:
    """``part`` of ``whole`` as a whole percent, rounded down: 100 only once it is all there.

    The one rounding for percentages in the workbench, so one value never reads 4 % in one
    place and 5 % in another.
    """
    if whole <= 0:
        return 0
    return int(100 * part // whole)


def packed(parts: list[str], width: int, gap: str = "  ") -> str:
    """``parts`` joined by ``gap``, starting a new line where the next part would not fit in
    ``width``, so each part ("lr 1.0e-04 / te 2.0e-05") stays whole (width 0: one line)."""
    lines: list[str] = []
    for part in parts:
        if lines and (width <= 0 or len(lines[-1]) + len(gap) + len(part) <= width):
            lines[-1] += gap + part
        else:
            lines.append(part)
    return "\n".join(lines)
