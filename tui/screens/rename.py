"""The confirmation before a concept folder is renamed to carry new repeats."""

from __future__ import annotations

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class RenameConceptScreen(ModalScreen[bool]):
    """Asks before ``10_cat`` becomes ``35_cat``; dismisses True to rename, False to leave it.

    Args:
        folder: The concept folder now.
        new_folder: Its new name.
        images: How many images it holds (all of them move with it).
    """

    DEFAULT_CSS = """
    RenameConceptScreen {
        align: center middle;
    }
    RenameConceptScreen > Vertical {
        width: 64;
        max-width: 95%;
        height: auto;
        border: thick $warning;
        background: $surface;
        padding: 1 2;
    }
    RenameConceptScreen .keys {
        color: $text-muted;
        margin-top: 1;
    }
    """

    BINDINGS = [
        Binding("y", "answer(True)", "Rename", id="rename.yes", tooltip="Rename the folder"),
        Binding("enter", "answer(True)", "Rename", show=False, id="rename.yes_enter", tooltip="Rename"),
        Binding("n", "answer(False)", "Cancel", show=False, id="rename.no", tooltip="Leave the folder"),
        Binding("escape", "answer(False)", "Cancel", id="rename.cancel", tooltip="Leave the folder as it is"),
    ]

    def __init__(self, folder: str, new_folder: str, images: int) -> None:
        super().__init__()
        self.folder = folder
        self.new_folder = new_folder
        self.images = images

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"[b]Rename[/b] {escape(self.folder)}/ [b]->[/b] {escape(self.new_folder)}/ ?")
            yield Static(
                f"Kohya reads repeats from the folder name. The folder and its {self.images} image(s) "
                "move; files are not changed, the selection and cached analyses follow them. An "
                "existing folder of that name is never overwritten."
            )
            yield Static("[b]y[/b]/[b]enter[/b] rename   [b]n[/b]/[b]esc[/b] cancel", classes="keys")

    def action_answer(self, rename: bool) -> None:
        self.dismiss(rename)
