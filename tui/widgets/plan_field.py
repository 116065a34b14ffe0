"""One labelled line of a form (the plan's, the TEC's): an input (or a value shown in its place) and
its message."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.content import Content
from textual.suggester import Suggester
from textual.widget import Widget
from textual.widgets import Input, Label, Static


class PlanField(Widget):
    """``Label  [input]`` with a validation message under it.

    The input can give way to a shown value (a figure Kiln solved or read from the dataset),
    so a field that is not typed says where its value comes from instead of looking editable.

    Args:
        key: The form key; the input's id is ``<key>`` too, prefixed ``field-`` on this widget.
        label: The label on the left.
        value: The initial text.
        placeholder: Shown while the input is empty.
        tooltip: What the field means (shown on hover and in the help text).
        max_length: The longest text the input takes (0: no limit, for paths).
        suggester: Completes what is typed (paths), shown dimmed; right arrow accepts.
    """

    DEFAULT_CSS = """
    PlanField {
        layout: grid;
        grid-size: 2;
        grid-columns: 13 1fr;
        grid-rows: 1 auto;
        height: auto;
    }
    PlanField Label {
        color: $text-muted;
    }
    PlanField .shown {
        display: none;
    }
    PlanField .message {
        display: none;
        column-span: 2;
        height: auto;
        padding-left: 13;
        color: $text-error;
    }
    PlanField.-invalid .message {
        display: block;
    }
    PlanField.-note .message {
        display: block;
        color: $text-muted;
    }
    PlanField.-invalid Label {
        color: $text-error;
    }
    """

    def __init__(
        self,
        key: str,
        label: str,
        value: str = "",
        placeholder: str = "",
        tooltip: str = "",
        max_length: int = 24,
        suggester: Suggester | None = None,
    ) -> None:
        super().__init__(id=f"field-{key}")
        self._max_length = max_length
        self._suggester = suggester
        self.key = key
        self.label = label
        self._value = value
        self._placeholder = placeholder
        self._input_tooltip = tooltip
        self._shown: tuple | None = None
        self._message: tuple[str | None, bool] = (None, False)

    def compose(self) -> ComposeResult:
        yield Label(self.label)
        yield Input(
            self._value,
            placeholder=self._placeholder,
            id=self.key,
            compact=True,
            tooltip=self._input_tooltip or None,
            max_length=self._max_length,
            suggester=self._suggester,
        )
        yield Static("", classes="shown")
        yield Static("", classes="message")

    @property
    def input(self) -> Input:
        """The text input."""
        return self.query_one(Input)

    @property
    def text(self) -> str:
        """What the user typed."""
        return self.input.value

    def show_value(self, value: Content | str | None) -> None:
        """Show ``value`` in place of the input, or the input again when None.

        Called on every keystroke, so it touches the widgets only when something changed.
        """
        shown = value is not None
        if value is not None and content_key(value) != self._shown:
            self._shown = content_key(value)
            self.query_one(".shown", Static).update(value)
        if shown == self.has_class("-shown"):
            return
        if shown and self.input.has_focus:
            # Focus would sit on an invisible input: hand it to the next field.
            self.screen.focus_next()
        self.set_class(shown, "-shown")
        # Inline, not only by class: CSS applies later, and the next key may already be a tab
        # that must find this input focusable.
        self.input.display = not shown
        self.query_one(".shown", Static).display = shown
        self.input.disabled = shown

    def set_message(self, message: str | None, note: bool = False) -> None:
        """Show a message under the field (an error, or a ``note`` such as a resolved ratio).

        Args:
            message: The text, or None to clear it.
            note: Show it as information rather than as an error.
        """
        if (message, note) == self._message:
            return
        self._message = (message, note)
        self.query_one(".message", Static).update(message or "")
        self.set_class(bool(message) and not note, "-invalid")
        self.set_class(bool(message) and note, "-note")


def content_key(value: Content | str | None) -> tuple | None:
    """What makes two contents look the same: their text and styles (``==`` compares text only)."""
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return (value.plain, tuple(value.spans))
