"""The TEC screen: check a base checkpoint, a LoRA, or each epoch of a run for text-encoder corruption.

On the left a form: a candidate and a reference (or a run from the dataset's ``runs/``) and
the probe options; each path is checked as the user leaves its field, by name and header
only. ctrl+r measures in a worker thread with a progress bar; ctrl+g cancels. On the right
the score and its reading, the confused pairs, the most drifted words, ``position_ids`` and
the per-layer distances; for a run, a chart of the score per epoch and a row per epoch.
torch and transformers are imported by the worker, never when the section opens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from kiln.engine.runs.tec_series import TecRun, tec_runs
from kiln.engine.tec.reading import READINGS, SCORE_BANDS, THRESHOLDS_NOTE
from kiln.tui.form_keys import form_bindings
from kiln.tui.messages import TecFailed, TecFinished, TecProgress
from kiln.tui.path_suggester import PathSuggester
from kiln.tui.screens.section import SectionScreen
from kiln.tui.tec_form import (
    DEVICES,
    POSITIONS,
    ProgressFn,
    TecCheck,
    TecInputs,
    TecJob,
    TecResult,
    check_inputs,
    form_wording,
    measure,
)
from kiln.tui.widgets.plan_field import PlanField
from kiln.tui.widgets.section_bar import SectionBar
from kiln.tui.widgets.tec_chart import BAND_COLOUR_NAMES, TecChart
from kiln.tui.widgets.tec_report_view import TecReportView
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.widgets import Checkbox, DataTable, Footer, Input, Label, ProgressBar, Select, Static
from textual.worker import Worker, get_current_worker

MODE_OPTIONS = [("checkpoint or LoRA", "checkpoint"), ("run, per epoch", "run")]
# (key, label, placeholder, tooltip, is a path) of the text fields, in form order.
TEXT_FIELDS: list[tuple[str, str, str, str, bool]] = [
    (
        "candidate",
        "Candidate",
        "checkpoint or LoRA path",
        "The checkpoint to measure (diffusers folder or .safetensors), or a LoRA to merge into the reference",
        True,
    ),
    (
        "reference",
        "Reference",
        "e.g. models/sd15",
        "The checkpoint to compare with: vanilla SD 1.5 in practice (a LoRA's base for a LoRA)",
        True,
    ),
    (
        "base",
        "Base model",
        "the run's model.base",
        "The model the run trained on; empty takes model.base from the run's config.toml",
        True,
    ),
    ("scale", "LoRA scale", "1.0", "The LoRA weight to merge at (1.0 = as trained; 0 adds nothing)", False),
    (
        "words",
        "Words file",
        "built-in list",
        "Probe words, one a line (# comments); empty for Kiln's ~2,000 common concept words",
        True,
    ),
]
RUN_FIELDS = {"base"}
CHECKPOINT_FIELDS = {"candidate", "reference"}


class TecRunCancelled(Exception):
    """Raised inside the meter's progress callback to stop a cancelled measurement."""


