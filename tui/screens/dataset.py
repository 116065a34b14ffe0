"""The dataset screen: the image table, the live DSB gauge, previews and the caption editor."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from kiln.engine.analysis.measure import ImageAnalysis
from kiln.engine.analysis.preview import preview_pair
from kiln.engine.analysis.run import iter_analyses
from kiln.engine.curate import ANY_FLAG, FLAG_PREFIX, Curation, split_query
from kiln.engine.dataset.scan import ImageRecord
from kiln.engine.errors import ImageError, KilnError
from kiln.tui.messages import AnalysisProgress, CaptionsChanged, ConceptRenamed, FilesChanged, QualityJudged
from kiln.tui.screens.confirm import UnsavedEditScreen
from kiln.tui.screens.marked import MarkedRows
from kiln.tui.screens.rebalance import RebalanceScreen
from kiln.tui.watch import DatasetWatcher
from kiln.tui.widgets.caption_editor import CaptionEditor, caption_end
from kiln.tui.widgets.dsb_gauge import DsbGauge
from kiln.tui.widgets.image_preview import ImagePreview
from kiln.tui.widgets.image_rows import COLUMN_LABELS, COLUMNS, SORT_KEYS, SORT_ORDER, row_cells, status_text
from kiln.tui.widgets.image_table import ImageTable
from kiln.tui.widgets.reg_line import RegLine
from kiln.tui.widgets.section_bar import SectionBar
from kiln.tui.wording import quoted
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.timer import Timer
from textual.widgets import Footer, Input, Static
from textual.worker import get_current_worker

# Analyses arrive in batches every 0.1 s; the dataset is judged again at most this often.
QUALITY_INTERVAL = 0.5


class DatasetScreen(MarkedRows):
    """Curate a dataset: toggle images, watch the DSB move, edit captions."""

    CSS_PATH = "dataset.tcss"
    SECTION = "dataset"

    BINDINGS = [
        Binding(
            "space",
            "toggle_include",
            "Include",
            id="dataset.toggle",
            tooltip="Include or exclude the image under the cursor; the DSB gauge moves at once",
        ),
        Binding("j", "cursor_down", "Down", show=False, id="dataset.down", tooltip="Next image"),
        Binding("k", "cursor_up", "Up", show=False, id="dataset.up", tooltip="Previous image"),
        Binding("e", "edit", "Edit", id="dataset.edit", tooltip="Edit the caption (enter works too)"),
        Binding("ctrl+s", "save", "Save", id="dataset.save",
                tooltip="Write the caption (atomically) and leave the editor for the table"),
        Binding("ctrl+n", "save_next", "Save+next", show=False, id="dataset.save_next",
                tooltip="Write the caption and edit the next image's"),
        Binding("m", "mark", "Mark", id="dataset.mark",
                tooltip="Mark or unmark the image under the cursor (then a acts on every marked image)"),
        Binding("a", "marked", "Marked…", id="dataset.marked",
                tooltip="Act on the marked images: include, exclude, add or remove a tag, move to a concept"),
        Binding(
            "escape",
            "cancel",
            "Cancel",
            show=False,
            id="dataset.cancel",
            tooltip="Leave the caption editor or the filter; asks before dropping an edit",
        ),
        Binding(
            "o",
            "open_editor",
            "$EDITOR",
            id="dataset.open_editor",
            tooltip="Edit the caption in $EDITOR (the app suspends meanwhile)",
        ),
        Binding(
            "r",
            "rebalance",
            "Rebalance",
            id="dataset.rebalance",
            tooltip="Suggest the fewest exclusions that bring the DSB into the optimal band",
        ),
        Binding(
            "slash",
            "filter",
            "Filter",
            key_display="/",
            id="dataset.filter",
            tooltip="Filter rows by a substring of path or caption; flag:blurry (or flag:any) keeps "
            "images with that quality flag",
        ),
        Binding(
            "f",
            "next_flag",
            "Flags",
            id="dataset.flag_filter",
            tooltip="Show only flagged images, then each flag in turn (blurry, duplicate...), then all",
        ),
        Binding("s", "sort", "Sort", id="dataset.sort", tooltip="Sort by the next column (path, W%, B%...)"),
        Binding(
            "S", "reverse_sort", "Reverse", show=False, id="dataset.reverse", tooltip="Reverse the sort order"
        ),
    ]  # fmt: skip

    def __init__(
        self,
        curation: Curation,
        images: str = "auto",
        watch: bool = True,
        poll: bool = False,
    ) -> None:
        super().__init__()
        self.curation = curation
        self.images_mode = images
        self.watch_files = watch
        self.poll = poll
        self.filter_text = ""
        self.sort_column = "path"
        self.sort_reverse = False
        self.watcher: DatasetWatcher | None = None
        self._changed: set[str] = set()
        self._moves: dict[str, str] = {}
        self._change_timer: Timer | None = None
        self._preview_timer: Timer | None = None
        self._current: str | None = None
        self._pending_total = 0
        self._quality_timer: Timer | None = None
        self.marked: set[str] = set()
        """Images marked with ``m`` (``a`` acts on them)."""

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield SectionBar("dataset")
        yield DsbGauge(self.curation.target, id="gauge")
        yield RegLine(self.curation, id="reg")
        with Horizontal(id="body"):
            with Vertical(id="table-pane"):
                yield Input(
                    placeholder="filter: part of a path or caption, flag:blurry (enter keeps, esc clears)",
                    id="filter",
                )
                yield ImageTable(COLUMNS, self.cells_for, id="images")
                yield Static(id="empty")
            with Vertical(id="side"):
                yield ImagePreview(self.images_mode, id="preview")
                yield Static("", id="row-info")
                yield CaptionEditor(id="caption")
        yield Static("", id="notes")
        yield Footer()

    def on_screen_resume(self) -> None:
        self.query_one(RegLine).follow_settings()  # the plan section may have named a reg folder

    def on_mount(self) -> None:
        table = self.table
        self.query_one("#filter", Input).display = False
        self.refill_table()
        self.update_gauge()
        warnings = self.curation.warnings
        notes = self.query_one("#notes", Static)
        notes.update("\n".join(f"⚠ {warning}" for warning in warnings))
        notes.display = bool(warnings)
        self.start_analysis()
        self.judge_quality()
        if self.watch_files:
            self.watcher = DatasetWatcher(
                self.curation.root,
                self.curation.dataset.caption_extension,
                lambda paths, moves: self.post_message(FilesChanged(paths, moves)),
                poll=self.poll,
            )
            self.watcher.start()
        table.focus()

    def on_unmount(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    # -- table -------------------------------------------------------------------------------

    @property
    def table(self) -> ImageTable:
        """The image table."""
        return self.query_one("#images", ImageTable)

    @property
    def editor(self) -> CaptionEditor:
        """The caption editor."""
        return self.query_one("#caption", CaptionEditor)

    def current_path(self) -> str | None:
        """Relative path of the row under the cursor."""
        return self.table.current_key

    def cells_for(self, path: str) -> list[Text]:
        """The cells of one row, straight from the model (the table caches the drawn line)."""
        return row_cells(self.curation.rows[path], marked=path in self.marked)

    def visible_paths(self) -> list[str]:
        """Rows passing the filter, in the current sort order."""
        paths = self.curation.matching(self.filter_text)
        key = SORT_KEYS[self.sort_column]
        rows = self.curation.rows
        return sorted(paths, key=lambda path: key(rows[path]), reverse=self.sort_reverse)

    def refill_table(self, keep: str | None = None) -> None:
        """Rebuild the table from the model (after a sort, filter or rescan), keeping the cursor.

        Args:
            keep: The row to put the cursor on; default the one under it now.
        """
        table = self.table
        rows = self.curation.rows
        table.set_rows(self.visible_paths(), keep=keep or self.current_path())
        empty = self.query_one("#empty", Static)
        if not rows:
            empty.update(
                f"No images in {self.curation.root.name}/.\n\n"
                "Kiln expects Kohya's layout: one folder per concept "
                "named <repeats>_<name>, e.g. 10_cat/001.png with 001.txt as its caption "
                "(png, jpg, jpeg, webp, bmp, gif). Add images and they appear here."
            )
        elif table.row_count == 0:
            empty.update(f"No image matches the filter {quoted(self.filter_text)} (esc clears it).")
        empty.display = table.row_count == 0
        table.display = table.row_count > 0
        direction = "↓" if self.sort_reverse else "↑"
        sort_label = COLUMN_LABELS[self.sort_column]
        title = f"{table.row_count} of {len(rows)} images · sorted by {sort_label} {direction}"
        if self.filter_text:
            title += f" · filter {quoted(self.filter_text)}"
        self.query_one("#table-pane").border_title = title
        self.show_marked_count()
        self.show_current()

    def update_row(self, path: str) -> None:
        """Redraw one row's cells in place."""
        if path in self.curation.rows:
            self.table.refresh_row(path)

    def update_gauge(self) -> None:
        """Show the current DSB."""
        rows = self.curation.rows
        pending = sum(
            1 for row in rows.values() if row.analysis is None and row.included and row.record.trained
        )
        self.query_one(DsbGauge).show(self.curation.summary(), len(rows), pending)

    # -- analysis ----------------------------------------------------------------------------

    def start_analysis(self) -> None:
        """Measure every pending image in a worker (cached ones were filled at start)."""
        pending = self.curation.pending()
        self._pending_total = len(pending)
        if pending:
            self.analyse(pending)

    @work(thread=True, exclusive=True, group="analysis")
    def analyse(self, records: list) -> None:
        """Run the analysis pool and post results in batches (one table update per batch)."""
        worker = get_current_worker()
        batch: list[tuple[ImageRecord, ImageAnalysis]] = []
        done = 0
        last = time.monotonic()
        for record, analysis, _ in iter_analyses(
            records,
            self.curation.store,
            self.curation.method,
            self.curation.exact,
            should_stop=lambda: worker.is_cancelled,
        ):
            if worker.is_cancelled:
                return
            batch.append((record, analysis))
            done += 1
            if time.monotonic() - last > 0.1:
                self.post_message(AnalysisProgress(batch, done, len(records)))
                batch = []
                last = time.monotonic()
        self.post_message(AnalysisProgress(batch, done, len(records)))

    def on_analysis_progress(self, message: AnalysisProgress) -> None:
        for record, analysis in message.results:
            row = self.curation.rows.get(record.rel_path)
            # A result for a file that changed meanwhile is stale: the rescan re-queued it.
            if row is None or (row.record.size, row.record.mtime_ns) != (record.size, record.mtime_ns):
                continue
            self.curation.set_analysis(record.rel_path, analysis)
            if len(message.results) <= 64:
                self.update_row(record.rel_path)
            if record.rel_path == self._current:
                self.show_row_info(record.rel_path)
        if len(message.results) > 64:
            self.table.refresh_all()  # one repaint for a big batch, not one per row
        self.update_gauge()
        if message.results:
            self.schedule_quality()
        sub = "" if message.done >= message.total else f"measuring {message.done}/{message.total}"
        self.app.sub_title = f"{self.curation.root}  {sub}".rstrip()

    # -- quality -----------------------------------------------------------------------------

    def schedule_quality(self) -> None:
        """Judge the dataset again soon: at most once per interval while analyses stream in."""
        if self._quality_timer is None:
            self._quality_timer = self.set_timer(QUALITY_INTERVAL, self.judge_quality)

    def judge_quality(self) -> None:
        """Judge every measured image's quality (flags, duplicates) off the UI thread."""
        self._quality_timer = None
        self.judge(self.curation.quality_metrics())

    @work(thread=True, exclusive=True, group="quality")
    def judge(self, metrics: dict) -> None:
        """Run the judgement on a snapshot of the figures and post it to the screen."""
        from kiln.engine.analysis.quality import judge_dataset

        quality = judge_dataset(metrics, self.curation.thresholds)
        if not get_current_worker().is_cancelled:
            self.post_message(QualityJudged(quality))

    def on_quality_judged(self, message: QualityJudged) -> None:
        message.stop()
        changed = self.curation.apply_quality(message.quality)
        if split_query(self.filter_text)[1] and changed:
            self.refill_table()  # a flag filter's rows changed
        elif len(changed) > 64:
            self.table.refresh_all()  # one repaint, not one per row
        else:
            for path in changed:
                self.update_row(path)
        if self._current in changed:
            self.show_row_info(self._current)
        # Other sections (the Clean overview) show the judgement too.
        self.kiln.tell_sections(lambda: QualityJudged(message.quality), sender=self)

    # -- selection ---------------------------------------------------------------------------

    def action_toggle_include(self) -> None:
        path = self.current_path()
        if path is None:
            return
        self.curation.toggle(path)
        self.update_row(path)
        self.update_gauge()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """``a`` shows in the footer only while images are marked."""
        if not super().check_action(action, parameters):
            return False
        if action == "marked":
            return bool(self.marked)
        return True

    def action_cursor_down(self) -> None:
        self.table.action_cursor_down()

    def action_cursor_up(self) -> None:
        self.table.action_cursor_up()

    def action_rebalance(self) -> None:
        suggestion = self.curation.rebalance()

        def apply(accepted: bool | None) -> None:
            if accepted and suggestion is not None:
                self.curation.set_included(suggestion.exclude, False)
                for path in suggestion.exclude:
                    self.update_row(path)
                self.update_gauge()
                self.notify(f"Excluded {len(suggestion.exclude)} image(s): {self.curation.summary().label()}")

        self.app.push_screen(
            RebalanceScreen(suggestion, self.curation.summary(), self.curation.min_images), apply
        )

    # -- sort and filter ---------------------------------------------------------------------

    def action_sort(self) -> None:
        """Sort by the next column shown (a column too wide for the terminal is skipped)."""
        shown = set(self.table.visible_keys()) or set(SORT_ORDER)
        order = [key for key in SORT_ORDER if key in shown or key == self.sort_column]
        index = order.index(self.sort_column)
        following = order[(index + 1) % len(order)]
        self.sort_column = following if following in shown else SORT_ORDER[0]
        self.refill_table()

    def action_reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self.refill_table()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def set_filter(self, text: str) -> None:
        """Filter the table by ``text`` at once (the filter box shows it; esc clears it)."""
        box = self.query_one("#filter", Input)
        box.value = text
        box.display = bool(text)
        self.filter_text = text
        self.refill_table()

    def action_next_flag(self) -> None:
        """Cycle the flag filter: any flag, then each flag present, then no flag filter."""
        text, terms = split_query(self.filter_text)
        choices = [ANY_FLAG, *self.curation.flag_counts()]
        if len(choices) == 1:
            self.notify("No image has a quality flag (yet: flags follow the analysis).")
            return
        current = terms[0] if terms else None
        following = choices.index(current) + 1 if current in choices else 0
        term = choices[following] if following < len(choices) else None
        new = " ".join(part for part in (f"{FLAG_PREFIX}{term}" if term else "", text) if part)
        self.set_filter(new)
        self.table.focus()

    def reveal(self, path: str) -> bool:
        """Put the cursor on an image, clearing the filter when it hides it (other sections jump here).

        Returns False (and says so) when the image is no longer in the dataset.
        """
        if path not in self.curation.rows:
            self.notify(f"{path} is no longer in the dataset", severity="warning")
            return False
        if self.table.index_of(path) is None:
            self.set_filter("")
        self.table.move_to(path)
        self.table.focus()
        return True

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self.refill_table()

    @on(Input.Submitted, "#filter")
    def filter_submitted(self) -> None:
        if not self.filter_text:
            self.query_one("#filter", Input).display = False
        self.table.focus()

    # -- current row: preview and caption ----------------------------------------------------

    @on(ImageTable.RowHighlighted, "#images")
    def row_highlighted(self) -> None:
        self.show_current()

    @on(ImageTable.RowSelected, "#images")
    def row_selected(self) -> None:
        self.action_edit()

    def show_current(self) -> None:
        """Load the caption and preview of the row under the cursor (asking about an edit)."""
        path = self.current_path()
        if path == self._current:
            return
        editor = self.editor
        if editor.dirty:
            previous = editor.rel_path

            def decide(choice: str | None) -> None:
                if choice == "save":
                    if self._save_editor():  # a failed save keeps the edit open
                        self._load_row(path)
                elif choice == "discard":
                    self._load_row(path)
                else:
                    if previous is not None:
                        self.table.move_to(previous)
                    editor.text_area.focus()

            self.app.push_screen(
                UnsavedEditScreen(previous or "", "You moved to another image with an unsaved edit."), decide
            )
            return
        self._load_row(path)

    def _load_row(self, path: str | None) -> None:
        self._current = path
        row = self.curation.rows.get(path) if path else None
        self.editor.load(path, row.caption if row else None)
        preview = self.query_one(ImagePreview)
        self.show_row_info(path)
        if row is None:
            preview.show_message("no image selected")
            return
        if self.images_mode != "none":
            if self._preview_timer is not None:
                self._preview_timer.stop()
            # Debounced: holding j should not decode every image it passes.
            self._preview_timer = self.set_timer(0.08, lambda: self.load_preview(row.record.path, path))

    def show_row_info(self, path: str | None) -> None:
        """The line under the preview: path, concept, repeats, size, status."""
        info = self.query_one("#row-info", Static)
        row = self.curation.rows.get(path) if path else None
        if row is None:
            info.update("")
            return
        size = ""
        if row.analysis and "width" in row.analysis.metrics:
            size = f" · {row.analysis.metrics['width']}x{row.analysis.metrics['height']}"
        text = Text.assemble((path or "", "bold"), f" · {row.record.concept} x{row.record.repeats}{size}")
        if row.flags and row.analysis is not None and row.analysis.ok:
            for flag in row.flags:
                text.append("\n")
                text.append(flag.id, style="bold yellow")
                text.append(f" {flag.reason}")
        else:
            text.append(f" · {status_text(row)}")
        info.update(text)

    @work(thread=True, exclusive=True, group="preview")
    def load_preview(self, file: Path, path: str) -> None:
        """Decode and downscale the preview pair off the UI thread."""
        worker = get_current_worker()
        preview = self.query_one(ImagePreview)
        try:
            picture, posterized = preview_pair(file, self.curation.method)
        except ImageError as exc:
            if not worker.is_cancelled:
                self.app.call_from_thread(preview.show_message, f"cannot preview: {exc}")
            return
        if not worker.is_cancelled and self._current == path:
            self.app.call_from_thread(preview.show, picture, posterized)

    # -- caption editing ---------------------------------------------------------------------

    def action_edit(self) -> None:
        """Into the caption editor, the cursor after the caption's last character."""
        editor = self.editor
        if editor.rel_path is None:
            return
        area = editor.text_area
        area.focus()
        area.move_cursor(caption_end(area.text))

    def action_save(self) -> bool:
        """Write the caption and go back to the table; False when it could not be written."""
        path = self.editor.rel_path
        if self.editor.dirty:
            if path is None or not self._save_editor():
                return False  # the edit stays open
            self.notify(f"Saved {self.curation.rows[path].record.caption_path.name}")
        if self.editor.text_area.has_focus:
            self.table.focus()
        return True

    def action_save_next(self) -> None:
        """Write the caption, then edit the next image's (the last image stays put)."""
        if not self.action_save():
            return
        self.table.action_cursor_down()
        self.show_current()
        self.action_edit()

    def _save_editor(self) -> bool:
        """Write the editor's caption; False (and an error notice) when it could not be written."""
        editor = self.editor
        path = editor.rel_path
        if path is None or path not in self.curation.rows:
            return False
        try:
            self.curation.save_caption(path, editor.text)
        except KilnError as exc:
            self.notify(str(exc), severity="error")
            return False
        editor.mark_saved()
        self.update_row(path)
        self.tell_sections({path})
        return True

    def action_cancel(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_focus or (box.display and not self.editor.text_area.has_focus):
            box.value = ""
            box.display = False
            self.table.focus()
            return
        editor = self.editor
        if not editor.text_area.has_focus:
            return
        if not editor.dirty:
            self.table.focus()
            return

        def decide(choice: str | None) -> None:
            if choice == "save":
                self._save_editor()
                self.table.focus()
            elif choice == "discard":
                editor.revert()
                self.table.focus()
            else:
                editor.text_area.focus()

        self.app.push_screen(UnsavedEditScreen(editor.rel_path or "", "Leave the editor?"), decide)

    def action_open_editor(self) -> None:
        """Edit the caption in $EDITOR with the app suspended; the file is re-read after."""
        path = self.editor.rel_path
        if path is None:
            return
        if self.editor.dirty:
            self.notify("Save or cancel the edit first (ctrl+s / esc).", severity="warning")
            return
        caption_path = self.curation.rows[path].record.caption_path
        command = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        try:
            with self.app.suspend():
                subprocess.run([*shlex.split(command), str(caption_path)], check=False)
        except (OSError, KilnError) as exc:
            self.notify(f"Cannot run {quoted(command)}: {exc}; set $EDITOR", severity="error")
            return
        except Exception as exc:
            self.notify(f"Cannot suspend here ({exc})", severity="error")
            return
        self.curation.reload_caption(path)
        self._current = None
        self._load_row(path)
        self.update_row(path)
        self.tell_sections({path})

    def confirm_leave(self, then: Callable[[], None]) -> None:
        """Run ``then`` once no caption edit would be lost (asking the user if needed)."""
        editor = self.editor
        if not editor.dirty:
            then()
            return

        def decide(choice: str | None) -> None:
            if choice == "save":
                if self._save_editor():  # a failed save keeps the edit open
                    then()
            elif choice == "discard":
                editor.revert()
                then()
            else:
                editor.text_area.focus()

        self.app.push_screen(UnsavedEditScreen(editor.rel_path or "", "Quit Kiln?"), decide)

    def has_unsaved_edit(self) -> bool:
        """Whether the caption editor holds an edit not yet written."""
        return self.editor.dirty

    def leave_needs_asking(self) -> bool:
        """Quitting must ask first only when a caption edit would be lost."""
        return self.has_unsaved_edit()

    # -- files changed by Kiln's other screens or by other programs ----------------------------

    def on_concept_renamed(self, message: ConceptRenamed) -> None:
        """The plan screen renamed a folder and rescanned: show the new paths, cursor kept."""
        current = self.current_path()
        prefix = f"{message.old_folder}/"
        if current is not None and current.startswith(prefix):
            current = f"{message.new_folder}/{current[len(prefix) :]}"
        self.refill_table(keep=current)
        self.update_gauge()
        self.start_analysis()
        self.schedule_quality()  # the renamed rows are judged under their new paths

    def on_files_changed(self, message: FilesChanged) -> None:
        self._changed |= message.paths
        self._moves.update(message.moves)
        if self._change_timer is not None:
            self._change_timer.stop()
        # Coalesce bursts (an editor's save is several events) into one rescan.
        self._change_timer = self.set_timer(0.25, self.apply_file_changes)

    def apply_file_changes(self) -> None:
        """Reload changed captions and rescan for new, changed, deleted or renamed images."""
        changed, self._changed = self._changed, set()
        moves, self._moves = self._moves, {}
        extension = self.curation.dataset.caption_extension.lower()
        captions = {path for path in changed if path.lower().endswith(extension)}
        if changed - captions:
            diff = self.curation.rescan(moves)
            if diff:
                self.refill_table()
                self.update_gauge()
                self.start_analysis()
                self.schedule_quality()  # removed images leave their duplicate groups
                parts = [
                    f"{len(items)} {name}"
                    for name, items in (
                        ("new", diff.added),
                        ("removed", diff.removed),
                        ("changed", diff.changed),
                    )
                    if items
                ]
                self.notify("Images on disk changed: " + ", ".join(parts))
                self.tell_sections(set(diff.added) | set(diff.removed) | set(diff.changed))
        by_caption = {
            Path(row.record.caption_path).relative_to(self.curation.root).as_posix(): path
            for path, row in self.curation.rows.items()
        }
        for caption_path in sorted(captions):
            path = by_caption.get(caption_path)
            if path is not None:
                self.caption_changed_on_disk(path)

    def caption_changed_on_disk(self, path: str, tell: bool = True) -> None:
        """Show another program's caption edit, unless it would overwrite the user's own.

        Args:
            path: The image whose caption changed.
            tell: Tell the other sections (not when one of them made the change).
        """
        row = self.curation.rows[path]
        before = row.caption.text
        editor = self.editor
        if editor.rel_path == path and editor.dirty:
            from kiln.engine.dataset.captions import read_caption

            disk = read_caption(row.record.caption_path)
            if disk.text == editor.saved_text:
                return

            def decide(choice: str | None) -> None:
                if choice == "save":
                    editor.saved_text = disk.text
                    self._save_editor()
                elif choice == "discard":
                    self.curation.reload_caption(path)
                    self._current = None
                    self._load_row(path)
                    self.update_row(path)
                else:
                    # Keep the user's edit; saving it later overwrites the other program's.
                    editor.saved_text = disk.text
                    editor.text_area.focus()

            self.app.push_screen(
                UnsavedEditScreen(
                    path,
                    "Another program changed this caption on disk. [b]s[/b] saves yours over it, "
                    "[b]d[/b] loads theirs (dropping your edit), [b]esc[/b] keeps editing yours.",
                ),
                decide,
            )
            return
        caption = self.curation.reload_caption(path)
        if caption.text == before:
            return  # our own save echoing back
        self.update_row(path)
        if editor.rel_path == path:
            editor.load(path, caption)
            editor.update_status("reloaded: changed on disk")
        if tell:
            self.tell_sections({path})

    # -- the other sections ------------------------------------------------------------------

    def tell_sections(self, paths: set[str]) -> None:
        """Let the other sections know these images' captions (or files) changed."""
        self.kiln.tell_sections(lambda: CaptionsChanged(set(paths)), sender=self)

    def unsaved_caption(self) -> str | None:
        """The image whose caption has an unsaved edit in the editor, or None."""
        editor = self.editor
        return editor.rel_path if editor.dirty else None

    def settle_unsaved(self, choice: str) -> None:
        """Save (``"save"``) or throw away (``"discard"``) the editor's unsaved edit."""
        if choice == "save":
            self._save_editor()
        elif choice == "discard":
            self.editor.revert()

    def captions_written(self, paths: Iterable[str]) -> None:
        """Show captions another section just wrote: the rows, and the editor when it shows one.

        An unsaved edit of one of them is never replaced silently: the editor asks, as it
        does for any change made on disk behind it.
        """
        changed = False
        for path in paths:
            if path in self.curation.rows:
                self.caption_changed_on_disk(path, tell=False)
                changed = True
        # The filter and the caption sort read the captions: the row set or order may move.
        if changed and (self.filter_text or self.sort_column == "caption"):
            self.refill_table()
