"""Issue 14, what a new user trips over, in the TUI: sampling progress, the new-run form, resume --force."""

from __future__ import annotations

from pathlib import Path

import pytest
from kiln.engine.runs.events import EventWriter
from kiln.tui.widgets.run_table import RunTable

from tests.tui.conftest import make_app, wait_for
from tests.tui.test_runs_screen import open_runs

SIZES = [(80, 24), (120, 40)]


@pytest.mark.parametrize("size", SIZES)
async def test_runs_table_shows_sampling_progress(sample_copy: Path, size) -> None:
    run_dir = sample_copy / "runs" / "20260301-140500-live"
    run_dir.parent.mkdir()
    writer = EventWriter(run_dir, name="live", heartbeat_s=0)
    (run_dir / "config.toml").write_text('[output]\nname = "live"\n')
    writer.emit("start", total=100, epochs=2, step=0, epoch=1)
    app = make_app(sample_copy, watch=True)
    try:
        async with app.run_test(size=size) as pilot:
            screen = await open_runs(pilot)
            table = screen.query_one(RunTable)
            writer.set_sampling(1, 3)

            def state_cell() -> str:
                return str(table.get_row_at(0)[1]) if table.row_count else ""

            await wait_for(pilot, lambda: state_cell() == "sampling 1/3", timeout=8)
            writer.emit("sample", epoch=0, step=0, files=[], prompts=[])
            await wait_for(pilot, lambda: state_cell() == "running", timeout=8)
    finally:
        writer.close()
