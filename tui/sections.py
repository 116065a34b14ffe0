"""The workbench's sections (Textual modes), each reached with a digit key.

Each section is a mode with its own screen stack, so leaving the plan for the dataset and
coming back keeps both as they were. Screens are built lazily by their factories: nothing a
section needs is imported until the user opens it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kiln.tui.app import KilnApp
    from kiln.tui.screens.section import SectionScreen


@dataclass(frozen=True)
class Section:
    """A top-level part of the workbench.

    Attributes:
        name: The Textual mode name.
        key: The digit that opens it.
        title: Shown in the section bar and the footer.
        tooltip: One line on what the section is for.
        factory: Builds the section's screen for the app.
    """

    name: str
    key: str
    title: str
    tooltip: str
    factory: Callable[[KilnApp], SectionScreen]


def _dataset(app: KilnApp) -> SectionScreen:
    from kiln.tui.screens.dataset import DatasetScreen

    return DatasetScreen(app.curation, app.images, app.watch_files, app.poll)


def _plan(app: KilnApp) -> SectionScreen:
    from kiln.tui.screens.plan import PlanScreen

    return PlanScreen(app.curation)


def _captions(app: KilnApp) -> SectionScreen:
    from kiln.tui.screens.captions import CaptionsScreen

    return CaptionsScreen(app.curation)


def _clean(app: KilnApp) -> SectionScreen:
    from kiln.tui.screens.clean import CleanScreen

    return CleanScreen(app.curation, app.images)


def _tec(app: KilnApp) -> SectionScreen:
    from kiln.tui.screens.tec import TecScreen

    return TecScreen(app.curation.root, app.runs_dirs)


def _runs(app: KilnApp) -> SectionScreen:
    from kiln.tui.screens.runs import RunsScreen

    return RunsScreen(
        app.curation.root,
        app.runs_dirs,
        app.images,
        app.watch_files,
        app.poll,
        app.curation.dataset.caption_extension,
    )


SECTIONS: list[Section] = [
    Section("dataset", "1", "Dataset", "Curate: the images, the DSB gauge, captions", _dataset),
    Section(
        "plan", "2", "Plan", "Plan the run: steps, repeats, epochs, aspect buckets, the guide's advice", _plan
    ),
    Section(
        "captions",
        "3",
        "Captions",
        "Caption tools: auto-caption (BLIP/WD14), tag frequencies, batch tag edits with undo, lint",
        _captions,
    ),
    Section(
        "clean",
        "4",
        "Clean",
        "Quality flags and near-duplicates; cut a large image into tiles (style precision method)",
        _clean,
    ),
    Section(
        "runs",
        "5",
        "Runs",
        "Follow runs live: loss, samples, cook hints; start, cancel, resume, sweeps",
        _runs,
    ),
    Section(
        "tec",
        "6",
        "TEC",
        "Check the base: how far a checkpoint's, a LoRA's or each epoch's text encoder drifted (TEC)",
        _tec,
    ),
]
