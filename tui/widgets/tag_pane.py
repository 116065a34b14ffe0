"""The tags pane: tag frequencies (per concept too) and batch tag operations with a preview.

An operation is always previewed first (every caption it would change, before and after)
and applied only as previewed, as one undo step. Reading and writing captions happens in
thread workers, so a dataset of thousands of captions never freezes the workbench.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kiln.engine.caption import tags
from kiln.engine.caption.tags import ApplyResult, TagEdit, TagPlan, TagStats
from kiln.engine.caption.tagtext import tag_key
from kiln.engine.dataset.scan import ImageRecord
from kiln.engine.dataset.store import Store
from kiln.engine.errors import KilnError, UsageError
from kiln.tui.screens.section import worker_error_text
from kiln.tui.widgets.caption_diff import CaptionDiff
from kiln.tui.wording import percent
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.suggester import Suggester
from textual.widgets import Checkbox, DataTable, Input, Label, Select, Static
from textual.worker import get_current_worker

OPERATIONS = [
    ("remove tags", "remove"),
    ("add tags", "add"),
    ("replace a tag", "replace"),
    ("move to front", "front"),
    ("dedupe", "dedupe"),
    ("sort by frequency", "sort"),
]

# Per operation: (label, placeholder) of the tags field and of the second field (None: hidden),
# and whether the regex switch applies.
FIELDS: dict[str, tuple[tuple[str, str] | None, tuple[str, str] | None, bool]] = {
    "remove": (("Tags", "tags to remove, comma-separated (with regex: patterns)"), None, True),
    "add": (
        ("Tags", "tags to add, comma-separated"),
        ("Position", "first, last, or an index (0 = first)"),
        False,
    ),
    "replace": (
        ("Old", "tag or phrase to replace (with regex: a pattern)"),
        ("New", "replacement (blank removes)"),
        True,
    ),
    "front": (("Tags", "tags to move to the front, in order"), None, False),
    "dedupe": (None, None, False),
    "sort": (None, None, False),
}


def build_edit(operation: str, first: str, second: str, regex: bool, records: list[ImageRecord]) -> TagEdit:
    """The tag edit the form describes.

    Raises:
        UsageError: A field is missing or invalid (the message says which).
    """
    pieces = [piece for piece in (part.strip() for part in first.split(",")) if piece]
    if operation == "add":
        position: str | int = second.strip() or "last"
        if position not in ("first", "last"):
            try:
                position = int(position)
            except ValueError:
                raise UsageError(
                    f"position {position!r}: use first, last or an index such as 1 or -2"
                ) from None
        return tags.add_edit(pieces, position)
    if operation == "remove":
        return tags.remove_edit(
            pieces if not regex else [first.strip()] if first.strip() else [], regex=regex
        )
    if operation == "replace":
        return tags.replace_edit(first.strip(), second, regex=regex)
    if operation == "front":
        return tags.front_edit(pieces)
    if operation == "dedupe":
        return tags.dedupe_edit()
    return tags.sort_edit(tags.frequencies(records))


class TagSuggester(Suggester):
    """Completes the tag being typed (the last comma-separated piece) from the dataset's tags.

    The most frequent tag that starts with the typed piece wins, so ``lo`` offers ``long hair``
    before ``looking at viewer`` when more captions have it; right arrow (or end) accepts.
    """

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=False)
        self.tags: list[str] = []
        """The dataset's tags, most frequent first (set when the tags are counted)."""

    async def get_suggestion(self, value: str) -> str | None:
        return complete_tag(value, self.tags)


def complete_tag(value: str, tag_names: list[str]) -> str | None:
    """``value`` with its last comma-separated piece completed to the first tag it starts, or None."""
    piece = value.rpartition(",")[2]
    typed = piece.lstrip()
    if not typed:
        return None
    lowered = typed.lower()
    for name in tag_names:
        if name.lower().startswith(lowered) and len(name) > len(typed):
            return value + name[len(typed) :]
    return None


