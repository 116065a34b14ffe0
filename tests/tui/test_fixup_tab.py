"""The Clean section's Fix-up tab: the flagged images with their fixes, before/after previews,
accept/skip, fixing in place in a worker with the dataset following, and undo."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from kiln.tui.screens.clean import CleanScreen
from kiln.tui.widgets.fixup_pane import FixupPane
from kiln.tui.widgets.image_preview import ImagePreview
from textual.binding import Binding
from textual.widgets import DataTable, Input, Static

from tests.fixup.data import make_flagged_dataset
from tests.tui.helpers import analysed, make_app, wait_for

SIZE = (100, 30)
FLAGGED = ["10_subject/blown.png", "10_subject/cutout.png", "10_subject/rotated.jpg", "10_subject/small.jpg"]


@pytest.fixture
def flagged(tmp_path: Path) -> Path:
    return make_flagged_dataset(tmp_path / "data")


def hashes(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and ".kiln" not in path.parts
    }


async def open_fixup(pilot) -> FixupPane:
    await analysed(pilot)
    await pilot.press("4", "x")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, CleanScreen) and screen.active_tab == "fixup"
    pane = screen.query_one(FixupPane)
    await wait_for(pilot, lambda: len(pane.fixes) == len(FLAGGED))
    return pane


def status(pane: FixupPane) -> str:
    return str(pane.query_one("#fixup-status", Static).render())


async def test_the_flagged_images_are_listed_with_their_fixes(flagged: Path) -> None:
    app = make_app(flagged)
    async with app.run_test(size=SIZE) as pilot:
        pane = await open_fixup(pilot)
        assert [fix.rel_path for fix in pane.fixes] == FLAGGED
        table = pane.query_one("#fixup-table", DataTable)
        assert app.focused is table and table.row_count == 4
        assert "576x461" in str(table.get_row_at(3)[2])  # the bucket size Kohya would enlarge to
        info = str(pane.query_one("#fixup-info", Static).render())
        assert "levels" in info and "blown to white" in info
        assert "4 image(s) to fix · 4 accepted" in status(pane)


async def test_skipped_images_stay_untouched_and_the_rest_is_fixed_then_undone(flagged: Path) -> None:
    before = hashes(flagged)
    app = make_app(flagged)
    async with app.run_test(size=SIZE) as pilot:
        pane = await open_fixup(pilot)
        await pilot.press("space")  # skip blown.png (the cursor moves on)
        assert pane.skipped == {"10_subject/blown.png"}
        assert "3 accepted" in status(pane)
        await pilot.press("w")
        await wait_for(pilot, lambda: not pane.running and "fixed" in status(pane))
        assert "✓ fixed 3 image(s) in place" in status(pane)
        now = hashes(flagged)
        assert now["10_subject/blown.png"] == before["10_subject/blown.png"]
        assert "10_subject/small.png" in now and "10_subject/small.jpg" not in now
        kept = flagged / ".kiln" / "originals" / "10_subject" / "small.jpg"
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == before["10_subject/small.jpg"]
        # The dataset section follows: it rescans, measures the new files, and the DSB shows both.
        await wait_for(pilot, lambda: "10_subject/small.png" in app.curation.rows)
        await analysed(pilot)
        await wait_for(pilot, lambda: "DSB before" in status(pane) and "measuring" not in status(pane))
        assert "10_subject/small.jpg" not in app.curation.rows
        # Only the skipped image is left to fix (done operations are not offered again).
        await wait_for(pilot, lambda: [fix.rel_path for fix in pane.fixes] == ["10_subject/blown.png"])
        await pilot.press("u")
        await wait_for(pilot, lambda: not pane.running and "put back" in status(pane))
        assert "put back 3 original(s)" in status(pane)
        await wait_for(pilot, lambda: "10_subject/small.jpg" in app.curation.rows)
    assert hashes(flagged) == before


async def test_a_bad_background_is_named_and_nothing_is_written(flagged: Path) -> None:
    before = hashes(flagged)
    app = make_app(flagged)
    async with app.run_test(size=SIZE) as pilot:
        pane = await open_fixup(pilot)
        box = pane.query_one("#fixup-background", Input)
        box.value = "pink"
        box.focus()
        await pilot.press("enter")
        assert "colour 'pink'" in status(pane)
        pane.query_one("#fixup-table").focus()
        await pilot.press("w")
        await pilot.pause()
        assert "colour 'pink'" in status(pane) and not pane.running
    assert hashes(flagged) == before


async def test_the_preview_shows_the_image_before_and_after_its_fix(flagged: Path) -> None:
    app = make_app(flagged, images="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        pane = await open_fixup(pilot)
        await pilot.press("down", "down")  # rotated.jpg: 768x512 stored, 512x768 once baked
        before = pane.query_one("#fixup-before", ImagePreview)
        after = pane.query_one("#fixup-after", ImagePreview)
        await wait_for(pilot, lambda: after.query_one("#picture").image is not None)  # type: ignore[attr-defined]
        await wait_for(
            pilot,
            lambda: after.query_one("#picture").image.size[1] > after.query_one("#picture").image.size[0],
        )  # type: ignore[attr-defined]
        shown_before = before.query_one("#picture").image  # type: ignore[attr-defined]
        assert shown_before.size[0] > shown_before.size[1]
        assert after.query_one("#posterized").image is not None  # type: ignore[attr-defined]


async def test_cancel_is_offered_only_while_fixing(flagged: Path) -> None:
    app = make_app(flagged)
    async with app.run_test(size=SIZE) as pilot:
        pane = await open_fixup(pilot)
        assert pane.check_action("cancel", ()) is False
        pane.running = True
        assert pane.check_action("cancel", ()) is True
        assert pane.check_action("apply", ()) is False


def test_every_fixup_binding_has_an_id_and_a_tooltip() -> None:
    for binding in FixupPane.BINDINGS:
        assert isinstance(binding, Binding)
        assert binding.id and binding.id.startswith("fixup.") and binding.tooltip, binding.key


def test_fixup_tab_snapshot(snap_compare, flagged: Path) -> None:
    async def prepare(pilot) -> None:
        await open_fixup(pilot)
        await pilot.press("down")
        await pilot.pause()

    assert snap_compare(make_app(flagged), terminal_size=SIZE, run_before=prepare)
