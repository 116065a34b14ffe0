"""Messages that cross from workers and watcher threads into the UI (via ``post_message``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

from engine.analysis.measure import ImageAnalysis

if TYPE_CHECKING:
    from engine.plan.buckets import BucketSpec
    from engine.plan.loads import DatasetLoad


@dataclass
class AnalysisProgress(Message):
    """A batch of finished analyses; ``done`` of ``total`` pending images are measured."""

    results: list[tuple[str, ImageAnalysis]]
    done: int
    total: int


@dataclass
class FilesChanged(Message):
    """Files changed under the dataset (paths relative to its root); renames as old -> new."""

    paths: set[str]
    moves: dict[str, str]


@dataclass
class DatasetLoaded(Message):
    """The plan screen's worker bucketed the included images for ``spec`` (or failed: ``error``)."""

    spec: BucketSpec
    load: DatasetLoad | None
    error: str | None = None


@dataclass
class ConceptRenamed(Message):
    """A concept folder was renamed (new repeats) and the curation rescanned: screens refill."""

    old_folder: str
    new_folder: str


@dataclass
class CaptionsChanged(Message):
    """Captions of these images (paths relative to the root) changed outside the receiving section.

    The dataset section sends it to the other sections when the user saves a caption or
    another program changes one, so their figures (tag counts, lint) never go stale.
    """

    paths: set[str]
