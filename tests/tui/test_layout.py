"""Layout at 80x24 and 120x40 (and 140 wide): no value cut to nothing, columns and sort agree,
the gauge's verdict waits for the analysis, one rounding for percents, no stale messages."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kiln.engine.runs.events import EventWriter
from kiln.engine.runs.readout import progress_text
from kiln.tui.screens.captions import CaptionsScreen
from kiln.tui.widgets.dsb_gauge import DsbGauge
from kiln.tui.widgets.run_table import RunTable
from kiln.tui.wording import packed, percent, quoted

from tests.tui.helpers import analysed, make_app, wait_for

SIZES = [(80, 24), (120, 40)]


async def test_every_dataset_column_shows_from_140_columns(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        shown = app.screen.table.visible_keys()
        assert {"concept", "caption", "path", "white", "black", "status"} <= set(shown)


@pytest.mark.parametrize("size", SIZES)
async def test_sort_never_cycles_into_a_hidden_column(sample_copy: Path, size) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        screen = app.screen
        shown = set(screen.table.visible_keys())
        seen = []
        for _ in range(10):
            await pilot.press("s")
            seen.append(screen.sort_column)
            assert screen.sort_column in shown, (screen.sort_column, shown)
        assert "path" in seen and "white" in seen


@pytest.mark.parametrize("size", SIZES)
async def test_the_gauge_says_partial_until_every_image_is_measured(sample_copy: Path, size) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=size) as pilot:
        gauge = app.screen.query_one(DsbGauge)
        seen_partial = False
        deadline = time.monotonic() + 20
        while app.curation.pending() and time.monotonic() < deadline:
            summary = gauge.summary
            text = str(gauge.render())
            if summary is not None and summary.white is not None:
                assert "partial" in text and summary.verdict not in text.split("\n")[0].split("images")[0]
                seen_partial = True
            await pilot.pause(0.02)
        await analysed(pilot)
        text = str(gauge.render())
        assert "partial" not in text and "mediocre" in text
        if not seen_partial:  # the sample measures fast: show the state a slow dataset is in
            gauge.show(app.curation.summary(), 12, pending=3)
            first_line = str(gauge.render()).split("\n")[0]
            assert "partial: measuring 3 more" in first_line and "mediocre" not in first_line


@pytest.mark.parametrize("size", SIZES)
async def test_the_runs_table_keeps_every_figure_whole(sample_copy: Path, size) -> None:
    name = "a-rather-long-run-name-for-the-kilnpot-concept"
    run_dir = sample_copy / "runs" / f"20260301-140500-{name}"
    run_dir.parent.mkdir()
    writer = EventWriter(run_dir, name=name, heartbeat_s=0)
    (run_dir / "config.toml").write_text(f'[output]\nname = "{name}"\n')
    writer.emit("start", total=10000, epochs=20, step=0, epoch=1)
    writer.emit("step", step=450, total=10000, epoch=1, loss=0.1234, lr=1e-4, it_s=2.0, eta_s=36000)
    try:
        app = make_app(sample_copy)
        async with app.run_test(size=size) as pilot:
            await pilot.press("5")
            table = app.screen.query_one(RunTable)
            await wait_for(pilot, lambda: table.row_count == 1)
            await pilot.pause()
            widths = {key.value: column.get_render_width(table) for key, column in table.columns.items()}
            assert sum(widths.values()) <= table.scrollable_content_region.width
            assert widths["ETA"] - 2 * table.cell_padding >= len("10h00m")
            assert widths["name"] >= 10
    finally:
        writer.close()


def test_one_rounding_for_percents() -> None:
    assert percent(45, 1000) == 4 and f"{percent(45, 1000)}%" in progress_text(45, 1000)
    assert percent(999, 1000) == 99 and percent(1000, 1000) == 100 and percent(1, 0) == 0
    assert percent(5, 6) == 83


def test_paths_are_quoted_with_single_backslashes() -> None:
    assert quoted("C:\\data\\10_cat") == "'C:\\data\\10_cat'"
    assert "\\\\" not in quoted("C:\\data")


@pytest.mark.parametrize("size", SIZES)
async def test_the_dataset_title_shows_a_typed_path_as_typed(sample_copy: Path, size) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        app.screen.set_filter("C:\\pots")
        title = str(app.screen.query_one("#table-pane").border_title)
        assert "'C:\\pots'" in title and "\\\\" not in title


@pytest.mark.parametrize("size", SIZES)
async def test_the_tags_message_is_not_stale_after_undo(sample_copy: Path, size) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=size) as pilot:
        await pilot.press("3")
        await wait_for(pilot, lambda: isinstance(app.screen, CaptionsScreen))
        screen = app.screen
        pane = screen.tag_pane
        await pilot.press("t")
        await wait_for(pilot, lambda: pane.stats is not None and pane.freq_table.row_count > 0)
        pane.freq_table.move_cursor(row=pane.freq_table.get_row_index("kilnpot"))
        await pilot.press("enter", "enter")
        await wait_for(pilot, lambda: pane.plan is not None)
        await pilot.press("a")
        message = pane.query_one("#tag-message")
        await wait_for(pilot, lambda: "captions changed" in str(message.render()))
        await pilot.press("u")
        await wait_for(pilot, lambda: "undid" in str(message.render()), timeout=10)
        assert "u undoes it" not in str(message.render())


def test_figures_wrap_between_figures_never_inside_one() -> None:
    parts = ["loss 0.0783", "peak 6.1 GB VRAM", "lr 1.0e-04 / te 2.0e-05"]
    assert packed(parts, 40) == "loss 0.0783  peak 6.1 GB VRAM\nlr 1.0e-04 / te 2.0e-05"
    assert packed(parts, 0) == "  ".join(parts)  # before layout: one line
    assert packed(parts, 10).splitlines() == parts  # a part wider than the pane keeps its line
