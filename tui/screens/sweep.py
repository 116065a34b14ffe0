"""The sweep view: a sweep's runs compared in a table, and their samples per prompt side by side."""

from __future__ import annotations

from pathlib import Path

from kiln.engine.errors import KilnError
from kiln.engine.runs.readout import duration, loss_text
from kiln.engine.runs.sweep import read_sweep_record
from kiln.engine.runs.sweep_report import SweepReport, samples_by_prompt, sweep_report
from kiln.tui.messages import SamplesLoaded, SweepLoaded
from kiln.tui.widgets.sample_grid import SampleGrid, load_thumbnail
from kiln.tui.widgets.section_bar import SectionBar
from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import get_current_worker

# Panes of samples side by side: the baseline and this many runs per page.
RUNS_PER_PAGE = 4
REFRESH_S = 5.0


def _value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class SweepScreen(Screen[str | None]):
    """Compare a sweep; enter goes back to the runs section on the run under the cursor."""

    CSS_PATH = "sweep.tcss"

    BINDINGS = [
        Binding("escape", "close", "Back", id="sweep.close", tooltip="Back to the runs"),
        Binding("enter", "open_run", "Follow", id="sweep.open", tooltip="Back to the runs, on this run"),
        Binding("p", "next_prompt", "Prompt", id="sweep.prompt", tooltip="Samples of the next prompt"),
        Binding("m", "next_page", "More runs", id="sweep.page", tooltip="Samples of the next runs"),
        Binding("f5", "reload", "Refresh", show=False, id="sweep.refresh", tooltip="Read the sweep again"),
    ]

    def __init__(self, sweep_dir: Path, images: str = "auto") -> None:
        super().__init__()
        self.sweep_dir = Path(sweep_dir)
        self.images_mode = images
        self.report: SweepReport | None = None
        self.prompt_index = 0
        self.page = 0
        try:
            count = len(read_sweep_record(self.sweep_dir)["runs"])
        except KilnError:
            count = 1
        self.panes = 1 + min(RUNS_PER_PAGE, max(1, count))

    def compose(self) -> ComposeResult:
        yield SectionBar("runs")
        yield Static("", id="sweep-head")
        yield DataTable(id="sweep-runs", cursor_type="row", zebra_stripes=True)
        yield SampleGrid(self.images_mode, panes=self.panes, id="sweep-samples")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#sweep-head", Static).update(f"sweep {escape(self.sweep_dir.name)}: reading…")
        self.query_one(SampleGrid).show_message("reading the sweep…")
        self.action_reload()
        self.set_interval(REFRESH_S, self._refresh_while_running)
        self.query_one(DataTable).focus()

    def _refresh_while_running(self) -> None:
        if self.report is None or not self.report.finished:
            self.action_reload()

    def action_reload(self) -> None:
        self.load_report()

    @work(thread=True, exclusive=True, group="sweep-report")
    def load_report(self) -> None:
        """Read the sweep and measure cook hints off the UI thread."""
        worker = get_current_worker()
        try:
            report = sweep_report(self.sweep_dir)
        except (KilnError, OSError) as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            return
        if not worker.is_cancelled:
            self.post_message(SweepLoaded(report))

    def on_sweep_loaded(self, message: SweepLoaded) -> None:
        report = message.report
        self.report = report
        done = sum(1 for row in report.rows if row.state == "done")
        head = Text()
        head.append(f"sweep {report.name}", style="bold")
        head.append(f"  {done}/{len(report.rows)} done  {report.sweep_dir.name}", style="dim")
        for warning in report.warnings:
            head.append(f"\n⚠ {warning}", style="yellow")
        self.query_one("#sweep-head", Static).update(head)
        table = self.query_one(DataTable)
        keys = report.keys()
        current = table.cursor_row
        table.clear(columns=True)
        table.add_column("#")
        for key in keys:
            table.add_column(key.rpartition(".")[2])
        with_gpu = report.pinned
        gpu_column = ("gpu",) if with_gpu else ()
        for name in ("state", *gpu_column, "steps", "final", "min", "val", "time", "cook"):
            table.add_column(name)
        best = min((row.final_loss for row in report.rows if row.final_loss is not None), default=None)
        for row in report.rows:
            final = Text(loss_text(row.final_loss), style="bold" if row.final_loss == best else "")
            table.add_row(
                str(row.index),
                *(_value(row.overrides.get(key)) for key in keys),
                row.state,
                *((row.gpu or "-",) if with_gpu else ()),
                str(row.steps),
                final,
                loss_text(row.min_loss),
                loss_text(row.validation_loss),
                duration(row.seconds),
                Text(row.cook or "-", style="magenta" if row.cook else "dim"),
                key=str(row.index),
            )
        if report.rows:
            table.move_cursor(row=min(current, len(report.rows) - 1))
        self.show_samples()

    def show_samples(self) -> None:
        """The prompt's baseline and a page of runs' newest samples (decoded in a worker)."""
        report = self.report
        if report is None:
            return
        grid = samples_by_prompt(report)
        if not grid:
            self.query_one(SampleGrid).show_message(
                "no samples yet: runs render them at epoch 0 and after epochs"
            )
            return
        prompt = grid[self.prompt_index % len(grid)]
        per_page = self.panes - 1
        pages = max(1, -(-len(prompt.runs) // per_page))
        page = self.page % pages
        shown = prompt.runs[page * per_page : (page + 1) * per_page]
        items = [("baseline", prompt.baseline)] + [
            (
                f"#{row.index} "
                + " ".join(f"{k.rpartition('.')[2]}={_value(v)}" for k, v in row.overrides.items()),
                path,
            )
            for row, path in shown
        ]
        title = f"prompt {self.prompt_index % len(grid) + 1}/{len(grid)}: {prompt.prompt}"
        if pages > 1:
            title += f"  (runs page {page + 1}/{pages}, m for more)"
        self.decode(title, items)

    @work(thread=True, exclusive=True, group="sweep-samples")
    def decode(self, title: str, items: list[tuple[str, Path | None]]) -> None:
        """Decode and downscale the pictures off the UI thread."""
        worker = get_current_worker()
        decoded = []
        for label, path in items:
            picture = load_thumbnail(path) if path is not None and self.images_mode != "none" else None
            decoded.append((label, path, picture))
            if worker.is_cancelled:
                return
        self.post_message(SamplesLoaded(str(self.sweep_dir), title, decoded, None))

    def on_samples_loaded(self, message: SamplesLoaded) -> None:
        message.stop()
        self.query_one(SampleGrid).show(message.title, message.items)

    def action_next_prompt(self) -> None:
        self.prompt_index += 1
        self.show_samples()

    def action_next_page(self) -> None:
        self.page += 1
        self.show_samples()

    @on(DataTable.RowSelected)
    def row_selected(self) -> None:
        # The table takes enter itself: choosing a row is following its run.
        self.action_open_run()

    def action_open_run(self) -> None:
        report = self.report
        table = self.query_one(DataTable)
        if report is None or not report.rows:
            self.dismiss(None)
            return
        row = report.rows[min(table.cursor_row, len(report.rows) - 1)]
        self.dismiss(str(row.run_dir) if row.run_dir else None)

    def action_close(self) -> None:
        self.dismiss(None)
