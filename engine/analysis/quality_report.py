"""The quality report of a dataset: every image's figures and flags, and the duplicate groups.

This is what ``kiln quality`` prints and what its ``--json`` promises. The figures come from
the analysis cache (``iter_analyses``), so a dataset already measured by ``kiln dsb`` or the
workbench decodes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiln.engine.analysis.measure import ImageAnalysis
from kiln.engine.analysis.quality import (
    FIGURES,
    DatasetQuality,
    ImageQuality,
    QualityThresholds,
    judge_dataset,
    training_upscale,
)
from kiln.engine.analysis.run import iter_analyses
from kiln.engine.analysis.tones import DEFAULT_METHOD
from kiln.engine.dataset.scan import Dataset, ImageRecord
from kiln.engine.dataset.selection import excluded_paths
from kiln.engine.dataset.store import Store


@dataclass(frozen=True)
class QualityRow:
    """One image in a quality report."""

    record: ImageRecord
    analysis: ImageAnalysis
    included: bool
    quality: ImageQuality


@dataclass(frozen=True)
class QualityReport:
    """A dataset's quality report (see :func:`quality_report`)."""

    root: Path
    rows: list[QualityRow]
    judgement: DatasetQuality
    thresholds: QualityThresholds
    warnings: list[str]

    def to_json(self) -> dict:
        """The JSON shape ``kiln quality --json`` documents."""
        return {
            "root": str(self.root),
            "resolution": self.thresholds.resolution,
            "images": [self._image_json(row) for row in self.rows],
            "duplicates": [list(group) for group in self.judgement.duplicates],
        }

    def _image_json(self, row: QualityRow) -> dict:
        metrics = row.analysis.metrics
        width, height = metrics.get("width"), metrics.get("height")
        size = (
            (width, height)
            if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0
            else None
        )
        data: dict = {
            "path": row.record.rel_path,
            "flags": row.quality.flag_ids,
            "reasons": [flag.reason for flag in row.quality.flags],
            "included": row.included,
            "error": row.analysis.error,
            "width": size[0] if size else None,
            "height": size[1] if size else None,
            "aspect": round(max(size) / min(size), 3) if size else None,
            "upscale": round(training_upscale(*size, self.thresholds.resolution), 3) if size else None,
            "exif_orientation": metrics.get("exif_orientation"),
            "sharpness_rank": row.quality.sharpness_rank,
            "duplicate_of": row.quality.duplicate_of,
        }
        for name in FIGURES:
            data[name] = metrics.get(name)
        return data


def quality_report(
    dataset: Dataset,
    store: Store | None,
    exact: bool = False,
    thresholds: QualityThresholds = QualityThresholds(),
    workers: int | None = None,
) -> QualityReport:
    """Analyse ``dataset`` (cached, the same pass as the DSB) and judge every image's quality.

    All images are judged together, included or not: a duplicate is a duplicate whichever
    copy the selection keeps. (The rebalance solver judges only the included ones.)
    """
    excluded = excluded_paths(store) if store is not None else set()
    analyses = {
        record.rel_path: result
        for record, result, _ in iter_analyses(dataset.images, store, DEFAULT_METHOD, exact, workers)
    }
    judgement = judge_dataset(
        {path: analysis.metrics for path, analysis in analyses.items() if analysis.ok}, thresholds
    )
    rows = [
        QualityRow(
            record,
            analyses[record.rel_path],
            record.rel_path not in excluded,
            judgement.images.get(record.rel_path, ImageQuality()),
        )
        for record in dataset.images
    ]
    warnings = list(dataset.warnings)
    if store is not None and store.warning:
        warnings.append(store.warning)
    return QualityReport(dataset.root, rows, judgement, thresholds, warnings)
