"""The auto-caption pane: the captioner form, a run in a thread worker, its progress and outcomes.

The model is loaded inside the worker, so torch, transformers and onnxruntime are imported
only when the user starts a run, never when the workbench opens. The pane posts a message
for every batch of written captions as it goes, so the rest of the workbench shows them at
once, and the run stops between batches when cancelled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from kiln.engine.caption.autocaption import (
    FAILED,
    SKIPPED,
    UNCHANGED,
    WRITTEN,
    CaptionOptions,
    CaptionOutcome,
    CaptionRun,
    IdleCaptioner,
    any_needs_caption,
    caption_images,
    default_trigger_position,
    load_captioner,
)
from kiln.engine.caption.model_folders import (
    BLIP_PROCESSOR_FILES,
    WD14_MODEL_FILE,
    WD14_TAGS_FILE,
    check_model_folder,
)
from kiln.engine.caption.run_choices import CaptionChoices
from kiln.engine.caption.settings import BlipSettings, Wd14Settings
from kiln.engine.dataset.scan import ImageRecord
from kiln.engine.dataset.store import Store
from kiln.engine.errors import KilnError
from kiln.tui.screens.section import worker_error_text
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Label, ProgressBar, Select, Static
from textual.worker import Worker, get_current_worker

STYLE_OPTIONS = [("WD14 tags", "wd14"), ("BLIP sentence", "blip")]
MODE_OPTIONS = [("skip captioned", "skip"), ("overwrite", "overwrite"), ("append new", "append")]
MODEL_HINTS = {
    "wd14": f"folder holding {WD14_MODEL_FILE} and {WD14_TAGS_FILE}",
    "blip": f"BLIP folder (config.json, {BLIP_PROCESSOR_FILES[0]}, model.safetensors)",
}
RUN_HELP = (
    "Captions the scope's images with a local model; nothing is downloaded. WD14 writes booru tags "
    "(the trigger goes first), BLIP a sentence (the trigger goes last). Mode: skip leaves captioned "
    "images alone, overwrite replaces their captions, append adds the new tags they lack. "
    "The whole run is one undo step (u). Tab moves through the form, ctrl+r starts, x cancels."
)
STATUS_LOOK = {
    WRITTEN: ("✓ written", "green"),
    UNCHANGED: ("= same", "dim"),
    SKIPPED: ("· skipped", "dim"),
    FAILED: ("✗ failed", "red"),
}


@dataclass(frozen=True)
class RunRequest:
    """A checked form: what to load and how to write, ready for the worker."""

    style: str
    folder: Path
    settings: Wd14Settings | BlipSettings
    options: CaptionOptions
    choices: CaptionChoices


@dataclass
class _Counts:
    done: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: CaptionOutcome) -> None:
        self.done += 1
        self.by_status[outcome.status] = self.by_status.get(outcome.status, 0) + 1

    def line(self) -> str:
        get = self.by_status.get
        return (
            f"{get(WRITTEN, 0)} written · {get(UNCHANGED, 0)} same · {get(SKIPPED, 0)} skipped · "
            f"{get(FAILED, 0)} failed"
        )


class CaptionRunPane(Vertical):
    """Choose a captioner and run it over the scope's images; cancellable, never blocking the UI."""

    class Outcomes(Message):
        """Outcomes of the images finished since the last message (posted from the worker)."""

        def __init__(self, outcomes: list[CaptionOutcome]) -> None:
            super().__init__()
            self.outcomes = outcomes

    class ModelLoaded(Message):
        """The worker has the model and starts captioning."""

    class Finished(Message):
        """The run ended: ``run`` is None when it failed before captioning (``error`` says why)."""

        def __init__(self, run: CaptionRun | None, error: str | None) -> None:
            super().__init__()
            self.run = run
            self.error = error

    class Written(Message):
        """Captions were written for these images (bubbles up to the screen)."""

        def __init__(self, paths: list[str]) -> None:
            super().__init__()
            self.paths = paths

    def __init__(self, choices: CaptionChoices, **kwargs) -> None:
        super().__init__(**kwargs)
        self.choices = choices
        self._models = {"wd14": choices.wd14_model, "blip": choices.blip_model}
        self._style = choices.style
        self._worker: Worker | None = None
        self._counts = _Counts()
        self._total = 0
        self._cancelling = False
        self._active = False

    def compose(self) -> ComposeResult:
        choices = self.choices
        with Horizontal(classes="form-row"):
            yield Label("Style", classes="label")
            yield Select(STYLE_OPTIONS, value=choices.style, allow_blank=False, compact=True, id="style")
            yield Label("Mode", classes="label short")
            yield Select(MODE_OPTIONS, value=choices.mode, allow_blank=False, compact=True, id="mode")
            yield Label("Threshold", classes="label", id="threshold-label")
            yield Input(str(choices.threshold), type="number", compact=True, id="threshold")
        with Horizontal(classes="form-row"):
            yield Label("Model", classes="label")
            yield Input(
                choices.model_for(choices.style),
                placeholder=MODEL_HINTS[choices.style],
                compact=True,
                id="model",
            )
        with Horizontal(classes="form-row"):
            yield Label("Trigger", classes="label")
            yield Input(
                choices.trigger,
                placeholder="made-up word for what captions leave unsaid (blank: none)",
                compact=True,
                id="trigger",
            )
        yield Static("", id="run-message")
        with Horizontal(id="run-progress-row"):
            yield ProgressBar(show_eta=False, show_percentage=False, id="run-progress")
            yield Static("", id="run-counts")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="outcomes")
        yield Static(RUN_HELP, id="run-help")

    def on_mount(self) -> None:
        table = self.outcome_table
        table.add_column("status", width=10, key="status")
        table.add_column("image", width=26, key="image")
        table.add_column("caption or error", key="text")
        self._show_style(self._style)
        self.check_model()
        self.query_one("#run-progress-row").display = False
        table.display = False

    # -- form --------------------------------------------------------------------------------

    @property
    def outcome_table(self) -> DataTable:
        """The per-image outcomes of the last run."""
        return self.query_one("#outcomes", DataTable)

    @property
    def running(self) -> bool:
        """Whether a run is going on (its worker has not ended)."""
        return self._active

    def say(self, message: str, kind: str = "") -> None:
        """Show one line under the form (``error``, ``ok`` or plain)."""
        line = self.query_one("#run-message", Static)
        line.update(Text(message))
        line.set_class(kind == "error", "-error")
        line.set_class(kind == "ok", "-ok")

    def _show_style(self, style: str) -> None:
        threshold = self.query_one("#threshold", Input)
        threshold.disabled = style != "wd14"
        self.query_one("#threshold-label").set_class(style != "wd14", "-disabled")
        self.query_one("#model", Input).placeholder = MODEL_HINTS[style]

    @on(Select.Changed, "#style")
    def style_changed(self, event: Select.Changed) -> None:
        style = str(event.value)
        if style == self._style:
            return
        model = self.query_one("#model", Input)
        self._models[self._style] = model.value
        self._style = style
        model.value = self._models.get(style, "")
        self._show_style(style)
        self.check_model()

    @on(Input.Changed, "#model")
    def model_changed(self) -> None:
        if not self.running:
            self.check_model()

    def check_model(self) -> bool:
        """Say whether the model folder holds what the chosen style needs; True when it does."""
        text = self.query_one("#model", Input).value.strip()
        if not text:
            self.say(f"Model: type the path of a {MODEL_HINTS[self._style]}.")
            return False
        try:
            check_model_folder(self._style, Path(text).expanduser())
        except KilnError as exc:
            self.say(f"✗ {exc}", "error")
            return False
        self.say("✓ model folder looks complete · ctrl+r starts", "ok")
        return True

    def request(self) -> RunRequest | None:
        """The checked form, or None after saying (in one line) what to fix."""
        style = self._style
        if not self.check_model():
            if not self.query_one("#model", Input).value.strip():
                self.say(f"✗ no model folder: type the path of a {MODEL_HINTS[style]}", "error")
            return None
        folder = Path(self.query_one("#model", Input).value.strip()).expanduser()
        mode = str(self.query_one("#mode", Select).value)
        trigger = " ".join(self.query_one("#trigger", Input).value.split())
        threshold_text = self.query_one("#threshold", Input).value.strip()
        try:
            threshold = float(threshold_text)
            if not 0.0 <= threshold <= 1.0:
                raise ValueError
        except ValueError:
            self.say(f"✗ threshold {threshold_text!r}: use a number from 0 to 1 (0.35 is usual)", "error")
            return None
        try:
            options = CaptionOptions(
                mode=mode, trigger=trigger, trigger_position=default_trigger_position(style)
            )
            settings: Wd14Settings | BlipSettings = (
                Wd14Settings(general_threshold=threshold) if style == "wd14" else BlipSettings()
            )
        except KilnError as exc:
            self.say(f"✗ {exc}", "error")
            return None
        self._models[style] = self.query_one("#model", Input).value.strip()
        choices = replace(
            self.choices,
            style=style,
            wd14_model=self._models.get("wd14", ""),
            blip_model=self._models.get("blip", ""),
            trigger=trigger,
            mode=mode,
            threshold=threshold,
        )
        return RunRequest(style, folder, settings, options, choices)

    # -- the run -----------------------------------------------------------------------------

    def start(self, request: RunRequest, records: list[ImageRecord], root: Path, store: Store) -> None:
        """Run the captioner over ``records`` in a thread worker."""
        self.choices = request.choices
        self._counts = _Counts()
        self._total = len(records)
        self._cancelling = False
        self._active = True
        self.outcome_table.clear()
        self.outcome_table.display = True
        self.query_one("#run-help").display = False
        self.query_one("#run-progress-row").display = True
        bar = self.query_one("#run-progress", ProgressBar)
        bar.update(total=None, progress=0)
        self.query_one("#run-counts", Static).update(f"0/{len(records)}")
        self.say(f"loading the {request.style} model from {request.folder} … (x cancels)")
        self._worker = self.run_captioner(request, list(records), root, store)

    def cancel(self) -> bool:
        """Ask the run to stop after its current batch; False when none is going on."""
        if not self.running or self._worker is None:
            return False
        self._cancelling = True
        self._worker.cancel()
        self.say("stopping after the current batch …")
        return True

    @work(thread=True, exclusive=True, group="caption-run")
    def run_captioner(
        self, request: RunRequest, records: list[ImageRecord], root: Path, store: Store
    ) -> None:
        """Load the model here (heavy imports happen in this thread) and caption the images."""
        worker = get_current_worker()
        captioner = None
        try:
            if any_needs_caption(records, request.options.mode):
                captioner = load_captioner(request.style, request.folder, request.settings)
            else:
                captioner = IdleCaptioner(request.style)  # nothing to caption: no model to load
            self.post_message(self.ModelLoaded())
            pending: list[CaptionOutcome] = []
            last = time.monotonic()

            def on_outcome(outcome: CaptionOutcome) -> None:
                nonlocal last
                pending.append(outcome)
                # One message per tenth of a second: thousands of images stay one redraw each.
                if time.monotonic() - last > 0.1:
                    self.post_message(self.Outcomes(list(pending)))
                    pending.clear()
                    last = time.monotonic()

            run = caption_images(
                records,
                captioner,
                request.options,
                root=root,
                store=store,
                on_outcome=on_outcome,
                should_stop=lambda: worker.is_cancelled,
            )
            if pending:
                self.post_message(self.Outcomes(list(pending)))
            self.post_message(self.Finished(run, None))
        except Exception as exc:  # a worker error must never take the workbench down
            self.post_message(self.Finished(None, worker_error_text(exc)))
        finally:
            if captioner is not None:
                captioner.close()

    def on_caption_run_pane_model_loaded(self, event: ModelLoaded) -> None:
        event.stop()
        if not self._cancelling:
            self.say("captioning … (x cancels after the current batch)")
        self._show_progress()

    def _show_progress(self) -> None:
        self.query_one("#run-progress", ProgressBar).update(
            total=max(1, self._total), progress=self._counts.done
        )
        self.query_one("#run-counts", Static).update(
            f"{self._counts.done}/{self._total} · {self._counts.line()}"
        )

    def on_caption_run_pane_outcomes(self, event: Outcomes) -> None:
        event.stop()
        table = self.outcome_table
        written = []
        for outcome in event.outcomes:
            self._counts.add(outcome)
            label, style = STATUS_LOOK[outcome.status]
            if outcome.status == FAILED:
                text = Text(outcome.error or "", style="red")
            else:
                text = Text(
                    " ".join((outcome.text or "").split()), style="" if outcome.status == WRITTEN else "dim"
                )
            table.add_row(Text(label, style=style), outcome.rel_path, text, key=outcome.rel_path)
            if outcome.status == WRITTEN:
                written.append(outcome.rel_path)
        if table.row_count and not table.has_focus:
            table.move_cursor(row=table.row_count - 1, animate=False)
        self._show_progress()
        if written:
            self.post_message(self.Written(written))

    def on_caption_run_pane_finished(self, event: Finished) -> None:
        # Not stopped: the screen hears of it too (to refresh tags and lint).
        self._active = False
        run = event.run
        self._show_progress()
        if run is None:
            self.say(f"✗ {event.error}", "error")
            if not self._counts.done:
                self.query_one("#run-progress-row").display = False
            return
        undo = " · u undoes it" if run.step is not None else ""
        if run.stopped:
            self.say(f"stopped after {self._counts.done} of {self._total} images{undo}")
        elif run.failed:
            self.say(f"done, {len(run.failed)} image(s) failed (see the list){undo}", "error")
        elif run.count(SKIPPED) == self._total and self._total:
            self.say("nothing to do: every image has a caption; choose mode overwrite or append to redo them")
        else:
            self.say(f"done: {self._counts.line()}{undo}", "ok")
