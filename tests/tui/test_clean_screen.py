"""Pilot and snapshot tests for the Clean section: the quality overview and the tiles tool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kiln.tui.screens.clean import CleanScreen, FlagRef, ImageRef
from kiln.tui.screens.dataset import DatasetScreen
from kiln.tui.screens.yes_no import YesNoScreen
from kiln.tui.widgets.tile_grid import TileGrid
from PIL import Image, ImageFilter
from textual import events
from textual.binding import Binding
from textual.widgets import Input, Tree

from tests.imagegen import photo_like
from tests.tui.helpers import add_small_duplicate, analysed, make_app, wait_for

SIZE = (100, 30)
BLURRED, BLOWN = "painting_r3c3.png", "painting_r3c4.png"


@pytest.fixture(scope="module")
def painting(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1024 px photo whose sectors r3c3 and r3c4 are blurred and blown out."""
    pixels = np.asarray(photo_like((1024, 1024), seed=7)).copy()
    blurred = Image.fromarray(pixels[512:768, 512:768]).filter(ImageFilter.GaussianBlur(4))
    pixels[512:768, 512:768] = np.asarray(blurred)
    pixels[512:768, 768:1024] = np.clip(pixels[512:768, 768:1024].astype(np.int16) + 160, 0, 255)
    path = tmp_path_factory.mktemp("sources") / "painting.png"
    Image.fromarray(pixels).save(path, compress_level=1)
    return path


@pytest.fixture
def dataset_and_painting(analysed_copy: Path, painting: Path) -> tuple[Path, Path]:
    """The sample dataset with the painting beside it (``../painting.png`` from the dataset)."""
    beside = analysed_copy.parent / "painting.png"
    beside.write_bytes(painting.read_bytes())
    return analysed_copy, beside


async def open_clean(pilot) -> CleanScreen:
    await analysed(pilot)
    await pilot.press("4")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, CleanScreen)
    return screen


async def plan(pilot, source: str, grid: str = "4x4", overlap: str = "0") -> TileGrid:
    """Open the tiles tab, fill the form and wait for the tiles."""
    screen = pilot.app.screen
    await pilot.press("t")
    screen.query_one("#tile-grid", Input).value = grid
    screen.query_one("#tile-overlap", Input).value = overlap
    box = screen.query_one("#tile-source", Input)
    box.value = source
    box.focus()
    await pilot.press("enter")
    view = screen.query_one("#tile-view", TileGrid)
    await wait_for(pilot, lambda: view.plan is not None and len(view.cells) == len(view.plan.tiles))
    await pilot.pause()
    return view


async def tree_node(pilot, screen: CleanScreen, data):
    """The overview node holding ``data``, opening nodes on the way (they fill when opened)."""
    tree = screen.query_one("#quality-tree", Tree)
    for _ in range(4):  # the tree is at most three levels deep
        stack = list(tree.root.children)
        closed = []
        while stack:
            node = stack.pop()
            if node.data == data:
                return node
            if node.is_expanded:
                stack.extend(node.children)
            elif isinstance(node.data, FlagRef):
                closed.append(node)
        for node in closed:
            node.expand()
        await pilot.pause()
    raise AssertionError(f"no node for {data}")


def status_line(screen: CleanScreen) -> str:
    return str(screen.query_one("#tile-status").render())


# Overview.


