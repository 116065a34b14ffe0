"""Pilot tests for the dataset screen: every binding, persistence, captions, watching."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kiln.engine.analysis.dsb import summarise
from kiln.tui.screens.dataset import DatasetScreen
from kiln.tui.screens.help import HelpScreen
from kiln.tui.screens.rebalance import RebalanceScreen
from kiln.tui.widgets.caption_editor import CaptionEditor
from kiln.tui.widgets.dsb_gauge import DsbGauge
from kiln.tui.widgets.image_table import ImageTable
from PIL import Image
from textual.binding import Binding
from textual.widgets import TextArea

from tests.imagegen import share_image
from tests.tui.helpers import add_small_duplicate, analysed, make_app, wait_for


def expected_summary(app):
    rows = app.curation.rows.values()
    return summarise((r.analysis.white, r.record.repeats) for r in rows if r.counted)


def cursor_path(app) -> str:
    return app.screen.current_path()


def cell(app, path: str, column: str) -> str:
    """The text a row shows in a column."""
    keys = [c.key for c in app.screen.table.columns]
    return str(app.screen.cells_for(path)[keys.index(column)])


async def test_table_fills_with_one_row_per_image_by_path(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        await analysed(pilot)
        keys = app.screen.query_one("#images", ImageTable).keys
        assert keys == sorted(keys) and len(keys) == 12
        assert app.screen.query_one(DsbGauge).summary.label() == "28%W | 72%B  mediocre"


async def test_toggle_moves_gauge_to_new_mean(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        await analysed(pilot)
        before = app.screen.query_one(DsbGauge).summary
        await pilot.press("j", "j", "space")
        path = cursor_path(app)
        assert path == "10_kilnpot/pot_03.jpg"
        assert not app.curation.rows[path].included
        after = app.screen.query_one(DsbGauge).summary
        assert after == expected_summary(app)
        assert after.images == before.images - 1
        white = [r.analysis.white for p, r in app.curation.rows.items() if p != path]
        assert after.white == pytest.approx(sum(white) / len(white))
        await pilot.press("space")
        assert app.screen.query_one(DsbGauge).summary == before


async def test_selection_persists_across_restart(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        await analysed(pilot)
        await pilot.press("down", "space", "down", "down", "space")
        gauge = app.screen.query_one(DsbGauge).summary
        excluded = {p for p, r in app.curation.rows.items() if not r.included}
    reopened = make_app(sample_copy)
    async with reopened.run_test(size=(120, 40)) as pilot:
        await analysed(pilot)
        assert {p for p, r in reopened.curation.rows.items() if not r.included} == excluded
        assert reopened.screen.query_one(DsbGauge).summary == gauge
        assert cell(reopened, "10_kilnpot/pot_02.jpg", "inc") == "·"


async def test_j_k_and_arrows_move_the_cursor(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("j", "j")
        assert cursor_path(app) == "10_kilnpot/pot_03.jpg"
        await pilot.press("k")
        assert cursor_path(app) == "10_kilnpot/pot_02.jpg"
        await pilot.press("down", "down", "up")
        assert cursor_path(app) == "10_kilnpot/pot_03.jpg"


async def test_caption_edit_saves_atomically(sample_copy: Path, monkeypatch) -> None:
    replaced: list[str] = []
    real_replace = os.replace

    def spy(src, dst):
        replaced.append(str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    app = make_app(sample_copy)
    caption = sample_copy / "10_kilnpot" / "pot_01.txt"
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("e")
        assert isinstance(app.focused, TextArea)
        app.focused.move_cursor((0, 0))  # the editor opens at the end; this edit is at the start
        await pilot.press(*"kilnpot, ")
        await pilot.press("ctrl+s")
        assert caption.read_text(encoding="utf-8").startswith("kilnpot, a round blue vase")
        assert replaced == [str(caption)]
        assert not [p for p in caption.parent.iterdir() if p.name.endswith(".tmp")]
        assert not app.screen.query_one(CaptionEditor).dirty
        await pilot.press("escape")
        assert isinstance(app.focused, ImageTable)


async def test_enter_also_edits(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("enter")
        assert isinstance(app.focused, TextArea)


async def test_escape_with_unsaved_edit_asks_and_discard_keeps_file(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    caption = sample_copy / "10_kilnpot" / "pot_01.txt"
    original = caption.read_text(encoding="utf-8")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("e", "x", "escape")
        assert app.screen.__class__.__name__ == "UnsavedEditScreen"
        await pilot.press("escape")  # keep editing
        assert isinstance(app.focused, TextArea)
        assert app.screen.query_one(CaptionEditor).dirty
        await pilot.press("escape", "d")  # discard
        assert not app.screen.query_one(CaptionEditor).dirty
        assert app.screen.query_one(CaptionEditor).text == original
    assert caption.read_text(encoding="utf-8") == original


async def test_moving_to_another_row_with_unsaved_edit_asks(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    caption = sample_copy / "10_kilnpot" / "pot_01.txt"
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("e")
        app.focused.move_cursor((0, 0))  # the editor opens at the end; this edit is at the start
        await pilot.press("x")
        app.screen.table.cursor_row = 3  # a mouse click does this
        await pilot.pause()
        assert app.screen.__class__.__name__ == "UnsavedEditScreen"
        await pilot.press("s")
        await pilot.pause()
        assert caption.read_text(encoding="utf-8").startswith("x")
        assert app.screen.query_one(CaptionEditor).rel_path == "10_kilnpot/pot_04.png"


async def test_quit_with_unsaved_edit_asks(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("e", "x")
        await app.action_quit()
        await pilot.pause()
        assert app.screen.__class__.__name__ == "UnsavedEditScreen"
        await pilot.press("escape")
        assert app.is_running
        await app.action_quit()
        await pilot.press("d")
        await pilot.pause()
    assert not app.is_running


async def test_rebalance_apply_excludes_the_suggestion(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        await analysed(pilot)
        suggestion = app.curation.rebalance()
        await pilot.press("r")
        assert isinstance(app.screen, RebalanceScreen)
        await pilot.press("escape")
        assert all(r.included for r in app.curation.rows.values())
        await pilot.press("r", "a")
        excluded = tuple(sorted(p for p, r in app.curation.rows.items() if not r.included))
        assert excluded == suggestion.exclude
        gauge = app.screen.query_one(DsbGauge).summary
        assert gauge.verdict == "optimal"
        assert gauge.white == pytest.approx(suggestion.white)


async def test_filter_by_path_and_caption(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.table
        await pilot.press("slash", *"moon")
        assert table.keys == ["5_kilnstyle/hills_02.jpg"]  # caption match
        await pilot.press("enter")
        assert isinstance(app.focused, ImageTable)
        await pilot.press("slash", "escape")
        assert table.row_count == 12


async def test_sort_cycles_columns_and_reverses(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        await analysed(pilot)
        table = app.screen.table
        await pilot.press("s")  # W%
        whites = [app.curation.rows[k].analysis.white for k in table.keys]
        assert whites == sorted(whites)
        await pilot.press("S")
        whites = [app.curation.rows[k].analysis.white for k in table.keys]
        assert whites == sorted(whites, reverse=True)


async def test_broken_image_shows_its_error(sample_copy: Path) -> None:
    (sample_copy / "10_kilnpot" / "broken.png").write_bytes(b"not a png")
    app = make_app(sample_copy)
    async with app.run_test(size=(160, 40)) as pilot:
        await analysed(pilot)
        assert "not an image" in cell(app, "10_kilnpot/broken.png", "status")
        assert app.curation.summary().images == 12


async def test_empty_folder_explains_the_layout(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        empty = app.screen.query_one("#empty")
        assert empty.display
        assert "10_cat/001.png" in str(empty.render())


async def test_lossy_caption_is_shown_and_not_saved_unless_edited(sample_copy: Path) -> None:
    caption = sample_copy / "10_kilnpot" / "pot_01.txt"
    caption.write_bytes(b"caf\xe9 latte, kilnpot")
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        editor = app.screen.query_one(CaptionEditor)
        assert editor.text == "caf\ufffd latte, kilnpot"
        assert "not valid UTF-8" in str(editor.query_one("#caption-status").render())
        await pilot.press("ctrl+s")
        assert caption.read_bytes() == b"caf\xe9 latte, kilnpot"


async def test_open_in_editor_suspends_and_reloads(sample_copy: Path, tmp_path: Path, monkeypatch) -> None:
    script = tmp_path / "fake-editor.sh"
    script.write_text('#!/bin/sh\nprintf "edited elsewhere" > "$1"\n')
    script.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(script))
    monkeypatch.delenv("VISUAL", raising=False)
    app = make_app(sample_copy)
    suspended = []

    class FakeSuspend:
        def __enter__(self):
            suspended.append(True)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(app, "suspend", lambda: FakeSuspend())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("o")
        assert suspended == [True]
        assert app.screen.query_one(CaptionEditor).text == "edited elsewhere"


async def test_external_caption_change_appears(sample_copy: Path) -> None:
    app = make_app(sample_copy, watch=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await analysed(pilot)
        await pilot.pause(0.3)
        (sample_copy / "10_kilnpot" / "pot_01.txt").write_text("changed by another program", encoding="utf-8")
        editor = app.screen.query_one(CaptionEditor)
        await wait_for(pilot, lambda: editor.text == "changed by another program", timeout=2.0)
        assert "changed by another" in cell(app, "10_kilnpot/pot_01.jpg", "caption")


async def test_external_change_during_an_edit_asks(sample_copy: Path) -> None:
    app = make_app(sample_copy, watch=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.3)
        await pilot.press("e")
        app.focused.move_cursor((0, 0))  # the editor opens at the end; this edit is at the start
        await pilot.press("x")
        (sample_copy / "10_kilnpot" / "pot_01.txt").write_text("theirs", encoding="utf-8")
        await wait_for(pilot, lambda: app.screen.__class__.__name__ == "UnsavedEditScreen", timeout=2.0)
        await pilot.press("escape")  # keep mine
        assert app.screen.query_one(CaptionEditor).text.startswith("x")


async def test_new_and_deleted_images_appear_and_go(sample_copy: Path) -> None:
    app = make_app(sample_copy, watch=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await analysed(pilot)
        await pilot.pause(0.3)
        share_image(90.0, (64, 64), "RGB").save(sample_copy / "10_kilnpot" / "new.png")
        await wait_for(pilot, lambda: "10_kilnpot/new.png" in app.curation.rows, timeout=2.0)
        await analysed(pilot)
        assert app.curation.rows["10_kilnpot/new.png"].analysis.white == pytest.approx(90.0, abs=0.05)
        assert app.screen.query_one(DsbGauge).summary == expected_summary(app)
        (sample_copy / "5_kilnstyle" / "hills_01.jpg").unlink()
        await wait_for(pilot, lambda: "5_kilnstyle/hills_01.jpg" not in app.curation.rows, timeout=2.0)
        await pilot.pause(0.1)
        assert app.screen.query_one(DsbGauge).summary == expected_summary(app)


async def test_help_screen_lists_every_binding(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, DatasetScreen)


def test_every_binding_has_an_id_and_a_tooltip() -> None:
    from kiln.tui.app import KilnApp
    from kiln.tui.screens.confirm import UnsavedEditScreen

    for owner in (KilnApp, DatasetScreen, HelpScreen, RebalanceScreen, UnsavedEditScreen, ImageTable):
        for binding in owner.BINDINGS:
            assert isinstance(binding, Binding)
            assert binding.id and binding.tooltip, (owner.__name__, binding.key)


def test_startup_imports_no_torch(sample_copy: Path) -> None:
    code = (
        "import asyncio, sys, json\n"
        "from kiln.tui.app import KilnApp\n"
        f"app = KilnApp({str(sample_copy)!r}, images='none', watch=False)\n"
        "async def main():\n"
        "    async with app.run_test() as pilot:\n"
        "        await pilot.pause(0.5)\n"
        "asyncio.run(main())\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ),
    ).stdout
    loaded = set(__import__("json").loads(out.strip().splitlines()[-1]))
    assert not loaded & {"torch", "diffusers", "transformers", "peft", "accelerate", "onnxruntime"}


async def test_renamed_image_keeps_its_selection_and_figures(sample_copy: Path) -> None:
    app = make_app(sample_copy, watch=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await analysed(pilot)
        await pilot.pause(0.3)
        await pilot.press("space")  # exclude pot_01
        white = app.curation.rows["10_kilnpot/pot_01.jpg"].analysis.white
        old = sample_copy / "10_kilnpot" / "pot_01.jpg"
        old.rename(old.with_name("renamed.jpg"))
        await wait_for(pilot, lambda: "10_kilnpot/renamed.jpg" in app.curation.rows, timeout=2.0)
        row = app.curation.rows["10_kilnpot/renamed.jpg"]
        assert not row.included
        assert row.analysis is not None and row.analysis.white == white  # carried over, not re-measured
        assert "10_kilnpot/pot_01.jpg" not in app.curation.rows


async def test_quality_flags_appear_in_the_status_column_with_reasons_under_the_preview(
    sample_copy: Path,
) -> None:
    small = add_small_duplicate(sample_copy)
    app = make_app(sample_copy)
    async with app.run_test(size=(160, 40)) as pilot:
        await analysed(pilot)
        assert cell(app, "10_kilnpot/pot_04.png", "status") == "blurry, transparency"
        assert cell(app, small, "status") == "low_resolution, duplicate"
        assert cell(app, "10_kilnpot/pot_01.jpg", "status") == "ok"
        app.screen.table.move_to(small)
        await pilot.pause()
        info = str(app.screen.query_one("#row-info").render())
        assert "duplicate near-duplicate of 10_kilnpot/pot_05.jpg" in info
        assert "400x500 would be upscaled" in info


async def test_flags_follow_new_analyses(sample_copy: Path) -> None:
    app = make_app(sample_copy, watch=True)
    async with app.run_test(size=(160, 40)) as pilot:
        await analysed(pilot)
        await pilot.pause(0.3)
        Image.new("RGB", (600, 600), (128, 128, 128)).save(sample_copy / "10_kilnpot" / "flat.png")
        await wait_for(pilot, lambda: "10_kilnpot/flat.png" in app.curation.rows, timeout=3.0)
        await wait_for(pilot, lambda: "blurry" in cell(app, "10_kilnpot/flat.png", "status"), timeout=3.0)
        assert "low_information" in cell(app, "10_kilnpot/flat.png", "status")


async def test_f_cycles_the_flag_filter_and_slash_accepts_flag_terms(analysed_copy: Path) -> None:
    small = add_small_duplicate(analysed_copy)
    app = make_app(analysed_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        await analysed(pilot)
        table = app.screen.table
        await pilot.press("f")  # every flagged image
        assert app.screen.filter_text == "flag:any"
        assert sorted(table.keys) == sorted(["10_kilnpot/pot_04.png", small, "5_kilnstyle/hills_05.png"])
        await pilot.press("f")
        assert app.screen.filter_text == "flag:blurry"
        assert table.keys == ["10_kilnpot/pot_04.png", "5_kilnstyle/hills_05.png"]
        assert isinstance(app.focused, ImageTable)
        await pilot.press("f", "f", "f", "f")  # transparency, low_resolution, duplicate, then off
        assert app.screen.filter_text == ""
        assert table.row_count == 13
        await pilot.press("slash", *"flag:dup")
        assert table.keys == [small]
        await pilot.press("ctrl+u", *"hills flag:blur")
        assert table.keys == ["5_kilnstyle/hills_05.png"]
        await pilot.press("escape")
        assert table.row_count == 13


async def test_quit_from_another_section_with_nothing_unsaved_quits_at_once(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: app.current_mode == "plan")
        await pilot.press("escape")
        await app.action_quit()
        await pilot.pause()
        assert app.current_mode == "plan"  # no detour through the dataset section
    assert not app.is_running


async def test_the_reg_set_named_in_the_plan_shows_its_own_balance_apart_from_the_gauge(
    analysed_copy: Path, tmp_path: Path
) -> None:
    from kiln.engine.dataset.store import Store
    from kiln.engine.plan.saved import save_plan_settings
    from kiln.tui.widgets.reg_line import RegLine
    from PIL import Image

    reg = tmp_path / "reg"
    (reg / "1_pot").mkdir(parents=True)
    for index in range(4):  # three white class images and one black: 75 % white
        Image.new("RGB", (64, 64), (255, 255, 255) if index else (0, 0, 0)).save(
            reg / "1_pot" / f"{index}.png"
        )
    app = make_app(analysed_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        line = app.screen.query_one(RegLine)
        assert not line.display  # no reg folder set
        gauge_before = app.curation.summary().label()
        with Store(analysed_copy) as store:
            save_plan_settings(store, {"reg": str(reg)})
        await pilot.press("2", "1")  # back to the dataset section: it looks again
        await wait_for(pilot, lambda: "4 class image(s)" in str(line.render()))
        text = str(line.render())
        assert "Reg set (not in this DSB)" in text and "75%W | 25%B" in text
        assert app.curation.summary().label() == gauge_before  # the gauge never counts them
    assert not (reg / ".kiln").exists()  # nothing written into the reg folder
