"""The plan screen: steps, repeats and epochs as Kohya counts them, updated as you type.

The form reads its images and repeats from the dataset (the included images, per concept
folder and aspect bucket) or takes them typed; the results, the bucket table and the
guide's warnings follow every keystroke. A solved repeats value can be applied by renaming
the concept folder, the only place Kohya reads repeats from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kiln.engine.curate import Curation
from kiln.engine.errors import KilnError, UsageError
from kiln.engine.plan.advisor import cuda_bf16_supported, cuda_memory_gib
from kiln.engine.plan.buckets import BucketSpec
from kiln.engine.plan.loads import DatasetLoad, dataset_load
from kiln.engine.plan.reg import RegSet
from kiln.engine.plan.repeats import rename_concept_repeats, renamed_folder
from kiln.engine.plan.saved import load_plan_settings, save_plan_settings
from kiln.tui.form_keys import form_bindings
from kiln.tui.messages import BaseChosen, ConceptRenamed, DatasetLoaded, RegLoaded
from kiln.tui.plan_form import (
    DEFAULTS,
    FAMILY_RESOLUTIONS,
    SUBJECT_OPTIONS,
    PlanInputs,
    PlanOutcome,
    bucket_spec,
    evaluate,
)
from kiln.tui.screens.rename import RenameConceptScreen
from kiln.tui.screens.section import SectionScreen
from kiln.tui.widgets.plan_field import PlanField, content_key
from kiln.tui.widgets.section_bar import SectionBar
from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.timer import Timer
from textual.widgets import Checkbox, DataTable, Footer, Input, Label, Select, Static
from textual.worker import get_current_worker

# (key, label, placeholder, tooltip) of the text fields, in form order.
TEXT_FIELDS: list[tuple[str, str, str, str]] = [
    ("target", "Target steps", "e.g. 3500", "The step count to reach; Kiln solves the repeats or epochs"),
    ("images", "Images", "e.g. 10", "How many images you train on"),
    ("repeats", "Repeats", "e.g. 10", "How often each image is seen per epoch (Kohya: the folder prefix)"),
    ("batch", "Batch", "e.g. 2", "train_batch_size: the guide uses 1-2 for final runs, at most 4"),
    ("epochs", "Epochs", "e.g. 10", "max_train_epochs: the guide uses at least 10"),
    ("grad_accumulation", "Grad accum.", "1", "gradient_accumulation_steps"),
    ("gpus", "GPUs", "1", "Training processes; each takes its own batches"),
    ("resolution", "Resolution", "512 or 512x768", "Kohya's resolution: the area every aspect bucket keeps"),
    ("unet_lr", "U-Net LR", "e.g. 1e-4", "unet_lr: the guide starts LoRAs at 1e-4..5e-4"),
    ("te_lr", "TE LR", "2e-5 or 1/5", "text_encoder_lr, or 1/N of the U-Net LR (the guide: 1/6..1/4)"),
    (
        "reg",
        "Reg images",
        "folder of N_class/ (optional)",
        "Kohya's reg_data_dir: class images balanced to the training samples, counted in every epoch",
    ),
]
SOURCE_OPTIONS = [("from dataset", "dataset"), ("typed", "typed")]
SOLVE_OPTIONS = [("steps", "steps"), ("repeats for target", "repeats"), ("epochs for target", "epochs")]
PRECISION_OPTIONS = [("fp16", "fp16"), ("bf16", "bf16"), ("fp32", "fp32")]
TRAINING_OPTIONS = [("LoRA", "lora"), ("full fine-tune", "full")]
RUN_OPTIONS = [("final", "final"), ("test", "test")]
FAMILY_OPTIONS = [("SD 1.5", "sd15"), ("SDXL", "sdxl")]
CHOICES = {"source", "solve", "family", "subject", "precision", "training", "run"}


class PlanScreen(SectionScreen):
    """Plan a run: images, repeats, batch and epochs in, Kohya's step count and the advice out.

    Args:
        curation: The dataset as the workbench holds it (selection included).
    """

    CSS_PATH = "plan.tcss"
    SECTION = "plan"

    BINDINGS = [
        Binding(
            "ctrl+r",
            "rename",
            "Rename concept",
            id="plan.rename",
            tooltip="Rename the highlighted concept folder (10_cat -> 35_cat) so Kohya trains the new "
            "repeats; asks first, never overwrites, keeps the selection",
        ),
        Binding(
            "ctrl+t",
            "toggle_source",
            "Source",
            id="plan.source",
            tooltip="Take images and repeats from the dataset's included images, or type them",
        ),
        *form_bindings("plan"),
    ]

    def __init__(self, curation: Curation) -> None:
        super().__init__()
        self.curation = curation
        self.load: DatasetLoad | None = None
        self.load_spec: BucketSpec | None = None
        self.load_error: str | None = None
        self._requested_spec: BucketSpec | None = None
        self.outcome = PlanOutcome()
        self.inputs = PlanInputs(DEFAULTS)
        # Replaced in tests; probing imports torch, so it runs once, in a worker.
        self.bf16_supported: Callable[[], bool | None] = cuda_bf16_supported
        self._bf16: bool | None = None
        self._bf16_probed = False
        self.gpu_memory: Callable[[], float | None] = cuda_memory_gib
        self._reg: RegSet | None = None
        self._reg_key: tuple[str, BucketSpec] | None = None
        self._reg_requested: tuple[str, BucketSpec] | None = None
        self._reg_error: str | None = None
        self._gpu_memory: float | None = None
        self._memory_probed = False
        self._concept_folders: list[str] = []
        self._measure_timer: Timer | None = None
        self._shown_content: dict[str | None, tuple | None] = {}
        self._table_rows: dict[str | None, list[tuple[str, ...]]] = {}
        self._follow_folder: str | None = None
        # The form as left on this dataset last time (kept in .kiln/, see engine/plan/saved.py).
        self.saved = load_plan_settings(curation.store)
        self._save_timer: Timer | None = None

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield SectionBar("plan")
        with Horizontal(id="body"):
            with VerticalScroll(id="form"):
                yield from self._choice("Source", "source", SOURCE_OPTIONS, "dataset")
                yield from self._choice("Solve for", "solve", SOLVE_OPTIONS, "steps")
                yield from self._choice("Model", "family", FAMILY_OPTIONS, "sd15")
                for key, label, placeholder, tooltip in TEXT_FIELDS:
                    value = self.saved.get(key)
                    text = value if isinstance(value, str) else DEFAULTS[key]
                    yield PlanField(key, label, text, placeholder, tooltip)
                    if key == "resolution":
                        yield from self._switch(
                            "No upscale",
                            "no_upscale",
                            "bucket_no_upscale: never enlarge; buckets follow the image sizes",
                        )
                yield from self._switch(
                    "Grad. ckpt",
                    "gradient_checkpointing",
                    "gradient_checkpointing: less memory, ~20% slower (SDXL under 24 GB)",
                )
                yield from self._choice("Subject", "subject", SUBJECT_OPTIONS, "")
                yield from self._choice("Precision", "precision", PRECISION_OPTIONS, "fp16")
                yield from self._choice("Training", "training", TRAINING_OPTIONS, "lora")
                yield from self._choice("Run", "run", RUN_OPTIONS, "final")
                yield Static(
                    "tab/shift+tab move · esc leaves the form (digits then switch sections)", id="form-hint"
                )
            with VerticalScroll(id="results"):
                yield Static("", id="headline")
                yield Static("", id="explain")
                yield Static("", id="concepts-title", classes="heading")
                yield DataTable(id="concepts", cursor_type="row", zebra_stripes=True)
                yield Static("", id="buckets-title", classes="heading")
                yield DataTable(id="buckets", cursor_type="none", zebra_stripes=True)
                yield Static("", id="warnings")
        yield Footer()

    def _switch(self, label: str, key: str, tooltip: str) -> ComposeResult:
        """An on/off row, as the plan's settings last left it (its label says it in words)."""
        on = self.saved.get(key) is True
        with Horizontal(classes="choice"):
            yield Label(label)
            yield Checkbox("on" if on else "off", on, compact=True, id=key, tooltip=tooltip)

    def _choice(self, label: str, key: str, options: list[tuple[str, str]], value: str) -> ComposeResult:
        saved = self.saved.get(key)
        if saved in {option for _, option in options}:
            value = str(saved)
        with Horizontal(classes="choice", id=f"row-{key}"):
            yield Label(label)
            yield Select(options, value=value, allow_blank=False, compact=True, id=key)

    def on_mount(self) -> None:
        # Read on every keystroke: look the fields up once.
        self.fields: list[PlanField] = list(self.query(PlanField))
        self.query_one("#concepts", DataTable).add_columns("folder", "rep", "imgs", "samples", "apply")
        self.query_one("#buckets", DataTable).add_columns("bucket", "imgs", "samples", "batches")
        self.query_one("#results").border_title = "Results"
        self.query_one("#form").border_title = "Plan"
        self.recompute()
        self.query_one("#source", Select).focus()

    def on_screen_resume(self) -> None:
        # The selection may have changed on the dataset screen meanwhile: count again.
        self.refresh_dataset()

    # -- reading the form --------------------------------------------------------------------

    def read_inputs(self) -> PlanInputs:
        """The form as it stands."""
        texts = {field.key: field.text for field in self.fields}

        def chosen(key: str) -> str:
            value = self.query_one(f"#{key}", Select).value
            return value if isinstance(value, str) else ""

        return PlanInputs(
            texts=texts,
            source=chosen("source"),
            solve=chosen("solve"),
            no_upscale=self.query_one("#no_upscale", Checkbox).value,
            precision=chosen("precision"),
            training=chosen("training"),
            run=chosen("run"),
            family=chosen("family") or "sd15",
            gradient_checkpointing=self.query_one("#gradient_checkpointing", Checkbox).value,
            subject=chosen("subject") or None,
        )

    @on(Input.Changed)
    def input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.recompute()

    @on(Select.Changed)
    def select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.select.id == "family" and isinstance(event.value, str):
            self._follow_family_resolution(event.value)
        self.recompute()

    def on_base_chosen(self, message: BaseChosen) -> None:
        """The Bases view chose a base: the plan follows its family."""
        self.query_one("#family", Select).value = message.family

    def _follow_family_resolution(self, family: str) -> None:
        """Switch the resolution to the family's default while it holds another family's default
        (a typed resolution stays as typed)."""
        field = next((field for field in self.fields if field.key == "resolution"), None)
        wanted = FAMILY_RESOLUTIONS.get(family)
        if field is None or wanted is None or field.text == wanted:
            return
        if field.text.strip() in FAMILY_RESOLUTIONS.values():
            field.input.value = wanted

    @on(Checkbox.Changed)
    def checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        # Say it in words: the box's mark differs only by colour.
        event.checkbox.label = "on" if event.value else "off"
        self.recompute()

    # -- the dataset's load ------------------------------------------------------------------

    def refresh_dataset(self) -> None:
        """Bucket the included images again (after a toggle, a rename, a new resolution)."""
        self._requested_spec = None
        self.recompute()

    def _want_load(self, spec: BucketSpec) -> None:
        if spec == self._requested_spec:
            return
        self._requested_spec = spec
        self.count_dataset(spec)

    @work(thread=True, exclusive=True, group="plan-load")
    def count_dataset(self, spec: BucketSpec) -> None:
        """Read image sizes (cache first, then headers) and bucket them off the UI thread."""
        worker = get_current_worker()
        try:
            load, error = dataset_load(self.curation.dataset, self.curation.store, spec), None
        except Exception as exc:  # a locked or broken state database must not kill the screen
            load, error = None, f"cannot read the dataset ({exc}); rescan it from the dataset screen"
        if not worker.is_cancelled:
            self.post_message(DatasetLoaded(spec, load, error))

    def _reg_set(self, inputs: PlanInputs, spec: BucketSpec | None) -> RegSet | None:
        """The reg folder's class images for the form's path and buckets (read in a worker)."""
        path = inputs.texts.get("reg", "").strip()
        if inputs.source != "dataset" or not path or spec is None:
            self._reg_error = None
            return None
        key = (path, spec)
        if key != self._reg_requested:
            self._reg_requested = key
            self._reg_error = None
            self.count_reg(path, spec)
        return self._reg if self._reg_key == key else None

    @work(thread=True, exclusive=True, group="plan-reg")
    def count_reg(self, path: str, spec: BucketSpec) -> None:
        """Scan and bucket the reg folder off the UI thread."""
        from kiln.engine.dataset.scan import scan_dataset
        from kiln.engine.plan.reg import reg_set

        worker = get_current_worker()
        folder = Path(path).expanduser()
        reg: RegSet | None = None
        error = None
        if not folder.is_dir():
            error = "no such folder"
        else:
            try:
                reg = reg_set(scan_dataset(folder), spec)
            except Exception as exc:  # an unreadable folder must not kill the screen
                error = f"cannot read it ({exc})"
            else:
                if not reg.images:
                    reg, error = None, "no class image Kohya would use; put them in N_class/ folders"
        if not worker.is_cancelled:
            self.post_message(RegLoaded(path, spec, reg, error))

    def on_reg_loaded(self, message: RegLoaded) -> None:
        if (message.path, message.spec) != self._reg_requested:
            return
        self._reg, self._reg_key, self._reg_error = message.reg, (message.path, message.spec), message.error
        self.recompute()

    def on_dataset_loaded(self, message: DatasetLoaded) -> None:
        if message.spec != self._requested_spec:
            return  # a resolution typed since: its own count is on the way
        self.load, self.load_spec, self.load_error = message.load, message.spec, message.error
        self.recompute()

    def dsb_verdict(self) -> str | None:
        """The dataset's DSB verdict, once every included image is measured."""
        return None if self._measuring() else self.curation.summary().verdict

    def _measuring(self) -> bool:
        return any(row.included and row.analysis is None for row in self.curation.rows.values())

    def _await_measures(self) -> None:
        """While the dataset screen is still measuring, look again shortly to add the DSB."""
        if self._measure_timer is None:
            self._measure_timer = self.set_timer(0.5, self._measures_done)

    def _measures_done(self) -> None:
        self._measure_timer = None
        if self.is_current:
            self.recompute()

    def _probe_bf16(self) -> bool | None:
        if not self._bf16_probed:
            self._bf16_probed = True
            self.probe_bf16()
        return self._bf16

    def _probe_gpu_memory(self) -> float | None:
        if not self._memory_probed:
            self._memory_probed = True
            self.probe_gpu_memory()
        return self._gpu_memory

    @work(thread=True, exclusive=True, group="plan-gpu-memory")
    def probe_gpu_memory(self) -> None:
        """Ask the GPU how much memory it has (imports torch, so never on the UI thread)."""
        try:
            self._gpu_memory = self.gpu_memory()
        except Exception:
            self._gpu_memory = None
        self.app.call_from_thread(self.recompute)

    @work(thread=True, exclusive=True, group="plan-bf16")
    def probe_bf16(self) -> None:
        """Ask the GPU about bf16 (imports torch, so never on the UI thread)."""
        try:
            self._bf16 = self.bf16_supported()
        except Exception:
            self._bf16 = None
        self.app.call_from_thread(self.recompute)

    # -- results -----------------------------------------------------------------------------

    def recompute(self) -> None:
        """Read the form, count the run, and show it (runs on every keystroke)."""
        inputs = self.read_inputs()
        self.inputs = inputs
        load = None
        if inputs.source == "dataset":
            try:
                spec = bucket_spec(inputs)
            except UsageError:
                spec = None
            if spec is not None:
                self._want_load(spec)
                if spec == self.load_spec:
                    load = self.load
        verdict = self.dsb_verdict() if inputs.source == "dataset" else None
        if inputs.source == "dataset" and verdict is None and self._measuring():
            self._await_measures()
        if self.load_error and inputs.source == "dataset" and load is None:
            outcome = PlanOutcome(problem=self.load_error)
        else:
            try:
                reg_spec: BucketSpec | None = bucket_spec(inputs)
            except UsageError:
                reg_spec = None
            reg = self._reg_set(inputs, reg_spec)
            outcome = evaluate(inputs, load, verdict, self._probe_bf16, self._probe_gpu_memory, reg)
            if self._reg_error:
                outcome.errors["reg"] = self._reg_error
        self.outcome = outcome
        self._schedule_save()
        self.show_form(inputs, outcome, load)
        self.show_results(inputs, outcome, load)

    def _schedule_save(self) -> None:
        """Keep the form for the next start, once typing pauses (one write, not one per key)."""
        if self._save_timer is not None:
            self._save_timer.stop()
        self._save_timer = self.set_timer(0.5, self.save_settings)

    def save_settings(self) -> None:
        """Write the form's values to the dataset's ``.kiln/`` (see engine/plan/saved.py)."""
        self._save_timer = None
        inputs = self.inputs
        settings: dict[str, str | bool] = {key: text for key, text in inputs.texts.items()}
        settings.update(
            source=inputs.source,
            solve=inputs.solve,
            no_upscale=inputs.no_upscale,
            precision=inputs.precision,
            training=inputs.training,
            run=inputs.run,
            family=inputs.family,
            gradient_checkpointing=inputs.gradient_checkpointing,
            subject=inputs.subject or "",
        )
        try:
            save_plan_settings(self.curation.store, settings)
        except Exception as exc:  # a locked or read-only store: the plan itself still works
            self.notify(f"cannot keep the plan settings ({exc})", severity="warning")

    def on_unmount(self) -> None:
        if self._save_timer is not None:
            self._save_timer.stop()
            self.save_settings()

    def show_form(self, inputs: PlanInputs, outcome: PlanOutcome, load: DatasetLoad | None) -> None:
        """Messages under bad fields; solved and dataset values in place of their inputs."""
        solution = outcome.solution
        for field in self.fields:
            if field.key == "te_lr" and "te_lr" not in outcome.errors and "/" in field.text:
                # A ratio: say which rate it gives.
                ratio = outcome.text_encoder_lr
                field.set_message(None if ratio is None else f"= {ratio:.3g}", note=True)
            else:
                field.set_message(outcome.errors.get(field.key))
        self.query_one("#field-target", PlanField).display = inputs.solve != "steps"
        images = self.query_one("#field-images", PlanField)
        if inputs.source == "dataset":
            # The last count, even for another resolution: the images hardly depend on it, and
            # a half-typed resolution should not blank the form.
            latest = load or self.load
            count = "…" if latest is None else str(latest.images)
            images.show_value(Content.assemble((count, "bold"), " included"))
        else:
            images.show_value(None)
        repeats = self.query_one("#field-repeats", PlanField)
        repeats.input.placeholder = "each folder's own" if inputs.source == "dataset" else "e.g. 10"
        if inputs.solve == "repeats":
            value = "…" if solution is None else str(solution.repeats)
            repeats.show_value(Content.assemble((value, "bold $text-success"), " solved"))
        else:
            repeats.show_value(None)
        epochs = self.query_one("#field-epochs", PlanField)
        if inputs.solve == "epochs":
            value = "…" if solution is None else str(solution.epochs)
            epochs.show_value(Content.assemble((value, "bold $text-success"), " solved"))
        else:
            epochs.show_value(None)

    def show_results(self, inputs: PlanInputs, outcome: PlanOutcome, load: DatasetLoad | None) -> None:
        """The counts, why they differ from the plain formula, the tables and the warnings."""
        headline = self.query_one("#headline", Static)
        explain = self.query_one("#explain", Static)
        plan, solution = outcome.plan, outcome.solution
        if plan is None or solution is None:
            if outcome.problem:
                self._put(
                    headline, Content.assemble(("No plan yet: ", "bold"), (outcome.problem, "$text-warning"))
                )
            else:
                fields = ", ".join(self._label(key) for key in outcome.errors)
                self._put(
                    headline, Content.assemble(("No plan yet: ", "bold"), (f"fix {fields}", "$text-error"))
                )
            self._put(explain, "")
        else:
            self._put(headline, self._headline(inputs, outcome))
            self._put(explain, self._explain(outcome))
        self._fill_concepts(inputs, outcome, load or self.load)
        self._fill_buckets(inputs, outcome, load)
        self._show_warnings(inputs, outcome)

    def _put(self, static: Static, content: Content | str) -> None:
        """Update a Static only when its content changed (each update re-lays out the pane)."""
        key = content_key(content)
        if self._shown_content.get(static.id) != key:
            self._shown_content[static.id] = key
            static.update(content)

    def _set_rows(self, table: DataTable, table_rows: list[tuple[str, ...]], keep: str | None = None) -> None:
        """Refill a table only when its rows changed.

        Args:
            table: The table.
            table_rows: Its new rows.
            keep: The first cell of the row the cursor should stay on; else the same index.
        """
        if self._table_rows.get(table.id) == table_rows:
            return
        self._table_rows[table.id] = table_rows
        cursor = table.cursor_row
        firsts = [row[0] for row in table_rows]
        if keep in firsts:
            cursor = firsts.index(keep)
        table.clear()
        for row in table_rows:
            table.add_row(*row)
        if table.row_count and table.cursor_type != "none":
            table.move_cursor(row=min(cursor, table.row_count - 1))

    def _label(self, key: str) -> str:
        return next((label for name, label, _, _ in TEXT_FIELDS if name == key), key).lower()

    def _headline(self, inputs: PlanInputs, outcome: PlanOutcome) -> Content:
        plan, solution = outcome.plan, outcome.solution
        assert plan is not None and solution is not None
        parts: list = []
        if solution.mode != "steps":
            solved = solution.repeats if solution.mode == "repeats" else solution.epochs
            parts += [
                (f"{solved} {solution.mode}", "bold $text-success"),
                f" reach {inputs.texts['target'].strip()} steps\n",
            ]
        parts += [
            (f"{plan.steps_per_epoch}", "bold $text-accent"),
            " steps per epoch · ",
            (f"{plan.total_steps}", "bold $text-accent"),
            " steps in all\n",
        ]
        repeats = "their folders' repeats" if solution.repeats is None else f"{solution.repeats} repeats"
        reg = sum(solution.reg_items.values())
        trained = plan.items_per_epoch - reg
        with_reg = f" + {reg} reg" if reg else ""
        parts.append(
            f"{outcome.images} images × {repeats} = {trained}{with_reg} samples per epoch; batch "
            f"{plan.batch} → {plan.batches_per_epoch} batches"
        )
        if plan.grad_accumulation * plan.processes > 1:
            parts.append(
                f" / {plan.grad_accumulation} accumulation / {plan.processes} GPU(s) → "
                f"{plan.steps_per_epoch} steps"
            )
        parts.append(f"; {plan.epochs} epochs")
        return Content.assemble(*parts)

    def _explain(self, outcome: PlanOutcome) -> Content:
        plan = outcome.plan
        assert plan is not None
        divided = " / accumulation / GPUs" if plan.grad_accumulation * plan.processes > 1 else ""
        plain = f"{plan.plain_total_steps:.2f}".rstrip("0").rstrip(".")
        return Content.assemble(
            "Plain formula ",
            (plain, "bold"),
            f" (({plan.items_per_epoch} / {plan.batch}) × {plan.epochs}{divided})\n",
            ("\n".join(outcome.notes), "$text-muted"),
        )

    def _fill_concepts(self, inputs: PlanInputs, outcome: PlanOutcome, load: DatasetLoad | None) -> None:
        table = self.query_one("#concepts", DataTable)
        title = self.query_one("#concepts-title", Static)
        shown = inputs.source == "dataset" and load is not None and bool(load.concepts or load.skipped)
        table.display = title.display = shown
        if not shown:
            return
        assert load is not None
        repeats = self.apply_repeats()
        table_rows: list[tuple[str, ...]] = []
        for concept in load.concepts:
            used = repeats or concept.repeats
            change = f"→ {used}" if used != concept.repeats else ""
            table_rows.append(
                (
                    concept.folder,
                    str(concept.repeats),
                    str(concept.images),
                    str(used * concept.images),
                    change,
                )
            )
        counted = {concept.folder for concept in load.concepts}
        for skipped in self.curation.dataset.concepts:
            if skipped.folder and not skipped.kohya_ok and skipped.folder not in counted:
                images = sum(
                    1
                    for row in self.curation.rows.values()
                    if row.record.folder == skipped.folder and row.included
                )
                table_rows.append(
                    (skipped.folder, "skip", str(images), "0", f"→ {repeats}" if repeats else "")
                )
        # The cursor stays on its folder (on a renamed folder's new name once it is counted).
        keep = self._follow_folder or self.highlighted_folder()
        self._concept_folders = [row[0] for row in table_rows]
        if self._follow_folder in self._concept_folders:
            self._follow_folder = None
        self._set_rows(table, table_rows, keep)
        self._show_rename_hint()

    @on(DataTable.RowHighlighted, "#concepts")
    def concept_highlighted(self) -> None:
        self._show_rename_hint()

    def _show_rename_hint(self) -> None:
        """The concepts title: what ctrl+r would do to the highlighted folder."""
        title = self.query_one("#concepts-title", Static)
        repeats, folder = self.apply_repeats(), self.highlighted_folder()
        hint = ""
        if repeats and folder is not None and renamed_folder(folder, repeats) != folder:
            hint = f"  ctrl+r: {folder}/ → {renamed_folder(folder, repeats)}/"
        elif repeats is None:
            hint = "  (type or solve repeats to apply them)"
        self._put(title, Content.assemble(("Concept folders", "bold"), (hint, "$text-muted")))

    def _fill_buckets(self, inputs: PlanInputs, outcome: PlanOutcome, load: DatasetLoad | None) -> None:
        table = self.query_one("#buckets", DataTable)
        title = self.query_one("#buckets-title", Static)
        plan = outcome.plan
        table.display = title.display = plan is not None
        if plan is None:
            return
        images = {bucket.resolution: bucket.images for bucket in load.buckets} if load is not None else {}
        table_rows: list[tuple[str, ...]] = []
        for bucket in plan.buckets:
            if bucket.resolution is None:
                label, count = "all images", outcome.images
            else:
                label, count = f"{bucket.resolution[0]}x{bucket.resolution[1]}", images.get(bucket.resolution)
            table_rows.append((label, str(count), str(bucket.items), str(bucket.batches)))
        self._set_rows(table, table_rows)
        if inputs.source == "typed":
            text = (
                "One bucket: typed counts have no image sizes (pick the dataset source for Kohya's buckets)"
            )
            self._put(title, Content.assemble(("Batches", "bold"), (f"  {text}", "$text-muted")))
        else:
            spec = outcome.spec
            where = "" if spec is None else f" at {spec.target_size[0]}x{spec.target_size[1]}"
            upscale = " (no upscale)" if inputs.no_upscale else ""
            self._put(title, Content.assemble((f"Aspect buckets{where}{upscale}", "bold")))

    def _show_warnings(self, inputs: PlanInputs, outcome: PlanOutcome) -> None:
        parts: list = []
        if inputs.source == "dataset":
            summary = self.curation.summary()
            if self._measuring():
                parts.append(
                    ("DSB not in the advice yet: the dataset screen is still measuring.\n", "$text-muted")
                )
            elif summary.verdict is not None:
                parts.append((f"DSB {summary.label()}\n", "$text-muted"))
        if all(advice.note for advice in outcome.warnings) and outcome.ok:
            parts.append(("✓ Within every rule of the guide.\n", "$text-success"))
        for advice in sorted(outcome.warnings, key=lambda advice: advice.note):
            if advice.note:  # information, not a rule broken
                parts += [
                    ("· ", "$text-muted"),
                    (advice.id, "bold $text-muted"),
                    (f"  {advice.message}\n", "$text-muted"),
                ]
            else:
                parts += [("▲ ", "$text-warning"), (advice.id, "bold $text-warning"), f"  {advice.message}\n"]
        self._put(self.query_one("#warnings", Static), Content.assemble(*parts))

    # -- renaming ----------------------------------------------------------------------------

    def apply_repeats(self) -> int | None:
        """The repeats a rename would apply: solved, or typed over the folders'; else None."""
        solution = self.outcome.solution
        if self.inputs.source != "dataset" or solution is None:
            return None
        if self.inputs.solve == "repeats" or self.inputs.texts.get("repeats", "").strip():
            return solution.repeats
        return None

    def highlighted_folder(self) -> str | None:
        """The concept folder under the table's cursor (the only one when there is one)."""
        table = self.query_one("#concepts", DataTable)
        if not self._concept_folders or not table.display:
            return None
        return self._concept_folders[min(table.cursor_row, len(self._concept_folders) - 1)]

    def action_rename(self) -> None:
        """Ask, then rename the highlighted concept folder to carry the solved or typed repeats."""
        if self.inputs.source != "dataset":
            self.notify("Renaming needs the dataset source (ctrl+t).", severity="warning")
            return
        repeats = self.apply_repeats()
        if repeats is None:
            self.notify(
                "Type a repeats value, or solve for repeats, first: that is what the rename applies.",
                severity="warning",
            )
            return
        folder = self.highlighted_folder()
        if folder is None:
            self.notify("No concept folder to rename.", severity="warning")
            return
        new_folder = renamed_folder(folder, repeats)
        if new_folder == folder:
            self.notify(f"{folder}/ already gives {repeats} repeats.")
            return
        if self.kiln.unsaved_caption() is not None:
            self.notify(
                "Save or cancel the caption edit on the dataset screen (1) first.", severity="warning"
            )
            return
        images = sum(1 for row in self.curation.rows.values() if row.record.folder == folder)

        def decide(rename: bool | None) -> None:
            if rename:
                self.rename(folder, repeats)

        self.app.push_screen(RenameConceptScreen(folder, new_folder, images), decide)

    def rename(self, folder: str, repeats: int) -> None:
        """Rename now (confirmed), rescan the curation and tell the dataset screen."""
        try:
            new_folder = rename_concept_repeats(self.curation.root, folder, repeats, self.curation.store)
        except KilnError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self.curation.rescan()
        self._follow_folder = new_folder
        self.kiln.tell_dataset(ConceptRenamed(folder, new_folder))
        self.notify(
            f"Renamed {escape(folder)}/ to {escape(new_folder)}/: Kohya now trains its images {repeats} "
            "times per epoch."
        )
        self.refresh_dataset()

    # -- focus and source --------------------------------------------------------------------

    def action_toggle_source(self) -> None:
        select = self.query_one("#source", Select)
        select.value = "typed" if select.value == "dataset" else "dataset"
        # Now, not on Select.Changed: keys right behind this one must find the fields enabled.
        self.recompute()

    def action_leave_form(self) -> None:
        form = self.query_one("#form")
        if not form.has_focus_within:
            return
        concepts = self.query_one("#concepts", DataTable)
        (concepts if concepts.display else self.query_one("#results")).focus()

    def action_edit_form(self) -> None:
        for field in self.fields:
            if field.display and not field.input.disabled:
                field.input.focus()
                return
