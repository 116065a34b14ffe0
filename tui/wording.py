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
