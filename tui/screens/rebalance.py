"""The rebalance suggestion: which images to exclude to bring the DSB into the band."""

from __future__ import annotations

from kiln.engine.analysis.dsb import DsbSummary
from kiln.engine.analysis.rebalance import Rebalance
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class RebalanceScreen(ModalScreen[bool]):
    """Shows the suggestion; dismisses True to apply it (exclude those rows), False to dismiss."""

    DEFAULT_CSS = """
    RebalanceScreen {
        align: center middle;
    }
    RebalanceScreen > Vertical {
        width: 72;
        max-width: 95%;
        height: auto;
        max-height: 90%;
        border: thick $primary;
        background: $surface;
        padding: 1 2;
    }
    RebalanceScreen VerticalScroll {
        height: auto;
        max-height: 16;
    }
    RebalanceScreen .keys {
        color: $text-muted;
        margin-top: 1;
    }
    """

    BINDINGS = [
        Binding("a", "apply", "Apply", id="rebalance.apply", tooltip="Exclude the suggested images"),
        Binding("enter", "apply", "Apply", show=False, id="rebalance.apply_enter", tooltip="Apply"),
        Binding("escape", "dismiss_suggestion", "Dismiss", id="rebalance.dismiss", tooltip="Change nothing"),
    ]

    def __init__(self, suggestion: Rebalance | None, current: DsbSummary, min_images: int) -> None:
        super().__init__()
        self.suggestion = suggestion
        self.current = current
        self.min_images = min_images

    def compose(self) -> ComposeResult:
        suggestion = self.suggestion
        with Vertical():
            yield Static(f"[b]Rebalance[/b]   now {self.current.label()}")
            if suggestion is None:
                yield Static(
                    f"No selection of at least {self.min_images} images reaches the optimal band. "
                    "Add images of the missing tone, or lower --min-images."
                )
                yield Static("[b]esc[/b] close", classes="keys")
                return
            if not suggestion.exclude:
                yield Static("Nothing to drop: the DSB is already in the optimal band.")
                yield Static("[b]esc[/b] close", classes="keys")
                return
            yield Static(
                f"Exclude {len(suggestion.exclude)} image(s) -> "
                f"[b]{suggestion.white:.2f}%W | {suggestion.black:.2f}%B  {suggestion.verdict}[/b]"
            )
            with VerticalScroll():
                yield Static("\n".join(f"  - {path}" for path in suggestion.exclude))
            yield Static("Files are never moved or deleted; exclusion is reversible with space.")
            yield Static("[b]a[/b]/[b]enter[/b] apply   [b]esc[/b] dismiss", classes="keys")

    def action_apply(self) -> None:
        self.dismiss(bool(self.suggestion and self.suggestion.exclude))

    def action_dismiss_suggestion(self) -> None:
        self.dismiss(False)
