"""The DSB report of a dataset: every image's shares, the DSB, and the rebalance suggestion.

This is what ``kiln dsb`` prints and what its ``--json`` promises; the TUI builds the same
pieces live.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.engine.analysis.dsb import DsbSummary, Target, summarise
from kiln.engine.analysis.measure import ImageAnalysis
from kiln.engine.analysis.quality import QualityThresholds, judge_dataset
from kiln.engine.analysis.rebalance import DEFAULT_MIN_IMAGES, Candidate, Rebalance, rebalance
from kiln.engine.analysis.run import iter_analyses
from kiln.engine.dataset.scan import Dataset, ImageRecord
from kiln.engine.dataset.selection import excluded_paths
from kiln.engine.dataset.store import Store


@dataclass(frozen=True)
class ImageRow:
    """One image in a report."""

    record: ImageRecord
    analysis: ImageAnalysis
    included: bool

    @property
    def counted(self) -> bool:
        """Whether it counts towards the DSB: included, trained by Kohya, and measured."""
        return self.included and self.record.trained and self.analysis.ok


@dataclass(frozen=True)
class DsbReport:
    """A dataset's DSB report (see :func:`dsb_report`)."""

    root: Path
    method: str
    exact: bool
    rows: list[ImageRow]
    summary: DsbSummary
    target: Target
    rebalance: Rebalance | None
    warnings: list[str]

    def to_json(self) -> dict:
        """The JSON shape ``kiln dsb --json`` documents."""
        suggestion = None
        if self.rebalance is not None:
            suggestion = {
                "exclude": list(self.rebalance.exclude),
                "white": self.rebalance.white,
                "black": self.rebalance.black,
                "verdict": self.rebalance.verdict,
            }
        return {
            "root": str(self.root),
            "method": self.method,
            "images": [
                {
                    "path": row.record.rel_path,
                    "concept": row.record.concept,
                    "repeats": row.record.repeats,
                    "included": row.included,
                    "trained": row.record.trained,
                    "white": row.analysis.white,
                    "black": row.analysis.black,
                    "error": row.analysis.error,
                }
                for row in self.rows
            ],
            "dsb": {
                "white": self.summary.white,
                "black": self.summary.black,
                "dominant": self.summary.dominant,
                "verdict": self.summary.verdict,
                "effective_white": self.summary.effective_white,
                "images": self.summary.images,
            },
            "target": {"center": self.target.center, "tolerance": self.target.tolerance},
            "rebalance": suggestion,
        }


def candidates_of(
    rows: list[ImageRow], thresholds: QualityThresholds = QualityThresholds()
) -> list[Candidate]:
    """The included, measured images of a report as rebalance candidates (see :func:`judged_candidates`)."""
    return judged_candidates(
        ((row.record.rel_path, row.analysis.white, row.analysis.metrics) for row in rows if row.counted),
        thresholds,
    )


def judged_candidates(
    measured: Iterable[tuple[str, float | None, Mapping[str, Any]]],
    thresholds: QualityThresholds = QualityThresholds(),
) -> list[Candidate]:
    """Rebalance candidates from the included, measured images' ``(path, white, metrics)``.

    An image with a quality flag (judged among these images only, so a duplicate whose twin
    is excluded is not one) is preferred for dropping when choices tie. ``kiln dsb`` and the
    workbench both build their candidates here, so they suggest the same exclusions.
    """
    items = [(path, white, metrics) for path, white, metrics in measured if white is not None]
    quality = judge_dataset({path: metrics for path, _, metrics in items}, thresholds)
    return [Candidate(path, white, quality.flagged(path)) for path, white, _ in items]


def dsb_report(
    dataset: Dataset,
    store: Store | None,
    method: str,
    exact: bool = False,
    target: Target = Target(),
    min_images: int = DEFAULT_MIN_IMAGES,
    workers: int | None = None,
) -> DsbReport:
    """Analyse ``dataset`` (cached) and build its DSB report."""
    excluded = excluded_paths(store) if store is not None else set()
    analyses = {
        record.rel_path: result
        for record, result, _ in iter_analyses(dataset.images, store, method, exact, workers)
    }
    rows = [
        ImageRow(record, analyses[record.rel_path], record.rel_path not in excluded)
        for record in dataset.images
    ]
    summary = summarise(
        (
            (row.analysis.white, row.record.repeats)
            for row in rows
            if row.counted and row.analysis.white is not None
        ),
        target,
    )
    suggestion = rebalance(candidates_of(rows), target, min_images)
    warnings = list(dataset.warnings)
    if store is not None and store.warning:
        warnings.append(store.warning)
    return DsbReport(
        root=dataset.root,
        method=method,
        exact=exact,
        rows=rows,
        summary=summary,
        target=target,
        rebalance=suggestion,
        warnings=warnings,
    )
