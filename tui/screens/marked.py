"""What to do with the images marked in the dataset table (``m`` marks, ``a`` opens this).

A letter picks the action; the tag and concept actions then ask for their word in a field
that completes from the dataset's tags or concept folders (right arrow accepts).
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Static

# (key, action, what it does, the field's prompt; None: no field)
ACTIONS: list[tuple[str, str, str, str | None]] = [
    ("i", "include", "include them", None),
    ("x", "exclude", "exclude them", None),
    ("t", "add_tag", "add a tag to their captions", "tag to add (at the end)"),
    ("d", "remove_tag", "remove a tag from their captions", "tag to remove"),
    ("c", "move", "move them to a concept folder", "concept folder, e.g. 10_cat (made if missing)"),
    ("u", "unmark", "clear the marks", None),
]


class MarkedScreen(ModalScreen[tuple[str, str] | None]):
    """Dismisses ``(action, word)`` (word "" for actions without one), or None to do nothing."""

    DEFAULT_CSS = """
    MarkedScreen {
        align: center middle;
    }
    MarkedScreen > Vertical {
        width: 64;
        max-width: 95%;
        height: auto;
        border: thick $primary;
        background: $surface;
        padding: 1 2;
    }
    MarkedScreen #word {
        margin-top: 1;
        display: none;
    }
    MarkedScreen .keys {
        color: $text-muted;
        margin-top: 1;
    }
    """

    AUTO_FOCUS = ""  # the field only once an action asks for a word: letters pick actions

    BINDINGS = [
        *(
            Binding(key, f"choose('{action}')", text, show=False, id=f"marked.{action}", tooltip=text)
            for key, action, text, _ in ACTIONS
        ),
        Binding("escape", "close", "Cancel", id="marked.cancel", tooltip="Change nothing"),
    ]

    def __init__(self, count: int, tag_names: list[str], folders: list[str]) -> None:
        super().__init__()
        self.count = count
        self.tag_names = tag_names
        self.folders = folders
        self.action_name: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"[b]{self.count} marked image(s)[/b]")
            yield Static("\n".join(f"  [b]{key}[/b]  {text}" for key, _, text, _ in ACTIONS), id="choices")
            yield Input(id="word", select_on_focus=False)
            yield Static("esc cancels", classes="keys", id="keys")

    def action_choose(self, action: str) -> None:
        if self.action_name is not None:
            return  # typing in the field
        prompt = next(prompt for _, name, _, prompt in ACTIONS if name == action)
        if prompt is None:
            self.dismiss((action, ""))
            return
        self.action_name = action
        word = self.query_one("#word", Input)
        word.placeholder = prompt
        choices = self.folders if action == "move" else self.tag_names
        word.suggester = SuggestFromList(choices, case_sensitive=False)
        word.display = True
        word.focus()
        self.query_one("#keys", Static).update("enter does it · → completes · esc cancels")

    @on(Input.Submitted, "#word")
    def submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if text and self.action_name is not None:
            self.dismiss((self.action_name, text))

    def action_close(self) -> None:
        self.dismiss(None)
