"""The preview of a batch tag operation: every caption it would change, before and after."""

from __future__ import annotations

from pathlib import Path

from kiln.engine.caption.tags import CaptionChange, TagPlan
from kiln.engine.caption.tagtext import SEPARATOR, split_tags, tag_key
from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

SHOWN = 400
"""Changes drawn at most; the rest are counted (applying still writes them all)."""


def marked_caption(pieces: list[str], others: list[str], style: str) -> Text:
    """A caption's pieces joined, those missing from ``others`` drawn in ``style``."""
    other_keys = {tag_key(piece) for piece in others}
    text = Text()
    for index, piece in enumerate(pieces):
        if index:
            text.append(SEPARATOR)
        text.append(piece, style="" if tag_key(piece) in other_keys else style)
    return text


def change_text(change: CaptionChange, root: Path) -> Text:
    """Three lines for one change: the caption file, ``- before`` and ``+ after``.

    Pieces the operation removes are struck through in red, pieces it adds are green, so
    a reorder (front, sort) shows as the same pieces in a new order.
    """
    before = split_tags(change.before or "")
    after = split_tags(change.after)
    try:
        name = change.caption_path.relative_to(root).as_posix()
    except ValueError:
        name = str(change.caption_path)
    text = Text(name, style="bold")
    text.append("\n- ", style="red")
    if change.before is None:
        text.append("(no caption file)", style="dim italic")
    else:
        text.append_text(marked_caption(before, after, "red strike"))
    text.append("\n+ ", style="green")
    text.append_text(marked_caption(after, before, "green bold"))
    return text


class CaptionDiff(OptionList):
    """A scrollable list of the captions a plan changes (one option per caption)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.plan: TagPlan | None = None

    def show_plan(self, plan: TagPlan, root: Path) -> None:
        """Draw ``plan``'s changes (the first :data:`SHOWN` of them)."""
        self.plan = plan
        options: list[Option] = [
            Option(change_text(change, root), id=change.image) for change in plan.changes[:SHOWN]
        ]
        hidden = len(plan.changes) - SHOWN
        if hidden > 0:
            options.append(
                Option(Text(f"… and {hidden} more caption(s), applied too", style="dim"), disabled=True)
            )
        for image, reason in plan.skipped:
            options.append(Option(Text(f"skipped {image}: {reason}", style="yellow"), disabled=True))
        self.set_options(options)
        if plan.changes:
            self.highlighted = 0

    def clear_plan(self) -> None:
        """Show nothing (the form changed since the preview)."""
        self.plan = None
        self.clear_options()
