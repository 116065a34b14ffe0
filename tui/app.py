"""Kiln's Textual app: themes, global keys, and the screens over one dataset."""

from __future__ import annotations

from pathlib import Path

from kiln.engine.analysis.run import start_pool_server
from kiln.engine.analysis.tones import DEFAULT_METHOD
from kiln.engine.curate import Curation
from kiln.tui.commands import BindingCommands
from kiln.tui.screens.help import HelpScreen
from kiln.tui.sections import SECTIONS, Section
from textual import events
from textual.app import App
from textual.binding import Binding
from textual.screen import Screen
from textual.theme import Theme

from kiln import themes

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
    """

    CSS_PATH = "app.tcss"
    TITLE = "Kiln"
    COMMANDS = App.COMMANDS | {BindingCommands}
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
        self.sub_title = str(self.curation.root)
        self.dataset_name = self.curation.root.name
        self.section_screens: dict[str, Screen] = {}
        for section in SECTIONS:
            self.add_mode(section.name, lambda section=section: self._build_section(section))

    def on_mount(self) -> None:
        self.switch_mode(SECTIONS[0].name)

    def _build_section(self, section: Section) -> Screen:
        screen = section.factory(self)
        screen.set_class(self.size.width < NARROW_WIDTH, "-narrow")
        self.section_screens[section.name] = screen
        return screen

    def action_section(self, name: str) -> None:
        """Open a section (its screen keeps its state between visits)."""
        if self.current_mode != name:
            self.switch_mode(name)
            # ScreenResume does not reach the app: size the section here (the terminal may
            # have been resized while another section was shown).
            for screen in self.screen_stack:
                screen.set_class(self.size.width < NARROW_WIDTH, "-narrow")

    def on_resize(self, event: events.Resize) -> None:
        # The event's size: this handler runs before App's own, so self.size is still the old one.
        # Every section's screen, not only the shown one: a section opened later fits too.
        for screen in {*self.screen_stack, *self.section_screens.values()}:
            screen.set_class(event.size.width < NARROW_WIDTH, "-narrow")

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    async def action_quit(self) -> None:
        """Quit once no section would lose unsaved work (each one that would asks in turn).

        A section with something to lose has ``confirm_leave(then)`` and ``leave_needs_asking()``;
        only those that need to ask are shown, so a plain ``q`` quits from where the user is.
        """
        pending = [
            (name, screen)
            for name, screen in self.section_screens.items()
            if getattr(screen, "confirm_leave", None) is not None
            and getattr(screen, "leave_needs_asking", lambda: True)()
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
