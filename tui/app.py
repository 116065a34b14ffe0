"""Kiln's Textual app: themes, global keys, and the screens over one dataset."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.engine.analysis.run import start_pool_server
from kiln.engine.analysis.tones import DEFAULT_METHOD
from kiln.engine.curate import Curation
from kiln.tui.commands import BindingCommands
from kiln.tui.keymap import binding_ids, keymap_path, read_keymap
from kiln.tui.messages import ConceptRenamed, FilesChanged
from kiln.tui.screens.help import HelpScreen
from kiln.tui.screens.section import SectionScreen
from kiln.tui.sections import SECTIONS, Section
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.theme import Theme

from kiln import themes

if TYPE_CHECKING:
    from kiln.tui.plan_form import PlanInputs
    from kiln.tui.screens.dataset import DatasetScreen

# Below this many columns every screen has the class ``-narrow`` (``-wide`` from here on).
NARROW_WIDTH = 100


class KilnApp(App):
    """The workbench.

    Args:
        path: The dataset folder.
        images: Image protocol for previews (see ``kiln.tui.image_modes.IMAGE_MODES``).
        theme_name: One of Kiln's themes (``kiln-dark`` by default) or a Textual built-in.
        watch: Follow changes made by other programs.
        poll: Use a polling file watcher (network file systems).
        method: Desaturation method for the shares.
        caption_extension: Caption sidecar extension.
        runs: More runs folders for the runs section (beside the dataset's ``runs/``).
        keymap: The key remapping file (default ``$XDG_CONFIG_HOME/kiln/keymap.toml``, see
            ``docs/keymap.md``); a missing file changes nothing.
    """

    CSS_PATH = "app.tcss"
    TITLE = "Kiln"
    COMMANDS = App.COMMANDS | {BindingCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (NARROW_WIDTH, "-wide")]
    BINDINGS = [
        Binding(
            "q", "quit", "Quit", id="app.quit", tooltip="Quit Kiln (asks first about an unsaved caption)"
        ),
        Binding(
            "question_mark",
            "help",
            "Help",
            key_display="?",
            id="app.help",
            tooltip="Every key, with what it does",
        ),
        Binding("f1", "help", "Help", show=False, id="app.help_f1", tooltip="Every key, with what it does"),
        *(
            Binding(
                section.key,
                f"section('{section.name}')",
                section.title,
                show=False,
                id=f"app.section.{section.name}",
                tooltip=section.tooltip,
            )
            for section in SECTIONS
        ),
    ]

    def __init__(
        self,
        path: Path | str = ".",
        images: str = "auto",
        theme_name: str = themes.DEFAULT_THEME,
        watch: bool = True,
        poll: bool = False,
        method: str = DEFAULT_METHOD,
        caption_extension: str = ".txt",
        runs: list[Path] | tuple[Path, ...] = (),
        keymap: Path | None = None,
    ) -> None:
        super().__init__()
        start_pool_server()
        for definition in themes.theme_definitions().values():
            self.register_theme(Theme(**definition))
        self.theme = theme_name
        self.curation = Curation(path, caption_extension=caption_extension, method=method)
        self.images = images
        self.watch_files = watch
        self.poll = poll
        self.runs_dirs = [Path(folder) for folder in runs]
        self.keymap_file = keymap_path() if keymap is None else Path(keymap)
        self.sub_title = str(self.curation.root)
        self.dataset_name = self.curation.root.name
        self.section_screens: dict[str, SectionScreen] = {}
        for section in SECTIONS:
            self.add_mode(section.name, partial(self._build_section, section))

    def on_mount(self) -> None:
        self.apply_keymap()
        self.switch_mode(SECTIONS[0].name)

    def apply_keymap(self) -> None:
        """Remap keys from the user's keymap file; each problem in it is one notification."""
        if not self.keymap_file.is_file():
            return  # the usual case: nothing to read, and no section module to import
        keymap = read_keymap(self.keymap_file, known_ids=self.binding_ids())
        if keymap.keys:
            self.set_keymap(keymap.keys)
        for problem in keymap.problems:
            self.notify(problem, title="keymap", severity="error", timeout=15)

    def binding_ids(self) -> set[str]:
        """Every binding id of the workbench (see :func:`kiln.tui.keymap.binding_ids`)."""
        return {binding_id for group in binding_ids().values() for binding_id, _ in group}

    def _build_section(self, section: Section) -> SectionScreen:
        screen = section.factory(self)
        self.section_screens[section.name] = screen
        return screen

    def action_section(self, name: str) -> None:
        """Open a section (its screen keeps its state between visits)."""
        if self.current_mode != name:
            self.switch_mode(name)

    # -- what sections ask of each other (never by reaching into another's screen) -----------

    def _dataset(self) -> DatasetScreen | None:
        from kiln.tui.screens.dataset import DatasetScreen

        screen = self.section_screens.get("dataset")
        return screen if isinstance(screen, DatasetScreen) else None

    def tell_sections(self, message: Callable[[], Message], sender: SectionScreen) -> None:
        """Post a message made by ``message`` to every open section but ``sender`` (a message
        is delivered once, so each section gets its own)."""
        for screen in self.section_screens.values():
            if screen is not sender:
                screen.post_message(message())

    def show_in_dataset(self, path: str | None = None, filter: str | None = None) -> bool:
        """Open the dataset section on ``path`` (the cursor on it) or with ``filter`` typed.

        Returns False when the dataset section is not open or the image is gone (it says so).
        """
        dataset = self._dataset()
        self.action_section("dataset")
        if dataset is None:
            return False
        if filter is not None:
            dataset.set_filter(filter)
            dataset.table.focus()
        return dataset.reveal(path) if path is not None else True

    def dataset_filter(self) -> str:
        """The dataset section's filter as typed ("" when it shows every image)."""
        dataset = self._dataset()
        return dataset.filter_text if dataset is not None else ""

    def dataset_cursor(self) -> str | None:
        """The image under the dataset section's cursor, or None."""
        dataset = self._dataset()
        return dataset.current_path() if dataset is not None else None

    def unsaved_caption(self) -> str | None:
        """The image whose caption has an edit not yet saved in the dataset section, or None."""
        dataset = self._dataset()
        return dataset.unsaved_caption() if dataset is not None else None

    def settle_unsaved_caption(self, choice: str) -> None:
        """Save (``"save"``) or throw away (``"discard"``) the dataset section's unsaved edit."""
        dataset = self._dataset()
        if dataset is not None:
            dataset.settle_unsaved(choice)

    def captions_written(self, paths: Iterable[str]) -> None:
        """Captions a section just wrote: the dataset section re-reads and redraws them."""
        dataset = self._dataset()
        if dataset is not None:
            dataset.captions_written(paths)
        else:
            for path in paths:
                self.curation.reload_caption(path)

    def tell_dataset(self, message: FilesChanged | ConceptRenamed) -> bool:
        """Post ``message`` to the dataset section; False when it is not open."""
        dataset = self._dataset()
        if dataset is None:
            return False
        dataset.post_message(message)
        return True

    def use_base(self, path: str, family: str, style: str | None) -> str | None:
        """Make ``path`` the dataset's base (the Bases view's ``u``): kept in its store for the
        new-run form, the plan's family and the Captions section's style, and told to the open
        sections. Returns a warning when the dataset is captioned in the other style."""
        from dataclasses import replace

        from kiln.engine.bases.chosen import ChosenBase, save_chosen_base, style_mismatch
        from kiln.engine.caption.run_choices import load_choices, save_choices
        from kiln.engine.plan.saved import load_plan_settings, save_plan_settings
        from kiln.tui.messages import BaseChosen

        store = self.curation.store
        save_chosen_base(store, ChosenBase(path, family, style))
        settings = load_plan_settings(store)
        settings["family"] = family
        save_plan_settings(store, settings)
        if style in ("blip", "wd14"):
            save_choices(store, replace(load_choices(store), style=style))
        for screen in self.section_screens.values():
            screen.post_message(BaseChosen(path, family, style))
        return style_mismatch(style, (row.caption.text for row in self.curation.rows.values()))

    def plan_inputs(self) -> PlanInputs | None:
        """The plan section's form as it stands, or None when the plan was never opened."""
        from kiln.tui.screens.plan import PlanScreen

        plan = self.section_screens.get("plan")
        return plan.read_inputs() if isinstance(plan, PlanScreen) and plan.is_mounted else None

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    async def action_quit(self) -> None:
        """Quit once no section would lose unsaved work (each one that would asks in turn).

        Only the sections whose ``leave_needs_asking()`` says so are shown, so a plain ``q``
        quits from where the user is.
        """
        pending = [
            (name, screen) for name, screen in self.section_screens.items() if screen.leave_needs_asking()
        ]

        def next_or_exit() -> None:
            if not pending:
                self.exit()
                return
            name, screen = pending.pop()
            if self.current_mode != name:
                self.switch_mode(name)
            screen.confirm_leave(next_or_exit)

        next_or_exit()

    def on_unmount(self) -> None:
        self.curation.close()
