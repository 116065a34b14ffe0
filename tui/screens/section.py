"""What every section's screen shares: its place in the workbench, the questions asked before
leaving it, jumps from other sections, and how a worker's error is put in words.

A section never reaches into another one's screen: it asks the app (:class:`kiln.tui.app.KilnApp`),
whose typed methods (``show_in_dataset``, ``plan_inputs``, ...) know where things live.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, cast

from kiln.engine.errors import KilnError
from kiln.tui.sections import SECTIONS, Section
from textual.keys import key_to_character
from textual.screen import Screen
from textual.widgets import Input, TextArea

if TYPE_CHECKING:
    from kiln.tui.app import KilnApp


def worker_error_text(exc: BaseException) -> str:
    """One line for an error raised in a worker (which must never take the workbench down).

    Kiln's own errors already say what went wrong and what to do; anything else is named by
    its type, so a library's terse message still means something.
    """
    if isinstance(exc, KilnError):
        return str(exc)
    return f"{exc.__class__.__name__}: {exc}"


def _types_a_character(key: str) -> bool:
    """Whether a key, as Textual names it (``p``, ``space``, ``slash``), types a character."""
    character = "/" if key == "slash" else key_to_character(key)
    return character is not None and len(character) == 1 and character.isprintable()


class SectionScreen(Screen):
    """The screen of one of the workbench's sections (see :data:`kiln.tui.sections.SECTIONS`).

    Subclasses set :attr:`SECTION` to their section's name. A section with something to lose
    (an unsaved edit, a run going) overrides :meth:`leave_needs_asking` and :meth:`confirm_leave`;
    one that other sections jump into overrides :meth:`reveal`.
    """

    SECTION: ClassVar[str] = ""

    @property
    def section(self) -> Section:
        """This screen's section: its name, digit key and title."""
        return next(section for section in SECTIONS if section.name == self.SECTION)

    @property
    def kiln(self) -> KilnApp:
        """The workbench app, typed: the one way to reach the other sections."""
        return cast("KilnApp", self.app)

    def typing(self) -> bool:
        """Whether the focus is in a text field (an Input or a TextArea), where keys type text."""
        return isinstance(self.focused, (Input, TextArea))

    def is_letter_action(self, action: str) -> bool:
        """Whether every key this screen binds to ``action`` types a character (``p``, ``2``, ``S``).

        Such a binding never fires while a text field has the focus (the field takes the key),
        so it is hidden from the footer there rather than shown as if it worked.
        """
        keys = [
            key
            for key, bindings in self._bindings.key_to_bindings.items()
            if any(binding.action == action for binding in bindings)
        ]
        return bool(keys) and all(_types_a_character(key) for key in keys)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Letter and digit keys are hidden while the user types in a field (they type there)."""
        return not (self.typing() and self.is_letter_action(action))

    def leave_needs_asking(self) -> bool:
        """Whether quitting now would lose something (then :meth:`confirm_leave` asks)."""
        return False

    def confirm_leave(self, then: Callable[[], None]) -> None:
        """Run ``then`` (quit) once nothing would be lost, asking the user first if needed."""
        then()

    def reveal(self, path: str) -> bool:
        """Show the image ``path`` (another section jumped here); False when it cannot be shown."""
        return False

    def worker_error(self, exc: BaseException) -> str:
        """One line for a worker's error (see :func:`worker_error_text`)."""
        return worker_error_text(exc)
