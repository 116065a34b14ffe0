"""Messages that cross from workers and watcher threads into the UI (via ``post_message``)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from engine.analysis.measure import ImageAnalysis
from engine.analysis.quality import DatasetQuality


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
class QualityJudged(Message):
    """The dataset's quality was judged again (flags, duplicate groups) from the analyses so far."""

    quality: DatasetQuality
