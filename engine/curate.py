"""A curation session: the dataset as the workbench edits it, with no UI in it.

It holds one row per image (record, analysis, inclusion, caption, quality flags), keeps the
DSB current in O(1) per toggle, persists the selection, saves captions atomically and diffs
rescans when files change under it. The TUI renders it; tests drive it headless.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kiln.engine.analysis.cache import load_cached
from kiln.engine.analysis.dsb import DsbAccumulator, DsbSummary, Target
from kiln.engine.analysis.measure import ImageAnalysis
from kiln.engine.analysis.quality import FLAG_IDS, DatasetQuality, Flag, QualityThresholds, judge_dataset
from kiln.engine.analysis.rebalance import DEFAULT_MIN_IMAGES, Rebalance, rebalance
from kiln.engine.analysis.report import judged_candidates
from kiln.engine.analysis.tones import DEFAULT_METHOD
from kiln.engine.dataset.captions import Caption, read_caption, write_caption
from kiln.engine.dataset.lock import caption_lock
from kiln.engine.dataset.scan import Dataset, ImageRecord, scan_dataset
from kiln.engine.dataset.selection import excluded_paths, move_file_state, set_included
from kiln.engine.dataset.store import Store

FLAG_PREFIX = "flag:"
ANY_FLAG = "any"
_FLAG_TOKEN = re.compile(r"(?:^|\s)flag:(\S*)", re.IGNORECASE)


def split_query(query: str) -> tuple[str, list[str]]:
    """A filter's free text and its ``flag:ID`` terms: ``"flag:blurry pot"`` -> ``("pot", ["blurry"])``.

    An empty term (``flag:``) or ``flag:any`` asks for any flag.
    """
    flags = [term.lower() or ANY_FLAG for term in _FLAG_TOKEN.findall(query)]
    return _FLAG_TOKEN.sub(" ", query).strip(), flags


def has_flag(flag_ids: Iterable[str], term: str) -> bool:
    """Whether an image with these flag ids matches a ``flag:`` term (a prefix such as ``dup``)."""
    ids = list(flag_ids)
    if term == ANY_FLAG:
        return bool(ids)
    return any(flag_id.startswith(term) for flag_id in ids)


@dataclass
class Row:
    """One image in the session.

    Attributes:
        record: The file as last scanned.
        analysis: Its measures, or None while not yet analysed.
        included: Whether the user includes it (it counts towards training and the DSB when
            Kohya trains its folder too: ``record.trained``).
        caption: Its caption as last read from disk.
        flags: Its quality flags, judged among every measured image of the dataset
            (see :meth:`Curation.judge_quality`); empty until judged.
    """

    record: ImageRecord
    analysis: ImageAnalysis | None
    included: bool
    caption: Caption
    flags: tuple[Flag, ...] = ()

    @property
    def flag_ids(self) -> list[str]:
        """The quality flags' ids."""
        return [flag.id for flag in self.flags]

    @property
    def counted(self) -> bool:
        """Whether this row contributes to the DSB right now."""
        return self.included and self.record.trained and self.analysis is not None and self.analysis.ok


