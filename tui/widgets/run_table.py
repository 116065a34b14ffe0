"""The table of runs: one row per run folder, cells rewritten only where a figure changed."""

from __future__ import annotations

from kiln.engine.runs.readout import (
    duration,
    family_text,
    loss_text,
    memory_cell,
    progress_text,
    rate_text,
    started_text,
)
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

COLUMNS = ("name", "state", "model", "progress", "epoch", "loss", "it/s", "peak", "ETA", "started")
# Shown only where the table is this wide: at 80 columns every other figure stays whole (the
# run view's figure line and ``kiln runs`` still give the peak memory there).
WIDE_ONLY = {"peak": 96}
# Fixed widths: an ETA ("10:00:00", "2d03h") never loses its end to a long run name.
WIDTHS = {"ETA": 8}
MIN_NAME = 10
STATE_STYLES = {
    "running": "bold green",
    "starting": "cyan",
    "done": "blue",
    "failed": "bold red",
    "cancelled": "yellow",
    "stale": "magenta",
    "queued": "dim",
}


def run_cells(info, label: str | None = None, now: float | None = None) -> list[Text]:
    """The cells of one run (a ``RunInfo``): what the table shows for it."""
    state = info.state + (" (ro)" if getattr(info, "readonly", False) else "")
    if getattr(info, "sampling", None) and info.state == "running":
        state = f"sampling {info.sampling}"
    epoch = f"{info.epoch}/{info.epochs}" if info.epochs else "-"
    live = info.state in ("running", "starting")
    return [
        Text(label or info.name or info.run_dir.name, no_wrap=True, overflow="ellipsis"),
        Text(state, style=STATE_STYLES.get(info.state, "")),
        Text(family_text(getattr(info, "family", None), getattr(info, "network", None))),
        Text(progress_text(info.step, info.total), justify="right"),
        Text(epoch, justify="right"),
        Text(loss_text(info.loss), justify="right"),
        Text(rate_text(info.it_s) if live else "-", justify="right"),
        Text(memory_cell(getattr(info, "peak_mb", None)), justify="right"),
        Text(duration(info.eta_s) if live else "-", justify="right"),
        Text(started_text(info.started, now), justify="right"),
    ]


class RunTable(DataTable):
    """Runs, newest first; rows are keyed by the run folder's path."""

    DEFAULT_CSS = """
    RunTable {
        height: 1fr;
    }
    """

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, id="runs.table.down", tooltip="Next run"),
        Binding("k", "cursor_up", "Up", show=False, id="runs.table.up", tooltip="Previous run"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._keys: list[str] = []
        self._cells: dict[str, list[Text]] = {}
        self._shown: tuple[str, ...] = ()

    def get_column_key_from_name(self, name: str):
        """The key of the column called ``name`` (columns are keyed by their names)."""
        return next((key for key in self.columns if key.value == name), None)

    def on_mount(self) -> None:
        self._show_columns(self.app.size.width)

    def on_resize(self) -> None:
        self._show_columns(self.size.width)
        self.fit_name()

    def _show_columns(self, width: int) -> None:
        """(Re)build the columns for this width, keeping the rows and the cursor."""
        shown = tuple(name for name in COLUMNS if width >= WIDE_ONLY.get(name, 0))
        if shown == self._shown:
            return
        self._shown = shown
        current = self.current_key
        self.clear(columns=True)
        for name in shown:
            self.add_column(name, key=name, width=WIDTHS.get(name))
        for key in self._keys:
            self.add_row(*self._visible(self._cells[key]), key=key)
        if current in self._keys:
            self.move_cursor(row=self._keys.index(current))

    def _visible(self, cells: list[Text]) -> list[Text]:
        return [cell for name, cell in zip(COLUMNS, cells, strict=True) if name in self._shown]

    def update_row(self, key: str, cells: list[Text]) -> None:
        """Rewrite one run's cells (those whose column is shown), widening columns as needed."""
        self._cells[key] = cells
        for name, cell in zip(COLUMNS, cells, strict=True):
            if name in self._shown:
                self.update_cell(key, name, cell, update_width=True)

    def fit_name(self) -> None:
        """Narrow the name column (names end in "…") so every figure column stays in view."""
        column = self.columns.get(self.get_column_key_from_name("name"))
        if column is None or not self.size.width:
            return
        padding = 2 * self.cell_padding
        others = sum(col.get_render_width(self) for key, col in self.columns.items() if key.value != "name")
        room = self.scrollable_content_region.width - others - padding
        natural = max([column.content_width, *(len(str(cells[0])) for cells in self._cells.values())])
        width = max(MIN_NAME, min(natural, room))
        if column.auto_width or column.width != width:
            column.auto_width = False
            column.width = width
            self._require_update_dimensions = True
            self.refresh()

    @property
    def current_key(self) -> str | None:
        """The run folder (as a string) under the cursor."""
        if not self._keys or self.cursor_row >= len(self._keys):
            return None
        return self._keys[self.cursor_row]

    def set_rows(self, rows: list[tuple[str, list[Text]]]) -> bool:
        """Show these rows in this order; returns whether the set or order of rows changed.

        Same rows: only changed cells are rewritten. Other rows: the table is rebuilt and
        the cursor stays on the run it was on.
        """
        keys = [key for key, _ in rows]
        if keys == self._keys:
            for key, cells in rows:
                old = self._cells.get(key)
                for column, cell in zip(COLUMNS, cells, strict=True):
                    index = COLUMNS.index(column)
                    if column not in self._shown:
                        continue
                    if old is None or old[index] != cell:
                        # A figure may outgrow the column it had ("-" when the run started).
                        self.update_cell(key, column, cell, update_width=column != "ETA")
                self._cells[key] = cells
            self.fit_name()
            return False
        current = self.current_key
        self.clear()
        self._keys = keys
        self._cells = dict(rows)
        for key, cells in rows:
            self.add_row(*self._visible(cells), key=key)
        if current in keys:
            self.move_cursor(row=keys.index(current))
        self.fit_name()
        return True

    def move_to(self, key: str) -> None:
        """Put the cursor on a run."""
        if key in self._keys:
            self.move_cursor(row=self._keys.index(key))
