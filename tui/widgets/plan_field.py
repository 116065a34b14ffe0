"""One labelled line of the plan form: an input (or a value shown in its place) and its message."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, Static


class PlanField(Vertical):
    """``Label  [input]`` with a validation message under it.

    The input can give way to a shown value (a figure Kiln solved or read from the dataset),
    so a field that is not typed says where its value comes from instead of looking editable.

    Args:
        key: The form key; the input's id is ``<key>`` too, prefixed ``field-`` on this widget.
        label: The label on the left.
        value: The initial text.
        placeholder: Shown while the input is empty.
        tooltip: What the field means (shown on hover and in the help text).
    """

    DEFAULT_CSS = """
    PlanField {
        height: auto;
    }
    PlanField > Horizontal {
        height: 1;
    }
    PlanField Label {
        width: 13;
        color: $text-muted;
    }
    PlanField Input {
        width: 1fr;
    }
    PlanField .shown {
        width: 1fr;
        display: none;
    }
    PlanField.-shown Input {
        display: none;
    }
    PlanField.-shown .shown {
        display: block;
    }
    PlanField .message {
        display: none;
        padding-left: 13;
        color: $text-error;
    }
    PlanField.-invalid .message {
        display: block;
    }
    PlanField.-invalid Label {
        color: $text-error;
    }
    """

    def __init__(
        self, key: str, label: str, value: str = "", placeholder: str = "", tooltip: str = ""
    ) -> None:
        super().__init__(id=f"field-{key}")
        self.key = key
        self.label = label
        self._value = value
        self._placeholder = placeholder
        self._tooltip = tooltip

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label(self.label)
            yield Input(
                self._value,
                placeholder=self._placeholder,
                id=self.key,
                compact=True,
                tooltip=self._tooltip or None,
                max_length=24,
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

    def show_value(self, value: Text | str | None) -> None:
        """Show ``value`` in place of the input, or the input again when None."""
        shown = value is not None
        if shown:
            self.query_one(".shown", Static).update(value)
        if shown and self.input.has_focus:
            # Focus would sit on an invisible input: hand it to the next field.
            self.screen.focus_next()
        self.set_class(shown, "-shown")
        self.input.disabled = shown

    def set_message(self, message: str | None) -> None:
        """Show a validation message under the field, or clear it with None."""
        self.query_one(".message", Static).update(message or "")
        self.set_class(bool(message), "-invalid")
