"""The caption editor: a TextArea that knows the on-disk text, so edits are never lost silently."""

from __future__ import annotations

from kiln.engine.caption.clip_tokens import WINDOW, ClipTokenizer, try_load_tokenizer
from kiln.engine.dataset.captions import Caption
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static, TextArea

# The CLIP tokenizer, loaded once per process off the UI thread (about 0.2 s): None until
# then, and for good when the vocabulary is not installed (the editor counts words instead).
_tokenizer: ClipTokenizer | None = None
_tokenizer_loaded = False


def token_count_text(text: str, tokenizer: ClipTokenizer | None) -> tuple[str, bool]:
    """``23/75 tokens`` and whether it is past CLIP's window; the word count without a tokenizer."""
    if tokenizer is None:
        return f"{len(text.split())} words", False
    count = tokenizer.count(text).tokens
    if count > WINDOW:
        return f"{count}/{WINDOW} tokens: over the window", True
    return f"{count}/{WINDOW} tokens", False


def caption_end(text: str) -> tuple[int, int]:
    """Where typing extends a caption: after its last character, before any final newlines."""
    lines = text.rstrip("\n").split("\n")
    return len(lines) - 1, len(lines[-1])


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
    CaptionEditor #caption-status.-over {
        color: $warning;
        text-style: bold;
    }
    """

    tokens_ready = False
    """Whether token counting is settled: the tokenizer loaded, or known to be unavailable."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rel_path: str | None = None
        self.saved_text = ""
        self.lossy = False

    def compose(self) -> ComposeResult:
        yield TextArea("", id="caption-text", soft_wrap=True, show_line_numbers=False)
        yield Static("", id="caption-status")

    def on_mount(self) -> None:
        if _tokenizer_loaded:
            self.tokens_ready = True
        else:
            self.run_worker(self._load_tokenizer, thread=True, exclusive=True, group="tokenizer")

    def _load_tokenizer(self) -> None:
        """Build the CLIP tokenizer in a thread, then count the shown caption's tokens."""
        global _tokenizer, _tokenizer_loaded
        tokenizer, _ = try_load_tokenizer()
        _tokenizer, _tokenizer_loaded = tokenizer, True
        self.post_message(self.TokensReady())

    class TokensReady(Message):
        """The tokenizer finished loading (or is known to be missing)."""

    def on_caption_editor_tokens_ready(self, event: TokensReady) -> None:
        event.stop()
        self.tokens_ready = True
        self.update_status()

    @property
    def tokenizer(self) -> ClipTokenizer | None:
        """The CLIP tokenizer once loaded (None before, or when the vocabulary is missing)."""
        return _tokenizer

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
        """Refresh the status line under the editor: the length in CLIP tokens, and the state.

        The count is exact (CLIP's own BPE) once the tokenizer is loaded, so the user sees
        when a caption runs past the 75 tokens SD 1.x reads; without the vocabulary it is
        the word count.
        """
        over = False
        if self.rel_path is None:
            message = "no image selected"
        elif self.dirty:
            message, over = token_count_text(self.text, _tokenizer)
            message += " · modified: ctrl+s saves, esc cancels"
        elif self.lossy and not note:
            message = "not valid UTF-8: shown with replacement characters; saved only if you edit it"
        elif self.saved_text.strip():
            message, over = token_count_text(self.saved_text, _tokenizer)
            if note:
                message += f" · {note}"
        else:
            message = note or "no caption"
        status = self.query_one("#caption-status", Static)
        status.update(message)
        status.set_class(over, "-over")

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        event.stop()
        self.update_status()
