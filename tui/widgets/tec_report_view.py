"""One TEC report in words: score and reading, confused pairs, drifted words, layers, position_ids.

Self-contained (any view holding a ``TecReport`` can show one): ``view.show(report)``. Words
are data, never markup: the full vocabulary holds ``[``, ``[/`` and the like.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.engine.tec.reading import THRESHOLDS_NOTE
from textual.content import Content
from textual.widgets import Static

if TYPE_CHECKING:
    from kiln.engine.tec.measures import TecReport

READING_STYLES = {
    "close to zero": "bold $text-success",
    "mild": "bold $text-warning",
    "heavy": "bold $text-error",
}
TOP = 10
PAIRS = 12


def headline(report: TecReport) -> Content:
    """``TEC score 1.802 · confusion 0.00% (0 of 2,107 words) · mild``."""
    confused = len(report.confused_indices)
    return Content.assemble(
        "Combined TEC score " if report.parts else "TEC score ",
        (f"{report.score:.3f}", "bold"),
        f" · confusion {100 * report.confusion_rate:.2f}% ({confused} of {len(report.words):,} words) · ",
        (report.reading, READING_STYLES.get(report.reading, "bold")),
    )


def layer_label(name: str) -> str:
    """Short names for the per-layer line: ``tok``, ``pos``, ``L0``..., ``norm`` (SDXL's
    ``OpenCLIP bigG: layer 3`` as ``OpenCLIP bigG:L3``)."""
    encoder, _, layer = name.rpartition(": ")
    short = {"token embedding": "tok", "position embedding": "pos", "final norm": "norm"}.get(
        layer, layer.replace("layer ", "L")
    )
    return f"{encoder}:{short}" if encoder else short


class TecReportView(Static):
    """The details of one report, compact enough for half an 80-column terminal."""

    DEFAULT_CSS = """
    TecReportView {
        height: auto;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("", id=id, classes=classes)
        self.report: TecReport | None = None

    def show(self, report: TecReport | None, title: str = "") -> None:
        """Show ``report`` (None clears the view), under an optional title line."""
        self.report = report
        self.update(Content("") if report is None else self.content_for(report, title))

    def content_for(self, report: TecReport, title: str = "") -> Content:
        """The whole view as one Content."""
        parts: list = []
        if title:
            parts += [(title, "bold"), "\n"]
        parts += [headline(report), "\n"]
        # SDXL: each text encoder's own figures under the combined headline.
        for label, part in report.parts:
            parts += [
                f"  {label}: {part.score:.3f} · {100 * part.confusion_rate:.2f}% · ",
                (part.reading, READING_STYLES.get(part.reading, "bold")),
                "\n",
            ]
        parts += [(f"({THRESHOLDS_NOTE})", "$text-muted"), "\n"]
        parts += [
            (f"{len(report.words):,} {report.probe} words, {report.position} position", "$text-muted"),
            "\n",
        ]
        if report.position_ids is not None:
            style = "$text-error" if report.position_ids.broken else "$text-success"
            parts += [(report.position_ids.describe(), style), "\n"]
        parts.append("\n")
        confused = report.confused()
        if confused:
            shown = confused[:PAIRS]
            parts += [(f"Confused ({len(confused)}): ", "bold")]
            parts.append(", ".join(f"{pair.word} -> {pair.nearest}" for pair in shown))
            if len(shown) < len(confused):
                parts.append(f", … {len(confused) - len(shown)} more")
            parts.append("\n")
        else:
            parts += [("Confused: ", "bold"), "none (every word is still nearest its own meaning)\n"]
        drifted = report.drifted(TOP)
        if not drifted or drifted[0][1] >= 1.0:
            parts += [("Most drifted: ", "bold"), "none (every word's embedding is unchanged)\n"]
        else:
            parts += [
                ("Most drifted\n", "bold"),
                (f"  {'word':<14} {'cosine':>7}  now nearest\n", "$text-muted"),
            ]
            nearest_of = {pair.word: pair.nearest for pair in confused}
            for word, cosine in drifted:
                parts.append(f"  {word[:14]:<14} {cosine:7.4f}  ")
                parts += [(nearest_of.get(word, ""), "$text-warning"), "\n"]
        if report.layers:
            parts += [("Weight distance", "bold"), " (relative L2) "]
            parts.append(
                # A name and its figure never part at a line break (no-break space).
                " · ".join(
                    f"{layer_label(layer.name)}\u00a0{layer.relative_l2:.3g}" for layer in report.layers
                )
            )
            parts.append("\n")
        for note in report.notes:
            parts += [("note: ", "$text-warning"), note, "\n"]
        return Content.assemble(*parts).rstrip()
