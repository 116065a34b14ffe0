"""The image preview: the picture and its 4-tone posterized twin side by side.

The terminal graphics protocol is chosen once at start-up (``--images``): textual-image's
automatic choice, a forced one (tgp, sixel, halfcell, unicode), or ``none`` to show no
pictures at all (fast over slow links, deterministic in tests).
"""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image as PILImage
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Static

# textual-image's widget classes take the picture first: ``cls(picture_or_None, id=..., ...)``.
ImageWidgetClass = Callable[..., Widget]


def image_widget_class(mode: str) -> ImageWidgetClass | None:
    """The textual-image widget class for a mode, or None for ``none``.

    Importing textual-image probes the terminal, so callers do this before ``App.run()``.
    """
    if mode == "none":
        return None
    from textual_image import widget

    return {
        "auto": widget.Image,
        "tgp": widget.TGPImage,
        "sixel": widget.SixelImage,
        "halfcell": widget.HalfcellImage,
        "unicode": widget.UnicodeImage,
    }[mode]


class ImagePreview(Widget):
    """Two image panes with captions; ``show`` swaps the pictures, ``show_message`` explains."""

    DEFAULT_CSS = """
    ImagePreview {
        height: 1fr;
        min-height: 6;
    }
    ImagePreview Horizontal {
        height: 1fr;
    }
    ImagePreview .pane {
        width: 1fr;
        height: 1fr;
    }
    ImagePreview .picture {
        width: 1fr;
        height: 1fr;
    }
    ImagePreview .label {
        height: 1;
        color: $text-muted;
        text-align: center;
        width: 1fr;
    }
    ImagePreview #preview-message {
        height: 1fr;
        color: $text-muted;
        content-align: center middle;
    }
    """

    def __init__(self, mode: str = "auto", title: str = "picture", **kwargs) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        self.pane_title = title
        self._widget_class = image_widget_class(mode)

    def compose(self) -> ComposeResult:
        if self._widget_class is None:
            yield Static("previews off (--images none)", id="preview-message")
            return
        with Horizontal():
            with Vertical(classes="pane"):
                yield self._widget_class(None, id="picture", classes="picture")
                yield Static(self.pane_title, classes="label")
            with Vertical(classes="pane"):
                yield self._widget_class(None, id="posterized", classes="picture")
                yield Static(
                    "4 tones" if self.pane_title == "picture" else f"{self.pane_title} · 4 tones",
                    classes="label",
                )
        yield Static("", id="preview-message")

    def show(self, picture: PILImage.Image, posterized: PILImage.Image) -> None:
        """Show a pair of images (already downscaled off the UI thread)."""
        if self._widget_class is None:
            return
        self.query_one("#picture").image = picture  # type: ignore[attr-defined]
        self.query_one("#posterized").image = posterized  # type: ignore[attr-defined]
        self.query_one("#preview-message", Static).display = False
        self.query_one(Horizontal).display = True

    def show_message(self, message: str) -> None:
        """Replace the pictures with a message (no image selected, decode error...)."""
        if self._widget_class is not None:
            self.query_one(Horizontal).display = False
        note = self.query_one("#preview-message", Static)
        note.update(message)
        note.display = True
