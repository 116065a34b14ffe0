"""Focus stays visible when the terminal has 256 or 16 colours (tmux over SSH often has no
truecolor; issue 14 item 13).

Textual renders in truecolor and the terminal driver's Rich console downgrades each colour to
the terminal's system (``TEXTUAL_COLOR_SYSTEM``, or what ``TERM=xterm-256color`` implies) with
``Color.downgrade``. A focus style drawn as a slightly different shade (a border at 50 %, a
tinted cursor) can land on the same palette entry as the unfocused one and vanish. These tests
render every section's screen, downgrade every cell as the driver would, and check that each
focusable widget looks different focused than with nothing focused: inside the widget or on a
border around it (a pane's ``:focus-within`` border).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.color import ColorSystem
from textual.app import App, ComposeResult
from textual.widget import Widget
from textual.widgets import Static

from tests.tui.helpers import analysed, make_app

SYSTEMS = {"256": ColorSystem.EIGHT_BIT, "16": ColorSystem.STANDARD}
SECTIONS = "123456"

Cell = tuple[str, int | None, int | None, tuple[bool, ...]]


def downgraded_cells(app: App, system: ColorSystem) -> list[list[Cell]]:
    """The screen as a grid of (character, fg, bg, attributes) after downgrading to ``system``."""
    rows = []
    for strip in app.screen._compositor.render_strips():
        row: list[Cell] = []
        for segment in strip:
            style = segment.style
            fg = style.color.downgrade(system).number if style and style.color else None
            bg = style.bgcolor.downgrade(system).number if style and style.bgcolor else None
            attrs = (bool(style.bold), bool(style.reverse), bool(style.underline)) if style else ()
            row.extend((char, fg, bg, attrs) for char in segment.text)
        rows.append(row)
    return rows


def focus_cells(widget: Widget) -> set[tuple[int, int]]:
    """Where a focus indicator for ``widget`` may show: its own cells and the outline of every
    container around it (not the footer or other panes, which change with focus for other
    reasons)."""
    x, y, width, height = widget.region
    cells = {(i, j) for i in range(x, x + width) for j in range(y, y + height)}
    node = widget.parent
    while isinstance(node, Widget) and node is not widget.screen:
        x, y, width, height = node.region
        for i in range(x, x + width):
            cells |= {(i, y), (i, y + height - 1)}
        for j in range(y, y + height):
            cells |= {(x, j), (x + width - 1, j)}
        node = node.parent
    return cells


def differing(before: list[list[Cell]], after: list[list[Cell]], cells: set[tuple[int, int]]) -> int:
    return sum(
        1
        for x, y in cells
        if y < len(before) and x < len(before[y]) and y < len(after) and x < len(after[y])
        if before[y][x] != after[y][x]
    )


def scroll_offsets(app: App) -> list[tuple[int, int]]:
    """Where every scrollable part of the screen is scrolled to."""
    return [(int(node.scroll_x), int(node.scroll_y)) for node in app.screen.walk_children(Widget)]


async def invisible_focus(app: App, pilot) -> list[str]:
    """Focusable widgets of the current screen whose focus does not show in some colour system.

    Each widget focused is compared with the screen with nothing focused. That screen is
    rendered once, and again only when focusing scrolled something (it is the focus changes
    that cost: every one restyles the screen)."""
    found = []

    async def unfocused() -> tuple[dict[str, list[list[Cell]]], list[tuple[int, int]]]:
        app.screen.set_focus(None)
        await pilot.pause()
        return {name: downgraded_cells(app, system) for name, system in SYSTEMS.items()}, scroll_offsets(app)

    before, offsets = await unfocused()
    for widget in list(app.screen.focus_chain):
        widget.focus()
        await pilot.pause()
        focused = {name: downgraded_cells(app, system) for name, system in SYSTEMS.items()}
        if scroll_offsets(app) != offsets:
            before, offsets = await unfocused()
        cells = focus_cells(widget)
        for name in SYSTEMS:
            if not differing(before[name], focused[name], cells):
                found.append(f"{type(widget).__name__}#{widget.id} in {name} colours")
    return found


async def check_every_section(path: Path, size: tuple[int, int], themes: tuple[str, ...]) -> None:
    app = make_app(path)
    checked = 0
    async with app.run_test(size=size) as pilot:
        await analysed(pilot)
        for theme in themes:
            app.theme = theme
            for key in SECTIONS:
                await pilot.press(key)
                await pilot.pause()
                checked += len(list(app.screen.focus_chain))
                hidden = await invisible_focus(app, pilot)
                assert not hidden, f"{theme}, section {key}, {size}: focus not visible on {hidden}"
    # Every section has focusable widgets; the walk must not have looked at nothing.
    assert checked >= 2 * len(SECTIONS) * len(themes)


async def test_focus_shows_in_256_and_16_colours_in_every_section(analysed_copy: Path) -> None:
    await check_every_section(analysed_copy, (80, 24), ("kiln-dark",))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("size", "themes"),
    [((80, 24), ("kiln-light", "kiln-contrast")), ((120, 40), ("kiln-dark", "kiln-light", "kiln-contrast"))],
)
async def test_focus_shows_in_every_theme_at_both_sizes(analysed_copy: Path, size, themes) -> None:
    # (kiln-dark at 80x24 is the test above.)
    await check_every_section(analysed_copy, size, themes)


class _Bare(Static, can_focus=True):
    """A focusable widget with no focus style: what the check must catch."""


class _BareApp(App):
    def compose(self) -> ComposeResult:
        yield _Bare("no focus style here", id="bare")
        yield Static("something else")


async def test_the_check_catches_a_widget_without_a_focus_style() -> None:
    app = _BareApp()
    async with app.run_test(size=(40, 6)) as pilot:
        hidden = await invisible_focus(app, pilot)
    assert hidden == ["_Bare#bare in 256 colours", "_Bare#bare in 16 colours"]


class _Shaded(Static, can_focus=True):
    """Focus drawn as a slightly lighter grey: distinct in 256 colours, one black in 16."""

    DEFAULT_CSS = """
    _Shaded { background: #1c1c1c; }
    _Shaded:focus { background: #262626; }
    """


class _ShadedApp(App):
    def compose(self) -> ComposeResult:
        yield _Shaded("a shade lighter when focused", id="shaded")


async def test_the_check_catches_a_shade_that_vanishes_in_16_colours() -> None:
    app = _ShadedApp()
    async with app.run_test(size=(40, 6)) as pilot:
        hidden = await invisible_focus(app, pilot)
    assert hidden == ["_Shaded#shaded in 16 colours"]
