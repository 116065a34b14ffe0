"""The analysis cache in ``.kiln/kiln.db``: reopening a dataset costs no decoding.

A cached figure is valid while the file's relative path, size and mtime_ns, the
desaturation method, exactness and Kiln's analysis version all match.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from kiln.engine.analysis.measure import ANALYSIS_VERSION, ImageAnalysis
from kiln.engine.dataset.scan import ImageRecord
from kiln.engine.dataset.store import Store


def load_cached(
    store: Store, records: Iterable[ImageRecord], method: str, exact: bool
) -> dict[str, ImageAnalysis]:
    """Cached analyses for the records whose file is unchanged, keyed by relative path."""
    wanted = {record.rel_path: record for record in records}
    rows = store.query(
        "SELECT rel_path, size, mtime_ns, white, black, error, metrics FROM analysis "
        "WHERE method = ? AND exact = ? AND version = ?",
        (method, int(exact), ANALYSIS_VERSION),
    )
    found: dict[str, ImageAnalysis] = {}
    for rel_path, size, mtime_ns, white, black, error, metrics in rows:
        record = wanted.get(rel_path)
        if record is None or record.size != size or record.mtime_ns != mtime_ns:
            continue
        found[rel_path] = ImageAnalysis(
            white=white, black=black, error=error, metrics=json.loads(metrics) if metrics else {}
        )
    return found


def save_analyses(
    store: Store, items: Iterable[tuple[ImageRecord, ImageAnalysis]], method: str, exact: bool
) -> None:
    """Store analyses in one transaction."""
    rows = [
        (
            record.rel_path,
            method,
            int(exact),
            record.size,
            record.mtime_ns,
            ANALYSIS_VERSION,
            result.white,
            result.black,
            result.error,
            json.dumps(result.metrics, sort_keys=True),
        )
        for record, result in items
        # A permission error is fixed by chmod, which leaves size and mtime alone.
        if not (result.error or "").startswith("permission denied")
    ]
    if not rows:
        return
    with store.transaction() as conn:
        conn.executemany(
            "INSERT OR REPLACE INTO analysis (rel_path, method, exact, size, mtime_ns, version, "
            "white, black, error, metrics) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