class TecScreen(SectionScreen):
    """Measure text-encoder corruption: a checkpoint or LoRA against a reference, or a run per epoch.

    Args:
        root: The dataset folder (its ``runs/`` is listed in run mode).
        runs_dirs: More runs folders to list.
    """

    CSS_PATH = "tec.tcss"
    SECTION = "tec"

    BINDINGS = [
        Binding(
            "ctrl+r",
            "measure",
            "Measure",
            id="tec.measure",
            tooltip="Check the form, then measure in the background (loads only the text encoders)",
        ),
        Binding(
            "ctrl+g",
            "cancel",
            "Cancel",
            id="tec.cancel",
            tooltip="Stop the running measurement (at its next batch of words)",
        ),
        Binding(
            "ctrl+t",
            "toggle_mode",
            "Checkpoint/run",
            id="tec.mode",
            tooltip="Measure a checkpoint or LoRA against a reference, or each saved epoch of a run",
        ),
        Binding(
            "b",
            "bases",
            "Bases",
            id="tec.bases",
            tooltip="Your checkpoints side by side, least TEC first; use one as the dataset's base",
        ),
        *form_bindings("tec"),
    ]

    def __init__(self, root: Path | str, runs_dirs: Sequence[Path | str] = ()) -> None:
        super().__init__()
        self.root = Path(root)
        self.bases_options: object = None  # the Bases view's TEC probe options (None: built-in words)
        self.runs_folders = [self.root / "runs", *(Path(folder) for folder in runs_dirs)]
        self.runs: list[TecRun] = []
        self.check = TecCheck()
        self.result: TecResult | None = None
        self.running: TecJob | None = None
        self.status = ""
        # Replaced in tests (to hold a measurement mid-way); the real one imports torch.
        self.measure_fn: Callable[[TecJob, ProgressFn], TecResult] = measure
        self._worker: Worker | None = None
        self._job_id = 0
        self._stages: list[str] = []
        self._touched: set[str] = set()
        self._show_all = False

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield SectionBar("tec")
        with Horizontal(id="body"):
            with VerticalScroll(id="form"):
                with Horizontal(classes="choice"):
                    yield Label("Measure")
                    yield Select(MODE_OPTIONS, value="checkpoint", allow_blank=False, compact=True, id="mode")
                for key, label, placeholder, tooltip, is_path in TEXT_FIELDS:
                    if key == "base":
                        yield Static("", id="runs-title", classes="heading")
                        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
                        yield Static("", id="run-message")
                    yield PlanField(
                        key,
                        label,
                        "1.0" if key == "scale" else "",
                        placeholder,
                        tooltip,
                        max_length=0 if is_path else 24,
                        suggester=PathSuggester() if is_path else None,
                    )
                yield from self._checkbox(
                    "Full vocab", "full_vocab", "Probe every token (49,405 on SD 1.5): slow on a CPU"
                )
                yield from self._choice(
                    "Position",
                    "position",
                    POSITIONS,
                    "The state compared: the word's own (default) or the EOS after it",
                )
                yield from self._choice(
                    "Device", "device", DEVICES, "Where the encoders run: cpu, or cuda on a GPU server"
                )
                yield from self._checkbox(
                    "Allow pickle",
                    "allow_pickle",
                    "Accept .ckpt/.pt/.bin weights: they can run code when loaded",
                )
                yield Static(
                    "ctrl+r measure · ctrl+g cancel · ctrl+t checkpoint/run · → completes a path · "
                    "esc leaves the form (digits then switch sections)",
                    id="form-hint",
                )
            with VerticalScroll(id="results"):
                yield Static("", id="status")
                yield ProgressBar(id="progress", show_eta=True)
                yield Static(self._intro(), id="intro")
                yield Static("", id="series-title", classes="heading")
                yield TecChart(id="chart")
                yield DataTable(id="epochs", cursor_type="row", zebra_stripes=True)
                yield TecReportView(id="report")
        yield Footer()

    def _choice(self, label: str, key: str, values: Sequence[str], tooltip: str) -> ComposeResult:
        with Horizontal(classes="choice"):
            yield Label(label)
            yield Select(
                [(value, value) for value in values],
                value=values[0],
                allow_blank=False,
                compact=True,
                id=key,
                tooltip=tooltip,
            )

    def _checkbox(self, label: str, key: str, tooltip: str) -> ComposeResult:
        with Horizontal(classes="choice"):
            yield Label(label)
            yield Checkbox("off", compact=True, id=key, tooltip=tooltip)

    def _intro(self) -> Content:
        return Content.assemble(
            ("Text-encoder corruption (TEC)\n", "bold"),
            "Each probe word is encoded by the candidate and by the reference; the TEC score is the "
            "mean (1 - cosine) x 100, the confusion rate the share of words now nearest another "
            "word's meaning (cat -> dog).\n\n",
            "Pick a checkpoint (or a LoRA) and the reference it should match, vanilla SD 1.5 in "
            "practice, or a run (ctrl+t) to see the TEC each saved epoch added. ",
            ("ctrl+r", "bold"),
            " measures; only the text encoders are loaded.\n\n",
            (f"({THRESHOLDS_NOTE})", "$text-muted"),
        )

    def on_mount(self) -> None:
        self.fields: dict[str, PlanField] = {field.key: field for field in self.query(PlanField)}
        self.query_one("#runs", DataTable).add_columns("run", "saved", "TE")
        self.query_one("#epochs", DataTable).add_columns("epoch", "score", "confusion", "reading")
        self.query_one("#form").border_title = "TEC"
        self.query_one("#results").border_title = "Results"
        self.query_one("#progress").display = False
        self.query_one("#status").display = False
        self.refresh_runs()
        self.show_mode()
        self.show_result()
        self.query_one("#mode", Select).focus()

    def on_screen_resume(self) -> None:
        # A run may have saved another epoch meanwhile.
        self.refresh_runs()

    # -- the form ----------------------------------------------------------------------------

    def read_inputs(self) -> TecInputs:
        """The form as it stands."""

        def chosen(key: str) -> str:
            value = self.query_one(f"#{key}", Select).value
            return value if isinstance(value, str) else ""

        return TecInputs(
            mode="run" if chosen("mode") == "run" else "checkpoint",
            candidate=self.fields["candidate"].text,
            reference=self.fields["reference"].text,
            run=self.highlighted_run(),
            base=self.fields["base"].text,
            scale=self.fields["scale"].text,
            words=self.fields["words"].text,
            full_vocab=self.query_one("#full_vocab", Checkbox).value,
            position=chosen("position"),
            device=chosen("device"),
            allow_pickle=self.query_one("#allow_pickle", Checkbox).value,
        )

    def recheck(self) -> TecCheck:
        """Check the form again and show the messages of the fields the user has been through."""
        self.check = check_inputs(self.read_inputs())
        self.show_form()
        return self.check

    def show_form(self) -> None:
        """Messages under fields (those left, or all after a ctrl+r); the run's problem under the list."""
        check = self.check
        for key, field in self.fields.items():
            shown = self._show_all or key in self._touched
            if shown and key in check.errors:
                field.set_message(check.errors[key])
            elif key in check.notes and (shown or key == "base"):
                field.set_message(check.notes[key], note=True)
            else:
                field.set_message(None)
        run_message = self.query_one("#run-message", Static)
        error = check.errors.get("run", "")
        run_message.update(error)
        run_message.display = bool(error) and self.mode == "run"
        lora = "candidate" in check.notes
        self.fields["scale"].display = self.mode == "run" or lora

    @property
    def mode(self) -> str:
        """``checkpoint`` or ``run``."""
        return "run" if self.query_one("#mode", Select).value == "run" else "checkpoint"

    def show_mode(self) -> None:
        """Show the fields of the mode: candidate and reference, or the runs and a base."""
        run = self.mode == "run"
        for key in CHECKPOINT_FIELDS:
            self.fields[key].display = not run
        for key in RUN_FIELDS:
            self.fields[key].display = run
        self.query_one("#runs").display = run
        self.query_one("#runs-title").display = run
        self.recheck()

    @on(Input.Changed)
    def input_changed(self, event: Input.Changed) -> None:
        event.stop()
        key = event.input.id or ""
        # A message about the old text would mislead; the field is checked again when left.
        if key in self.fields and key in self.check.errors:
            self.fields[key].set_message(None)

    @on(Input.Blurred)
    def input_left(self, event: Input.Blurred) -> None:
        key = event.input.id or ""
        if key in self.fields and event.input.value.strip():
            self._touched.add(key)
        self.recheck()

    @on(Input.Submitted)
    def input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        key = event.input.id or ""
        if key in self.fields:
            self._touched.add(key)
        self.recheck()

    @on(Select.Changed)
    def select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.select.id == "mode":
            self.show_mode()
        else:
            self.recheck()

    @on(Checkbox.Changed)
    def checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        # Say it in words: the box's mark differs only by colour.
        event.checkbox.label = "on" if event.value else "off"
        self.recheck()

    def action_toggle_mode(self) -> None:
        select = self.query_one("#mode", Select)
        select.value = "checkpoint" if select.value == "run" else "run"
        if select.value == "run":
            self.refresh_runs()
        self.show_mode()

    def action_leave_form(self) -> None:
        if self.query_one("#form").has_focus_within:
            self.query_one("#results").focus()

    def action_edit_form(self) -> None:
        self.query_one("#mode", Select).focus()

    # -- runs --------------------------------------------------------------------------------

    def refresh_runs(self) -> None:
        """List the runs again (names and LoRA headers only), keeping the highlighted one."""
        keep = self.highlighted_run()
        try:
            self.runs = tec_runs(self.runs_folders)
        except OSError as exc:
            self.runs = []
            self.notify(f"cannot list runs ({exc})", severity="error")
        table = self.query_one("#runs", DataTable)
        table.clear()
        for run in self.runs:
            te = "—" if run.text_encoder is None else ("yes" if run.text_encoder else "no")
            table.add_row(run.name, str(len(run.loras)), te)
        paths = [run.path for run in self.runs]
        if keep is not None and keep.path in paths:
            table.move_cursor(row=paths.index(keep.path))
        where = ", ".join(self._shown_folder(folder) for folder in self.runs_folders)
        title = f"Runs in {where}" if self.runs else f"No runs in {where} yet"
        self.query_one("#runs-title", Static).update(Content(title))
        if self.is_mounted:
            self.recheck()

    def _shown_folder(self, folder: Path) -> str:
        try:
            return f"{self.root.name}/{folder.relative_to(self.root).as_posix()}/"
        except ValueError:
            return f"{folder}/"

    def highlighted_run(self) -> TecRun | None:
        """The run under the runs list's cursor (None when there is none)."""
        if not self.runs:
            return None
        table = self.query_one("#runs", DataTable)
        return self.runs[min(max(table.cursor_row, 0), len(self.runs) - 1)]

    @on(DataTable.RowHighlighted, "#runs")
    def run_highlighted(self) -> None:
        self.recheck()

    @on(DataTable.RowSelected, "#runs")
    def run_selected(self) -> None:
        # Enter on a run: measure it (the list is the one choice a run needs).
        self.action_measure()

    def action_bases(self) -> None:
        """Open the Bases view; ``enter`` there comes back to measure that base in full here."""
        from kiln.tui.screens.bases import BasesScreen, FullReport

        def measure_in_full(chosen: FullReport | None) -> None:
            if chosen is None:
                return
            self.query_one("#mode", Select).value = "checkpoint"
            self.query_one("#candidate", Input).value = chosen.path
            self.query_one("#reference", Input).value = chosen.reference
            self.action_measure()

        reference = self.query_one("#reference", Input).value.strip()
        self.app.push_screen(BasesScreen(reference=reference, options=self.bases_options), measure_in_full)

    # -- measuring ---------------------------------------------------------------------------

    def action_measure(self) -> None:
        """Check every field; if all are fine, measure in a worker thread."""
        if self.running is not None:
            self.notify("A measurement is running: ctrl+g cancels it.", severity="warning")
            return
        self._show_all = True
        check = self.recheck()
        if check.job is None:
            fields = ", ".join(key for key in check.errors)
            self.set_status(Content.assemble(("Not measured: ", "bold"), (f"fix {fields}", "$text-error")))
            return
        self.start(check.job)

    def start(self, job: TecJob) -> None:
        """Measure ``job`` in the background."""
        self._job_id += 1
        self.running = job
        self._stages = job.stages()
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        self.set_status(
            Content.assemble(("Loading the text encoders…", "bold"), ("  ctrl+g cancels", "$text-muted"))
        )
        self._worker = self.measure_job(job, self._job_id)

    @work(thread=True, exclusive=True, group="tec")
    def measure_job(self, job: TecJob, job_id: int) -> None:
        """Run the meter off the UI thread; the progress callback stops it once cancelled."""
        worker = get_current_worker()

        def progress(stage: str, done: int, total: int) -> None:
            if worker.is_cancelled:
                raise TecRunCancelled
            self.post_message(TecProgress(job_id, stage, done, total))

        try:
            result = self.measure_fn(job, progress)
        except TecRunCancelled:
            return
        except Exception as exc:  # a damaged file or a library error must not kill the screen
            self.post_message(TecFailed(job_id, self.worker_error(exc)))
            return
        if not worker.is_cancelled:
            self.post_message(TecFinished(job_id, result))

    def on_tec_progress(self, message: TecProgress) -> None:
        if message.job_id != self._job_id or self.running is None:
            return
        stages = self._stages
        index = stages.index(message.stage) if message.stage in stages else 0
        bar = self.query_one("#progress", ProgressBar)
        fraction = message.done / message.total if message.total else 1.0
        bar.update(total=1000 * len(stages), progress=1000 * (index + fraction))
        if index == len(stages) - 1 and message.done >= message.total:
            # The last words are encoded; the confusion search and layer distances follow.
            self.set_status(Content.assemble(("Comparing the embeddings and weights…", "bold")))
            return
        step = f" ({index + 1} of {len(stages)})" if len(stages) > 2 else ""
        self.set_status(
            Content.assemble(
                (f"Encoding {message.stage}", "bold"),
                f"{step}: {message.done:,}/{message.total:,} words",
                ("  ctrl+g cancels", "$text-muted"),
            )
        )

    def on_tec_finished(self, message: TecFinished) -> None:
        if message.job_id != self._job_id:
            return
        self._finish()
        self.result = message.result
        self.show_result()
        job = message.result.job
        if job.run is not None:
            count = len(message.result.series)
            what = f"{count} saved epoch{'s' if count != 1 else ''}"
        else:
            report = message.result.report
            assert report is not None
            what = f"{len(report.words):,} words, {report.reading}"
        self.set_status(Content.assemble(("Measured: ", "bold $text-success"), what))
        if not self.is_current:
            self.notify(f"TEC measured: {what}", title="TEC")

    def on_tec_failed(self, message: TecFailed) -> None:
        if message.job_id != self._job_id:
            return
        self._finish()
        error = form_wording(message.error)
        self.set_status(Content.assemble(("Failed: ", "bold $text-error"), error))
        if not self.is_current:
            self.notify(error, title="TEC", severity="error", timeout=10)

    def action_cancel(self) -> None:
        """Cancel the running measurement; what it sends after this is ignored."""
        if self.running is None:
            self.notify("Nothing is being measured.")
            return
        if self._worker is not None:
            self._worker.cancel()
        self._job_id += 1
        self._finish()
        kept = ": the previous results stay shown" if self.result is not None else ""
        self.set_status(Content.assemble(("Cancelled", "bold $text-warning"), kept))

    def _finish(self) -> None:
        self.running = None
        self._worker = None
        self.query_one("#progress", ProgressBar).display = False

    def set_status(self, content: Content | str) -> None:
        """The line above the results: what is running, what failed, what was measured."""
        self.status = content.plain if isinstance(content, Content) else content
        status = self.query_one("#status", Static)
        status.update(content)
        status.display = bool(self.status)

    # -- results -----------------------------------------------------------------------------

    def show_result(self) -> None:
        """The intro before the first measurement; then the report, or the run's chart and epochs."""
        result = self.result
        self.query_one("#intro").display = result is None
        series = result is not None and result.job.kind == "run"
        for selector in ("#chart", "#epochs", "#series-title"):
            self.query_one(selector).display = series
        view = self.query_one("#report", TecReportView)
        if result is None:
            view.show(None)
            return
        if result.report is not None:
            job = result.job
            assert job.candidate is not None and job.reference is not None
            title = f"{job.candidate.name} vs {job.reference.name}"
            if job.kind == "lora":
                title = f"{job.reference.name} + {job.candidate.name} x {job.scale:g} vs {job.reference.name}"
            view.show(result.report, title)
            return
        self._show_series(result)

    def _show_series(self, result: TecResult) -> None:
        points = [
            (entry.epoch if entry.epoch is not None else index + 1, entry.report.score)
            for index, entry in enumerate(result.series)
        ]
        chart = self.query_one("#chart", TecChart)
        chart.show(points)
        assert result.job.run is not None
        title: list = [("TEC added per epoch: ", "bold"), result.job.run.name]
        if chart.drawn_bands:
            # Band i starts reading i + 1: score 1 starts "mild", 5 "heavy".
            lines = ", ".join(
                f"{READINGS[SCORE_BANDS.index(band) + 1]} from {band:g} ({BAND_COLOUR_NAMES[index]})"
                for index, band in enumerate(SCORE_BANDS)
                if band in chart.drawn_bands
            )
            title += ["\n", (f"lines: {lines}; provisional", "$text-muted")]
        self.query_one("#series-title", Static).update(Content.assemble(*title))
        table = self.query_one("#epochs", DataTable)
        table.clear()
        for (epoch, _), entry in zip(points, result.series, strict=True):
            report = entry.report
            table.add_row(
                str(epoch),
                f"{report.score:.3f}",
                f"{100 * report.confusion_rate:.2f}%",
                report.reading if entry.text_encoder else "U-Net only",
            )
        if result.series:
            table.move_cursor(row=len(result.series) - 1)
        self._show_epoch()

    @on(DataTable.RowHighlighted, "#epochs")
    def epoch_highlighted(self) -> None:
        self._show_epoch()

    def _show_epoch(self) -> None:
        result = self.result
        if result is None or not result.series:
            return
        table = self.query_one("#epochs", DataTable)
        entry = result.series[min(max(table.cursor_row, 0), len(result.series) - 1)]
        epoch = "?" if entry.epoch is None else str(entry.epoch)
        self.query_one("#report", TecReportView).show(entry.report, f"Epoch {epoch}: {entry.path.name}")