async def test_overview_counts_flags_and_lists_duplicate_groups(analysed_copy: Path) -> None:
    small = add_small_duplicate(analysed_copy)
    app = make_app(analysed_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_clean(pilot)
        tree = screen.query_one("#quality-tree", Tree)
        flags = {node.data.flag: node for node in tree.root.children if isinstance(node.data, FlagRef)}
        assert list(flags) == ["blurry", "transparency", "low_resolution", "duplicate", "groups"]
        assert not flags["blurry"].children  # filled when opened
        await tree_node(pilot, screen, ImageRef(small, "duplicate", group=1))
        assert "2 images" in str(flags["blurry"].label)
        assert [child.data.path for child in flags["blurry"].children] == [
            "10_kilnpot/pot_04.png",
            "5_kilnstyle/hills_05.png",
        ]
        (group,) = flags["groups"].children
        members = [child.data.path for child in group.children]
        assert members == ["10_kilnpot/pot_05.jpg", small]  # the original (the larger) first
        assert "13 of 13 images measured" in str(screen.query_one("#quality-summary").render())


async def test_enter_on_a_duplicate_jumps_to_its_dataset_row_even_when_filtered_out(
    analysed_copy: Path,
) -> None:
    small = add_small_duplicate(analysed_copy)
    app = make_app(analysed_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        await analysed(pilot)
        await pilot.press("slash", *"hills", "enter")  # a filter that hides the duplicate
        screen = await open_clean(pilot)
        tree = screen.query_one("#quality-tree", Tree)
        node = await tree_node(pilot, screen, ImageRef(small, "duplicate", group=1))
        await pilot.pause()
        tree.move_cursor(node)
        tree.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, DatasetScreen)
        assert app.screen.current_path() == small
        assert app.screen.filter_text == ""
        assert "near-duplicate of 10_kilnpot/pot_05.jpg" in str(app.screen.query_one("#row-info").render())


async def test_f_on_a_flag_shows_its_images_in_the_dataset(analysed_copy: Path) -> None:
    app = make_app(analysed_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_clean(pilot)
        screen.query_one("#quality-tree", Tree).move_cursor(await tree_node(pilot, screen, FlagRef("blurry")))
        await pilot.press("f")
        await pilot.pause()
        assert isinstance(app.screen, DatasetScreen)
        assert app.screen.table.keys == ["10_kilnpot/pot_04.png", "5_kilnstyle/hills_05.png"]


# Tiles.


async def test_tiles_default_to_the_dataset_image_and_plan_flags_the_spoiled_sectors(
    dataset_and_painting: tuple[Path, Path],
) -> None:
    data, _ = dataset_and_painting
    app = make_app(data)
    async with app.run_test(size=SIZE) as pilot:
        await analysed(pilot)
        await pilot.press("j")  # the dataset's current image is the default source
        screen = await open_clean(pilot)
        await pilot.press("t")
        assert screen.query_one("#tile-source", Input).value == "10_kilnpot/pot_02.jpg"
        await pilot.press("escape", "1", "j", "4")  # it follows the dataset's cursor until edited
        assert screen.query_one("#tile-source", Input).value == "10_kilnpot/pot_03.jpg"
        view = await plan(pilot, "../painting.png")
        assert (view.plan.grid.rows, view.plan.grid.cols) == (4, 4)
        assert [cell.tile.name for cell in view.cells][:2] == ["painting_r1c1.png", "painting_r1c2.png"]
        flagged = {cell.tile.name for cell in view.cells if cell.tile.flags}
        assert flagged == {BLURRED, BLOWN}
        assert "blurry" in [flag.id for flag in view.cells[10].tile.flags]
        assert "overexposed" in [flag.id for flag in view.cells[11].tile.flags]
        assert view.kept == {cell.tile.name for cell in view.cells} - {BLURRED, BLOWN}
        assert "2 low-information · 14 to write" in status_line(screen)
        labels = [str(cell.query_one(".tile-label").render()) for cell in view.cells]
        assert labels[10].startswith("✗ r3c3") and "blurry" in labels[10]
        assert labels[0].startswith("✓ r1c1")


async def test_bad_tile_inputs_say_what_to_fix_and_keep_nothing(dataset_and_painting) -> None:
    data, _ = dataset_and_painting
    Image.new("RGB", (256, 256), (120, 90, 60)).save(data / "small.png")  # 8x8 tiles of 32 px
    app = make_app(data)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_clean(pilot)
        await pilot.press("t")
        form = {name: screen.query_one(f"#tile-{name}", Input) for name in ("source", "grid", "overlap")}
        for source, grid, overlap, expected in (
            ("nothing.png", "4x4", "0", "no such image file"),
            ("../painting.png", "four", "0", "ROWSxCOLS"),
            ("../painting.png", "16x16", "0", "up to 8x8"),
            ("small.png", "8x8", "0", "at least 64 px"),
            ("../painting.png", "4x4", "300", "not smaller than"),
        ):
            form["source"].value, form["grid"].value, form["overlap"].value = source, grid, overlap
            form["source"].focus()
            await pilot.press("enter")
            await wait_for(pilot, lambda expected=expected: expected in status_line(screen))
        assert screen.query_one("#tile-view", TileGrid).plan is None
        assert not (data / "10_style").exists()
        # Over SSH several keys can arrive in one read: each tab still moves on before the next key.
        form["source"].focus()
        form["source"].value = ""
        await pilot.pause()
        for key in ["a", "tab", "2", "tab", "9"]:  # a focused field's text is selected: typing replaces it
            app.post_message(events.Key(key, "\t" if key == "tab" else key))
        await wait_for(pilot, lambda: form["overlap"].value == "9")
        assert (form["source"].value, form["grid"].value) == ("a", "2")
        form["source"].focus()
        await pilot.press("o")  # in a field, letters type (the selected "a" is replaced)
        assert form["source"].value == "o" and screen.active_tab == "tiles"
        await pilot.press("escape", "o")  # esc leaves the field, then o is the tab key again
        assert screen.active_tab == "overview"


async def test_toggled_tiles_are_written_exactly_and_the_dataset_shows_them(dataset_and_painting) -> None:
    data, _ = dataset_and_painting
    app = make_app(data)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_clean(pilot)
        view = await plan(pilot, "../painting.png")
        await pilot.press("space")  # drop r1c1
        await pilot.press("right", "down", "down", "space")  # drop r3c2
        assert view.current.name == "painting_r3c2.png"
        await pilot.press("right", "space")  # keep the blurred r3c3 after all
        expected = {cell.tile.name for cell in view.cells} - {"painting_r1c1.png", "painting_r3c2.png", BLOWN}
        assert view.kept == expected
        screen.query_one("#tile-caption", Input).value = "kilnstyle painting"
        await pilot.press("w")
        out = data / "10_style"
        await wait_for(pilot, lambda: out.is_dir() and "wrote" in status_line(screen), timeout=15)
        captions = {Path(name).with_suffix(".txt").name for name in expected}
        assert {path.name for path in out.iterdir()} == expected | captions
        assert (out / "painting_r2c2.txt").read_text(encoding="utf-8") == "kilnstyle painting\n"
        with Image.open(out / "painting_r2c2.png") as tile:
            assert tile.size == (256, 256)
        # The dataset rescans (no file watcher in tests) and measures the new images.
        rows = app.curation.rows
        await wait_for(pilot, lambda: {f"10_style/{name}" for name in expected} <= set(rows), timeout=5)
        await pilot.press("1")
        await analysed(pilot)
        assert app.screen.table.index_of("10_style/painting_r2c2.png") is not None
        assert rows["10_style/painting_r2c2.png"].record.repeats == 10


async def test_writing_over_existing_tiles_asks_and_no_changes_nothing(dataset_and_painting) -> None:
    data, _ = dataset_and_painting
    out = data / "10_style"
    out.mkdir()
    (out / "painting_r1c1.png").write_bytes(b"an older tile")
    app = make_app(data)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_clean(pilot)
        await plan(pilot, "../painting.png")
        await pilot.press("w")
        await pilot.pause()
        assert isinstance(app.screen, YesNoScreen)
        await pilot.press("n")
        await pilot.pause()
        assert "Nothing written" in status_line(screen)
        assert sorted(path.name for path in out.iterdir()) == ["painting_r1c1.png"]
        assert (out / "painting_r1c1.png").read_bytes() == b"an older tile"
        await pilot.press("w")
        await pilot.pause()
        await pilot.press("y")
        await wait_for(pilot, lambda: "wrote 14 tiles" in status_line(screen), timeout=15)
        with Image.open(out / "painting_r1c1.png") as tile:
            assert tile.size == (256, 256)


def test_every_clean_binding_has_an_id_and_a_tooltip() -> None:
    for owner in (CleanScreen, TileGrid, YesNoScreen):
        for binding in owner.BINDINGS:
            assert isinstance(binding, Binding)
            assert binding.id and binding.tooltip, (owner.__name__, binding.key)


# Snapshots at 100x30 (``pytest --snapshot-update`` after intended changes).


def test_clean_overview_snapshot(snap_compare, analysed_copy: Path) -> None:
    add_small_duplicate(analysed_copy)

    async def prepare(pilot) -> None:
        screen = await open_clean(pilot)
        screen.query_one("#quality-tree", Tree).move_cursor(await tree_node(pilot, screen, FlagRef("groups")))
        await pilot.press("enter", "down", "enter", "down")
        await pilot.pause()

    assert snap_compare(make_app(analysed_copy), terminal_size=SIZE, run_before=prepare)


def test_clean_tiles_snapshot(snap_compare, dataset_and_painting) -> None:
    data, _ = dataset_and_painting

    async def prepare(pilot) -> None:
        await open_clean(pilot)
        await plan(pilot, "../painting.png")
        await pilot.press("space")

    assert snap_compare(make_app(data), terminal_size=SIZE, run_before=prepare)


async def test_narrow_layout_follows_a_terminal_resize(analysed_copy: Path) -> None:
    app = make_app(analysed_copy)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")  # a section opened after start-up is narrow too
        await pilot.pause()
        assert app.screen.has_class("-narrow")
        await pilot.resize_terminal(120, 40)
        await pilot.pause(0.1)
        assert not app.screen.has_class("-narrow")
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.1)
        await pilot.press("1")  # and so is one resized while in the background
        await pilot.pause()
        assert app.screen.has_class("-narrow")


async def test_t_on_an_overview_image_plans_its_tiles(analysed_copy: Path) -> None:
    app = make_app(analysed_copy)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_clean(pilot)
        tree = screen.query_one("#quality-tree", Tree)
        node = await tree_node(pilot, screen, ImageRef("5_kilnstyle/hills_05.png", "blurry"))
        await pilot.pause()
        tree.move_cursor(node)
        await pilot.press("t")
        assert screen.active_tab == "tiles"
        assert screen.query_one("#tile-source", Input).value == "5_kilnstyle/hills_05.png"
        view = screen.query_one("#tile-view", TileGrid)
        await wait_for(pilot, lambda: view.plan is not None)
        assert view.plan.source.name == "hills_05.png" and len(view.plan.tiles) == 16


async def test_help_lists_the_tile_grid_keys_when_it_has_the_focus(dataset_and_painting) -> None:
    from kiln.tui.screens.help import HelpScreen, binding_rows

    data, _ = dataset_and_painting
    app = make_app(data)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_clean(pilot)
        assert "space" not in [key for key, _, _ in binding_rows(screen)]
        view = await plan(pilot, "../painting.png")
        await pilot.click(view.cells[15])  # a click keeps or drops a tile too
        assert "painting_r4c4.png" not in view.kept
        rows = {key: description for key, description, _ in binding_rows(screen)}
        assert rows["space"] == "Keep/drop" and rows["w"] == "Write" and rows["4"] == "Clean"
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)


async def test_output_folder_problems_are_refused_or_warned(dataset_and_painting) -> None:
    data, _ = dataset_and_painting
    (data / "notes.txt").write_text("a file, not a folder", encoding="utf-8")
    app = make_app(data)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_clean(pilot)
        view = await plan(pilot, "../painting.png")
        out = screen.query_one("#tile-out", Input)
        out.value = "notes.txt"
        view.focus()
        await pilot.press("w")
        await pilot.pause()
        assert "is a file" in status_line(screen)
        out.value = "style"  # Kohya skips it: written, with a warning
        view.focus()
        await pilot.press("w")
        await wait_for(pilot, lambda: "wrote 14 tiles" in status_line(screen), timeout=15)
        assert "Kohya skips folders without a repeats prefix" in status_line(screen)
