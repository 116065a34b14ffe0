"""The captions section: auto-captioning, tag frequencies and batch edits with undo, and lint.

Every change it makes to captions goes through the engine (a caption run or a tag plan,
each one undo step), then the curation's rows are re-read and the dataset section redraws
them, so no part of the workbench shows a stale caption. An unsaved edit in the dataset
section's caption editor is never overwritten without asking first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from kiln.engine.caption.lint import Finding
from kiln.engine.caption.run_choices import load_choices, save_choices
from kiln.engine.caption.undo import History, UndoConflict, UndoResult
from kiln.engine.curate import Curation
from kiln.engine.dataset.scan import ImageRecord
from kiln.tui.messages import BaseChosen, CaptionsChanged
from kiln.tui.screens.confirm import ConfirmScreen, UnsavedEditScreen
from kiln.tui.screens.section import SectionScreen
from kiln.tui.widgets.caption_run_pane import CaptionRunPane
from kiln.tui.widgets.lint_pane import LintPane
from kiln.tui.widgets.section_bar import SectionBar
from kiln.tui.widgets.tag_pane import TagPane
from kiln.tui.wording import quoted
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Label, Select, Static, TabbedContent, TabPane, Tabs

SCOPE_INCLUDED, SCOPE_ALL, SCOPE_FILTER = "included", "all", "filter"
ALL_CONCEPTS = "*"
TABS = ("caption-tab", "tags-tab", "lint-tab")


class CaptionsScreen(SectionScreen):
    """Caption tools over the scope's images: run a captioner, edit tags in batches, lint."""

    CSS_PATH = "captions.tcss"
    SECTION = "captions"

    BINDINGS = [
        Binding(
            "c", "tab('caption-tab')", "Auto-caption", show=False, id="captions.tab_caption",
            tooltip="Show the auto-caption form (BLIP or WD14 from a local model folder)",
        ),
        Binding(
            "t", "tab('tags-tab')", "Tags", show=False, id="captions.tab_tags",
            tooltip="Show tag frequencies (enter on a tag fills the operation form) and batch tag operations",
        ),
        Binding(
            "l", "tab('lint-tab')", "Lint", show=False, id="captions.tab_lint",
            tooltip="Show lint findings; enter on one jumps to its image in the dataset section",
        ),
        Binding(
            "ctrl+r", "start_run", "Start", id="captions.start",
            tooltip="Caption the scope's images with the chosen model (loaded when the run starts)",
        ),
        Binding(
            "x", "cancel_run", "Cancel run", id="captions.cancel",
            tooltip="Stop the caption run after its current batch; what it wrote stays, undoable",
        ),
        Binding(
            "p", "preview", "Preview", id="captions.preview",
            tooltip="Show every caption the operation would change, before and after (enter in the form too)",
        ),
        Binding(
            "a", "apply", "Apply", id="captions.apply",
            tooltip="Write the previewed change as one undo step",
        ),
        Binding(
            "u", "undo", "Undo", id="captions.undo",
            tooltip="Undo the last batch edit or caption run (asks first if captions changed since)",
        ),
        Binding(
            "r", "refresh", "Refresh", id="captions.refresh",
            tooltip="Count the tags and lint the captions again",
        ),
        Binding(
            "escape", "back", "Back", show=False, id="captions.back",
            tooltip="Leave a form field, or drop the preview",
        ),
    ]  # fmt: skip

    class UndoDone(Message):
        """An undo (or its dry run) finished in a worker."""

        def __init__(
            self, result: UndoResult | None, error: str | None = None, conflict: bool = False
        ) -> None:
            super().__init__()
            self.result = result
            self.error = error
            self.conflict = conflict

    def __init__(self, curation: Curation) -> None:
        super().__init__()
        self.curation = curation
        self.choices = load_choices(curation.store)
        self._stale = True
        self._refresh_timer: Timer | None = None
        self._undoing = False

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield SectionBar("captions")
        with Horizontal(id="scope-bar"):
            yield Label("Scope", classes="label")
            yield Select(
                [("included images", SCOPE_INCLUDED)],
                value=SCOPE_INCLUDED,
                allow_blank=False,
                compact=True,
                id="scope",
            )
            yield Label("Concept", classes="label")
            yield Select(
                [("all concepts", ALL_CONCEPTS)],
                value=ALL_CONCEPTS,
                allow_blank=False,
                compact=True,
                id="concept",
            )
            yield Static("", id="scope-info")
        with TabbedContent(id="tabs", initial="caption-tab"):
            with TabPane("c Auto-caption", id="caption-tab"):
                yield CaptionRunPane(self.choices, id="run-pane")
            with TabPane("t Tags", id="tags-tab"):
                yield TagPane(self.scope_records, self.curation.root, id="tag-pane")
            with TabPane("l Lint", id="lint-tab"):
                yield LintPane(self.curation.root, id="lint-pane")
        yield Footer()

    def on_mount(self) -> None:
        self.update_scope()
        self.refresh_figures()
        # Not the model field, even when it is empty: the first keys typed here are often a
        # digit meant for another section, and a field would swallow them.
        self.focus_tab("caption-tab", leaving_input=True)

    def on_screen_resume(self) -> None:
        self.update_scope()
        if self._stale:
            self.refresh_figures()

    @property
    def run_pane(self) -> CaptionRunPane:
        """The auto-caption pane."""
        return self.query_one(CaptionRunPane)

    @property
    def tag_pane(self) -> TagPane:
        """The tags pane."""
        return self.query_one(TagPane)

    @property
    def lint_pane(self) -> LintPane:
        """The lint pane."""
        return self.query_one(LintPane)

    @property
    def active_tab(self) -> str:
        """The id of the tab shown."""
        return self.query_one("#tabs", TabbedContent).active

    # -- scope -------------------------------------------------------------------------------

    @property
    def scope(self) -> str:
        """``included``, ``all`` or ``filter`` (the rows the dataset section's filter shows)."""
        return str(self.query_one("#scope", Select).value)

    def _filter_text(self) -> str:
        return self.kiln.dataset_filter()

    @property
    def concept(self) -> str | None:
        """The concept the tools are narrowed to, or None for every concept."""
        value = self.query_one("#concept", Select).value
        return None if value in (ALL_CONCEPTS, Select.BLANK) else str(value)

    def scope_records(self) -> list[ImageRecord]:
        """The images the tools act on, in path order."""
        rows = self.curation.rows
        scope = self.scope
        if scope == SCOPE_ALL:
            records = [row.record for row in rows.values()]
        elif scope == SCOPE_FILTER and self._filter_text():
            records = [rows[path].record for path in self.curation.matching(self._filter_text())]
        else:
            records = [row.record for row in rows.values() if row.included]
        concept = self.concept
        return records if concept is None else [record for record in records if record.concept == concept]

    def scope_title(self) -> str:
        """A few words naming the scope, for titles."""
        return f"in {self.concept}" if self.concept else "in scope"

    def update_scope(self) -> None:
        """Offer the scopes with their sizes (the filter only while the dataset section has one)."""
        rows = self.curation.rows
        included = sum(row.included for row in rows.values())
        options = [
            (f"included images ({included})", SCOPE_INCLUDED),
            (f"all images ({len(rows)})", SCOPE_ALL),
        ]
        text = self._filter_text()
        if text:
            count = len(self.curation.matching(text))
            options.append((f"dataset filter {quoted(text)} ({count})", SCOPE_FILTER))
        moved = _set_options(self.query_one("#scope", Select), options, SCOPE_INCLUDED)
        concepts = sorted({row.record.concept for row in rows.values()})
        moved |= _set_options(
            self.query_one("#concept", Select),
            [("all concepts", ALL_CONCEPTS), *((name, name) for name in concepts)],
            ALL_CONCEPTS,
        )
        if moved:  # the filter or the concept went away: the figures describe another scope
            self.tag_pane.drop_preview("scope changed")
            self._stale = True
        self.show_scope_info()

    def show_scope_info(self) -> None:
        records = self.scope_records()
        self.query_one("#scope-info", Static).update(f"{len(records)} images")

    @on(Select.Changed, "#scope, #concept")
    def scope_changed(self) -> None:
        self.show_scope_info()
        self.tag_pane.drop_preview("scope changed")
        self.refresh_figures()

    # -- figures (tag counts and lint) -------------------------------------------------------

    def refresh_figures(self) -> None:
        """Count the tags and lint again, both in workers."""
        self._stale = False
        self.tag_pane.refresh_stats(self.scope_title())
        self.lint_pane.refresh_lint(
            self.curation.dataset, self.curation.store, self.scope == SCOPE_ALL, self.finding_filter()
        )

    def finding_filter(self) -> Callable[[Finding], bool] | None:
        """Keeps the findings of the chosen concept's folders (None: every finding)."""
        concept = self.concept
        if concept is None:
            return None
        folders = {row.record.folder for row in self.curation.rows.values() if row.record.concept == concept}

        def keep(finding: Finding) -> bool:
            file = finding.file
            if file in folders or (file == "." and "" in folders):  # a folder-wide finding
                return True
            return (file.rsplit("/", 1)[0] if "/" in file else "") in folders

        return keep

    def schedule_refresh(self) -> None:
        """Refresh soon, once for a burst of changes."""
        self._stale = True
        if self._refresh_timer is not None:
            self._refresh_timer.stop()
        self._refresh_timer = self.set_timer(0.2, self.refresh_figures)

    def on_base_chosen(self, message: BaseChosen) -> None:
        """The Bases view chose a base: caption in the style it understands."""
        if message.style in ("blip", "wd14"):
            self.run_pane.query_one("#style", Select).value = message.style

    def on_captions_changed(self, message: CaptionsChanged) -> None:
        # Sent by the dataset section: a caption saved there or changed on disk.
        self.tag_pane.drop_preview("captions changed")
        if self.is_current:
            self.schedule_refresh()
        else:
            self._stale = True

    def action_refresh(self) -> None:
        self.update_scope()
        self.refresh_figures()
        self.notify("Counting tags and linting again")

    @on(LintPane.TriggerChanged)
    def lint_trigger_changed(self) -> None:
        self.refresh_figures()

    # -- tabs and focus ----------------------------------------------------------------------

    def action_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab
        self.focus_tab(tab)

    @on(TabbedContent.TabActivated)
    def tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.refresh_bindings()

    def focus_tab(self, tab: str, leaving_input: bool = False) -> None:
        """Put the focus where the tab's work starts (never in a field when leaving one, nor on
        the first visit: ``c`` then lands in the empty model field)."""
        if tab == "caption-tab":
            model = self.query_one("#model", Input)
            outcomes = self.run_pane.outcome_table
            if not model.value.strip() and not leaving_input:
                model.focus()
            elif outcomes.display:
                outcomes.focus()
            else:
                # The tab bar: letters reach the screen's keys, tab goes back into the form.
                self.query_one("#tabs", TabbedContent).query_one(Tabs).focus()
        elif tab == "tags-tab":
            self.tag_pane.freq_table.focus()
        else:
            self.lint_pane.findings_table.focus()
        self.refresh_bindings()

    def action_back(self) -> None:
        if isinstance(self.focused, Input):
            self.focus_tab(self.active_tab, leaving_input=True)
        elif self.active_tab == "tags-tab" and self.tag_pane.plan is not None:
            self.tag_pane.drop_preview("preview dropped")
            self.tag_pane.freq_table.focus()
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Show each key where it means something (footer), and grey it out while busy."""
        if not self.is_mounted:
            return True
        if not super().check_action(action, parameters):
            return False  # a letter key while typing in a field: the field takes it
        try:
            tab = self.active_tab
            running = self.run_pane.running
            plan = self.tag_pane.plan
        except Exception:  # not composed yet
            return True
        if action == "start_run":
            return None if running else tab == "caption-tab"
        if action == "cancel_run":
            return running
        if action == "preview":
            return tab == "tags-tab"
        if action == "apply":
            return tab == "tags-tab" and plan is not None
        if action == "refresh":
            return tab != "caption-tab"
        return True

    # -- auto-caption ------------------------------------------------------------------------

    def busy_reason(self) -> str | None:
        """Why captions cannot be written right now (another write is going on), or None."""
        if self.run_pane.running:
            return "a caption run is going on (x cancels it)"
        if self.tag_pane.busy:
            return "a batch edit is being written"
        if self._undoing:
            return "an undo is going on"
        return None

    def action_start_run(self) -> None:
        if self.active_tab != "caption-tab":
            self.action_tab("caption-tab")
        busy = self.busy_reason()
        if busy:
            self.notify(f"Wait: {busy}.", severity="warning")
            return
        pane = self.run_pane
        request = pane.request()
        if request is None:
            return
        records = self.scope_records()
        if not records:
            pane.say("✗ no images in the scope: choose another scope at the top", "error")
            return

        def start() -> None:
            save_choices(self.curation.store, request.choices)
            pane.start(request, records, self.curation.root, self.curation.store)
            self.tag_pane.drop_preview("captions may change")
            pane.outcome_table.focus()
            self.refresh_bindings()

        def confirm_then_start() -> None:
            # Overwriting replaces work the user may have done by hand: say how much first.
            rows = self.curation.rows
            captioned = sum(1 for record in records if rows[record.rel_path].caption.text.strip())
            if request.options.mode != "overwrite" or not captioned:
                start()
                return
            trigger = (
                f"The trigger '{request.options.trigger}' goes {request.options.trigger_position}."
                if request.options.trigger
                else "No trigger word is set: the new captions will have none."
            )
            self.app.push_screen(
                ConfirmScreen(
                    f"Overwrite {captioned} caption(s)?",
                    f"{captioned} of the {len(records)} images have captions, and overwrite replaces "
                    f"them with the {request.style} model's. {trigger} The run is one undo step (u).",
                    yes="overwrite them",
                ),
                lambda yes: start() if yes else pane.say("nothing started"),
            )

        self.guard_unsaved({record.rel_path for record in records}, "The caption run", confirm_then_start)

    def action_cancel_run(self) -> None:
        if self.run_pane.cancel():
            self.refresh_bindings()

    def on_caption_run_pane_written(self, event: CaptionRunPane.Written) -> None:
        self.captions_written(event.paths)

    def on_caption_run_pane_finished(self, event: CaptionRunPane.Finished) -> None:
        self.refresh_bindings()
        if event.run is not None and event.run.step is not None:
            self.schedule_refresh()

    @on(DataTable.RowSelected, "#outcomes")
    def outcome_chosen(self, event: DataTable.RowSelected) -> None:
        self.jump_to(str(event.row_key.value))

    # -- tags --------------------------------------------------------------------------------

    def action_preview(self) -> None:
        if self.active_tab != "tags-tab":
            self.action_tab("tags-tab")
        self.tag_pane.preview()

    @on(TagPane.PlanReady)
    def plan_ready(self) -> None:
        self.call_after_refresh(self.refresh_bindings)

    def action_apply(self) -> None:
        plan = self.tag_pane.plan
        if plan is None:
            return
        busy = self.busy_reason()
        if busy:
            self.notify(f"Wait: {busy}.", severity="warning")
            return
        self.guard_unsaved(
            {change.image for change in plan.changes},
            "This batch edit",
            lambda: self.tag_pane.apply(self.curation.store),
            after_save=self.tag_pane.preview,
        )

    def on_tag_pane_applied(self, event: TagPane.Applied) -> None:
        if event.result is not None:
            self.captions_written(event.result.written)
        self.schedule_refresh()
        self.refresh_bindings()

    # -- undo --------------------------------------------------------------------------------

    def action_undo(self) -> None:
        busy = self.busy_reason()
        if busy:
            self.notify(f"Wait: {busy}.", severity="warning")
            return
        self._undoing = True
        self.undo_step(force=False, dry_run=True)

    @work(thread=True, exclusive=True, group="undo")
    def undo_step(self, force: bool, dry_run: bool) -> None:
        """Undo the newest step (or find out what undoing it would do), off the UI thread."""
        try:
            result = History(self.curation.store).undo(force=force, dry_run=dry_run)
        except UndoConflict as exc:
            self.post_message(self.UndoDone(None, str(exc), conflict=True))
        except Exception as exc:  # a worker error must never take the workbench down
            self.post_message(self.UndoDone(None, self.worker_error(exc)))
        else:
            self.post_message(self.UndoDone(result))

    def on_captions_screen_undo_done(self, event: UndoDone) -> None:
        result = event.result
        if result is None:
            self._undoing = False
            self.notify(
                event.error or "nothing to undo", severity="warning" if not event.conflict else "error"
            )
            return
        step = result.step
        if result.dry_run:
            touched = self.images_for_captions([*result.restored, *result.conflicts])

            def undo() -> None:
                self.undo_step(force=bool(result.conflicts), dry_run=False)

            def ask_conflicts() -> None:
                if not result.conflicts:
                    undo()
                    return
                shown = ", ".join(result.conflicts[:3]) + (" …" if len(result.conflicts) > 3 else "")
                self.app.push_screen(
                    ConfirmScreen(
                        f"Undo '{step.description}'?",
                        f"{len(result.conflicts)} caption(s) changed since that step ({shown}); they keep "
                        f"their edits. The other {len(result.restored)} go back to how they were.",
                        yes="undo the rest",
                    ),
                    lambda yes: undo() if yes else self._undo_dropped(),
                )

            self.guard_unsaved(set(touched), "Undo", ask_conflicts, on_keep=self._undo_dropped)
            return
        self._undoing = False
        self.captions_written(self.images_for_captions(result.restored))
        self.tag_pane.drop_preview("captions changed")
        # The pane's last message (what the undone edit changed) is no longer true.
        self.tag_pane.say(f"undid '{step.description}' · enter on a tag fills the form")
        self.schedule_refresh()
        kept = f"; {len(result.conflicts)} edited since kept" if result.conflicts else ""
        self.notify(f"Undid '{step.description}': {len(result.restored)} caption(s) restored{kept}")

    def _undo_dropped(self) -> None:
        self._undoing = False
        self.notify("Nothing undone.")

    def images_for_captions(self, caption_paths: Iterable[str]) -> list[str]:
        """Image paths for caption files (relative to the root), where the image is known."""
        by_caption = self._images_by_caption()
        return [by_caption[path] for path in caption_paths if path in by_caption]

    def _images_by_caption(self) -> dict[str, str]:
        root = self.curation.root
        return {
            Path(row.record.caption_path).relative_to(root).as_posix(): path
            for path, row in self.curation.rows.items()
        }

    # -- keeping the workbench in step -------------------------------------------------------

    def guard_unsaved(
        self,
        paths: set[str],
        what: str,
        proceed: Callable[[], object],
        after_save: Callable[[], object] | None = None,
        on_keep: Callable[[], None] | None = None,
    ) -> None:
        """Run ``proceed`` unless it would change a caption with an unsaved edit; then ask first.

        Args:
            paths: The images whose captions would change.
            what: What would change them, for the question.
            proceed: The change.
            after_save: Run instead of ``proceed`` once the user saved the edit (a preview
                made before the save is stale, so it is made again).
            on_keep: Run when the user keeps the edit and drops the change.
        """
        editing = self.kiln.unsaved_caption()
        if editing is None or editing not in paths:
            proceed()
            return

        def decide(choice: str | None) -> None:
            if choice == "save":
                self.kiln.settle_unsaved_caption("save")
                (after_save or proceed)()
            elif choice == "discard":
                self.kiln.settle_unsaved_caption("discard")
                proceed()
            elif on_keep is not None:
                on_keep()
            else:
                self.notify("Nothing changed: your edit in the dataset section is kept.")

        self.app.push_screen(
            UnsavedEditScreen(
                editing,
                f"{what} would change this caption, which you are editing in the dataset section. "
                "[b]s[/b] saves your edit first, [b]d[/b] discards it, "
                "[b]esc[/b] keeps it and changes nothing.",
            ),
            decide,
        )

    def captions_written(self, paths: Iterable[str]) -> None:
        """Re-read captions written here, and have the dataset section redraw them."""
        paths = [path for path in paths if path in self.curation.rows]
        if not paths:
            return
        self.kiln.captions_written(paths)

    # -- jumping to the dataset section ------------------------------------------------------

    def on_lint_pane_jump(self, event: LintPane.Jump) -> None:
        self.jump_to_finding(event.finding)

    def jump_to_finding(self, finding: Finding) -> None:
        """Show the finding's image in the dataset section (for a folder finding, its first image)."""
        path = self.image_for_file(finding.file)
        if path is None:
            self.notify(f"{finding.file} has no image in the dataset to show.", severity="warning")
            return
        self.jump_to(path)

    def image_for_file(self, file: str) -> str | None:
        """The image a lint finding's file stands for: itself, its caption's image, a folder's first."""
        rows = self.curation.rows
        if file in rows:
            return file
        image = self._images_by_caption().get(file)
        if image is not None:
            return image
        in_folder = [path for path, row in rows.items() if (row.record.folder or ".") == file]
        return in_folder[0] if in_folder else None

    def jump_to(self, path: str) -> None:
        """Switch to the dataset section with the cursor on ``path``."""
        if path in self.curation.rows:
            self.kiln.show_in_dataset(path)

    # -- leaving -----------------------------------------------------------------------------

    def leave_needs_asking(self) -> bool:
        """Quitting must ask first only while a caption run is going."""
        return self.run_pane.running

    def confirm_leave(self, then: Callable[[], None]) -> None:
        """Run ``then`` (quit) once no caption run would be cut off without asking."""
        if not self.run_pane.running:
            then()
            return

        def decide(yes: bool | None) -> None:
            if yes:
                self.run_pane.cancel()
                then()

        self.app.push_screen(
            ConfirmScreen(
                "A caption run is going on",
                "Stop it and quit? The captions it wrote stay, and u undoes them next time.",
                yes="stop and quit",
            ),
            decide,
        )


def _set_options(select: Select, options: list[tuple[str, str]], fallback: str) -> bool:
    """Replace a Select's options, keeping its value when still offered; True when it had to change.

    No Changed event is sent: the caller decides what a changed scope means.
    """
    current = select.value
    kept = current in {value for _, value in options}
    with select.prevent(Select.Changed):
        select.set_options(options)
        select.value = current if kept else fallback
    return not kept
