"""The TEC chart: a run's TEC score per epoch, with the reading's bands where they matter (plotext).

Self-contained so any view of runs can use it: ``TecChart().show([(1, 0.4), (2, 1.3)])``.
"""

from __future__ import annotations

from collections.abc import Sequence

from kiln.engine.tec.reading import SCORE_BANDS
from textual_plotext import PlotextPlot

SCORE_COLOUR = (240, 160, 60)
BAND_COLOURS = ((120, 170, 90), (200, 80, 80))
BAND_COLOUR_NAMES = ("green", "red")


class TecChart(PlotextPlot):
    """TEC score (y) per epoch (x), a point per saved epoch joined by a line.

    The provisional bands between "close to zero", "mild" and "heavy" (score 1 and 5) are
    drawn as horizontal lines (green, red) when the scores come near them, so a chart of tiny
    scores is not squashed flat under a line far above it; ``drawn_bands`` says which are.
    """

    DEFAULT_CSS = """
    TecChart {
        height: 10;
        min-height: 6;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.series: list[tuple[int, float]] = []
        self.bands: tuple[float, ...] = SCORE_BANDS
        self.drawn_bands: tuple[float, ...] = ()

    def on_resize(self) -> None:
        # plotext lays the figure out for a size: draw it again at the new one.
        self.show(self.series, self.bands)

    def show(self, series: Sequence[tuple[int, float]], bands: Sequence[float] = SCORE_BANDS) -> None:
        """Draw ``(epoch, score)`` points (an empty series clears the chart).

        Args:
            series: The epochs and their TEC scores, in epoch order.
            bands: Score bounds to draw when the scores reach at least half of one.
        """
        self.series = [(int(epoch), float(score)) for epoch, score in series]
        self.bands = tuple(bands)
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        if not self.series:
            self.drawn_bands = ()
            plt.title("no epochs measured yet")
            self.refresh()
            return
        epochs = [epoch for epoch, _ in self.series]
        scores = [score for _, score in self.series]
        top = max(scores)
        self.drawn_bands = tuple(bound for bound in self.bands if top >= bound / 2)
        for index, bound in enumerate(self.bands):
            if bound in self.drawn_bands:
                plt.hline(bound, BAND_COLOURS[min(index, len(BAND_COLOURS) - 1)])
        plt.plot(epochs, scores, marker="braille", color=SCORE_COLOUR)
        plt.scatter(epochs, scores, marker="dot", color=SCORE_COLOUR)
        if len(epochs) <= 12:
            plt.xticks([float(epoch) for epoch in epochs], [str(epoch) for epoch in epochs])
        ceiling = max(top * 1.15, max(self.drawn_bands, default=0) * 1.1, 1e-3)
        plt.ylim(0, ceiling)
        plt.yticks(*self._y_ticks(ceiling))
        plt.xlabel("epoch")
        plt.title("TEC score per epoch")
        self.refresh()

    def _y_ticks(self, ceiling: float) -> tuple[list[float], list[str]]:
        """0, the drawn bands (so their lines are labelled) and the top, each on a row of its own."""
        rows = max(self.size.height - 4, 2)  # title, x ticks, x label, frame
        ticks: list[float] = []
        for tick in sorted({0.0, *self.drawn_bands, ceiling}):
            if not ticks or tick - ticks[-1] >= ceiling / rows:
                ticks.append(tick)
            elif tick in self.drawn_bands:
                ticks[-1] = tick  # a band's label matters more than a round neighbour's
        return ticks, [f"{tick:.3g}" for tick in ticks]
