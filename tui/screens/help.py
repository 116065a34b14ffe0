"""The ``?`` help screen: every key of the screen below it and of the app, with what it does."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Static


def binding_rows(screen: Screen) -> list[tuple[str, str, str]]:
    """(key, description, tooltip) for the screen's and the app's bindings, screen first.

    Kiln's own widgets (their bindings carry an id) add theirs when they hold the focus or
    contain it, so keys that work only there (the tiles grid's) are listed too.
    """
    rows = []
    seen = set()
    focused: list[DOMNode] = []
    node: DOMNode | None = screen.focused
    while node is not None and node is not screen:
        focused.append(node)
        node = node.parent
    for source in (screen, *reversed(focused), screen.app):
        from_widget = source is not screen and source is not screen.app
        for binding in getattr(source, "BINDINGS", []):
            if not isinstance(binding, Binding) or binding.id in seen:
                continue
            if from_widget and binding.id is None:
                continue  # Textual's built-in widget keys
            seen.add(binding.id)
            key = binding.key_display or binding.key
            rows.append((key, binding.description or binding.action, binding.tooltip))
    return rows


class HelpScreen(ModalScreen[None]):
    """Lists keys; any of escape, q or ? closes it."""

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > VerticalScroll {
        width: 90;
        max-width: 95%;
        height: auto;
        max-height: 90%;
        border: thick $primary;
        background: $surface;
        padding: 0 1;
    }
    """

    BINDINGS = [
        Binding("escape", "close", "Close", id="help.close", tooltip="Close the help"),
        Binding("question_mark", "close", "Close", show=False, id="help.close_q", tooltip="Close the help"),
        Binding("q", "close", "Close", show=False, id="help.close_quit", tooltip="Close the help"),
    ]

    def __init__(self, underlying: Screen) -> None:
        super().__init__()
        self.underlying = underlying

    def compose(self) -> ComposeResult:
        table = Table(title="Kiln keys", expand=True, show_edge=False)
        table.add_column("key", style="bold", no_wrap=True)
        table.add_column("does")
        table.add_column("why / details", style="dim")
        for key, description, tooltip in binding_rows(self.underlying):
            table.add_row(key, description, tooltip)
        with VerticalScroll():
            yield Static(table)
            yield Static(
                "Over SSH/tmux: keys are letters, digits, F-keys, ctrl+letter, arrows, space, enter "
                "and escape, so they all survive. ctrl+p opens the command palette (themes, actions).",
                classes="note",
            )

    def action_close(self) -> None:
        self.dismiss(None)
