"""Keys and focus at 80x24 and 120x40: digits and letters typed into a field stay in it, the first
visit to a section never lands in a field, and keys shown in the footer are keys that work."""

from __future__ import annotations

from pathlib import Path

import pytest
from kiln.tui.screens.captions import CaptionsScreen
from textual.widgets import Input, TextArea

from tests.tui.conftest import make_app, wait_for

SIZES = [(80, 24), (120, 40)]


def footer_keys(screen) -> set[str]:
    """The keys the footer shows for the screen as it stands (enabled and shown bindings)."""
    return {key for key, active in screen.active_bindings.items() if active.binding.show and active.enabled}


@pytest.mark.parametrize("size", SIZES)
async def test_first_visit_to_each_section_focuses_no_text_field(sample_copy: Path, size) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=size) as pilot:
        for key, name in (("2", "plan"), ("3", "captions"), ("4", "clean"), ("5", "runs"), ("6", "tec")):
            await pilot.press(key)
            await wait_for(pilot, lambda name=name: app.current_mode == name)
            await pilot.pause()
            assert not isinstance(app.focused, (Input, TextArea)), (name, app.focused)
        # So digits typed right after arriving switch sections, from each one in turn.
        for key, name in (("3", "captions"), ("1", "dataset"), ("6", "tec"), ("3", "captions")):
            await pilot.press(key)
            await wait_for(pilot, lambda name=name: app.current_mode == name)


@pytest.mark.parametrize("size", SIZES)
async def test_digits_and_letters_typed_in_a_field_stay_there(sample_copy: Path, size) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=size) as pilot:
        await pilot.press("3")
        await wait_for(pilot, lambda: isinstance(app.screen, CaptionsScreen))
        screen = app.screen
        await pilot.press("c")  # the auto-caption tab: its empty model field takes the focus
        model = screen.query_one("#model", Input)
        assert app.focused is model
        await pilot.press("5", "u", "r", "p")
        assert model.value == "5urp" and app.current_mode == "captions"


@pytest.mark.parametrize("size", SIZES)
async def test_p_in_the_tags_form_types_p_after_the_chosen_tag(sample_copy: Path, size) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=size) as pilot:
        await pilot.press("3")
        await wait_for(pilot, lambda: isinstance(app.screen, CaptionsScreen))
        screen = app.screen
        pane = screen.tag_pane
        await pilot.press("t")
        await wait_for(pilot, lambda: pane.stats is not None and pane.freq_table.row_count > 0)
        table = pane.freq_table
        assert "p" in footer_keys(screen)  # preview is a key while the list has the focus
        table.move_cursor(row=table.get_row_index("kilnpot"))
        await pilot.press("enter")  # the tag fills the form
        first = screen.query_one("#first", Input)
        assert app.focused is first
        await pilot.pause()
        # In the field, letter keys type: the footer does not offer them there.
        assert not {"p", "a", "u", "r", "c", "t", "l"} & footer_keys(screen)
        await pilot.press("p")
        assert first.value == "kilnpotp"
        assert pane.plan is None
