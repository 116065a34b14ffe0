"""A small modal that asks a yes/no question before something that replaces files."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class YesNoScreen(ModalScreen[bool]):
    """Dismisses with True for ``y``, False for ``n`` or escape (the safe answer)."""

    DEFAULT_CSS = """
    YesNoScreen {
        align: center middle;
    }
    YesNoScreen > Vertical {
        width: 64;
        max-width: 95%;
        height: auto;
        border: thick $warning;
        background: $surface;
        padding: 1 2;
    }
    YesNoScreen .keys {
        color: $text-muted;
        margin-top: 1;
    }
    """

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="yes_no.yes", tooltip="Go ahead"),
        Binding("n", "answer(False)", "No", id="yes_no.no", tooltip="Change nothing"),
        Binding("escape", "answer(False)", "No", show=False, id="yes_no.escape", tooltip="Change nothing"),
    ]

    def __init__(self, title: str, question: str, yes: str = "yes") -> None:
        super().__init__()
        self.title_text = title
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.title_text, style="bold"))
            yield Static(self.question, markup=False)
            yield Static(f"[b]y[/b] {self.yes}   [b]n[/b]/[b]esc[/b] no, change nothing", classes="keys")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
