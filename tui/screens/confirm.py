"""Small modals: what to do with an unsaved caption edit, and yes-or-no questions."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Static


class UnsavedEditScreen(ModalScreen[str]):
    """Dismisses with ``"save"``, ``"discard"`` or ``"keep"``."""

    DEFAULT_CSS = """
    UnsavedEditScreen {
        align: center middle;
    }
    UnsavedEditScreen > Vertical {
        width: 60;
        max-width: 90%;
        height: auto;
        border: thick $warning;
        background: $surface;
        padding: 1 2;
    }
    UnsavedEditScreen .keys {
        color: $text-muted;
        margin-top: 1;
    }
    """

    BINDINGS = [
        Binding("s", "choose('save')", "Save", id="unsaved.save", tooltip="Write the caption, then go on"),
        Binding("d", "choose('discard')", "Discard", id="unsaved.discard", tooltip="Throw the edit away"),
        Binding("escape", "choose('keep')", "Keep editing", id="unsaved.keep", tooltip="Go back to the edit"),
    ]

    def __init__(self, rel_path: str, reason: str) -> None:
        super().__init__()
        self.rel_path = rel_path
        self.reason = reason

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"[b]Unsaved caption[/b] for {self.rel_path}")
            yield Static(self.reason)
            yield Static("[b]s[/b] save   [b]d[/b] discard   [b]esc[/b] keep editing", classes="keys")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; dismisses with True for ``y``, False for ``n`` or escape."""

    DEFAULT_CSS = """
    ConfirmScreen {
        align: center middle;
    }
    ConfirmScreen > Vertical {
        width: 64;
        max-width: 90%;
        height: auto;
        border: thick $warning;
        background: $surface;
        padding: 1 2;
    }
    ConfirmScreen .keys {
        color: $text-muted;
        margin-top: 1;
    }
    """

    BINDINGS = [
        Binding("y", "choose(True)", "Yes", id="confirm.yes", tooltip="Go ahead"),
        Binding("n", "choose(False)", "No", id="confirm.no", tooltip="Leave things as they are"),
        Binding(
            "escape",
            "choose(False)",
            "No",
            show=False,
            id="confirm.escape",
            tooltip="Leave things as they are",
        ),
    ]

    def __init__(self, title: str, message: str, yes: str = "go ahead") -> None:
        super().__init__()
        self.title_text = title
        self.message = message
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"[b]{escape(self.title_text)}[/b]")
            yield Static(escape(self.message))
            yield Static(f"[b]y[/b] {escape(self.yes)}   [b]n[/b]/[b]esc[/b] no", classes="keys")

    def action_choose(self, choice: bool) -> None:
        self.dismiss(choice)
