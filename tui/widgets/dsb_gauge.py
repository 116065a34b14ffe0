"""The DSB gauge: the dataset's balance on a 50..100 dominant-share bar with the band marked."""

from __future__ import annotations

from kiln.engine.analysis.dsb import MEDIOCRE_ABOVE, DsbSummary, Target
from rich.console import RenderableType
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


class DsbGauge(Widget):
    """Two lines: the label in the guide's notation, then a bar of the dominant share.

    The bar runs from 50 (perfect yin and yang) to 100; the optimal band (55..65 by default)
    is drawn in the success colour, 65..70 in the warning colour, above 70 in the error
    colour; the marker sits on the current dominant share.
    """

    DEFAULT_CSS = """
    DsbGauge {
        height: 2;
        padding: 0 1;
    }
    """

    summary: reactive[DsbSummary | None] = reactive(None, layout=False)

    def __init__(self, target: Target = Target(), **kwargs) -> None:
        super().__init__(**kwargs)
        self.target = target
        self.total_images = 0
        self.pending = 0

    def show(self, summary: DsbSummary, total_images: int, pending: int = 0) -> None:
        """Display a new summary (``total_images`` counts every row, measured or not).

        While ``pending`` images are still being measured the figures are partial: the
        verdict waits and the gauge says "partial" instead, so no verdict is read early.
        """
        self.total_images = total_images
        self.pending = pending
        self.summary = summary
        self.refresh()

    def render(self) -> RenderableType:
        summary = self.summary
        theme = self.app.current_theme
        colours = {
            "optimal": theme.success or "green",
            "fair": theme.warning or "yellow",
            "mediocre": theme.error or "red",
            "generic": theme.secondary or "blue",
        }
        line = Text()
        line.append("DSB ", style="bold")
        if summary is None or summary.white is None:
            line.append("no measured images yet", style="dim")
            return Text.assemble(line, "\n", self._bar(None, colours))
        line.append(f"{summary.label().rsplit('  ', 1)[0]}  ", style="bold")
        if self.pending:
            line.append(f"partial: measuring {self.pending} more", style="bold dim")
        else:
            line.append(summary.verdict or "", style=f"bold {colours.get(summary.verdict or '', '')}")
        line.append(
            f"   {summary.images}/{self.total_images} images"
            f" · effective {round(summary.effective_white or 0)}%W"
            f" · target {self.target.center:g}±{self.target.tolerance:g}",
            style="dim",
        )
        return Text.assemble(line, "\n", self._bar(summary, colours))

    def _bar(self, summary: DsbSummary | None, colours: dict[str, str]) -> Text:
        width = max(10, self.size.width - 12)
        bar = Text("50 ", style="dim")
        marker = None
        side = ""
        if summary is not None and summary.dominant is not None:
            marker = min(width - 1, int((summary.dominant - 50.0) / 50.0 * width))
            side = "W" if (summary.white or 0) >= 50 else "B"
        for cell in range(width):
            value = 50.0 + (cell + 0.5) * 50.0 / width
            if value < self.target.low:
                band = "generic"
            elif value < self.target.high:
                band = "optimal"
            elif value <= MEDIOCRE_ABOVE:
                band = "fair"
            else:
                band = "mediocre"
            if cell == marker:
                bar.append("█", style=f"bold {colours[band]}")
            else:
                bar.append("━" if band == "optimal" else "─", style=colours[band])
        bar.append(f" 100 {side}", style="dim")
        return bar
