"""Keys every form section shares: leave the form, come back, and tab that cannot be outrun.

Over SSH several keys can arrive in one read ("4<tab>9"). Bound with priority, tab moves the
focus before the next character is delivered, so the 9 lands in the next field, not this one.
"""

from __future__ import annotations

from textual.binding import Binding


def field_tab_bindings(prefix: str) -> list[Binding]:
    """``tab``/``shift+tab`` between fields, handled before any queued key (ids ``<prefix>.next``...)."""
    return [
        Binding("tab", "app.focus_next", "Next", show=False, priority=True, id=f"{prefix}.next",
                tooltip="Next field"),
        Binding("shift+tab", "app.focus_previous", "Previous", show=False, priority=True,
                id=f"{prefix}.previous", tooltip="Previous field"),
    ]  # fmt: skip


def form_bindings(prefix: str) -> list[Binding]:
    """``esc`` leaves the form (digits switch sections again), ``e`` goes back, and the tab keys.

    The screen implements ``action_leave_form`` and ``action_edit_form``.
    """
    return [
        Binding("escape", "leave_form", "Leave form", id=f"{prefix}.leave_form",
                tooltip="Leave the form for the results (then digits switch sections again)"),
        Binding("e", "edit_form", "Edit", id=f"{prefix}.edit",
                tooltip="Back into the form (tab moves between fields)"),
        *field_tab_bindings(prefix),
    ]  # fmt: skip
