"""Sample previews: one prompt's epoch-0 baseline next to a trained epoch's sample, or several runs'.

Pictures are decoded and downscaled by the caller in a worker; this widget only shows them.
With ``--images none`` it lists the files instead.
"""

from __future__ import annotations

from pathlib import Path

from kiln.tui.widgets.image_preview import image_widget_class
from PIL import Image as PILImage
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Static

PREVIEW_SIDE = 256


def load_thumbnail(path: Path, side: int = PREVIEW_SIDE) -> PILImage.Image | None:
    """A sample image as RGB, at most ``side`` pixels (call from a worker); None if unreadable."""
    try:
        with PILImage.open(path) as image:
            picture = image.convert("RGB")
    except OSError:
        return None
    picture.thumbnail((side, side))
    return picture


class SampleGrid(Widget):
    """A row of labelled image panes; :meth:`show` fills them, :meth:`show_message` explains."""

    DEFAULT_CSS = """
    SampleGrid {
        height: 1fr;
        min-height: 5;
    }
    SampleGrid #sample-panes {
        height: 1fr;
    }
    SampleGrid .pane {
        width: 1fr;
        height: 1fr;
    }
    SampleGrid .picture {
        width: 1fr;
        height: 1fr;
    }
    SampleGrid .label {
        height: 1;
        width: 1fr;
        color: $text-muted;
        text-align: center;
    }
    SampleGrid #sample-title {
        height: 1;
        color: $text-muted;
    }
    SampleGrid #sample-message {
        height: 1fr;
        color: $text-muted;
        padding: 0 1;
    }
    """

    def __init__(self, mode: str = "auto", panes: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        self.panes = panes
        self._widget_class = image_widget_class(mode)

    def compose(self) -> ComposeResult:
        yield Static("", id="sample-title")
        with Horizontal(id="sample-panes"):
            for index in range(self.panes):
                with Vertical(classes="pane", id=f"pane-{index}"):
                    if self._widget_class is not None:
                        yield self._widget_class(None, classes="picture", id=f"picture-{index}")
                    else:
                        yield Static("", classes="picture", id=f"picture-{index}")
                    yield Static("", classes="label", id=f"label-{index}")
        yield Static("", id="sample-message")

    def on_mount(self) -> None:
        self.query_one("#sample-message", Static).display = False

    def show(self, title: str, items: list[tuple[str, Path | None, PILImage.Image | None]]) -> None:
        """Fill the panes: per pane a label, its file, and its picture (None: missing or off)."""
        self.query_one("#sample-title", Static).update(title)
        self.query_one("#sample-message", Static).display = False
        self.query_one("#sample-panes").display = True
        for index in range(self.panes):
            label, path, picture = items[index] if index < len(items) else ("", None, None)
            self.query_one(f"#label-{index}", Static).update(label)
            pane = self.query_one(f"#picture-{index}")
            if self._widget_class is None:
                text = path.name if path is not None else "no sample"
                pane.update(f"\n{text}")  # type: ignore[attr-defined]
            else:
                pane.image = picture  # type: ignore[attr-defined]

    def show_message(self, message: str) -> None:
        """Replace the panes with a message (no samples yet...)."""
        self.query_one("#sample-title", Static).update("")
        self.query_one("#sample-panes").display = False
        note = self.query_one("#sample-message", Static)
        note.update(message)
        note.display = True
