"""How a curation row is drawn and sorted in the dataset section's image table: the columns,
their cells and their sort keys. No screen state: the table asks for one row's cells at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kiln.engine.curate import Row
from kiln.engine.dataset.captions import caption_preview
from kiln.engine.textsafe import shown_name
from kiln.tui.widgets.image_table import Column
from rich.text import Text

# The shares come first and are dropped last, so they stay visible on an 80-column terminal;
# from 140 columns every column fits (the concept and the caption included).
COLUMNS: list[Column] = [
    Column("inc", "", 1, priority=100),
    Column("white", "W%", 5, priority=90, justify="right"),
    Column("black", "B%", 5, priority=80, justify="right"),
    Column("path", "path", None, priority=70, min_width=22),
    Column("concept", "concept", 10, priority=30),
    Column("repeats", "rep", 3, priority=35, justify="right"),
    Column("status", "status", 12, priority=45),
    Column("caption", "caption", None, priority=20, min_width=14),
]
_MISSING = float("inf")

# Sort keys per column; missing figures sort last.
SORT_KEYS: dict[str, Callable[[Row], Any]] = {
    "path": lambda row: row.record.rel_path,
    "white": lambda row: row.analysis.white if row.analysis and row.analysis.ok else _MISSING,
    "black": lambda row: row.analysis.black if row.analysis and row.analysis.ok else _MISSING,
    "concept": lambda row: (row.record.concept, row.record.rel_path),
    "repeats": lambda row: (row.record.repeats, row.record.rel_path),
    "status": lambda row: (status_text(row), row.record.rel_path),
    "caption": lambda row: row.caption.text.lower(),
    "inc": lambda row: (not row.included, row.record.rel_path),
}
SORT_ORDER = ["path", "white", "black", "concept", "repeats", "status", "caption", "inc"]
COLUMN_LABELS = {column.key: column.label or "included" for column in COLUMNS}


def status_text(row: Row) -> str:
    """The status column: skipped by Kohya, error, pending, the quality flags' ids, or ok."""
    if not row.record.trained:
        return "skipped: Kohya trains N_name/ folders only"
    if row.analysis is None:
        return "pending"
    if row.analysis.error:
        return row.analysis.error
    if row.flags:
        return ", ".join(row.flag_ids)
    return "ok"


def row_cells(row: Row, marked: bool = False) -> list[Text]:
    """The table cells for a row (a marked row's path starts with ``●``)."""
    analysis = row.analysis
    dim = "" if row.included else "dim"
    white = black = ""
    if analysis is None:
        white = black = "…"
    elif analysis.ok:
        white, black = f"{analysis.white:.1f}", f"{analysis.black:.1f}"
    status = status_text(row)
    if analysis is not None and analysis.error:
        status_style = "red"
    elif analysis is None:
        status_style = "dim"
    else:
        status_style = "yellow" if row.flags else ""
    return [
        Text("✓", style="bold green") if row.included else Text("·", style="dim"),
        Text(white, style=dim, justify="right"),
        Text(black, style=dim, justify="right"),
        Text.assemble(("● ", "bold magenta"), (shown_name(row.record.rel_path), dim))
        if marked
        else Text(shown_name(row.record.rel_path), style=dim),
        Text(row.record.concept, style=dim),
        Text(str(row.record.repeats), style=dim, justify="right"),
        Text(status, style=status_style or dim),
        Text(caption_preview(row.caption.text, 40), style="dim"),
    ]
