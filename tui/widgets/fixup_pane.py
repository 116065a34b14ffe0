"""The Clean section's Fix-up tab: the flagged images with what would fix them, before/after.

The list is planned from the workbench's own judgement (``Curation``: every flagged image the
analysis has measured), the same plan ``kiln fixup`` makes. The cursor's image is fixed in a
worker for the preview (never written): before and after, each with its 4-tone twin, so the
user sees what levels or a white background do to the W/B share before accepting it.
``space`` skips or accepts an image, ``w`` fixes the accepted ones in place in a worker
(progress, ``c`` cancels between images), each original kept first under
``.kiln/originals/``; ``u`` puts every original back. The dataset section is told which files
changed, so it rescans and measures them again, and the DSB before and now are shown here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.engine.analysis.preview import preview_pair, preview_pair_of
from kiln.engine.analysis.quality import ImageQuality
from kiln.engine.analysis.quality_report import QualityRow
from kiln.engine.curate import Curation
from kiln.engine.errors import KilnError
from kiln.engine.fixup.ops import parse_colour
from kiln.engine.fixup.plan import FixupOptions, ImageFix, plan_image
from kiln.engine.fixup.write import (
    FixupOutcome,
    applied_operations,
    fixed_image,
    read_record,
    undo_in_place,
    write_in_place,
)
from kiln.engine.plan.buckets import BucketSpec
from kiln.tui.messages import FilesChanged
from kiln.tui.widgets.image_preview import ImagePreview
from PIL import Image as PILImage
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Label, ProgressBar, Static
from textual.worker import get_current_worker

if TYPE_CHECKING:
    from kiln.tui.app import KilnApp

Pair = tuple[PILImage.Image, PILImage.Image]


@dataclass
class Previewed(Message):
    """A worker fixed ``rel_path`` in memory: the pairs before and after, or why it could not."""

    rel_path: str
    before: Pair | None
    after: Pair | None
    error: str | None = None


@dataclass
class FixProgress(Message):
    """The fix-up worker finished ``done`` of ``total`` images (the last one ``rel_path``)."""

    done: int
    total: int
    rel_path: str


@dataclass
class FixFinished(Message):
    """The fix-up (or its undo) ended: what it did, or the one-line error."""

    outcome: FixupOutcome | None
    restored: list[str] | None = None
    error: str | None = None


class FixupPane(Vertical):
    """Proposed fixes for the flagged images, a before/after preview, and the run."""

    BINDINGS = [
        Binding(
            "space", "toggle_fix", "Accept/skip", id="fixup.toggle", tooltip="Accept or skip this image's fix"
        ),
        Binding("a", "toggle_all", "All/none", id="fixup.all", tooltip="Accept every fix, or skip them all"),
        Binding(
            "w",
            "apply",
            "Fix",
            id="fixup.apply",
            tooltip="Fix the accepted images in place; each original is kept in .kiln/originals",
        ),
        Binding(
            "c", "cancel", "Cancel", id="fixup.cancel", tooltip="Stop the fix-up after the current image"
        ),
        Binding(
            "u", "undo", "Undo fix-ups", id="fixup.undo", tooltip="Put back every original a fix-up kept"
        ),
    ]

    def __init__(self, curation: Curation, kiln: KilnApp, images_mode: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.curation = curation
        self.kiln = kiln
        self.images_mode = images_mode
        self.fixes: list[ImageFix] = []
        self.skipped: set[str] = set()
        self.running = False
        self.dsb_before: str | None = None
        self._note: Text | None = None
        self._upscaler: Any = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="form-row"):
            yield Label("model", classes="form-label")
            yield Input(
                id="fixup-model", compact=True, placeholder="super-resolution .safetensors; empty: Lanczos"
            )
            yield Label("background", classes="form-label short")
            yield Input("white", id="fixup-background", compact=True)
        yield Static(id="fixup-status")
        yield ProgressBar(id="fixup-progress", show_eta=False)
        with Horizontal(id="fixup-body"):
            table: DataTable = DataTable(id="fixup-table", cursor_type="row", zebra_stripes=True)
            yield table
            with Vertical(id="fixup-previews"):
                yield ImagePreview(self.images_mode, title="before", id="fixup-before")
                yield ImagePreview(self.images_mode, title="after", id="fixup-after")
        yield Static(id="fixup-info")

    def on_mount(self) -> None:
        table = self.query_one("#fixup-table", DataTable)
        table.add_columns("fix", "image", "size", "operations")
        self.query_one("#fixup-progress").display = False
        self.refresh_plan()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel":
            return self.running
        if action in ("toggle_fix", "toggle_all", "apply"):
            return not self.running and bool(self.fixes)
        return True

    # -- planning ----------------------------------------------------------------------------

    def options(self) -> FixupOptions:
        """The form's settings (the background checked: a bad colour raises UsageError)."""
        background = self.query_one("#fixup-background", Input).value.strip() or "white"
        parse_colour(background)
        model = self.query_one("#fixup-model", Input).value.strip()
        method = (
            self._upscaler.name if self._upscaler is not None and model else ("model" if model else "lanczos")
        )
        return FixupOptions(
            spec=BucketSpec(self.curation.thresholds.resolution),
            background=background,
            method=method,
        )

    def refresh_plan(self) -> None:
        """Plan every flagged, measured image again (cheap: no image is read) and refill the list."""
        try:
            options = self.options()
        except KilnError as exc:
            self.show_status(Text(f"✗ {exc}", style="bold red"))
            return
        fixes = []
        try:
            done = applied_operations(self.curation.root)
        except KilnError as exc:
            self.show_status(Text(f"✗ {exc}", style="bold red"))
            done = {}
        for row in self.curation.rows.values():
            if not row.flags or row.analysis is None or not row.analysis.ok:
                continue
            quality_row = QualityRow(row.record, row.analysis, row.included, ImageQuality(row.flags))
            fix = plan_image(quality_row, options, done.get(row.record.rel_path, frozenset()))
            if fix is not None:
                fixes.append(fix)
        self.fixes = sorted(fixes, key=lambda fix: fix.rel_path)
        table = self.query_one("#fixup-table", DataTable)
        cursor = self.current.rel_path if self.current is not None else None
        table.clear()
        for fix in self.fixes:
            table.add_row(*self._cells(fix), key=fix.rel_path)
        if cursor is not None and cursor in {fix.rel_path for fix in self.fixes}:
            table.move_cursor(row=table.get_row_index(cursor))
        self.show_status(self._note)
        self.refresh_bindings()
        if not self.fixes:
            for name in ("#fixup-before", "#fixup-after"):
                self.query_one(name, ImagePreview).show_message("")
        else:
            self.preview_current()

    def _cells(self, fix: ImageFix) -> tuple[Text, str, str, str]:
        accepted = fix.rel_path not in self.skipped
        mark = Text("✓" if accepted else "·", style="bold green" if accepted else "dim")
        size = f"{fix.size[0]}x{fix.size[1]}"
        if fix.result_size != fix.size:
            size += f"→{fix.result_size[0]}x{fix.result_size[1]}"
        return mark, fix.rel_path, size, "; ".join(op.describe() for op in fix.operations)

    @property
    def current(self) -> ImageFix | None:
        table = self.query_one("#fixup-table", DataTable)
        if not self.fixes or table.cursor_row < 0 or table.cursor_row >= len(self.fixes):
            return None
        return self.fixes[table.cursor_row]

    @property
    def accepted(self) -> list[ImageFix]:
        return [fix for fix in self.fixes if fix.rel_path not in self.skipped]

    def show_status(self, note: Text | None) -> None:
        """The plan in a line, then ``note`` (the last run, an error), then the DSB before the
        last run and now (levels and flattening move the share: the user must see it)."""
        self._note = note
        summary = Text()
        if not self.fixes:
            summary.append(
                "Nothing to fix: no measured image is small, rotated, transparent or badly exposed."
            )
        else:
            summary.append(f"{len(self.fixes)} image(s) to fix", style="bold")
            summary.append(f" · {len(self.accepted)} accepted · in place, originals kept in .kiln/originals")
            summary.append("\nspace skip/accept · a all/none · w fix · u undo", style="dim")
        lines = [summary] + ([note] if note is not None else [])
        if self.dsb_before is not None and not self.running:
            now = "measuring…" if self.curation.pending() else self.curation.summary().label()
            lines.append(Text(f"DSB before: {self.dsb_before} · now: {now}", style="bold"))
        self.query_one("#fixup-status", Static).update(Text("\n").join(lines))

    @on(Input.Submitted, "#fixup-background, #fixup-model")
    def settings_changed(self) -> None:
        self._upscaler = None
        self.refresh_plan()
        self.query_one("#fixup-table", DataTable).focus()

    # -- preview -------------------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#fixup-table")
    def row_highlighted(self) -> None:
        self.preview_current()

    def preview_current(self) -> None:
        fix = self.current
        info = self.query_one("#fixup-info", Static)
        if fix is None:
            info.update("")
            return
        text = Text(fix.rel_path, style="bold")
        for op, reason in zip(fix.operations, fix.reasons, strict=True):
            text.append(f"\n{op.describe()}", style="bold yellow")
            text.append(f": {reason}")
        info.update(text)
        if self.images_mode != "none":
            self.query_one("#fixup-after", ImagePreview).show_message("fixing…")
            self.preview_worker(fix, self.query_one("#fixup-model", Input).value.strip())

    @work(thread=True, exclusive=True, group="fixup-preview")
    def preview_worker(self, fix: ImageFix, model: str) -> None:
        """Fix the image in memory and make both previews, off the UI thread."""
        worker = get_current_worker()
        path = self.curation.root / fix.rel_path
        try:
            before = preview_pair(path, self.curation.method)
            upscaler = self.upscaler(model)
            image, _ = fixed_image(path, fix, upscaler, lambda: worker.is_cancelled)
            after = preview_pair_of(image, self.curation.method)
        except (KilnError, OSError, InterruptedError) as exc:
            if not worker.is_cancelled:
                self.post_message(Previewed(fix.rel_path, None, None, str(exc)))
            return
        if not worker.is_cancelled:
            self.post_message(Previewed(fix.rel_path, before, after))

    def upscaler(self, model: str) -> Any:
        """The model the form names, loaded once (in a worker); None for Lanczos."""
        if not model:
            return None
        if self._upscaler is None or str(self._upscaler.path) != str(Path(model).expanduser()):
            from kiln.engine.fixup.upscaler import load_upscaler

            self._upscaler = load_upscaler(Path(model).expanduser())
        return self._upscaler

    def on_previewed(self, message: Previewed) -> None:
        current = self.current
        if current is None or current.rel_path != message.rel_path:
            return
        before = self.query_one("#fixup-before", ImagePreview)
        after = self.query_one("#fixup-after", ImagePreview)
        if message.error is not None or message.before is None or message.after is None:
            after.show_message(f"✗ {message.error}")
            return
        before.show(*message.before)
        after.show(*message.after)

    # -- accepting -------------------------------------------------------------------------------

    def action_toggle_fix(self) -> None:
        fix = self.current
        if fix is None or self.running:
            return
        self.skipped ^= {fix.rel_path}
        table = self.query_one("#fixup-table", DataTable)
        table.update_cell(fix.rel_path, table.ordered_columns[0].key, self._cells(fix)[0])
        table.move_cursor(row=min(table.cursor_row + 1, len(self.fixes) - 1))
        self.show_status(self._note)

    def action_toggle_all(self) -> None:
        if self.running:
            return
        self.skipped = set() if self.skipped else {fix.rel_path for fix in self.fixes}
        table = self.query_one("#fixup-table", DataTable)
        for fix in self.fixes:
            table.update_cell(fix.rel_path, table.ordered_columns[0].key, self._cells(fix)[0])
        self.show_status(self._note)

    # -- running ---------------------------------------------------------------------------------

    def action_apply(self) -> None:
        if self.running:
            return
        fixes = self.accepted
        if not fixes:
            self.app.notify("No fix is accepted: space accepts the one under the cursor.", severity="warning")
            return
        try:
            self.options()
        except KilnError as exc:
            self.show_status(Text(f"✗ {exc}", style="bold red"))
            return
        self.running = True
        self.refresh_bindings()
        self.dsb_before = self.curation.summary().label()
        progress = self.query_one("#fixup-progress", ProgressBar)
        progress.update(total=len(fixes), progress=0)
        progress.display = True
        self.show_status(
            Text(f"fixing {len(fixes)} image(s)… (c cancels after the current one)", style="dim")
        )
        self.fix_worker(fixes, self.query_one("#fixup-model", Input).value.strip())

    @work(thread=True, exclusive=True, group="fixup-run")
    def fix_worker(self, fixes: list[ImageFix], model: str) -> None:
        worker = get_current_worker()

        def progress(done: int, total: int, rel_path: str) -> None:
            self.post_message(FixProgress(done, total, rel_path))

        try:
            upscaler = self.upscaler(model)
            outcome = write_in_place(
                self.curation.dataset,
                self.curation.store,
                fixes,
                upscaler,
                progress=progress,
                cancelled=lambda: worker.is_cancelled,
            )
        except (KilnError, OSError) as exc:
            self.post_message(FixFinished(None, error=str(exc)))
            return
        self.post_message(FixFinished(outcome))

    def action_cancel(self) -> None:
        if self.running:
            for worker in self.workers:
                if worker.group == "fixup-run":
                    worker.cancel()
            self.show_status(Text("cancelling after the current image…", style="yellow"))

    def on_fix_progress(self, message: FixProgress) -> None:
        self.query_one("#fixup-progress", ProgressBar).update(progress=message.done)

    def action_undo(self) -> None:
        if self.running:
            return
        try:
            entries = read_record(self.curation.root / ".kiln" / "fixup.json")
        except KilnError as exc:
            self.show_status(Text(f"✗ {exc}", style="bold red"))
            return
        if not entries:
            self.app.notify("No in-place fix-up to undo in this dataset.")
            return
        self.running = True
        self.dsb_before = self.curation.summary().label()
        self.show_status(Text(f"putting back the originals of {len(entries)} fix(es)…", style="dim"))
        self.undo_worker()

    @work(thread=True, exclusive=True, group="fixup-run")
    def undo_worker(self) -> None:
        try:
            restored = undo_in_place(self.curation.root, self.curation.store)
        except (KilnError, OSError) as exc:
            self.post_message(FixFinished(None, error=str(exc)))
            return
        self.post_message(FixFinished(None, restored=restored))

    def on_fix_finished(self, message: FixFinished) -> None:
        self.running = False
        self.refresh_bindings()
        self.query_one("#fixup-progress").display = False
        if message.error is not None:
            self.show_status(Text(f"✗ {message.error}", style="bold red"))
            return
        changed: set[str] = set()
        moves: dict[str, str] = {}
        if message.outcome is not None:
            for image in message.outcome.fixed:
                changed |= {image.source, image.output}
                if image.output != image.source:
                    moves[image.source] = image.output
            fixed = len(message.outcome.fixed)
            note = Text(
                f"✓ fixed {fixed} image(s) in place; originals in .kiln/originals (u undoes)",
                style="bold green",
            )
            for line in message.outcome.skipped:
                note.append(f"\n⚠ {line}", style="yellow")
        else:
            restored = message.restored or []
            changed = set(restored) | {str(Path(path).with_suffix(".png")) for path in restored}
            note = Text(f"✓ put back {len(restored)} original(s)", style="bold green")
        self.skipped = set()
        if not self.kiln.tell_dataset(FilesChanged(changed, moves)):
            self.curation.rescan(moves)
        self.show_status(note)

    def quality_judged(self) -> None:
        """The dataset was judged again (after a rescan and analysis): replan, update the DSB."""
        if not self.running:
            self.refresh_plan()