class TagPane(Horizontal):
    """Tag frequencies on the left; the operation form and its preview on the right."""

    class StatsReady(Message):
        """Tag counts of the scope, computed in a worker."""

        def __init__(self, stats: TagStats | None, title: str, error: str | None = None) -> None:
            super().__init__()
            self.stats = stats
            self.title = title
            self.error = error

    class PlanReady(Message):
        """A preview is ready (``error`` instead when the operation could not be planned)."""

        def __init__(self, plan: TagPlan | None, error: str | None = None) -> None:
            super().__init__()
            self.plan = plan
            self.error = error

    class Applied(Message):
        """A plan was written (bubbles up to the screen, which refreshes the rest)."""

        def __init__(self, plan: TagPlan, result: ApplyResult | None, error: str | None = None) -> None:
            super().__init__()
            self.plan = plan
            self.result = result
            self.error = error

    def __init__(self, scope_records: Callable[[], list[ImageRecord]], root: Path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scope_records = scope_records
        self.root = root
        self.plan: TagPlan | None = None
        self.busy = False
        self._names: dict[str, str] = {}
        self.stats: TagStats | None = None
        """The last tag counts of the scope (None until counted)."""
        self._title = ""
        self._shown_concepts: list[str] = []
        self.suggester = TagSuggester()

    def compose(self) -> ComposeResult:
        with Vertical(id="freq-pane"):
            yield DataTable(cursor_type="row", zebra_stripes=True, id="tag-freq")
        with Vertical(id="ops-pane"):
            with Horizontal(classes="form-row"):
                yield Label("Operation", classes="label")
                yield Select(OPERATIONS, value="remove", allow_blank=False, compact=True, id="op")
                yield Checkbox("regex", compact=True, id="regex")
            with Horizontal(classes="form-row", id="first-row"):
                yield Label("Tags", classes="label", id="first-label")
                # No select-on-focus: a tag chosen from the list is extended, not replaced, by
                # the next key typed (a "p" meant as a key must not wipe it).
                yield Input(compact=True, id="first", select_on_focus=False, suggester=self.suggester)
            with Horizontal(classes="form-row", id="second-row"):
                yield Label("New", classes="label", id="second-label")
                yield Input(compact=True, id="second", select_on_focus=False)
            yield Static("", id="tag-message")
            yield CaptionDiff(id="diff")

    def on_mount(self) -> None:
        self._show_fields("remove")
        self.say("enter on a tag fills the form · enter in the form previews")

    # -- helpers -----------------------------------------------------------------------------

    @property
    def freq_table(self) -> DataTable:
        """The tag frequency list."""
        return self.query_one("#tag-freq", DataTable)

    @property
    def diff(self) -> CaptionDiff:
        """The preview list."""
        return self.query_one(CaptionDiff)

    def records(self) -> list[ImageRecord]:
        """The images the operations act on (the screen's scope and concept)."""
        return self.scope_records()

    def say(self, message: str, kind: str = "") -> None:
        """One line between the form and the preview."""
        line = self.query_one("#tag-message", Static)
        line.update(Text(message))
        line.set_class(kind == "error", "-error")
        line.set_class(kind == "ok", "-ok")

    def _show_fields(self, operation: str) -> None:
        first, second, regex = FIELDS[operation]
        for row_id, label_id, input_id, spec in (
            ("#first-row", "#first-label", "#first", first),
            ("#second-row", "#second-label", "#second", second),
        ):
            self.query_one(row_id).display = spec is not None
            if spec is not None:
                self.query_one(label_id, Label).update(spec[0])
                self.query_one(input_id, Input).placeholder = spec[1]
        self.query_one("#regex", Checkbox).display = regex

    # -- form --------------------------------------------------------------------------------

    @on(Select.Changed, "#op")
    def operation_changed(self, event: Select.Changed) -> None:
        self._show_fields(str(event.value))
        self.drop_preview("form changed")

    @on(Input.Changed, "#first, #second")
    @on(Checkbox.Changed, "#regex")
    def form_changed(self) -> None:
        self.drop_preview("form changed")

    @on(Input.Submitted, "#first, #second")
    def form_submitted(self) -> None:
        self.preview()

    @on(DataTable.RowSelected, "#tag-freq")
    def tag_chosen(self, event: DataTable.RowSelected) -> None:
        """Put the chosen tag into the form (the operation stays, unless it takes no tags)."""
        name = self._names.get(str(event.row_key.value))
        if name is None:
            return
        op = self.query_one("#op", Select)
        if FIELDS[str(op.value)][0] is None:
            op.value = "remove"
            self._show_fields("remove")
        first = self.query_one("#first", Input)
        first.value = name
        first.cursor_position = len(name)
        first.focus()
        self.say(f"'{name}' in the form · enter previews the operation")

    def drop_preview(self, reason: str | None = None) -> None:
        """Forget the preview (the form no longer says what it showed)."""
        if self.plan is None:
            return
        self.plan = None
        self.diff.clear_plan()
        if reason:
            self.say(f"{reason}: enter previews again")

    # -- stats -------------------------------------------------------------------------------

    def refresh_stats(self, title: str = "in scope") -> None:
        """Count the tags of the scope again (in a worker); ``title`` names the scope."""
        self.count_tags(self.scope_records(), title)

    @work(thread=True, exclusive=True, group="tag-stats")
    def count_tags(self, records: list[ImageRecord], title: str) -> None:
        """Read the captions and count the tags, off the UI thread."""
        worker = get_current_worker()
        try:
            stats = tags.tag_stats(records)
        except Exception as exc:  # e.g. an unreadable caption; must never take the workbench down
            self.post_message(self.StatsReady(None, title, worker_error_text(exc)))
            return
        if not worker.is_cancelled:
            self.post_message(self.StatsReady(stats, title))

    def on_tag_pane_stats_ready(self, event: StatsReady) -> None:
        event.stop()
        if event.stats is None:
            self.say(f"✗ cannot count the tags: {event.error}", "error")
            return
        self.stats, self._title = event.stats, event.title
        self.show_stats()

    def _concept_columns(self, stats: TagStats) -> list[str]:
        """Concepts that get a count column: two or more, and only where the list has room."""
        concepts = sorted(stats.per_concept)
        room = self.freq_table.size.width - (5 + 6 + 14)  # n, %, and a tag of 12 at least
        if len(concepts) < 2 or room < 11 * len(concepts):
            return []
        return concepts

    def show_stats(self) -> None:
        """Draw the last counted tags, keeping the cursor on the same tag."""
        stats = self.stats
        if stats is None:
            return
        table = self.freq_table
        keep = None
        if table.row_count:
            try:
                keep = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            except Exception:
                keep = None
        table.clear(columns=True)
        per_concept = self._shown_concepts = self._concept_columns(stats)
        self._names = {tag_key(name): name for name, _ in stats.most_common()}
        self.suggester.tags = [name for name, _ in stats.most_common()]
        # Counts first and the tag last: the figures stay in view however long the tags
        # (BLIP sentences) are; the whole tag goes into the form when chosen.
        table.add_column("n", key="n")
        table.add_column("%", key="share")
        for concept in per_concept:
            table.add_column(concept[:10], key=f"concept:{concept}")
        table.add_column("tag", key="tag")
        for name, count in stats.most_common():
            key = tag_key(name)
            share = percent(count, max(1, stats.captions))
            cells: list[Text] = [
                Text(str(count), justify="right"),
                Text(str(share), justify="right", style="bold" if share >= 100 else ""),
            ]
            cells += [Text(str(stats.per_concept[c][1][key] or ""), justify="right") for c in per_concept]
            cells.append(Text(name, no_wrap=True))
            table.add_row(*cells, key=key)
        if keep is not None and keep in self._names:
            table.move_cursor(row=table.get_row_index(keep), animate=False)
        self.query_one(
            "#freq-pane"
        ).border_title = f"{len(stats.counts)} tags · {stats.captions} captions {self._title}"

    def on_resize(self) -> None:
        if self.stats is not None and self._concept_columns(self.stats) != self._shown_concepts:
            self.show_stats()

    # -- preview and apply -------------------------------------------------------------------

    def preview(self) -> None:
        """Plan the form's operation over the scope (in a worker) and show the diff."""
        if self.busy:
            self.say("busy writing captions; preview again in a moment", "error")
            return
        operation = str(self.query_one("#op", Select).value)
        first = self.query_one("#first", Input).value
        second = self.query_one("#second", Input).value
        regex = self.query_one("#regex", Checkbox).value and FIELDS[operation][2]
        records = self.records()
        if operation != "sort":
            try:
                edit = build_edit(operation, first, second, regex, records)
            except KilnError as exc:
                self.say(f"✗ {exc}", "error")
                return
        else:
            edit = None  # the frequencies are counted in the worker
        self.say("previewing …")
        self.make_plan(operation, edit, records)

    @work(thread=True, exclusive=True, group="tag-preview")
    def make_plan(self, operation: str, edit: TagEdit | None, records: list[ImageRecord]) -> None:
        """Read the captions and plan the edit, off the UI thread."""
        worker = get_current_worker()
        try:
            if edit is None:
                edit = build_edit(operation, "", "", False, records)
            plan = tags.plan_edit(records, edit)
        except Exception as exc:  # a worker error must never take the workbench down
            self.post_message(self.PlanReady(None, worker_error_text(exc)))
            return
        if not worker.is_cancelled:
            self.post_message(self.PlanReady(plan))

    def on_tag_pane_plan_ready(self, event: PlanReady) -> None:
        event.stop()
        if event.plan is None:
            self.say(f"✗ {event.error}", "error")
            return
        plan = event.plan
        if not plan.changes:
            self.plan = None
            self.diff.clear_plan()
            skipped = f" ({len(plan.skipped)} skipped)" if plan.skipped else ""
            self.say(f"{plan.description}: no caption of {plan.considered} would change{skipped}")
            return
        self.plan = plan
        self.diff.show_plan(plan, self.root)
        self.diff.focus()
        self.say(
            f"{plan.description}: {len(plan.changes)} of {plan.considered} captions would change · "
            "a applies · esc drops",
            "ok",
        )

    def apply(self, store: Store) -> bool:
        """Write the previewed plan in a worker; False when there is none."""
        if self.plan is None or self.busy:
            return False
        self.busy = True
        self.say(f"writing {len(self.plan.changes)} captions …")
        self.write_plan(self.plan, store)
        return True

    @work(thread=True, exclusive=True, group="tag-apply")
    def write_plan(self, plan: TagPlan, store: Store) -> None:
        """Write the plan's captions as one undo step, off the UI thread."""
        try:
            result = tags.apply_plan(plan, self.root, store)
        except Exception as exc:  # a worker error must never take the workbench down
            self.post_message(self.Applied(plan, None, worker_error_text(exc)))
            return
        self.post_message(self.Applied(plan, result))

    def on_tag_pane_applied(self, event: Applied) -> None:
        # Not stopped: the screen refreshes the workbench after it.
        self.busy = False
        self.plan = None
        self.diff.clear_plan()
        if event.result is None:
            self.say(f"✗ {event.error}", "error")
            return
        result = event.result
        failed = f" · {len(result.failed)} not written (changed since the preview?)" if result.failed else ""
        undo = " · u undoes it" if result.step is not None else ""
        self.say(
            f"{event.plan.description}: {len(result.written)} captions changed{failed}{undo}",
            "error" if failed else "ok",
        )
