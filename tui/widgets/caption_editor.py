"""The caption editor: a TextArea that knows the on-disk text, so edits are never lost silently."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static, TextArea

from engine.dataset.captions import Caption


class CaptionEditor(Vertical):
    """Caption of the current image, with a status line.

    ``dirty`` is True when the text differs from what is on disk. A caption that was not valid
    UTF-8 is shown with replacement characters and only written if the user changes it.
    """

    DEFAULT_CSS = """
    CaptionEditor {
        height: auto;
        max-height: 12;
    }
    CaptionEditor TextArea {
        height: auto;
        min-height: 3;
        max-height: 10;
    }
    CaptionEditor #caption-status {
        height: 1;
        color: $text-muted;
    }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rel_path: str | None = None
        self.saved_text = ""
        self.lossy = False

    def compose(self) -> ComposeResult:
        yield TextArea("", id="caption-text", soft_wrap=True, show_line_numbers=False)
        yield Static("", id="caption-status")

    @property
    def text_area(self) -> TextArea:
        """The editing widget."""
        return self.query_one("#caption-text", TextArea)

    @property
    def text(self) -> str:
        """The text as currently edited."""
        return self.text_area.text

    @property
    def dirty(self) -> bool:
        """Whether the edit differs from the caption on disk."""
        return self.rel_path is not None and self.text != self.saved_text

    def load(self, rel_path: str | None, caption: Caption | None) -> None:
        """Show a row's caption (replacing any edit: callers ask first when ``dirty``)."""
        self.rel_path = rel_path
        self.saved_text = caption.text if caption else ""
        self.lossy = bool(caption and caption.lossy)
        self.text_area.load_text(self.saved_text)
        self.text_area.read_only = rel_path is None
        self.update_status()

    def mark_saved(self) -> None:
        """The current text is now what is on disk."""
        self.saved_text = self.text
        self.lossy = False
        self.update_status("saved")

    def revert(self) -> None:
        """Throw the edit away and show the on-disk text again."""
        self.text_area.load_text(self.saved_text)
        self.update_status()

    def update_status(self, note: str | None = None) -> None:
        """Refresh the status line under the editor."""
        if self.rel_path is None:
            message = "no image selected"
        elif self.dirty:
            message = "modified: ctrl+s saves, esc cancels"
        elif note:
            message = note
        elif self.lossy:
            message = "not valid UTF-8: shown with replacement characters; saved only if you edit it"
        else:
            message = f"{len(self.saved_text.split())} words" if self.saved_text.strip() else "no caption"
        self.query_one("#caption-status", Static).update(message)

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        event.stop()
        self.update_status()
