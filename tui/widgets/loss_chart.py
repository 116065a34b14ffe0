"""The loss chart: a run's raw and smoothed loss per step (and the validation loss), with plotext."""

from __future__ import annotations

from textual_plotext import PlotextPlot

from engine.train.history import RunHistory

# More points than the chart has braille columns only costs time (plotext redraws every frame).
MAX_POINTS = 400


def downsampled(steps: list[int], values: list[float], limit: int = MAX_POINTS) -> tuple[list[int], list[float]]:
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

    def show(self, history: RunHistory | None) -> None:
        """Redraw from a run's history (None clears the chart)."""
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        if history is None or not history.steps:
            plt.title("no steps yet")
            self.refresh()
            return
        steps, raw = downsampled(history.steps, history.losses)
        _, smooth = downsampled(history.steps, history.smoothed_losses())
        plt.plot(steps, raw, marker="braille", color=(110, 110, 130), label="loss")
        plt.plot(steps, smooth, marker="braille", color=(240, 160, 60), label="smoothed")
        if history.validation:
            plt.scatter(
                [step for _, step, _ in history.validation],
                [loss for _, _, loss in history.validation],
                marker="dot",
                color=(90, 190, 240),
                label="validation",
            )
        plt.xlabel("step")
        self.refresh()
