"""Messages that cross from workers and watcher threads into the UI (via ``post_message``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.engine.analysis.measure import ImageAnalysis
from kiln.engine.analysis.quality import DatasetQuality
from textual.message import Message

if TYPE_CHECKING:
    from kiln.engine.dataset.scan import ImageRecord
    from kiln.engine.plan.buckets import BucketSpec
    from kiln.engine.plan.loads import DatasetLoad
    from kiln.engine.plan.reg import RegSet
    from kiln.engine.runs.feed import RunFeed
    from kiln.engine.runs.folders import RunInfo
    from kiln.engine.runs.sweep_report import SweepReport
    from kiln.tui.tec_form import TecResult
    from PIL.Image import Image


@dataclass
class AnalysisProgress(Message):
    """A batch of finished analyses; ``done`` of ``total`` pending images are measured."""

    results: list[tuple[ImageRecord, ImageAnalysis]]
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
class RegLoaded(Message):
    """The plan screen's worker read the reg folder ``path`` for ``spec`` (or failed: ``error``)."""

    path: str
    spec: BucketSpec
    reg: RegSet | None
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


@dataclass
class QualityJudged(Message):
    """The dataset's quality was judged again (flags, duplicate groups) from the analyses so far."""

    quality: DatasetQuality


@dataclass
class TecProgress(Message):
    """The TEC worker encoded ``done`` of ``total`` words of ``stage`` (``reference``, ``candidate``,
    or a run's LoRA file name) for measurement ``job_id``."""

    job_id: int
    stage: str
    done: int
    total: int


@dataclass
class TecFinished(Message):
    """Measurement ``job_id`` finished: its report, or its per-epoch series."""

    job_id: int
    result: TecResult


@dataclass
class TecFailed(Message):
    """Measurement ``job_id`` stopped on an error (one line naming the file and the fix)."""

    job_id: int
    error: str


@dataclass
class RunFilesChanged(Message):
    """Files of run folders changed (absolute paths): events, status, log, samples, LoRA files."""

    paths: set[Path]


@dataclass
class RunsListed(Message):
    """Every run found, newest first, as ``(RunInfo, sweep name or None)``."""

    runs: list[tuple[RunInfo, str | None]]


@dataclass
class RunLoaded(Message):
    """A run's whole history, read in a worker, and its log tail."""

    key: str
    feed: RunFeed
    log: list[str]


@dataclass
class SamplesLoaded(Message):
    """Sample pictures decoded for the runs screen: ``(label, file, picture)`` per pane."""

    key: str
    title: str
    items: list[tuple[str, Path | None, Image | None]]
    hint: str | None


@dataclass
class SweepLoaded(Message):
    """A sweep's report, read in a worker."""

    report: SweepReport


@dataclass
class BaseChosen(Message):
    """The Bases view made ``path`` (``family``, caption ``style``) the dataset's base."""

    path: str
    family: str
    style: str | None