@dataclass
class ScanDiff:
    """What a rescan found: relative paths added, removed, and changed on disk."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


class Curation:
    """The workbench's model of one dataset.

    Args:
        root: The dataset folder.
        caption_extension: Caption sidecar extension.
        method: Desaturation method for the shares.
        exact: Whether shares are measured at full resolution.
        target: The DSB target band.
        min_images: The rebalance never keeps fewer images.
        thresholds: When quality figures become flags.
    """

    def __init__(
        self,
        root: Path | str,
        caption_extension: str = ".txt",
        method: str = DEFAULT_METHOD,
        exact: bool = False,
        target: Target = Target(),
        min_images: int = DEFAULT_MIN_IMAGES,
        thresholds: QualityThresholds = QualityThresholds(),
    ) -> None:
        self.dataset: Dataset = scan_dataset(root, caption_extension)
        self.root = self.dataset.root
        self.method = method
        self.exact = exact
        self.target = target
        self.min_images = min_images
        self.thresholds = thresholds
        self.quality = DatasetQuality()
        # A folder without images is not a dataset: no .kiln/ is made in it.
        self.store = Store(self.root, create=bool(self.dataset.images))
        self.accumulator = DsbAccumulator(target)
        excluded = excluded_paths(self.store)
        cached = load_cached(self.store, self.dataset.images, method, exact)
        self.rows: dict[str, Row] = {}
        for record in self.dataset.images:
            self._add_row(record, cached.get(record.rel_path), record.rel_path not in excluded)

    # -- reading -----------------------------------------------------------------------------

    @property
    def warnings(self) -> list[str]:
        """Scan warnings, plus the store's when state cannot be saved."""
        extra = [self.store.warning] if self.store.warning else []
        return [*self.dataset.warnings, *extra]

    def summary(self) -> DsbSummary:
        """The DSB of the included, measured images."""
        return self.accumulator.summary()

    def pending(self) -> list[ImageRecord]:
        """Records still waiting for analysis, in path order."""
        return [row.record for row in self.rows.values() if row.analysis is None]

    def included_count(self) -> int:
        """How many images are included (measured or not)."""
        return sum(row.included for row in self.rows.values())

    def matching(self, query: str) -> list[str]:
        """Paths matching a filter, in row order.

        The free text matches a substring of the path or caption (case-insensitive); each
        ``flag:ID`` term keeps only images with that quality flag (an id's prefix is enough,
        ``flag:any`` keeps every flagged image).
        """
        text, flag_terms = split_query(query)
        needle = text.lower()
        if not needle and not flag_terms:
            return list(self.rows)
        return [
            path
            for path, row in self.rows.items()
            if (not needle or needle in path.lower() or needle in row.caption.text.lower())
            and all(has_flag(row.flag_ids, term) for term in flag_terms)
        ]

    def quality_metrics(self) -> dict[str, Mapping[str, Any]]:
        """Every measured image's figures, keyed by path: what :func:`judge_dataset` judges."""
        return {
            path: row.analysis.metrics
            for path, row in self.rows.items()
            if row.analysis is not None and row.analysis.ok
        }

    def judge_quality(self) -> DatasetQuality:
        """Judge the measured images' quality now (about 0.2 s for 10,000: call it off the UI thread)."""
        return judge_dataset(self.quality_metrics(), self.thresholds)

    def flag_counts(self) -> dict[str, int]:
        """How many images carry each flag, for the flags that occur, in flag-id order."""
        counts: dict[str, int] = {}
        for row in self.rows.values():
            for flag in row.flags:
                counts[flag.id] = counts.get(flag.id, 0) + 1
        return {flag_id: counts[flag_id] for flag_id in FLAG_IDS if flag_id in counts}

    def rebalance(self) -> Rebalance | None:
        """The rebalance suggestion for the current selection (flagged images drop first on ties)."""
        return rebalance(
            judged_candidates(
                (
                    (path, row.analysis.white, row.analysis.metrics)
                    for path, row in self.rows.items()
                    if row.counted and row.analysis is not None
                ),
                self.thresholds,
            ),
            self.target,
            self.min_images,
        )

    # -- changing ----------------------------------------------------------------------------

    def set_analysis(self, rel_path: str, analysis: ImageAnalysis) -> bool:
        """Record a finished analysis; returns False when the row is gone (deleted meanwhile)."""
        row = self.rows.get(rel_path)
        if row is None:
            return False
        self._uncount(row)
        row.analysis = analysis
        self._count(row)
        return True

    def apply_quality(self, quality: DatasetQuality) -> list[str]:
        """Give each row its flags from a judgement; returns the paths whose flags changed.

        A judgement made before a rescan may lack new rows (they get no flags until the next
        one) or name removed ones (ignored).
        """
        self.quality = quality
        changed = []
        for path, row in self.rows.items():
            judged = quality.images.get(path)
            flags = judged.flags if judged is not None else ()
            if flags != row.flags:
                row.flags = flags
                changed.append(path)
        return changed

    def toggle(self, rel_path: str) -> bool:
        """Flip an image's inclusion, persist it, and return the new state."""
        row = self.rows[rel_path]
        self.set_included([rel_path], not row.included)
        return row.included

    def set_included(self, rel_paths: Iterable[str], included: bool) -> None:
        """Include or exclude images (persisted in one transaction)."""
        changed = []
        for path in rel_paths:
            row = self.rows[path]
            if row.included == included:
                continue
            self._uncount(row)
            row.included = included
            self._count(row)
            changed.append(path)
        if changed:
            set_included(self.store, changed, included)

    def save_caption(self, rel_path: str, text: str) -> None:
        """Write a caption atomically (under the dataset's caption lock) and remember it.

        Raises:
            CaptionError: The caption is read-only, a folder, or cannot be written.
        """
        row = self.rows[rel_path]
        with caption_lock(self.root):
            write_caption(row.record.caption_path, text)
        row.caption = Caption(text=text, exists=True)

    def reload_caption(self, rel_path: str) -> Caption:
        """Re-read a caption from disk (after another program changed it)."""
        row = self.rows[rel_path]
        row.caption = read_caption(row.record.caption_path)
        return row.caption

    def rescan(self, moves: dict[str, str] | None = None) -> ScanDiff:
        """Rescan the folder and apply what changed; changed images go back to pending.

        New paths take a valid cached analysis when the store has one (a renamed folder,
        whose state ``move_folder_state`` carried over).

        Args:
            moves: Renames seen by a file watcher (old path -> new path); a renamed image
                keeps its selection and cached figures instead of starting over.
        """
        for old, new in (moves or {}).items():
            if old in self.rows and (self.root / new).is_file():
                move_file_state(self.store, old, new)
        fresh = scan_dataset(self.root, self.dataset.caption_extension)
        diff = ScanDiff()
        fresh_by_path = fresh.by_path()
        for path in list(self.rows):
            if path not in fresh_by_path:
                self._uncount(self.rows.pop(path))
                diff.removed.append(path)
        excluded = excluded_paths(self.store)
        # New paths (a renamed file or folder) whose cache rows moved with them: read those,
        # so a rename costs no re-analysis.
        cached = load_cached(
            self.store, [r for r in fresh.images if r.rel_path not in self.rows], self.method, self.exact
        )
        for record in fresh.images:
            row = self.rows.get(record.rel_path)
            if row is None:
                self._add_row(record, cached.get(record.rel_path), record.rel_path not in excluded)
                diff.added.append(record.rel_path)
            elif (row.record.size, row.record.mtime_ns) != (record.size, record.mtime_ns):
                self._uncount(row)
                row.record = record
                row.analysis = None
                row.flags = ()
                diff.changed.append(record.rel_path)
            elif row.record != record:
                # A renamed concept folder changes repeats and whether Kohya trains it: count
                # the row out with its old figures and back in with the new ones.
                self._uncount(row)
                row.record = replace(
                    row.record, repeats=record.repeats, concept=record.concept, trained=record.trained
                )
                self._count(row)
        self.rows = dict(sorted(self.rows.items()))
        self.dataset = fresh
        return diff

    def close(self) -> None:
        """Close the state database."""
        self.store.close()

    # -- internals ---------------------------------------------------------------------------

    def _add_row(self, record: ImageRecord, analysis: ImageAnalysis | None, included: bool) -> None:
        row = Row(
            record=record, analysis=analysis, included=included, caption=read_caption(record.caption_path)
        )
        self.rows[record.rel_path] = row
        self._count(row)

    def _count(self, row: Row) -> None:
        if (white := _counted_white(row)) is not None:
            self.accumulator.add(white, row.record.repeats)

    def _uncount(self, row: Row) -> None:
        if (white := _counted_white(row)) is not None:
            self.accumulator.remove(white, row.record.repeats)


def _counted_white(row: Row) -> float | None:
    """The row's white share when it contributes to the DSB (``Row.counted``), else None."""
    return row.analysis.white if row.counted and row.analysis is not None else None
