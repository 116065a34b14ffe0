"""What to do with the images marked in the dataset table (``m`` marks, ``a`` opens this).

A letter picks the action; the tag and concept actions then ask for their word in a field
that completes from the dataset's tags or concept folders (right arrow accepts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.engine.errors import KilnError
from kiln.tui.screens.section import SectionScreen
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Static

if TYPE_CHECKING:
    from collections.abc import Iterable

    from kiln.engine.curate import Curation
    from kiln.tui.widgets.image_table import ImageTable

# (key, action, what it does, the field's prompt; None: no field)
ACTIONS: list[tuple[str, str, str, str | None]] = [
    ("i", "include", "include them", None),
    ("x", "exclude", "exclude them", None),
    ("t", "add_tag", "add a tag to their captions", "tag to add (at the end)"),
    ("d", "remove_tag", "remove a tag from their captions", "tag to remove"),
    ("c", "move", "move them to a concept folder", "concept folder, e.g. 10_cat (made if missing)"),
    ("u", "unmark", "clear the marks", None),
]


class MarkedScreen(ModalScreen[tuple[str, str] | None]):
    """Dismisses ``(action, word)`` (word "" for actions without one), or None to do nothing."""

    DEFAULT_CSS = """
    MarkedScreen {
        align: center middle;
    }
    MarkedScreen > Vertical {
        width: 64;
        max-width: 95%;
        height: auto;
        border: thick $primary;
        background: $surface;
        padding: 1 2;
    }
    MarkedScreen #word {
        margin-top: 1;
        display: none;
    }
    MarkedScreen .keys {
        color: $text-muted;
        margin-top: 1;
    }
    """

    AUTO_FOCUS = ""  # the field only once an action asks for a word: letters pick actions

    BINDINGS = [
        *(
            Binding(key, f"choose('{action}')", text, show=False, id=f"marked.{action}", tooltip=text)
            for key, action, text, _ in ACTIONS
        ),
        Binding("escape", "close", "Cancel", id="marked.cancel", tooltip="Change nothing"),
    ]

    def __init__(self, count: int, tag_names: list[str], folders: list[str]) -> None:
        super().__init__()
        self.count = count
        self.tag_names = tag_names
        self.folders = folders
        self.action_name: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"[b]{self.count} marked image(s)[/b]")
            yield Static("\n".join(f"  [b]{key}[/b]  {text}" for key, _, text, _ in ACTIONS), id="choices")
            yield Input(id="word", select_on_focus=False)
            yield Static("esc cancels", classes="keys", id="keys")

    def action_choose(self, action: str) -> None:
        if self.action_name is not None:
            return  # typing in the field
        prompt = next(prompt for _, name, _, prompt in ACTIONS if name == action)
        if prompt is None:
            self.dismiss((action, ""))
            return
        self.action_name = action
        word = self.query_one("#word", Input)
        word.placeholder = prompt
        choices = self.folders if action == "move" else self.tag_names
        word.suggester = SuggestFromList(choices, case_sensitive=False)
        word.display = True
        word.focus()
        self.query_one("#keys", Static).update("enter does it · → completes · esc cancels")

    @on(Input.Submitted, "#word")
    def submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if text and self.action_name is not None:
            self.dismiss((self.action_name, text))

    def action_close(self) -> None:
        self.dismiss(None)


class MarkedRows(SectionScreen):
    """The dataset section's marks: ``m`` marks the row under the cursor, ``a`` acts on all marked.

    Mixed into :class:`kiln.tui.screens.dataset.DatasetScreen` (kept here so that screen stays
    readable); ``self.marked`` is set there.
    """

    if TYPE_CHECKING:
        # Defined by DatasetScreen; declared for the type checker only, so that nothing here
        # shadows them at run time.
        curation: Curation
        marked: set[str]

        @property
        def table(self) -> ImageTable: ...
        def current_path(self) -> str | None: ...
        def refill_table(self, keep: str | None = None) -> None: ...
        def schedule_quality(self) -> None: ...
        def start_analysis(self) -> None: ...
        def update_gauge(self) -> None: ...
        def update_row(self, path: str) -> None: ...
        def tell_sections(self, paths: set[str]) -> None: ...
        def unsaved_caption(self) -> str | None: ...
        def captions_written(self, paths: Iterable[str]) -> None: ...

    def show_marked_count(self) -> None:
        """The table pane's subtitle: how many images are marked (none: no subtitle)."""
        count = len(self.marked)
        self.refresh_bindings()
        self.query_one("#table-pane").border_subtitle = f"{count} marked · a acts on them" if count else ""

    def action_mark(self) -> None:
        """Mark or unmark the image under the cursor, then move down (so m m m marks a run)."""
        path = self.current_path()
        if path is None:
            return
        self.marked ^= {path}
        self.update_row(path)
        self.show_marked_count()
        self.table.action_cursor_down()

    def action_marked(self) -> None:
        """Ask what to do with the marked images, then do it."""
        self.marked &= set(self.curation.rows)
        if not self.marked:
            self.notify("No image is marked: m marks the one under the cursor.", severity="warning")
            return
        from kiln.engine.caption.tags import frequencies

        rows = self.curation.rows
        tag_names = [name for name, _ in frequencies(row.record for row in rows.values()).most_common()]
        folders = sorted({row.record.folder for row in rows.values() if row.record.folder})
        self.app.push_screen(MarkedScreen(len(self.marked), tag_names, folders), self.act_on_marked)

    def act_on_marked(self, choice: tuple[str, str] | None) -> None:
        """Do what the marked-images dialog chose (``(action, word)``; None: nothing)."""
        if choice is None:
            return
        action, word = choice
        paths = sorted(self.marked & set(self.curation.rows))
        if action == "unmark":
            self.set_marks(set())
            return
        if action in ("include", "exclude"):
            self.curation.set_included(paths, action == "include")
            for path in paths:
                self.update_row(path)
            self.update_gauge()
            self.notify(f"{action.capitalize()}d {len(paths)} image(s): {self.curation.summary().label()}")
            return
        editing = self.unsaved_caption()
        if editing in paths:
            self.notify(
                f"{editing} has an unsaved caption edit: save it (ctrl+s) or cancel it (esc) first.",
                severity="warning",
            )
            return
        try:
            if action == "move":
                self.move_marked(paths, word)
            else:
                self.tag_marked(paths, action, word)
        except KilnError as exc:
            self.notify(str(exc), severity="error", timeout=10)

    def set_marks(self, marked: set[str]) -> None:
        """Replace the marks and redraw the rows whose mark changed."""
        changed = self.marked ^ marked
        self.marked = marked
        for path in changed:
            self.update_row(path)
        self.show_marked_count()

    def tag_marked(self, paths: list[str], action: str, tag: str) -> None:
        """Add (``add_tag``) or remove (``remove_tag``) a tag in the marked images' captions,
        as one undo step (the captions section's u undoes it)."""
        from kiln.engine.caption import tags

        records = [self.curation.rows[path].record for path in paths]
        edit = tags.add_edit([tag]) if action == "add_tag" else tags.remove_edit([tag])
        plan = tags.plan_edit(records, edit)
        if not plan.changes:
            self.notify(f"{plan.description}: no caption of the {len(paths)} marked would change.")
            return
        result = tags.apply_plan(plan, self.curation.root, self.curation.store)
        self.captions_written(result.written)
        self.tell_sections(set(result.written))
        failed = f"; {len(result.failed)} not written (changed on disk)" if result.failed else ""
        self.notify(f"{plan.description}: {len(result.written)} caption(s) changed{failed}")

    def move_marked(self, paths: list[str], folder: str) -> None:
        """Move the marked images (and captions) into ``folder``; nothing is ever overwritten."""
        from kiln.engine.dataset.move import move_images

        current = self.current_path()
        result = move_images(
            self.curation.root, paths, folder, self.curation.store, self.curation.dataset.caption_extension
        )
        if result.moved:
            self.curation.rescan(result.moved)
            self.marked = {result.moved.get(path, path) for path in self.marked} & set(self.curation.rows)
            self.refill_table(keep=result.moved.get(current or "", current))
            self.update_gauge()
            self.start_analysis()
            self.schedule_quality()
            self.tell_sections(set(result.moved) | set(result.moved.values()))
        message = f"Moved {len(result.moved)} image(s) to {folder}/"
        if result.skipped:
            first, reason = next(iter(result.skipped.items()))
            message += f"; {len(result.skipped)} left where they were ({first}: {reason})"
        self.notify(message, severity="warning" if result.skipped else "information", timeout=10)
