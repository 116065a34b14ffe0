"""The loss chart: a run's raw and smoothed loss per step (and the validation loss), with plotext."""

from __future__ import annotations

from kiln.engine.runs.feed import RunHistory
from textual_plotext import PlotextPlot

# More points than the chart has braille columns only costs time (plotext redraws every frame).
MAX_POINTS = 400
RAW_COLOUR = (110, 110, 130)
SMOOTH_COLOUR = (240, 160, 60)
VALIDATION_COLOUR = (90, 190, 240)


def downsampled(
    steps: list[int], values: list[float], limit: int = MAX_POINTS
) -> tuple[list[int], list[float]]:
    """At most ``limit`` points: each the mean of an equal share of the values, at its last step."""
    if len(values) <= limit:
        return list(steps), list(values)
    xs, ys = [], []
    for index in range(limit):
        start = index * len(values) // limit
        end = max(start + 1, (index + 1) * len(values) // limit)
        xs.append(steps[end - 1])
        ys.append(sum(values[start:end]) / (end - start))
    return xs, ys


class LossChart(PlotextPlot):
    """Loss per step: the raw values dim, the smoothed curve bright, validation points on top."""

    DEFAULT_CSS = """
    LossChart {
        height: 1fr;
        min-height: 6;
    }
    """

    _history: RunHistory | None = None

    def on_resize(self) -> None:
        # Whether a legend fits depends on the height: redraw at the new size.
        self.show(self._history)

    def show(self, history: RunHistory | None) -> None:
        """Redraw from a run's history (None clears the chart)."""
        self._history = history
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        if history is None or not history.steps:
            plt.title("no steps yet")
            self.refresh()
            return
        steps, raw = downsampled(history.steps, history.losses)
        _, smooth = downsampled(history.steps, history.smoothed_losses())
        # A legend covers the curve's first rows; on a short chart the colours must do.
        legend = self.size.height >= 12
        plt.plot(steps, raw, marker="braille", color=RAW_COLOUR, label="loss" if legend else None)
        plt.plot(steps, smooth, marker="braille", color=SMOOTH_COLOUR, label="smoothed" if legend else None)
        if history.validation:
            plt.scatter(
                [step for _, step, _ in history.validation],
                [loss for _, _, loss in history.validation],
                marker="dot",
                color=VALIDATION_COLOUR,
                label="validation" if legend else None,
            )
        plt.xlabel("step")
        self.refresh()
