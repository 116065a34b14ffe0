"""The Bases view over the TEC section: the catalog ranked by TEC, sorting, "use as base" into
the plan, the new-run form and the Captions section (with the caption-style warning), and
enter measuring a base in full."""

from __future__ import annotations

from pathlib import Path

import pytest
from kiln.engine.bases.chosen import load_chosen_base
from kiln.engine.caption.run_choices import load_choices
from kiln.engine.tec.meter import ProbeOptions
from kiln.tui.screens.bases import BasesScreen
from kiln.tui.screens.tec import TecScreen
from textual.widgets import DataTable, Input, Select, Static

from tests.tinytec import LETTERS, file_variant, with_noise
from tests.tui.helpers import make_app, wait_for

SIZE = (110, 32)
OPTIONS = ProbeOptions(words=LETTERS, words_source="letters")


@pytest.fixture
def models(tmp_path: Path, tiny_file: Path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    root = tmp_path / "models"
    root.mkdir()
    for name, noise in (("darkDream_v1", 0.05), ("anythingV5Ink", 0.5), ("plainMix", 0.0)):
        file_variant(tiny_file, root / f"{name}.safetensors", with_noise(noise))
    return root


async def open_bases(pilot, models: Path, reference: Path) -> BasesScreen:
    await pilot.press("6")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, TecScreen))
    pilot.app.screen.bases_options = OPTIONS  # the tiny tokenizer keeps only letters whole
    pilot.app.set_focus(None)
    await pilot.press("b")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, BasesScreen))
    screen = pilot.app.screen
    screen.query_one("#bases-folders", Input).value = str(models)
    screen.query_one("#bases-sd15", Input).value = str(reference)
    screen.query_one("#bases-table").focus()
    await pilot.press("ctrl+r")
    await wait_for(pilot, lambda: len(screen.entries) == 3 and not screen.scanning)
    await pilot.pause()
    return screen


def titles(screen: BasesScreen) -> list[str]:
    table = screen.query_one("#bases-table", DataTable)
    return [str(table.get_row_at(row)[1]) for row in range(table.row_count)]


async def test_the_catalog_ranks_and_sorts_and_remembers_the_folders(
    sample_copy: Path, models: Path, tiny_file: Path
) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_bases(pilot, models, tiny_file)
        assert titles(screen) == ["plainMix", "darkDream_v1", "anythingV5Ink"]
        assert "corrupted" in str(screen.query_one("#bases-table", DataTable).get_row_at(2)[5])
        await pilot.press("s")
        assert titles(screen) == ["anythingV5Ink", "darkDream_v1", "plainMix"]
        await pilot.press("escape")
    # A second opening starts on the same folders and reads the catalog, no measuring.
    reopened = BasesScreen(options=OPTIONS)
    assert reopened.initial["folders"] == str(models) and reopened.initial["sd15"] == str(tiny_file)


async def test_use_as_base_reaches_the_plan_the_new_run_form_and_the_captions(
    sample_copy: Path, models: Path, tiny_file: Path
) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")  # open the plan section so it hears of the choice
        await pilot.pause()
        screen = await open_bases(pilot, models, tiny_file)
        table = screen.query_one("#bases-table", DataTable)
        table.move_cursor(row=2)  # anythingV5Ink: WD14, while the sample data is captioned in sentences
        await pilot.press("u")
        await pilot.pause()
        status = str(screen.query_one("#bases-status", Static).render())
        assert "anythingV5Ink is this dataset's base" in status
        assert "but 6 of the dataset's 12 captions are BLIP sentences" in " ".join(status.split())
        chosen = load_chosen_base(app.curation.store)
        assert chosen is not None and chosen.path.endswith("anythingV5Ink.safetensors")
        assert (chosen.family, chosen.style) == ("sd15", "wd14")
        assert load_choices(app.curation.store).style == "wd14"
        plan = app.section_screens["plan"]
        assert plan.query_one("#family", Select).value == "sd15"
        from kiln.tui.screens.new_run import initial_base

        assert initial_base(app.curation.store, []) == chosen.path


async def test_enter_measures_the_base_in_full_in_the_tec_section(
    sample_copy: Path, models: Path, tiny_file: Path
) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_bases(pilot, models, tiny_file)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TecScreen))
        tec = app.screen
        assert tec.query_one("#candidate", Input).value.endswith("plainMix.safetensors")
        assert tec.query_one("#reference", Input).value == str(tiny_file)
        assert screen.entries  # the view handed over its choice


def test_bases_view_snapshot(snap_compare, sample_copy: Path, models: Path, tiny_file: Path) -> None:
    async def prepare(pilot) -> None:
        screen = await open_bases(pilot, models, tiny_file)
        screen.query_one("#bases-folders", Input).value = "models"
        screen.query_one("#bases-sd15", Input).value = "sd15.safetensors"
        await pilot.press("down")
        info = screen.query_one("#bases-info", Static)
        info.update("\n".join(line for line in str(info.render()).splitlines()[1:]))  # no tmp path
        await pilot.pause()

    assert snap_compare(make_app(sample_copy), terminal_size=SIZE, run_before=prepare)
