"""Keys and focus at 80x24 and 120x40: digits and letters typed into a field stay in it, the first
visit to a section never lands in a field, and keys shown in the footer are keys that work."""

from __future__ import annotations

from pathlib import Path

import pytest
from kiln.tui.screens.captions import CaptionsScreen
from kiln.tui.widgets.caption_editor import caption_end
from textual.widgets import Input, TextArea

from tests.tui.helpers import make_app, wait_for

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


# -- the caption editor and marks in the dataset table (item 14) ------------------------------


@pytest.mark.parametrize("size", SIZES)
async def test_caption_editor_opens_at_the_end_saves_closes_and_saves_next(sample_copy: Path, size) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=size) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.current_path() == "10_kilnpot/pot_01.jpg")
        await pilot.press("enter")
        area = screen.editor.text_area
        assert app.focused is area
        await pilot.press("comma", "space", "x")  # typing extends the caption
        assert area.text.rstrip("\n").endswith("kilnpot, x")
        await pilot.press("ctrl+s")
        pot = sample_copy / "10_kilnpot" / "pot_01.txt"
        assert pot.read_text(encoding="utf-8").rstrip().endswith(", x")
        assert app.focused is screen.table  # saved and closed
        await pilot.press("enter", "y", "ctrl+n")
        assert pot.read_text(encoding="utf-8").rstrip().endswith(", xy")
        await pilot.pause()
        assert screen.current_path() == "10_kilnpot/pot_02.jpg"
        assert app.focused is area and screen.editor.rel_path == "10_kilnpot/pot_02.jpg"
        assert area.cursor_location == caption_end(area.text) != (0, 0)


@pytest.mark.parametrize("size", SIZES)
async def test_marked_rows_are_included_tagged_and_moved_together(sample_copy: Path, size) -> None:
    from kiln.tui.screens.marked import MarkedScreen

    app = make_app(sample_copy)
    async with app.run_test(size=size) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.current_path() == "10_kilnpot/pot_01.jpg")
        assert "a" not in footer_keys(screen)  # nothing marked: nothing to act on
        await pilot.press("m", "m")  # pot_01 and pot_02; space still includes
        assert screen.marked == {"10_kilnpot/pot_01.jpg", "10_kilnpot/pot_02.jpg"}
        assert "●" in str(screen.cells_for("10_kilnpot/pot_01.jpg")[3])
        await pilot.press("space")  # pot_03 excluded, not marked
        assert not app.curation.rows["10_kilnpot/pot_03.jpg"].included
        assert "a" in footer_keys(screen)
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, MarkedScreen))
        await pilot.press("x")  # exclude them
        await wait_for(pilot, lambda: app.screen is screen)
        assert not app.curation.rows["10_kilnpot/pot_01.jpg"].included
        assert not app.curation.rows["10_kilnpot/pot_02.jpg"].included
        await pilot.press("a", "t")
        await wait_for(pilot, lambda: isinstance(app.screen, MarkedScreen))
        await pilot.press(*"glazed", "enter")
        await wait_for(pilot, lambda: app.screen is screen)
        for name in ("pot_01", "pot_02"):
            text = (sample_copy / "10_kilnpot" / f"{name}.txt").read_text(encoding="utf-8")
            assert text.rstrip().endswith("glazed")
        assert "glazed" not in (sample_copy / "10_kilnpot" / "pot_03.txt").read_text(encoding="utf-8")
        await pilot.press("a", "d")
        await pilot.press(*"glazed", "enter")
        await wait_for(pilot, lambda: app.screen is screen)
        assert "glazed" not in (sample_copy / "10_kilnpot" / "pot_01.txt").read_text(encoding="utf-8")
        # Move them into the other concept, where pot_02's name is already taken by a caption.
        (sample_copy / "5_kilnstyle" / "pot_02.txt").write_text("someone else's", encoding="utf-8")
        await pilot.press("a", "c")
        await pilot.press(*"5_kilnstyle", "enter")
        await wait_for(pilot, lambda: "5_kilnstyle/pot_01.jpg" in app.curation.rows)
        assert (sample_copy / "5_kilnstyle" / "pot_01.txt").is_file()
        assert not (sample_copy / "10_kilnpot" / "pot_01.jpg").exists()
        assert (sample_copy / "5_kilnstyle" / "pot_02.txt").read_text(encoding="utf-8") == "someone else's"
        assert "10_kilnpot/pot_02.jpg" in app.curation.rows  # left where it was
        # The selection travelled with the image; the marks follow the moved rows.
        assert not app.curation.rows["5_kilnstyle/pot_01.jpg"].included
        assert screen.marked == {"5_kilnstyle/pot_01.jpg", "10_kilnpot/pot_02.jpg"}
        await pilot.press("a", "u")
        await wait_for(pilot, lambda: not screen.marked)


@pytest.mark.parametrize("size", SIZES)
async def test_concept_rename_is_in_the_footer_and_help_and_the_cursor_moves_after(
    sample_copy: Path, size
) -> None:
    from kiln.tui.screens.help import binding_rows
    from kiln.tui.screens.plan import PlanScreen
    from kiln.tui.screens.rename import RenameConceptScreen
    from kiln.tui.widgets.plan_field import PlanField
    from textual.widgets import DataTable

    app = make_app(sample_copy)
    async with app.run_test(size=size) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        screen = app.screen
        assert screen.active_bindings["ctrl+r"].binding.description == "Rename concept"
        assert "ctrl+r" in footer_keys(screen)
        assert any(key == "ctrl+r" and "Rename" in does for key, does, _ in binding_rows(screen))
        screen.query_one("#field-repeats", PlanField).input.value = "20"
        concepts = screen.query_one("#concepts", DataTable)
        await wait_for(pilot, lambda: concepts.display and concepts.row_count == 2)
        await pilot.press("escape")  # out of the form: the concepts table has the focus
        assert app.focused is concepts
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: isinstance(app.screen, RenameConceptScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: (sample_copy / "20_kilnpot").is_dir())
        await wait_for(pilot, lambda: screen.highlighted_folder() == "20_kilnpot")
        assert app.focused is concepts
        await pilot.press("down")
        assert screen.highlighted_folder() == "5_kilnstyle"
        await pilot.press("up")
        assert screen.highlighted_folder() == "20_kilnpot"
