"""A one-line bar naming the workbench's sections and the digit that opens each."""

from __future__ import annotations

from kiln.tui.sections import SECTIONS
from rich.text import Text
from textual.widget import Widget


class SectionBar(Widget):
    """``1 Dataset  2 Plan  ...`` with the current section highlighted."""

    DEFAULT_CSS = """
    SectionBar {
        height: 1;
        dock: top;
        background: $panel;
        color: $text-muted;
    }
    """

    def __init__(self, current: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.current = current

    def render(self) -> Text:
        text = Text(" ")
        for section in SECTIONS:
            active = section.name == self.current
            style = "bold reverse" if active else ""
            text.append(f" {section.key} {section.title} ", style=style)
            text.append(" ")
        # The dataset's folder name on the right, so a tmux pane says what it shows.
        name = getattr(self.app, "dataset_name", "")
        gap = self.size.width - text.cell_len - len(name) - 1
        if name and gap > 1:
            text.append(" " * gap + name, style="dim")
        return text
